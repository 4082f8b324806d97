//! SetWriteProtect: turn a drive's write protection on or off.

use sneakernet_proto::gateway::v1::SetWriteProtectCommand;
use sneakernet_proto::gateway::v1::command_result::Outcome;
use sneakernet_runtime::FieldViolation;

use super::{MAX_ID, check_id};

/// Stored name of the kind.
pub const KIND: &str = "set_write_protect";

/// Field violations of a SetWriteProtect.
pub fn validate(command: &SetWriteProtectCommand, violations: &mut Vec<FieldViolation>) {
    check_id(
        "payload.set_write_protect.item_id",
        &command.item_id,
        MAX_ID,
        violations,
    );
}

/// A SetWriteProtect succeeds with a SetWriteProtectResult.
pub fn result_matches(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::SetWriteProtect(_))
}
