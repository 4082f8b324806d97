//! Conversions between the agent's plain types and the gateway contract's messages, in one
//! place. Guarantees: every outgoing message the agent builds goes through here, so the
//! contract's shapes (attributes' case matches the kind, EMPTY bays carry no item, failures
//! carry a reason) hold everywhere.

use chrono::{DateTime, Utc};
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::gateway::v1 as pb;

use crate::bays::{BayInfo, BayState, Inserted, ItemFacts, ItemInfo, ItemKind};

pub use sneakernet_runtime::wire::{from_duration, from_timestamp, timestamp};

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
        } => common::item_attributes::Kind::Drive(common::DriveAttributes {
            capacity_bytes: *capacity_bytes,
            content_package_id: content_package_id.clone().unwrap_or_default(),
            write_protected: *write_protected,
            remote_link: false,
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

/// A failure result.
pub fn failure(
    command_id: &str,
    reason: pb::FailureReason,
    message: impl Into<String>,
    bay_id: &str,
    item_id: &str,
    at: DateTime<Utc>,
) -> pb::CommandResult {
    pb::CommandResult {
        command_id: command_id.to_owned(),
        outcome: Some(pb::command_result::Outcome::Failure(pb::Failure {
            reason: reason as i32,
            message: message.into(),
            bay_id: bay_id.to_owned(),
            item_id: item_id.to_owned(),
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
