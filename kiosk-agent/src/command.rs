//! A command's payload, validated into what the executor may act on.
//!
//! Guarantees: [`validate`] accepts only payloads whose every field the executor uses is
//! present and well formed (ids of the contract's lengths, a drive spec with a capacity, a
//! power-bank spec with no drive fields); anything else is a one-line reason that becomes a
//! `FAILURE_REASON_INVALID_COMMAND` result. The executor never sees an unchecked field.

use sneakernet_proto::common::v1 as common;
use sneakernet_proto::gateway::v1 as pb;

use crate::config::{is_bay_id, is_item_id};
use crate::selection::WantedType;

/// The longest command id accepted (the contract says a UUID; some slack for other formats).
pub const MAX_COMMAND_ID_LEN: usize = 128;
/// The longest order id accepted.
pub const MAX_ORDER_ID_LEN: usize = 128;

/// What a lend hands out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LendTarget {
    /// Walk-up: the kiosk chooses an item of this type.
    Spec {
        /// The type.
        wanted: WantedType,
        /// Drives: write protection to apply before ejecting.
        write_protect: bool,
    },
    /// Reservation: exactly this item, pinned to the lend's order.
    Item(String),
}

/// A validated command payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Hand an item to the user.
    Lend {
        /// The order it is lent for.
        order_id: String,
        /// Which item.
        target: LendTarget,
    },
    /// Copy a content package onto a free drive and pin it to a reservation.
    Provision {
        /// The reservation the drive is pinned to.
        order_id: String,
        /// The content package; empty for a blank drive.
        package_id: String,
        /// The drive's capacity, exactly.
        capacity_bytes: u64,
        /// Whether to turn write protection on once verified.
        write_protect: bool,
    },
    /// Change a drive's write protection.
    SetWriteProtect {
        /// The drive.
        item_id: String,
        /// On or off.
        on: bool,
    },
    /// Wipe a drive.
    Wipe {
        /// The drive.
        item_id: String,
    },
    /// Open a bay whatever it holds.
    ForceEject {
        /// The bay.
        bay_id: String,
    },
    /// Report the inventory.
    RequestInventory,
    /// Unpin a reservation's drive.
    Release {
        /// The reservation.
        order_id: String,
        /// The drive.
        item_id: String,
    },
}

/// True when `id` can key the journal: 1 to [`MAX_COMMAND_ID_LEN`] printable ASCII characters.
pub fn is_command_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_COMMAND_ID_LEN && id.chars().all(|c| c.is_ascii_graphic())
}

/// An order or package id: 1 to [`MAX_ORDER_ID_LEN`] printable ASCII characters.
fn order_id(key: &str, id: &str) -> Result<String, String> {
    if id.is_empty() || id.len() > MAX_ORDER_ID_LEN || !id.chars().all(|c| c.is_ascii_graphic()) {
        return Err(format!(
            "{key} must be 1 to {MAX_ORDER_ID_LEN} printable ASCII characters"
        ));
    }
    Ok(id.to_owned())
}

fn item_id(key: &str, id: &str) -> Result<String, String> {
    if !is_item_id(id) {
        return Err(format!("{key} must be 1 to 64 printable ASCII characters"));
    }
    Ok(id.to_owned())
}

fn spec(spec: &common::ItemSpec) -> Result<LendTarget, String> {
    let Some(item_type) = &spec.item_type else {
        return Err("lend.spec.item_type is missing".into());
    };
    let wanted = match common::ItemKind::try_from(item_type.kind) {
        Ok(common::ItemKind::Drive) => {
            if item_type.capacity_bytes == 0 {
                return Err(
                    "lend.spec.item_type.capacity_bytes must be more than 0 for a drive".into(),
                );
            }
            let package = &item_type.content_package_id;
            if package.len() > 64 || !package.chars().all(|c| c.is_ascii_graphic()) {
                return Err(
                    "lend.spec.item_type.content_package_id must be at most 64 printable ASCII characters"
                        .into(),
                );
            }
            WantedType::Drive {
                capacity_bytes: item_type.capacity_bytes,
                content_package_id: (!package.is_empty()).then(|| package.clone()),
            }
        }
        Ok(common::ItemKind::PowerBank) => {
            if item_type.capacity_bytes != 0 || !item_type.content_package_id.is_empty() {
                return Err(
                    "lend.spec.item_type: a power bank has no capacity_bytes or content_package_id"
                        .into(),
                );
            }
            if spec.write_protect {
                return Err("lend.spec.write_protect must be false for a power bank".into());
            }
            WantedType::PowerBank
        }
        _ => return Err("lend.spec.item_type.kind must be DRIVE or POWER_BANK".into()),
    };
    Ok(LendTarget::Spec {
        wanted,
        write_protect: spec.write_protect,
    })
}

/// Checks `payload` and returns what it asks; the error says which field is wrong.
pub fn validate(payload: Option<&pb::CommandPayload>) -> Result<Action, String> {
    use pb::command_payload::Kind;
    let Some(kind) = payload.and_then(|p| p.kind.as_ref()) else {
        return Err("payload is missing or of a kind this agent does not know".into());
    };
    Ok(match kind {
        Kind::Lend(lend) => {
            let order_id = order_id("lend.order_id", &lend.order_id)?;
            let target = match &lend.target {
                Some(pb::lend_command::Target::Spec(s)) => spec(s)?,
                Some(pb::lend_command::Target::ItemId(id)) => {
                    LendTarget::Item(item_id("lend.item_id", id)?)
                }
                None => return Err("lend needs spec or item_id".into()),
            };
            Action::Lend { order_id, target }
        }
        Kind::Provision(c) => {
            if c.capacity_bytes == 0 {
                return Err("provision.capacity_bytes must be more than 0".into());
            }
            Action::Provision {
                order_id: order_id("provision.order_id", &c.order_id)?,
                // Empty: a blank drive, pinned without content (a blank reservation).
                package_id: if c.package_id.is_empty() {
                    String::new()
                } else {
                    order_id("provision.package_id", &c.package_id)?
                },
                capacity_bytes: c.capacity_bytes,
                write_protect: c.write_protect,
            }
        }
        Kind::SetWriteProtect(c) => Action::SetWriteProtect {
            item_id: item_id("set_write_protect.item_id", &c.item_id)?,
            on: c.on,
        },
        Kind::Wipe(c) => Action::Wipe {
            item_id: item_id("wipe.item_id", &c.item_id)?,
        },
        Kind::ForceEject(c) => {
            if !is_bay_id(&c.bay_id) {
                return Err("force_eject.bay_id must be 1 to 32 printable ASCII characters".into());
            }
            Action::ForceEject {
                bay_id: c.bay_id.clone(),
            }
        }
        Kind::RequestInventory(_) => Action::RequestInventory,
        Kind::Release(c) => Action::Release {
            order_id: order_id("release.order_id", &c.order_id)?,
            item_id: item_id("release.item_id", &c.item_id)?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lend(target: Option<pb::lend_command::Target>, order: &str) -> pb::CommandPayload {
        pb::CommandPayload {
            kind: Some(pb::command_payload::Kind::Lend(pb::LendCommand {
                target,
                order_id: order.into(),
            })),
        }
    }

    fn drive_spec(capacity: u64, wp: bool) -> pb::lend_command::Target {
        pb::lend_command::Target::Spec(common::ItemSpec {
            item_type: Some(common::ItemType {
                kind: common::ItemKind::Drive as i32,
                capacity_bytes: capacity,
                content_package_id: "pkg".into(),
            }),
            write_protect: wp,
        })
    }

    #[test]
    fn good_payloads_validate_and_bad_ones_name_the_field() {
        assert_eq!(
            validate(Some(&lend(Some(drive_spec(10, true)), "O-1"))).unwrap(),
            Action::Lend {
                order_id: "O-1".into(),
                target: LendTarget::Spec {
                    wanted: WantedType::Drive {
                        capacity_bytes: 10,
                        content_package_id: Some("pkg".into())
                    },
                    write_protect: true
                }
            }
        );
        let bad = [
            (lend(None, "O-1"), "spec or item_id"),
            (lend(Some(drive_spec(10, false)), ""), "lend.order_id"),
            (lend(Some(drive_spec(0, false)), "O-1"), "capacity_bytes"),
            (
                lend(Some(pb::lend_command::Target::ItemId(String::new())), "O-1"),
                "lend.item_id",
            ),
            (
                lend(
                    Some(pb::lend_command::Target::Spec(common::ItemSpec {
                        item_type: Some(common::ItemType {
                            kind: common::ItemKind::PowerBank as i32,
                            capacity_bytes: 0,
                            content_package_id: String::new(),
                        }),
                        write_protect: true,
                    })),
                    "O-1",
                ),
                "write_protect",
            ),
            (
                lend(
                    Some(pb::lend_command::Target::Spec(common::ItemSpec {
                        item_type: Some(common::ItemType {
                            kind: 42,
                            capacity_bytes: 0,
                            content_package_id: String::new(),
                        }),
                        write_protect: false,
                    })),
                    "O-1",
                ),
                "kind",
            ),
            (
                pb::CommandPayload {
                    kind: Some(pb::command_payload::Kind::ForceEject(
                        pb::ForceEjectCommand {
                            bay_id: "x".repeat(33),
                        },
                    )),
                },
                "force_eject.bay_id",
            ),
            (
                pb::CommandPayload {
                    kind: Some(pb::command_payload::Kind::Provision(pb::ProvisionCommand {
                        order_id: "O-1".into(),
                        package_id: "P".into(),
                        capacity_bytes: 0,
                        write_protect: false,
                    })),
                },
                "provision.capacity_bytes",
            ),
            (
                pb::CommandPayload {
                    kind: Some(pb::command_payload::Kind::Provision(pb::ProvisionCommand {
                        order_id: "O-1".into(),
                        package_id: "P ".into(),
                        capacity_bytes: 1,
                        write_protect: false,
                    })),
                },
                "provision.package_id",
            ),
            (pb::CommandPayload { kind: None }, "payload"),
        ];
        for (payload, field) in bad {
            let error = validate(Some(&payload)).unwrap_err();
            assert!(error.contains(field), "{field} not in {error}");
        }
        assert!(validate(None).is_err());
    }
}
