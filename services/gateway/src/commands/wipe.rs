//! Wipe: erase a drive before it is lent again.

use sneakernet_proto::gateway::v1::WipeCommand;
use sneakernet_proto::gateway::v1::command_result::Outcome;
use sneakernet_runtime::FieldViolation;

use super::{MAX_ID, check_id};

/// Stored name of the kind.
pub const KIND: &str = "wipe";

/// Field violations of a Wipe.
pub fn validate(command: &WipeCommand, violations: &mut Vec<FieldViolation>) {
    check_id("payload.wipe.item_id", &command.item_id, MAX_ID, violations);
}

/// A Wipe succeeds with a WipeResult.
pub fn result_matches(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Wipe(_))
}
