//! Conversions between the agent's plain types and the gateway contract's messages, in one
//! place. Guarantees: every outgoing message the agent builds goes through here, so the
//! contract's shapes (attributes' case matches the kind, EMPTY bays carry no item, failures
//! carry a reason) hold everywhere.

use chrono::{DateTime, Utc};
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::link_rules;

use crate::bays::{BayInfo, BayState, Inserted, ItemFacts, ItemInfo, ItemKind};
use crate::executor::Failed;

pub use sneakernet_proto::wire::{from_duration, from_timestamp, timestamp};

/// The contract's kind.
pub fn item_kind(kind: ItemKind) -> common::ItemKind {
    match kind {
        ItemKind::Drive => common::ItemKind::Drive,
        ItemKind::PowerBank => common::ItemKind::PowerBank,
    }
}

/// An item as the contract describes it.
pub fn item(item: &ItemInfo) -> common::Item {
    let attributes = match &item.facts {
        ItemFacts::Drive {
            capacity_bytes,
            content_package_id,
            write_protected,
            remote_link,
        } => common::item_attributes::Kind::Drive(common::DriveAttributes {
            capacity_bytes: *capacity_bytes,
            content_package_id: content_package_id.clone().unwrap_or_default(),
            write_protected: *write_protected,
            remote_link: *remote_link,
        }),
        ItemFacts::PowerBank { charge_percent } => {
            common::item_attributes::Kind::PowerBank(common::PowerBankAttributes {
                charge_percent: *charge_percent,
                capacity_mah: 0,
            })
        }
    };
    common::Item {
        item_id: item.item_id.clone(),
        kind: item_kind(item.kind()) as i32,
        attributes: Some(common::ItemAttributes {
            kind: Some(attributes),
        }),
    }
}

/// One bay as the contract describes it.
pub fn bay(bay: &BayInfo) -> pb::Bay {
    let (state, pinned_order_id) = match &bay.state {
        BayState::Empty => (pb::BayState::Empty, String::new()),
        BayState::Ready => (pb::BayState::Ready, String::new()),
        BayState::Busy => (pb::BayState::Busy, String::new()),
        BayState::Pinned { order_id } => (pb::BayState::Pinned, order_id.clone()),
        BayState::Quarantined => (pb::BayState::Quarantined, String::new()),
        BayState::Fault => (pb::BayState::Fault, String::new()),
    };
    pb::Bay {
        bay_id: bay.bay_id.clone(),
        state: state as i32,
        item: bay.item.as_ref().map(item),
        pinned_order_id,
    }
}

/// The whole inventory, taken at `at`.
pub fn inventory(bays: &[BayInfo], at: DateTime<Utc>) -> pb::Inventory {
    pb::Inventory {
        bays: bays.iter().map(bay).collect(),
        taken_at: Some(timestamp(at)),
    }
}

/// An `ItemReturned` message body.
pub fn item_returned(inserted: &Inserted) -> pb::ItemReturned {
    pb::ItemReturned {
        bay_id: inserted.bay_id.clone(),
        item: Some(item(&inserted.item)),
        returned_at: Some(timestamp(inserted.at)),
    }
}

/// A failure result; a bay or item the failure does not name goes out as the contract's empty
/// string.
pub fn failure(command_id: &str, failed: Failed, at: DateTime<Utc>) -> pb::CommandResult {
    pb::CommandResult {
        command_id: command_id.to_owned(),
        outcome: Some(pb::command_result::Outcome::Failure(pb::Failure {
            reason: failed.reason as i32,
            message: failed.message,
            bay_id: failed.bay_id.unwrap_or_default(),
            item_id: failed.item_id.unwrap_or_default(),
        })),
        finished_at: Some(timestamp(at)),
    }
}

/// A success result.
pub fn success(
    command_id: &str,
    outcome: pb::command_result::Outcome,
    at: DateTime<Utc>,
) -> pb::CommandResult {
    pb::CommandResult {
        command_id: command_id.to_owned(),
        outcome: Some(outcome),
        finished_at: Some(timestamp(at)),
    }
}

/// How far inside the gateway's window of believable report times ([`link_rules`]) the agent
/// keeps the times it sends: a day of margin against a skew correction still to come.
const REPORT_AGE_MARGIN: chrono::Duration = chrono::Duration::days(1);

/// A message as the agent puts it on the link, at `now` (the skew-corrected clock): the times
/// it reports are moved into what the gateway believes, never after `now` and never older
/// than the gateway accepts. A report journaled while the kiosk's clock was wrong (a reboot
/// with a drifted hardware clock, before a Welcome corrected it) is sent with the nearest
/// believable time rather than refused and lost; the servers clamp the times that set money
/// anyway. A message that still breaks the link rules is an agent defect: logged, and sent,
/// so the gateway keeps it for an operator to see.
pub fn outgoing(mut message: pb::OpenRequest, now: DateTime<Utc>) -> pb::OpenRequest {
    use pb::open_request::Body as Up;
    let oldest = chrono::Duration::from_std(link_rules::MAX_REPORT_AGE)
        .ok()
        .and_then(|age| now.checked_sub_signed(age))
        .and_then(|at| at.checked_add_signed(REPORT_AGE_MARGIN))
        .unwrap_or(now);
    let believable = |at: &mut Option<prost_types::Timestamp>| {
        if let Some(time) = at.as_ref().and_then(from_timestamp) {
            *at = Some(timestamp(time.clamp(oldest, now)));
        } else if at.is_some() {
            *at = Some(timestamp(now));
        }
    };
    match &mut message.body {
        Some(Up::Result(result)) => {
            believable(&mut result.finished_at);
            if let Some(pb::command_result::Outcome::RequestInventory(reported)) =
                &mut result.outcome
                && let Some(inventory) = &mut reported.inventory
            {
                believable(&mut inventory.taken_at);
            }
        }
        Some(Up::ItemReturned(returned)) => believable(&mut returned.returned_at),
        Some(Up::InventoryChanged(changed)) => match &mut changed.change {
            Some(
                pb::inventory_changed::Change::Full(inventory)
                | pb::inventory_changed::Change::Partial(inventory),
            ) => believable(&mut inventory.taken_at),
            None => {}
        },
        Some(Up::Hello(hello)) => {
            if let Some(inventory) = &mut hello.inventory {
                believable(&mut inventory.taken_at);
            }
        }
        _ => {}
    }
    if let Err(refusal) = link_rules::check_message(&message, now) {
        tracing::error!(message_id = %message.message_id, %refusal, "sending a message the gateway will refuse (an agent defect)");
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_stamped_by_a_wrong_clock_are_sent_with_a_believable_time() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let returned = |at: DateTime<Utc>| pb::OpenRequest {
            message_id: "m-1".into(),
            body: Some(pb::open_request::Body::ItemReturned(pb::ItemReturned {
                bay_id: "A1".into(),
                item: Some(common::Item {
                    item_id: "D-1".into(),
                    kind: common::ItemKind::Drive.into(),
                    attributes: None,
                }),
                returned_at: Some(timestamp(at)),
            })),
        };
        let sent_at = |message: pb::OpenRequest| match message.body {
            Some(pb::open_request::Body::ItemReturned(r)) => {
                from_timestamp(&r.returned_at.unwrap()).unwrap()
            }
            _ => unreachable!(),
        };
        let ahead = outgoing(returned(now + chrono::Duration::days(30)), now);
        assert_eq!(sent_at(ahead.clone()), now);
        assert_eq!(link_rules::check_message(&ahead, now), Ok(()));
        let ancient = outgoing(returned(now - chrono::Duration::days(400)), now);
        assert_eq!(link_rules::check_message(&ancient, now), Ok(()));
        let honest = now - chrono::Duration::hours(3);
        assert_eq!(sent_at(outgoing(returned(honest), now)), honest);
    }
}
