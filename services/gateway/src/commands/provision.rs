//! Provision (the fifth instruction): copy a content package onto a drive and pin it to a
//! reservation. Executed by kiosks from the content issue on; the message and life cycle exist
//! now.

use sneakernet_proto::gateway::v1::ProvisionCommand;
use sneakernet_proto::gateway::v1::command_result::Outcome;
use sneakernet_runtime::FieldViolation;

use super::{MAX_ID, check_id};

/// Stored name of the kind.
pub const KIND: &str = "provision";

/// Field violations of a Provision.
pub fn validate(command: &ProvisionCommand, violations: &mut Vec<FieldViolation>) {
    check_id(
        "payload.provision.order_id",
        &command.order_id,
        MAX_ID,
        violations,
    );
    check_id(
        "payload.provision.package_id",
        &command.package_id,
        MAX_ID,
        violations,
    );
    if command.capacity_bytes == 0 {
        violations.push(FieldViolation::new(
            "payload.provision.capacity_bytes",
            "must be positive",
        ));
    }
}

/// A Provision succeeds with a ProvisionResult.
pub fn result_matches(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Provision(_))
}
