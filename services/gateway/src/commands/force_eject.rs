//! ForceEject: open one bay whatever it holds (maintenance, a stuck item).

use sneakernet_proto::gateway::v1::ForceEjectCommand;
use sneakernet_proto::gateway::v1::command_result::Outcome;
use sneakernet_runtime::FieldViolation;

use super::check_id;

/// Stored name of the kind.
pub const KIND: &str = "force_eject";

/// Longest bay id (gateway.proto: 1 to 32 characters).
const MAX_BAY_ID: usize = 32;

/// Field violations of a ForceEject.
pub fn validate(command: &ForceEjectCommand, violations: &mut Vec<FieldViolation>) {
    check_id(
        "payload.force_eject.bay_id",
        &command.bay_id,
        MAX_BAY_ID,
        violations,
    );
}

/// A ForceEject succeeds with a ForceEjectResult.
pub fn result_matches(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::ForceEject(_))
}
