//! Release: unpin the drive of a cancelled or expired reservation; it becomes lendable.

use sneakernet_proto::gateway::v1::ReleaseCommand;
use sneakernet_proto::gateway::v1::command_result::Outcome;
use sneakernet_runtime::FieldViolation;

use super::{MAX_ID, check_id};

/// Stored name of the kind.
pub const KIND: &str = "release";

/// Field violations of a Release.
pub fn validate(command: &ReleaseCommand, violations: &mut Vec<FieldViolation>) {
    check_id(
        "payload.release.order_id",
        &command.order_id,
        MAX_ID,
        violations,
    );
    check_id(
        "payload.release.item_id",
        &command.item_id,
        MAX_ID,
        violations,
    );
}

/// A Release succeeds with a ReleaseResult.
pub fn result_matches(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Release(_))
}
