//! RequestInventory (our TriggerMessage): ask the kiosk to report everything it holds, after a
//! reconnect or a doubt.

use sneakernet_proto::gateway::v1::RequestInventoryCommand;
use sneakernet_proto::gateway::v1::command_result::Outcome;
use sneakernet_runtime::FieldViolation;

/// Stored name of the kind.
pub const KIND: &str = "request_inventory";

/// A RequestInventory has no fields to get wrong.
pub fn validate(_command: &RequestInventoryCommand, _violations: &mut [FieldViolation]) {}

/// A RequestInventory succeeds with a RequestInventoryResult.
pub fn result_matches(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::RequestInventory(_))
}
