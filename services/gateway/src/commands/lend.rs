//! Lend (the third instruction): hand one item to the user at the kiosk. Either a
//! specification the kiosk satisfies by its own preset rules (walk-up), or the item pinned to
//! a reservation.

use sneakernet_proto::gateway::v1::LendCommand;
use sneakernet_proto::gateway::v1::command_result::Outcome;
use sneakernet_proto::gateway::v1::lend_command::Target;
use sneakernet_runtime::FieldViolation;

use super::{MAX_ID, check_id};

/// Stored name of the kind.
pub const KIND: &str = "lend";

/// Field violations of a Lend.
pub fn validate(command: &LendCommand, violations: &mut Vec<FieldViolation>) {
    check_id(
        "payload.lend.order_id",
        &command.order_id,
        MAX_ID,
        violations,
    );
    match &command.target {
        None => violations.push(FieldViolation::new(
            "payload.lend.target",
            "must be a spec (walk-up) or an item_id (reservation)",
        )),
        Some(Target::ItemId(item)) => check_id("payload.lend.item_id", item, MAX_ID, violations),
        Some(Target::Spec(spec)) => {
            if spec.item_type.is_none() {
                violations.push(FieldViolation::new(
                    "payload.lend.spec.item_type",
                    "must be set",
                ));
            }
        }
    }
}

/// A Lend succeeds with a LendResult.
pub fn result_matches(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Lend(_))
}
