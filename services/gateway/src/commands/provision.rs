//! Provision (the fifth instruction): copy a content package onto a drive and pin it to a
//! reservation. The kiosk fetches the package from the content service by its id, so an id the
//! content service could never have issued (not a UUID) is refused here, before a kiosk spends
//! a command on it. No package at all is a blank reservation: a drive erased and pinned.

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
    if !command.package_id.is_empty() && uuid::Uuid::parse_str(&command.package_id).is_err() {
        violations.push(FieldViolation::new(
            "payload.provision.package_id",
            "must be a content package id (a UUID), or empty for a blank drive",
        ));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn violations(command: &ProvisionCommand) -> Vec<String> {
        let mut found = Vec::new();
        validate(command, &mut found);
        found.iter().map(|v| v.field.clone()).collect()
    }

    #[test]
    fn a_provision_names_an_order_a_package_uuid_and_a_capacity() {
        let good = ProvisionCommand {
            order_id: "order-1".into(),
            package_id: "0193a6f0-6a7d-7e2b-9c11-0f5d8e2a7b61".into(),
            capacity_bytes: 1_000_000_000_000,
            write_protect: true,
        };
        assert!(violations(&good).is_empty());
        let bad = ProvisionCommand {
            order_id: String::new(),
            package_id: "films-1".into(),
            capacity_bytes: 0,
            write_protect: false,
        };
        assert_eq!(
            violations(&bad),
            [
                "payload.provision.order_id",
                "payload.provision.package_id",
                "payload.provision.capacity_bytes"
            ]
        );
    }
}
