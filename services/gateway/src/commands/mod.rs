//! The command kinds, one file each, all shaped alike: `KIND` (the stored name), `validate`
//! (field violations under `payload.<kind>.`), and `result_matches` (whether a kiosk's
//! success outcome is the one this kind produces). A kind added to the proto gets a file
//! here and one arm in each function below, a place in `grants::SERVICE_GRANTS` for each
//! service that sends it, and an arm in [`fits_device`] if a drive's own
//! link may carry it.

pub mod force_eject;
pub mod lend;
pub mod provision;
pub mod release;
pub mod request_inventory;
pub mod set_write_protect;
pub mod wipe;

use sneakernet_proto::gateway::v1::CommandPayload;
use sneakernet_proto::gateway::v1::command_payload::Kind;
use sneakernet_proto::gateway::v1::command_result::Outcome;
use sneakernet_runtime::{DeviceId, FieldViolation};

/// The stored name of a payload's kind (what `grants` allows per service).
pub fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Lend(_) => lend::KIND,
        Kind::Provision(_) => provision::KIND,
        Kind::SetWriteProtect(_) => set_write_protect::KIND,
        Kind::Wipe(_) => wipe::KIND,
        Kind::ForceEject(_) => force_eject::KIND,
        Kind::RequestInventory(_) => request_inventory::KIND,
        Kind::Release(_) => release::KIND,
    }
}

/// Checks a payload; returns its kind's stored name, or every field violation.
pub fn validate(payload: Option<&CommandPayload>) -> Result<&'static str, Vec<FieldViolation>> {
    let Some(kind) = payload.and_then(|p| p.kind.as_ref()) else {
        return Err(vec![FieldViolation::new(
            "payload",
            "must name one command kind",
        )]);
    };
    let mut violations = Vec::new();
    let name = match kind {
        Kind::Lend(c) => {
            lend::validate(c, &mut violations);
            lend::KIND
        }
        Kind::Provision(c) => {
            provision::validate(c, &mut violations);
            provision::KIND
        }
        Kind::SetWriteProtect(c) => {
            set_write_protect::validate(c, &mut violations);
            set_write_protect::KIND
        }
        Kind::Wipe(c) => {
            wipe::validate(c, &mut violations);
            wipe::KIND
        }
        Kind::ForceEject(c) => {
            force_eject::validate(c, &mut violations);
            force_eject::KIND
        }
        Kind::RequestInventory(c) => {
            request_inventory::validate(c, &mut violations);
            request_inventory::KIND
        }
        Kind::Release(c) => {
            release::validate(c, &mut violations);
            release::KIND
        }
    };
    if violations.is_empty() {
        Ok(name)
    } else {
        Err(violations)
    }
}

/// Field violations of sending a (valid) payload to `device`. A kiosk takes every kind. A
/// drive's own remote link can do one thing: change that drive's write protection, so it is
/// sent only SetWriteProtect naming itself; anything else is refused here, before it is
/// logged, rather than failing UNSUPPORTED on the drive.
pub fn fits_device(device: &DeviceId, payload: &CommandPayload) -> Vec<FieldViolation> {
    let DeviceId::Drive(drive) = device else {
        return Vec::new();
    };
    match payload.kind.as_ref() {
        Some(Kind::SetWriteProtect(command)) if command.item_id == drive.as_str() => Vec::new(),
        Some(Kind::SetWriteProtect(_)) => vec![FieldViolation::new(
            "payload.set_write_protect.item_id",
            "must be the drive the command is sent to (drive_id)",
        )],
        _ => vec![FieldViolation::new(
            "payload",
            "a drive's own link takes only set_write_protect",
        )],
    }
}

/// Whether `outcome` is a result this payload's kind can have (its own success, or a failure).
pub fn result_matches(payload: &CommandPayload, outcome: &Outcome) -> bool {
    if matches!(outcome, Outcome::Failure(_)) {
        return true;
    }
    match payload.kind.as_ref() {
        Some(Kind::Lend(_)) => lend::result_matches(outcome),
        Some(Kind::Provision(_)) => provision::result_matches(outcome),
        Some(Kind::SetWriteProtect(_)) => set_write_protect::result_matches(outcome),
        Some(Kind::Wipe(_)) => wipe::result_matches(outcome),
        Some(Kind::ForceEject(_)) => force_eject::result_matches(outcome),
        Some(Kind::RequestInventory(_)) => request_inventory::result_matches(outcome),
        Some(Kind::Release(_)) => release::result_matches(outcome),
        None => false,
    }
}

/// A required id field: 1 to `max` printable ASCII characters, no spaces (gateway.proto's
/// rule for item, bay, order and package ids).
pub(crate) fn check_id(field: &str, value: &str, max: usize, violations: &mut Vec<FieldViolation>) {
    if value.is_empty() {
        violations.push(FieldViolation::new(field, "must not be empty"));
    } else if value.len() > max {
        violations.push(FieldViolation::new(
            field,
            format!("must be at most {max} characters"),
        ));
    } else if !value.chars().all(|c| c.is_ascii_graphic()) {
        violations.push(FieldViolation::new(
            field,
            "may hold only printable ASCII without spaces",
        ));
    }
}

/// Longest item, bay, order and package id accepted.
pub(crate) const MAX_ID: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use sneakernet_proto::gateway::v1 as pb;

    fn payload(kind: Kind) -> CommandPayload {
        CommandPayload { kind: Some(kind) }
    }

    #[test]
    fn a_missing_payload_is_named() {
        let violations = validate(None).unwrap_err();
        assert_eq!(violations[0].field, "payload");
        assert!(validate(Some(&CommandPayload { kind: None })).is_err());
    }

    #[test]
    fn each_kind_names_its_bad_fields() {
        let cases = [
            (
                payload(Kind::Lend(pb::LendCommand::default())),
                "payload.lend.order_id",
            ),
            (
                payload(Kind::Wipe(pb::WipeCommand::default())),
                "payload.wipe.item_id",
            ),
            (
                payload(Kind::ForceEject(pb::ForceEjectCommand {
                    bay_id: "A 1".into(),
                })),
                "payload.force_eject.bay_id",
            ),
            (
                payload(Kind::SetWriteProtect(pb::SetWriteProtectCommand::default())),
                "payload.set_write_protect.item_id",
            ),
            (
                payload(Kind::Provision(pb::ProvisionCommand::default())),
                "payload.provision.order_id",
            ),
            (
                payload(Kind::Release(pb::ReleaseCommand::default())),
                "payload.release.order_id",
            ),
        ];
        for (payload, field) in cases {
            let violations = validate(Some(&payload)).unwrap_err();
            assert!(
                violations.iter().any(|v| v.field == field),
                "{field}: {violations:?}"
            );
        }
        assert_eq!(
            validate(Some(&payload(Kind::RequestInventory(
                pb::RequestInventoryCommand {}
            )))),
            Ok(request_inventory::KIND)
        );
    }

    #[test]
    fn a_drive_is_sent_only_its_own_write_protection() {
        let kiosk = DeviceId::Kiosk(sneakernet_runtime::KioskId::parse("K-1").unwrap());
        let drive = DeviceId::Drive(sneakernet_runtime::ItemId::parse("D-1").unwrap());
        let protect = |item: &str| {
            payload(Kind::SetWriteProtect(pb::SetWriteProtectCommand {
                item_id: item.into(),
                on: true,
            }))
        };
        let wipe = payload(Kind::Wipe(pb::WipeCommand {
            item_id: "D-1".into(),
        }));
        assert!(fits_device(&drive, &protect("D-1")).is_empty());
        assert_eq!(
            fits_device(&drive, &protect("D-2"))[0].field,
            "payload.set_write_protect.item_id"
        );
        assert_eq!(fits_device(&drive, &wipe)[0].field, "payload");
        assert!(
            fits_device(&kiosk, &wipe).is_empty(),
            "kiosks take every kind"
        );
        assert!(fits_device(&kiosk, &protect("D-2")).is_empty());
    }

    #[test]
    fn results_must_fit_the_kind() {
        let wipe = payload(Kind::Wipe(pb::WipeCommand {
            item_id: "D-1".into(),
        }));
        assert!(result_matches(
            &wipe,
            &Outcome::Wipe(pb::WipeResult::default())
        ));
        assert!(result_matches(
            &wipe,
            &Outcome::Failure(pb::Failure::default())
        ));
        assert!(!result_matches(
            &wipe,
            &Outcome::Lend(pb::LendResult::default())
        ));
    }
}
