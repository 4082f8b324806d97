//! What a kiosk's message must be before the gateway uses it: the one set of rules the gateway
//! enforces at its edge and the kiosk agent checks before it sends (so an honest agent is
//! never refused).
//!
//! - Ids have their contract shapes ([`crate::ids`]): visible ASCII, bounded.
//! - Times a kiosk reports lie within [`MAX_REPORT_AGE`] before and [`CLOCK_TOLERANCE`] after
//!   the gateway's receive time. A kiosk that was offline may report old things (up to the
//!   age limit); nothing a kiosk reports can have happened in the gateway's future. These
//!   times are kept for the record only: times that set money come from the servers (see
//!   `orders.proto`, Order.lent_at and Order.returned_at).
//! - An inventory holds at most [`MAX_BAYS`] bays and encodes to at most
//!   [`MAX_INVENTORY_BYTES`], alone and merged with what the kiosk reported before, so the
//!   gateway's events always fit in [`MAX_EVENT_BYTES`].
//! - Free text (a failure's message) is bounded and holds no control characters.

// What a kiosk sent flows through here: no arithmetic that can panic or wrap.
#![deny(clippy::arithmetic_side_effects)]

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::common::v1 as common;
use crate::gateway::v1 as pb;
use crate::gateway::v1::open_request::Body as Up;
use crate::ids::{BayId, CommandId, ItemId, MessageId, OrderRef, PackageId};
use crate::wire::from_timestamp;

/// Most bays a kiosk may have, in one report and in all it reported.
pub const MAX_BAYS: usize = 1024;
/// Largest encoded inventory a kiosk may have, in one report and merged.
pub const MAX_INVENTORY_BYTES: usize = 256 * 1024;
/// Largest encoded event the gateway ever sends a subscriber. Subscribers set their decode
/// limit to at least this.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;
/// How far ahead of the gateway's clock a kiosk's time may be (clock skew the agent has not
/// corrected yet, and message transit).
pub const CLOCK_TOLERANCE: Duration = Duration::from_secs(5 * 60);
/// How old a kiosk's report may be when it arrives (a kiosk offline for weeks replays its
/// outbox). Matches the event log's retention promise.
pub const MAX_REPORT_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Longest agent version string.
pub const MAX_AGENT_VERSION: usize = 64;
/// Longest free text (a failure's message), in bytes.
pub const MAX_TEXT: usize = 1024;

/// Why a kiosk message is refused: the field and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The field's path in the message (`result.lend.item.item_id`).
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl Refusal {
    /// A refusal of `field` for `reason`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for Refusal {}

type Checked = Result<(), Refusal>;

/// The window a kiosk's reported time must fall in, around the receive time.
#[derive(Clone, Copy, Debug)]
pub struct TimeWindow {
    earliest: DateTime<Utc>,
    latest: DateTime<Utc>,
}

impl TimeWindow {
    /// Every valid time (for times that are informational only).
    pub const ALL_OF_TIME: Self = Self {
        earliest: DateTime::<Utc>::MIN_UTC,
        latest: DateTime::<Utc>::MAX_UTC,
    };

    /// The window around `received_at`: [`MAX_REPORT_AGE`] back, [`CLOCK_TOLERANCE`] ahead
    /// (each saturating at the ends of time).
    pub fn around(received_at: DateTime<Utc>) -> Self {
        let back = chrono::Duration::from_std(MAX_REPORT_AGE).unwrap_or(chrono::Duration::MAX);
        let ahead = chrono::Duration::from_std(CLOCK_TOLERANCE).unwrap_or(chrono::Duration::MAX);
        Self {
            earliest: received_at
                .checked_sub_signed(back)
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
            latest: received_at
                .checked_add_signed(ahead)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        }
    }

    /// `at` moved into the window (what an agent sends for a time its clock got wrong).
    pub fn clamp(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        at.clamp(self.earliest, self.latest)
    }

    /// Checks an optional reported time; absent is fine (the server's time is used).
    pub fn check(&self, field: &str, at: Option<&prost_types::Timestamp>) -> Checked {
        let Some(at) = at else { return Ok(()) };
        let Some(time) = from_timestamp(at) else {
            return Err(Refusal::new(field, "is not a valid timestamp"));
        };
        if time > self.latest {
            return Err(Refusal::new(
                field,
                format!(
                    "{time} is ahead of the gateway's clock by more than {}s",
                    CLOCK_TOLERANCE.as_secs()
                ),
            ));
        }
        if time < self.earliest {
            return Err(Refusal::new(
                field,
                format!(
                    "{time} is older than {} days",
                    MAX_REPORT_AGE.as_secs() / 86_400
                ),
            ));
        }
        Ok(())
    }
}

fn id(field: &str, raw: &str, parse: fn(&str) -> Result<(), String>) -> Checked {
    parse(raw).map_err(|reason| Refusal::new(field, reason))
}

fn optional_id(field: &str, raw: &str, parse: fn(&str) -> Result<(), String>) -> Checked {
    if raw.is_empty() {
        Ok(())
    } else {
        id(field, raw, parse)
    }
}

fn item_id(raw: &str) -> Result<(), String> {
    ItemId::parse(raw).map(drop)
}
fn bay_id(raw: &str) -> Result<(), String> {
    BayId::parse(raw).map(drop)
}
fn message_id(raw: &str) -> Result<(), String> {
    MessageId::parse(raw).map(drop)
}
fn command_id(raw: &str) -> Result<(), String> {
    CommandId::parse(raw).map(drop)
}
fn package_id(raw: &str) -> Result<(), String> {
    PackageId::parse(raw).map(drop)
}
fn order_ref(raw: &str) -> Result<(), String> {
    OrderRef::parse(raw).map(drop)
}

fn text(field: &str, raw: &str, max: usize) -> Checked {
    if raw.len() > max {
        return Err(Refusal::new(field, format!("must be at most {max} bytes")));
    }
    if raw.chars().any(char::is_control) {
        return Err(Refusal::new(field, "must not hold control characters"));
    }
    Ok(())
}

/// A message's id: required on results, returns and inventory changes (a well-formed one is
/// what a Receipt can name).
pub fn check_message_id(raw: &str) -> Checked {
    id("message_id", raw, message_id)
}

/// Checks one kiosk message, received at `received_at`. Does not check cross-message limits
/// (a merged inventory): see [`check_merged_inventory`].
pub fn check_message(message: &pb::OpenRequest, received_at: DateTime<Utc>) -> Checked {
    let window = TimeWindow::around(received_at);
    let Some(body) = &message.body else {
        return Err(Refusal::new("body", "must be set"));
    };
    let durable = matches!(
        body,
        Up::Result(_) | Up::ItemReturned(_) | Up::InventoryChanged(_)
    );
    // Durable messages need an id a Receipt can name; others may carry one, well-formed.
    if durable || !message.message_id.is_empty() {
        check_message_id(&message.message_id)?;
    }
    match body {
        Up::Hello(hello) => check_hello(hello),
        Up::Heartbeat(heartbeat) => {
            // A heartbeat's time only tells the skew; any valid timestamp will do.
            match &heartbeat.sent_at {
                Some(at) if from_timestamp(at).is_none() => Err(Refusal::new(
                    "heartbeat.sent_at",
                    "is not a valid timestamp",
                )),
                _ => Ok(()),
            }
        }
        Up::Ack(ack) => id("ack.command_id", &ack.command_id, command_id),
        Up::Result(result) => check_result(result, &window),
        Up::Progress(progress) => check_progress(progress),
        Up::ItemReturned(returned) => check_item_returned(returned, &window),
        Up::InventoryChanged(changed) => match &changed.change {
            Some(pb::inventory_changed::Change::Full(inventory)) => {
                check_inventory("inventory_changed.full", inventory, &window)
            }
            Some(pb::inventory_changed::Change::Partial(inventory)) => {
                check_inventory("inventory_changed.partial", inventory, &window)
            }
            None => Err(Refusal::new(
                "inventory_changed.change",
                "must be full or partial",
            )),
        },
        Up::RenewToken(renew) => check_renew_token(renew),
    }
}

/// The longest access token a renewal may carry: ours are a few hundred bytes.
pub const MAX_ACCESS_TOKEN: usize = 8 * 1024;

/// Checks a token renewal's shape; whether the token is valid is the gateway's to judge.
pub fn check_renew_token(renew: &pb::RenewToken) -> Checked {
    if renew.access_token.is_empty() {
        return Err(Refusal::new("renew_token.access_token", "must be set"));
    }
    if renew.access_token.len() > MAX_ACCESS_TOKEN {
        return Err(Refusal::new(
            "renew_token.access_token",
            format!("must be at most {MAX_ACCESS_TOKEN} bytes"),
        ));
    }
    Ok(())
}

/// Checks Hello (the link's first message). Its inventory's taken_at must be a valid time but
/// may lie anywhere: Hello comes before the kiosk learns the gateway's clock (a kiosk whose
/// clock drifted while it was off must still be able to connect and be corrected), and
/// nothing uses that time.
pub fn check_hello(hello: &pb::Hello) -> Checked {
    check_hello_header(hello)?;
    let Some(inventory) = &hello.inventory else {
        return Err(Refusal::new("hello.inventory", "must be set"));
    };
    check_inventory("hello.inventory", inventory, &TimeWindow::ALL_OF_TIME)
}

/// Checks the Hello of a drive's own remote link module: as a kiosk's, but a drive holds no
/// bays, so its Hello carries no inventory.
pub fn check_drive_hello(hello: &pb::Hello) -> Checked {
    check_hello_header(hello)?;
    match hello.inventory {
        Some(_) => Err(Refusal::new(
            "hello.inventory",
            "must be unset: a drive's link reports no inventory",
        )),
        None => Ok(()),
    }
}

/// What every Hello must hold: the agent's version and, when any, its last finished command.
fn check_hello_header(hello: &pb::Hello) -> Checked {
    if hello.agent_version.is_empty() {
        return Err(Refusal::new(
            "hello.agent_version",
            format!("must be 1 to {MAX_AGENT_VERSION} characters"),
        ));
    }
    text(
        "hello.agent_version",
        &hello.agent_version,
        MAX_AGENT_VERSION,
    )?;
    optional_id(
        "hello.last_finished_command_id",
        &hello.last_finished_command_id,
        command_id,
    )
}

/// Checks an inventory report on its own: bays unique and well-formed, within the limits.
pub fn check_inventory(field: &str, inventory: &pb::Inventory, window: &TimeWindow) -> Checked {
    if inventory.bays.len() > MAX_BAYS {
        return Err(Refusal::new(
            format!("{field}.bays"),
            format!("at most {MAX_BAYS} bays"),
        ));
    }
    window.check(&format!("{field}.taken_at"), inventory.taken_at.as_ref())?;
    let mut seen = HashSet::new();
    for (i, bay) in inventory.bays.iter().enumerate() {
        let at = format!("{field}.bays[{i}]");
        id(&format!("{at}.bay_id"), &bay.bay_id, bay_id)?;
        if !seen.insert(bay.bay_id.as_str()) {
            return Err(Refusal::new(
                format!("{at}.bay_id"),
                format!("{} is listed twice", bay.bay_id),
            ));
        }
        let state = pb::BayState::try_from(bay.state).unwrap_or_default();
        if state == pb::BayState::Unspecified {
            return Err(Refusal::new(format!("{at}.state"), "must be a known state"));
        }
        match (&bay.item, state) {
            (Some(_), pb::BayState::Empty) => {
                return Err(Refusal::new(
                    format!("{at}.item"),
                    "must be unset when EMPTY",
                ));
            }
            (Some(item), _) => check_item(&format!("{at}.item"), item)?,
            // A faulty bay, or one holding something the kiosk could not identify, may not
            // say what it holds; a bay that offers, prepares or keeps an item must.
            (None, pb::BayState::Empty | pb::BayState::Fault | pb::BayState::Quarantined) => {}
            (None, _) => {
                return Err(Refusal::new(
                    format!("{at}.item"),
                    "must be set when the bay is READY, BUSY or PINNED",
                ));
            }
        }
        if state == pb::BayState::Pinned {
            id(
                &format!("{at}.pinned_order_id"),
                &bay.pinned_order_id,
                order_ref,
            )?;
        } else if !bay.pinned_order_id.is_empty() {
            return Err(Refusal::new(
                format!("{at}.pinned_order_id"),
                "must be empty unless the bay is PINNED",
            ));
        }
    }
    if prost::Message::encoded_len(inventory) > MAX_INVENTORY_BYTES {
        return Err(Refusal::new(
            field,
            format!("encodes to more than {MAX_INVENTORY_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// Checks what a kiosk holds after a partial report was merged into what it reported before:
/// the same bounds as one report, so no kiosk grows its inventory without end.
pub fn check_merged_inventory(merged: &pb::Inventory) -> Checked {
    if merged.bays.len() > MAX_BAYS {
        return Err(Refusal::new(
            "inventory_changed.partial",
            format!("would give the kiosk more than {MAX_BAYS} bays"),
        ));
    }
    if prost::Message::encoded_len(merged) > MAX_INVENTORY_BYTES {
        return Err(Refusal::new(
            "inventory_changed.partial",
            format!("would grow the kiosk's inventory past {MAX_INVENTORY_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// Checks an item as a kiosk identified it.
pub fn check_item(field: &str, item: &common::Item) -> Checked {
    id(&format!("{field}.item_id"), &item.item_id, item_id)?;
    let kind = common::ItemKind::try_from(item.kind).unwrap_or_default();
    if kind == common::ItemKind::Unspecified {
        return Err(Refusal::new(
            format!("{field}.kind"),
            "must be a known kind",
        ));
    }
    let attributes = item.attributes.as_ref().and_then(|a| a.kind.as_ref());
    match (kind, attributes) {
        (_, None) => Ok(()),
        (common::ItemKind::Drive, Some(common::item_attributes::Kind::Drive(drive))) => {
            optional_id(
                &format!("{field}.attributes.drive.content_package_id"),
                &drive.content_package_id,
                package_id,
            )
        }
        (common::ItemKind::PowerBank, Some(common::item_attributes::Kind::PowerBank(bank))) => {
            if bank.charge_percent > 100 {
                Err(Refusal::new(
                    format!("{field}.attributes.power_bank.charge_percent"),
                    "must be 0 to 100",
                ))
            } else {
                Ok(())
            }
        }
        _ => Err(Refusal::new(
            format!("{field}.attributes"),
            "must match the item's kind",
        )),
    }
}

fn check_item_returned(returned: &pb::ItemReturned, window: &TimeWindow) -> Checked {
    id("item_returned.bay_id", &returned.bay_id, bay_id)?;
    let Some(item) = &returned.item else {
        return Err(Refusal::new("item_returned.item", "must be set"));
    };
    check_item("item_returned.item", item)?;
    window.check("item_returned.returned_at", returned.returned_at.as_ref())
}

fn check_progress(progress: &pb::Progress) -> Checked {
    id("progress.command_id", &progress.command_id, command_id)?;
    if progress.bytes_total > 0 && progress.bytes_done > progress.bytes_total {
        return Err(Refusal::new(
            "progress.bytes_done",
            "must not exceed bytes_total",
        ));
    }
    if pb::ProgressPhase::try_from(progress.phase).unwrap_or_default()
        == pb::ProgressPhase::Unspecified
    {
        return Err(Refusal::new("progress.phase", "must be a known phase"));
    }
    Ok(())
}

fn check_result(result: &pb::CommandResult, window: &TimeWindow) -> Checked {
    use pb::command_result::Outcome;
    id("result.command_id", &result.command_id, command_id)?;
    window.check("result.finished_at", result.finished_at.as_ref())?;
    let Some(outcome) = &result.outcome else {
        return Err(Refusal::new("result.outcome", "must be set"));
    };
    let item = |field: &str, item: Option<&common::Item>| match item {
        Some(item) => check_item(field, item),
        None => Ok(()),
    };
    match outcome {
        Outcome::Lend(lend) => {
            id("result.lend.item_id", &lend.item_id, item_id)?;
            optional_id("result.lend.bay_id", &lend.bay_id, bay_id)?;
            item("result.lend.item", lend.item.as_ref())
        }
        Outcome::Provision(provision) => {
            id("result.provision.item_id", &provision.item_id, item_id)?;
            optional_id("result.provision.bay_id", &provision.bay_id, bay_id)?;
            item("result.provision.item", provision.item.as_ref())
        }
        Outcome::SetWriteProtect(set) => {
            id("result.set_write_protect.item_id", &set.item_id, item_id)
        }
        Outcome::Wipe(wipe) => id("result.wipe.item_id", &wipe.item_id, item_id),
        Outcome::ForceEject(eject) => {
            id("result.force_eject.bay_id", &eject.bay_id, bay_id)?;
            optional_id("result.force_eject.item_id", &eject.item_id, item_id)
        }
        Outcome::RequestInventory(reported) => match &reported.inventory {
            Some(inventory) => {
                check_inventory("result.request_inventory.inventory", inventory, window)
            }
            None => Err(Refusal::new(
                "result.request_inventory.inventory",
                "must be set",
            )),
        },
        Outcome::Release(release) => id("result.release.item_id", &release.item_id, item_id),
        Outcome::Failure(failure) => {
            if pb::FailureReason::try_from(failure.reason).unwrap_or_default()
                == pb::FailureReason::Unspecified
            {
                return Err(Refusal::new(
                    "result.failure.reason",
                    "must be a known reason",
                ));
            }
            text("result.failure.message", &failure.message, MAX_TEXT)?;
            optional_id("result.failure.bay_id", &failure.bay_id, bay_id)?;
            optional_id("result.failure.item_id", &failure.item_id, item_id)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::timestamp;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn drive(id: &str) -> common::Item {
        common::Item {
            item_id: id.into(),
            kind: common::ItemKind::Drive.into(),
            attributes: None,
        }
    }

    fn returned(item: common::Item, at: Option<prost_types::Timestamp>) -> pb::OpenRequest {
        pb::OpenRequest {
            message_id: "m-1".into(),
            body: Some(Up::ItemReturned(pb::ItemReturned {
                bay_id: "A1".into(),
                item: Some(item),
                returned_at: at,
            })),
        }
    }

    fn lend_result(finished_at: prost_types::Timestamp) -> pb::OpenRequest {
        pb::OpenRequest {
            message_id: "m-2".into(),
            body: Some(Up::Result(pb::CommandResult {
                command_id: "c-1".into(),
                outcome: Some(pb::command_result::Outcome::Lend(pb::LendResult {
                    item_id: "D-1".into(),
                    bay_id: "A1".into(),
                    item: Some(drive("D-1")),
                })),
                finished_at: Some(finished_at),
            })),
        }
    }

    #[test]
    fn times_far_from_the_gateways_clock_are_refused_naming_the_field() {
        let ok = timestamp(now() - chrono::Duration::days(1));
        assert_eq!(check_message(&lend_result(ok), now()), Ok(()));
        // The year 262142: valid for chrono, absurd for a kiosk.
        let far = prost_types::Timestamp {
            seconds: 8_210_266_833_599,
            nanos: 0,
        };
        let refused = check_message(&lend_result(far), now()).unwrap_err();
        assert_eq!(refused.field, "result.finished_at");
        assert!(refused.reason.contains("ahead"), "{refused}");
        let month_ahead = timestamp(now() + chrono::Duration::days(30));
        let refused = check_message(&returned(drive("D-1"), Some(month_ahead)), now()).unwrap_err();
        assert_eq!(refused.field, "item_returned.returned_at");
        let ancient = timestamp(now() - chrono::Duration::days(31));
        assert!(check_message(&returned(drive("D-1"), Some(ancient)), now()).is_err());
        let malformed = prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: -5,
        };
        assert_eq!(
            check_message(&returned(drive("D-1"), Some(malformed)), now())
                .unwrap_err()
                .reason,
            "is not a valid timestamp"
        );
        assert_eq!(check_message(&returned(drive("D-1"), None), now()), Ok(()));
    }

    #[test]
    fn ids_with_control_characters_are_refused_wherever_they_appear() {
        let refused = check_message(&returned(drive("D-\u{0}1"), None), now()).unwrap_err();
        assert_eq!(refused.field, "item_returned.item.item_id");
        let mut message = returned(drive("D-1"), None);
        message.message_id = "m\n1".into();
        assert_eq!(
            check_message(&message, now()).unwrap_err().field,
            "message_id"
        );
        message.message_id.clear();
        assert_eq!(
            check_message(&message, now()).unwrap_err().field,
            "message_id",
            "a durable message needs an id a receipt can name"
        );
    }

    #[test]
    fn inventories_are_bounded_alone_and_merged() {
        let bay = |n: usize| pb::Bay {
            bay_id: format!("B{n}"),
            state: pb::BayState::Ready.into(),
            item: Some(drive(&format!("D-{n}"))),
            pinned_order_id: String::new(),
        };
        let window = TimeWindow::around(now());
        let full = pb::Inventory {
            bays: (0..MAX_BAYS).map(bay).collect(),
            taken_at: None,
        };
        assert_eq!(check_inventory("i", &full, &window), Ok(()));
        assert_eq!(check_merged_inventory(&full), Ok(()));
        let mut over = full.clone();
        over.bays.push(bay(MAX_BAYS));
        assert_eq!(
            check_inventory("i", &over, &window).unwrap_err().field,
            "i.bays"
        );
        assert!(check_merged_inventory(&over).is_err());
        let mut twice = full;
        twice.bays[1].bay_id = "B0".into();
        assert!(
            check_inventory("i", &twice, &window)
                .unwrap_err()
                .reason
                .contains("twice")
        );
        let pinned = pb::Inventory {
            bays: vec![pb::Bay {
                state: pb::BayState::Pinned.into(),
                ..bay(1)
            }],
            taken_at: None,
        };
        assert_eq!(
            check_inventory("i", &pinned, &window).unwrap_err().field,
            "i.bays[0].pinned_order_id"
        );
    }

    #[test]
    fn hello_must_carry_a_version_and_a_sane_inventory() {
        let mut hello = pb::Hello {
            agent_version: "1.0.0".into(),
            inventory: Some(pb::Inventory::default()),
            last_finished_command_id: String::new(),
        };
        assert_eq!(check_hello(&hello), Ok(()));
        hello.inventory = Some(pb::Inventory {
            bays: vec![],
            taken_at: Some(timestamp(now() + chrono::Duration::days(400))),
        });
        assert_eq!(
            check_hello(&hello),
            Ok(()),
            "a kiosk whose clock drifted can still say Hello and be corrected"
        );
        hello.inventory = None;
        assert_eq!(check_hello(&hello).unwrap_err().field, "hello.inventory");
        hello.agent_version.clear();
        assert_eq!(
            check_hello(&hello).unwrap_err().field,
            "hello.agent_version"
        );
    }

    #[test]
    fn a_drives_hello_carries_a_version_and_no_inventory() {
        let mut hello = pb::Hello {
            agent_version: "1.0.0".into(),
            inventory: None,
            last_finished_command_id: "C-1".into(),
        };
        assert_eq!(check_drive_hello(&hello), Ok(()));
        hello.inventory = Some(pb::Inventory::default());
        assert_eq!(
            check_drive_hello(&hello).unwrap_err().field,
            "hello.inventory"
        );
        hello.inventory = None;
        hello.last_finished_command_id = "C 1".into();
        assert_eq!(
            check_drive_hello(&hello).unwrap_err().field,
            "hello.last_finished_command_id"
        );
    }

    proptest::proptest! {
        /// Whatever seconds and nanos a kiosk sends, checking never panics, and a time it
        /// accepts is inside the window.
        #[test]
        fn any_timestamp_is_checked_without_panicking(seconds: i64, nanos: i32) {
            let at = prost_types::Timestamp { seconds, nanos };
            let window = TimeWindow::around(now());
            if window.check("t", Some(&at)).is_ok() {
                let time = from_timestamp(&at).unwrap();
                proptest::prop_assert_eq!(window.clamp(time), time);
            }
            let _ = check_message(&returned(drive("D-1"), Some(at)), now());
        }
    }
}
