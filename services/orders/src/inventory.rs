//! Inventories summed per item type: what operators see of a kiosk, and later what offers are
//! built from. Pure functions.

use std::collections::BTreeMap;

use sneakernet_proto::common::v1 as common;
use sneakernet_proto::gateway::v1 as gateway;
use sneakernet_proto::orders::v1 as pb;

/// An item type as a map key: kind, capacity, content package.
type TypeKey = (i32, u64, String);

fn type_of(item: &common::Item) -> TypeKey {
    match item.attributes.as_ref().and_then(|a| a.kind.as_ref()) {
        Some(common::item_attributes::Kind::Drive(drive)) => (
            item.kind,
            drive.capacity_bytes,
            drive.content_package_id.clone(),
        ),
        _ => (item.kind, 0, String::new()),
    }
}

/// Sums a kiosk's bays per item type and condition.
pub fn summarize(inventory: &gateway::Inventory) -> pb::InventorySummary {
    let mut lines: BTreeMap<TypeKey, pb::InventoryLine> = BTreeMap::new();
    let mut summary = pb::InventorySummary {
        reported_at: inventory.taken_at,
        ..Default::default()
    };
    for bay in &inventory.bays {
        let state =
            gateway::BayState::try_from(bay.state).unwrap_or(gateway::BayState::Unspecified);
        let Some(item) = bay
            .item
            .as_ref()
            .filter(|_| state != gateway::BayState::Empty)
        else {
            summary.empty_bays += 1;
            continue;
        };
        if state == gateway::BayState::Fault {
            summary.faulty_bays += 1;
        }
        let key = type_of(item);
        let line = lines
            .entry(key.clone())
            .or_insert_with(|| pb::InventoryLine {
                item_type: Some(common::ItemType {
                    kind: key.0,
                    capacity_bytes: key.1,
                    content_package_id: key.2,
                }),
                ..Default::default()
            });
        match state {
            gateway::BayState::Ready => line.ready += 1,
            gateway::BayState::Pinned => line.pinned += 1,
            gateway::BayState::Busy => line.busy += 1,
            gateway::BayState::Quarantined
            | gateway::BayState::Fault
            | gateway::BayState::Unspecified => {
                line.quarantined += 1;
            }
            gateway::BayState::Empty => {}
        }
    }
    summary.lines = lines.into_values().collect();
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drive(id: &str, capacity: u64, package: &str) -> common::Item {
        common::Item {
            item_id: id.into(),
            kind: common::ItemKind::Drive.into(),
            attributes: Some(common::ItemAttributes {
                kind: Some(common::item_attributes::Kind::Drive(
                    common::DriveAttributes {
                        capacity_bytes: capacity,
                        content_package_id: package.into(),
                        ..Default::default()
                    },
                )),
            }),
        }
    }

    fn bay(id: &str, state: gateway::BayState, item: Option<common::Item>) -> gateway::Bay {
        gateway::Bay {
            bay_id: id.into(),
            state: state.into(),
            item,
            pinned_order_id: String::new(),
        }
    }

    #[test]
    fn bays_are_summed_per_type_and_condition() {
        use gateway::BayState::*;
        let inventory = gateway::Inventory {
            bays: vec![
                bay("A1", Ready, Some(drive("D-1", 1_000, "films"))),
                bay("A2", Ready, Some(drive("D-2", 1_000, "films"))),
                bay("A3", Pinned, Some(drive("D-3", 1_000, "films"))),
                bay("A4", Busy, Some(drive("D-4", 2_000, ""))),
                bay("A5", Fault, Some(drive("D-5", 2_000, ""))),
                bay("A6", Empty, None),
            ],
            taken_at: None,
        };
        let summary = summarize(&inventory);
        assert_eq!((summary.empty_bays, summary.faulty_bays), (1, 1));
        let counts: Vec<(u64, &str, u32, u32, u32, u32)> = summary
            .lines
            .iter()
            .map(|l| {
                let t = l.item_type.as_ref().unwrap();
                (
                    t.capacity_bytes,
                    t.content_package_id.as_str(),
                    l.ready,
                    l.pinned,
                    l.busy,
                    l.quarantined,
                )
            })
            .collect();
        assert_eq!(
            counts,
            [(1_000, "films", 2, 1, 0, 0), (2_000, "", 0, 0, 1, 1)]
        );
    }
}
