//! What a kiosk's answer to a command means for its order, decided here from the command
//! record alone: a lend (third instruction), a provision (fifth instruction), a wipe or a
//! release; a write-protect command's answer is decided in [`crate::write_protect`]. Here are the texts the user reads and the follow-up commands to send; the store
//! applies the decision in the event's transaction (`Store::apply_command`) and decides
//! nothing itself.

use chrono::{DateTime, Utc};
use sneakernet_proto::gateway::v1 as gateway;
use sneakernet_proto::orders::v1 as pb;

/// How soon a kiosk must answer the inventory request sent after a failed lend.
const INVENTORY_AFTER_FAILURE: chrono::Duration = chrono::Duration::minutes(5);
/// How long a kiosk has to release (unpin and wipe) a reservation's drive: it may be offline
/// for a while, and the command waits in the gateway's log until it is back.
const RELEASE_WITHIN: chrono::Duration = chrono::Duration::days(7);
/// How long a ready drive waits when the order's terms name no pickup window.
const DEFAULT_PICKUP_WINDOW: chrono::Duration = chrono::Duration::hours(24);

/// Where a command goes: a kiosk, or a drive's own remote link (only SetWriteProtect on that
/// drive; see sneakernet.gateway.v1.SendCommandRequest.drive_id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandTarget {
    /// A kiosk, by id.
    Kiosk(String),
    /// A drive's own link, by the drive's item id.
    Drive(String),
}

impl CommandTarget {
    /// The kiosk's id; empty for a drive.
    pub fn kiosk_id(&self) -> &str {
        match self {
            CommandTarget::Kiosk(kiosk_id) => kiosk_id,
            CommandTarget::Drive(_) => "",
        }
    }

    /// The drive's id; empty for a kiosk.
    pub fn drive_id(&self) -> &str {
        match self {
            CommandTarget::Kiosk(_) => "",
            CommandTarget::Drive(item_id) => item_id,
        }
    }
}

/// A command to send after an event or a request, queued in the outbox in its transaction.
#[derive(Clone, Debug)]
pub struct FollowUp {
    /// The kiosk (or the drive's link) to ask.
    pub target: CommandTarget,
    /// Its outbox key (one command per key, so a replayed event asks once).
    pub key: String,
    /// The command.
    pub command: gateway::CommandPayload,
    /// How long the kiosk has, from the event's time.
    pub within: chrono::Duration,
}

/// What a command's new state does to orders and units.
#[derive(Clone, Debug)]
pub enum CommandEffect {
    /// Nothing (not ours, or a state between).
    Nothing,
    /// The kiosk lent an item for the order: LENT (through DISPENSING if not yet marked).
    Lent {
        /// The order.
        order_id: String,
        /// The command, with its times.
        record: Box<gateway::CommandRecord>,
        /// What was lent.
        lent: gateway::LendResult,
        /// The reason shown for DISPENSING.
        handing_out: &'static str,
        /// The reason shown for LENT.
        take_item: String,
        /// The reason shown when the item is already back at another kiosk.
        returned_elsewhere: fn(&str) -> String,
    },
    /// The lend failed or expired: the order FAILED (if still waiting), its refund follows.
    LendFailed {
        /// The order.
        order_id: String,
        /// The kiosk that was to lend: only its own unit is marked.
        kiosk_id: String,
        /// Why, as the user reads it.
        reason: String,
        /// The item the kiosk could not hand out (a jammed bay): not lendable until the
        /// kiosk says so.
        not_ready_item: Option<String>,
        /// What to ask the kiosk: what it holds now (our view proved wrong), and to release
        /// a reservation's drive it could not hand out.
        follow_ups: Vec<FollowUp>,
    },
    /// A drive was wiped, or a reservation's drive released (unpinned and wiped): lendable
    /// again, blank.
    Wiped {
        /// The kiosk that wiped it: only its own unit changes.
        kiosk_id: String,
        /// The drive.
        item_id: String,
    },
    /// The kiosk provisioned and pinned a drive for the reservation: READY_FOR_PICKUP with that
    /// drive, if the order still waits for it; else the drive is released.
    Provisioned {
        /// The order.
        order_id: String,
        /// The kiosk.
        kiosk_id: String,
        /// The drive pinned, as the kiosk reported it.
        item: sneakernet_proto::common::v1::Item,
        /// The reason shown for READY_FOR_PICKUP.
        ready: String,
        /// Sent instead when the order no longer waits for a drive (cancelled meanwhile).
        release: FollowUp,
        /// What to send once the order is READY_FOR_PICKUP with the drive: the write
        /// protection its user asked meanwhile, if the drive does not have it (decided in
        /// [`crate::write_protect`]).
        then: fn(&crate::entity::order::Model) -> Option<FollowUp>,
    },
    /// Provisioning failed or the kiosk never got the command in time: CANCELLED (if still
    /// waiting), a full refund follows.
    ProvisionFailed {
        /// The order.
        order_id: String,
        /// Why, as the user reads it.
        reason: String,
    },
    /// A drive confirmed (or failed to change) the write protection a user asked
    /// (SetWriteProtect): decided in [`crate::write_protect::effect_of`].
    WriteProtect(crate::write_protect::Outcome),
}

/// The command that gives a reservation's pinned drive back to the kiosk's stock: unpinned and
/// wiped (a cancel, a no-show, a drive pinned for an order that no longer wants it).
pub fn release(kiosk_id: &str, order_id: &str, item_id: &str) -> FollowUp {
    FollowUp {
        target: CommandTarget::Kiosk(kiosk_id.to_owned()),
        key: release_key_prefix(order_id, item_id),
        command: gateway::CommandPayload {
            kind: Some(gateway::command_payload::Kind::Release(
                gateway::ReleaseCommand {
                    order_id: order_id.to_owned(),
                    item_id: item_id.to_owned(),
                },
            )),
        },
        within: RELEASE_WITHIN,
    }
}

/// What orders knows of the order a kiosk reports a drive pinned for (see
/// [`release_again`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinnedFor<'a> {
    /// No order of ours has that id: not ours to release.
    Unknown,
    /// The order, in its state, with the drive it holds (empty: none yet).
    Order {
        /// Its state.
        state: crate::domain::order::OrderState,
        /// The drive the order holds, if any.
        item_id: &'a str,
    },
}

/// A drive a kiosk's inventory still shows pinned for an order that no longer wants it (a
/// cancel, a no-show, a failed lend) whose release never landed: it expired while the kiosk
/// was away longer than [`RELEASE_WITHIN`], or the kiosk failed it. When the kiosk reports
/// its bays again (it reports them whenever it comes back) the release is sent again, under a
/// key of this report (`cursor`), so the drive does not stay pinned with nothing reconciling
/// it. Nothing is sent while an earlier release of that drive for that order is still within
/// its deadline (`release_pending`: it may be on its way, and the gateway delivers it when the
/// kiosk is back), nor for an order still waiting for its drive (provisioning: its result may
/// be on its way) or holding this very drive, nor for an order orders does not know.
pub fn release_again(
    kiosk_id: &str,
    pinned: &gateway::Bay,
    order: PinnedFor<'_>,
    release_pending: bool,
    cursor: i64,
) -> Option<FollowUp> {
    use crate::domain::order::OrderState as S;
    let item_id = pinned.item.as_ref().map(|item| item.item_id.as_str())?;
    let is_pinned = gateway::BayState::try_from(pinned.state) == Ok(gateway::BayState::Pinned);
    if !is_pinned || item_id.is_empty() || pinned.pinned_order_id.is_empty() || release_pending {
        return None;
    }
    let outlived = match order {
        PinnedFor::Unknown => false,
        PinnedFor::Order {
            state: S::Paid | S::Provisioning,
            ..
        } => false,
        PinnedFor::Order {
            state: S::ReadyForPickup | S::Dispensing | S::Lent,
            item_id: holds,
        } => holds != item_id,
        PinnedFor::Order { .. } => true,
    };
    outlived.then(|| {
        let mut again = release(kiosk_id, &pinned.pinned_order_id, item_id);
        again.key = format!("{}:again:{cursor}", again.key);
        again
    })
}

/// The outbox keys every release of `item_id` for `order_id` starts with: the first one's
/// ([`release`]) and those sent again ([`release_again`]).
pub fn release_key_prefix(order_id: &str, item_id: &str) -> String {
    format!("release:{order_id}:{item_id}")
}

/// Until when a drive that became ready at `at` waits for its user: the pickup window of the
/// order's terms (a day when they name none).
pub fn pickup_deadline(pricing: &pb::Pricing, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let window = pricing
        .pickup_window
        .as_ref()
        .and_then(sneakernet_runtime::wire::from_duration)
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .unwrap_or(DEFAULT_PICKUP_WINDOW);
    at.checked_add_signed(window)
}

/// What the user reads when the gateway refused a lend for good (it never reached the kiosk).
pub const NOT_ASKED_IN_TIME: &str =
    "The kiosk could not be asked in time. Your payment is being refunded.";

/// What the user reads while the kiosk prepares the reserved drive.
pub const PREPARING: &str = "Paid. The kiosk is preparing your drive.";

/// What the user reads when the reservation is cancelled at their request.
pub const CANCELLED: &str = "Cancelled as you asked. Everything you paid is being refunded.";

/// What the user reads when the pickup window passed.
pub fn expired_reason(kept: &str, refunded: &str) -> String {
    format!(
        "Not collected in time. The drive was released; {kept} is kept as the no-show fee and {refunded} refunded."
    )
}

/// What the user reads while the kiosk hands out a reserved drive.
pub const COLLECTING: &str = "The kiosk is handing out your reserved drive.";

/// What an order's user reads when its item came back at `kiosk_id`.
pub fn returned_reason(kiosk_id: &str) -> String {
    format!("Returned at kiosk {kiosk_id}. Settling the rental.")
}

/// How long a kiosk has to wipe a drive that came back writable.
const WIPE_WITHIN: chrono::Duration = chrono::Duration::days(1);

/// What an item coming back to a kiosk does, decided here; `Store::apply_return` stores it
/// (which order it closes is the store's lookup: the item's LENT order, wherever it was lent).
#[derive(Clone, Debug)]
pub struct ReturnEffect {
    /// Lendable at once; otherwise it waits for its wipe (or the kiosk's word on its bay).
    pub ready: bool,
    /// The wipe to ask the kiosk for: a drive that came back writable may hold anything.
    pub wipe: Option<FollowUp>,
    /// What the user of the order it was lent under reads.
    pub reason: String,
}

/// What `item` coming back to `kiosk_id` (the event at `cursor` of its log) does.
pub fn on_return(
    kiosk_id: &str,
    item: &sneakernet_proto::common::v1::Item,
    cursor: i64,
) -> ReturnEffect {
    let wipe = crate::store::fleet::needs_wipe(item).then(|| FollowUp {
        target: CommandTarget::Kiosk(kiosk_id.to_owned()),
        // One wipe per return event, so a replayed event asks once.
        key: format!("wipe:{}:{cursor}", item.item_id),
        command: gateway::CommandPayload {
            kind: Some(gateway::command_payload::Kind::Wipe(gateway::WipeCommand {
                item_id: item.item_id.clone(),
            })),
        },
        within: WIPE_WITHIN,
    });
    ReturnEffect {
        ready: crate::store::fleet::ready_on_return(item),
        wipe,
        reason: returned_reason(kiosk_id),
    }
}

/// What `record` (a command of ours in its new state) does.
pub fn effect_of(record: &gateway::CommandRecord) -> CommandEffect {
    let Some(kind) = record.payload.as_ref().and_then(|p| p.kind.as_ref()) else {
        return CommandEffect::Nothing;
    };
    let state = gateway::CommandState::try_from(record.state).unwrap_or_default();
    let result = record.result.as_ref().and_then(|r| r.outcome.as_ref());
    match kind {
        gateway::command_payload::Kind::Lend(lend) => {
            let order_id = lend.order_id.clone();
            match (state, result) {
                (
                    gateway::CommandState::Succeeded,
                    Some(gateway::command_result::Outcome::Lend(lent)),
                ) => CommandEffect::Lent {
                    order_id,
                    record: Box::new(record.clone()),
                    lent: lent.clone(),
                    handing_out: HANDING_OUT,
                    take_item: take_item(lent),
                    returned_elsewhere: returned_reason,
                },
                (gateway::CommandState::Failed, failure) => {
                    let (why, not_ready_item) = match failure {
                        Some(gateway::command_result::Outcome::Failure(f)) => (
                            describe_failure(f),
                            Some(f.item_id.clone()).filter(|id| !id.is_empty()),
                        ),
                        _ => ("The kiosk could not hand out an item.".to_owned(), None),
                    };
                    let ask = gateway::CommandPayload {
                        kind: Some(gateway::command_payload::Kind::RequestInventory(
                            gateway::RequestInventoryCommand {},
                        )),
                    };
                    let mut follow_ups = vec![FollowUp {
                        target: CommandTarget::Kiosk(record.kiosk_id.clone()),
                        key: format!("inventory-after:{}", record.command_id),
                        command: ask,
                        within: INVENTORY_AFTER_FAILURE,
                    }];
                    follow_ups.extend(release_reserved(record, lend));
                    CommandEffect::LendFailed {
                        order_id,
                        kiosk_id: record.kiosk_id.clone(),
                        reason: format!("{why} Your payment is being refunded."),
                        not_ready_item,
                        follow_ups,
                    }
                }
                (gateway::CommandState::Expired, _) => CommandEffect::LendFailed {
                    order_id,
                    kiosk_id: record.kiosk_id.clone(),
                    reason: "The kiosk did not hand out an item in time. Your payment is being refunded.".into(),
                    not_ready_item: None,
                    follow_ups: release_reserved(record, lend).into_iter().collect(),
                },
                _ => CommandEffect::Nothing,
            }
        }
        gateway::command_payload::Kind::Provision(provision) => {
            let order_id = provision.order_id.clone();
            match (state, result) {
                (
                    gateway::CommandState::Succeeded,
                    Some(gateway::command_result::Outcome::Provision(done)),
                ) => {
                    let Some(item) = done.item.clone() else {
                        return CommandEffect::Nothing;
                    };
                    CommandEffect::Provisioned {
                        release: release(&record.kiosk_id, &order_id, &done.item_id),
                        order_id,
                        kiosk_id: record.kiosk_id.clone(),
                        item,
                        ready: ready_reason(&record.kiosk_id, done),
                        then: crate::write_protect::after_provisioned,
                    }
                }
                (gateway::CommandState::Failed, failure) => {
                    let why = match failure {
                        Some(gateway::command_result::Outcome::Failure(f)) => {
                            describe_provision_failure(f)
                        }
                        _ => "The kiosk could not prepare your drive.",
                    };
                    CommandEffect::ProvisionFailed {
                        order_id,
                        reason: format!("{why} {REFUNDING_IN_FULL}"),
                    }
                }
                (gateway::CommandState::Expired, _) => CommandEffect::ProvisionFailed {
                    order_id,
                    reason: format!("{NOT_PROVISIONED_IN_TIME} {REFUNDING_IN_FULL}"),
                },
                _ => CommandEffect::Nothing,
            }
        }
        gateway::command_payload::Kind::Wipe(wipe) if state == gateway::CommandState::Succeeded => {
            CommandEffect::Wiped {
                kiosk_id: record.kiosk_id.clone(),
                item_id: wipe.item_id.clone(),
            }
        }
        gateway::command_payload::Kind::Release(release)
            if state == gateway::CommandState::Succeeded =>
        {
            CommandEffect::Wiped {
                kiosk_id: record.kiosk_id.clone(),
                item_id: release.item_id.clone(),
            }
        }
        gateway::command_payload::Kind::SetWriteProtect(command) => {
            crate::write_protect::effect_of(record, command)
                .map_or(CommandEffect::Nothing, CommandEffect::WriteProtect)
        }
        _ => CommandEffect::Nothing,
    }
}

/// A reservation's lend that failed leaves its drive pinned at the kiosk: release it.
fn release_reserved(
    record: &gateway::CommandRecord,
    lend: &gateway::LendCommand,
) -> Option<FollowUp> {
    match &lend.target {
        Some(gateway::lend_command::Target::ItemId(item_id)) => {
            Some(release(&record.kiosk_id, &lend.order_id, item_id))
        }
        _ => None,
    }
}

/// What the user reads when a reservation is paid back in full.
pub const REFUNDING_IN_FULL: &str =
    "Your reservation is cancelled and everything you paid is being refunded.";

/// What the user reads when the kiosk did not provision in time (offline, or never asked).
pub const NOT_PROVISIONED_IN_TIME: &str =
    "The kiosk was not reachable to prepare your drive in time.";

fn ready_reason(kiosk_id: &str, done: &gateway::ProvisionResult) -> String {
    let bay = if done.bay_id.is_empty() {
        String::new()
    } else {
        format!(" in bay {}", done.bay_id)
    };
    format!(
        "Your drive {} is ready at kiosk {kiosk_id}{bay}. Scan the kiosk to collect it before the pickup deadline.",
        done.item_id
    )
}

fn describe_provision_failure(failure: &gateway::Failure) -> &'static str {
    use gateway::FailureReason as R;
    match R::try_from(failure.reason).unwrap_or_default() {
        R::ChunkCorrupt | R::VerifyFailed => {
            "The content could not be copied intact onto a drive at the kiosk."
        }
        R::DriveFull => "The content does not fit on a drive of the capacity you chose.",
        R::NoFreeDrive => "The kiosk has no free drive of the capacity you chose any more.",
        R::DownloadFailed | R::CacheFull => "The kiosk could not download the content.",
        R::WriteFailed | R::WriteProtectFailed | R::BayFault => {
            "The kiosk's drive failed while being prepared."
        }
        R::DeadlineExceeded => "The kiosk could not prepare your drive in time.",
        _ => "The kiosk could not prepare your drive.",
    }
}

/// The reason shown while the kiosk hands the item out.
pub const HANDING_OUT: &str = "The kiosk is handing out your item.";

fn take_item(lent: &gateway::LendResult) -> String {
    let bay = if lent.bay_id.is_empty() {
        String::new()
    } else {
        format!(" from bay {}", lent.bay_id)
    };
    format!("Take your item {}{bay}.", lent.item_id)
}

fn describe_failure(failure: &gateway::Failure) -> String {
    use gateway::FailureReason as R;
    let what = match R::try_from(failure.reason).unwrap_or_default() {
        R::EjectJammed => "The kiosk's bay jammed while handing out your item.",
        R::NoMatchingItem => "The kiosk has no item of that type any more.",
        R::NotTaken => "The item was not taken from the bay.",
        R::BayFault => "The kiosk's bay reported a fault.",
        R::DeadlineExceeded => "The kiosk got the request too late.",
        _ => "The kiosk could not hand out an item.",
    };
    what.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lend(
        state: gateway::CommandState,
        outcome: Option<gateway::command_result::Outcome>,
    ) -> gateway::CommandRecord {
        gateway::CommandRecord {
            command_id: "c1".into(),
            kiosk_id: "K-1".into(),
            state: state.into(),
            payload: Some(gateway::CommandPayload {
                kind: Some(gateway::command_payload::Kind::Lend(gateway::LendCommand {
                    target: None,
                    order_id: "o1".into(),
                })),
            }),
            result: outcome.map(|outcome| gateway::CommandResult {
                outcome: Some(outcome),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_failed_lend_tells_the_user_why_and_asks_the_kiosk_what_it_holds() {
        let failure = gateway::Failure {
            reason: gateway::FailureReason::EjectJammed.into(),
            item_id: "D1".into(),
            ..Default::default()
        };
        let record = lend(
            gateway::CommandState::Failed,
            Some(gateway::command_result::Outcome::Failure(failure)),
        );
        let CommandEffect::LendFailed {
            reason,
            not_ready_item,
            follow_ups,
            ..
        } = effect_of(&record)
        else {
            panic!("not a failed lend");
        };
        let [follow_up] = follow_ups.as_slice() else {
            panic!("one follow-up for a walk-up lend: {follow_ups:?}");
        };
        assert_eq!(
            reason,
            "The kiosk's bay jammed while handing out your item. Your payment is being refunded."
        );
        assert_eq!(not_ready_item.as_deref(), Some("D1"));
        assert_eq!(follow_up.key, "inventory-after:c1");
        assert_eq!(follow_up.target, CommandTarget::Kiosk("K-1".into()));
    }

    #[test]
    fn an_expired_lend_asks_nothing_more_and_a_pending_one_does_nothing() {
        let expired = effect_of(&lend(gateway::CommandState::Expired, None));
        assert!(matches!(
            expired,
            CommandEffect::LendFailed {
                ref follow_ups,
                not_ready_item: None,
                ..
            } if follow_ups.is_empty()
        ));
        let pending = effect_of(&lend(gateway::CommandState::Acked, None));
        assert!(matches!(pending, CommandEffect::Nothing));
    }

    #[test]
    fn a_lend_names_the_item_and_its_bay() {
        let lent = gateway::LendResult {
            item_id: "D1".into(),
            bay_id: "B2".into(),
            ..Default::default()
        };
        let record = lend(
            gateway::CommandState::Succeeded,
            Some(gateway::command_result::Outcome::Lend(lent)),
        );
        let CommandEffect::Lent { take_item, .. } = effect_of(&record) else {
            panic!("not lent");
        };
        assert_eq!(take_item, "Take your item D1 from bay B2.");
    }

    fn provision(
        state: gateway::CommandState,
        outcome: Option<gateway::command_result::Outcome>,
    ) -> gateway::CommandRecord {
        gateway::CommandRecord {
            command_id: "c2".into(),
            kiosk_id: "K-1".into(),
            state: state.into(),
            payload: Some(gateway::CommandPayload {
                kind: Some(gateway::command_payload::Kind::Provision(
                    gateway::ProvisionCommand {
                        order_id: "o1".into(),
                        package_id: String::new(),
                        capacity_bytes: 1000,
                        write_protect: false,
                    },
                )),
            }),
            result: outcome.map(|outcome| gateway::CommandResult {
                outcome: Some(outcome),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_provisioned_drive_is_ready_for_its_order_or_released_for_nobody() {
        let done = gateway::ProvisionResult {
            item_id: "D7".into(),
            bay_id: "B1".into(),
            item: Some(sneakernet_proto::common::v1::Item {
                item_id: "D7".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let record = provision(
            gateway::CommandState::Succeeded,
            Some(gateway::command_result::Outcome::Provision(done)),
        );
        let CommandEffect::Provisioned {
            order_id,
            ready,
            release,
            ..
        } = effect_of(&record)
        else {
            panic!("not provisioned");
        };
        assert_eq!(order_id, "o1");
        assert!(ready.contains("D7") && ready.contains("bay B1"), "{ready}");
        let Some(gateway::command_payload::Kind::Release(released)) = release.command.kind else {
            panic!("a release");
        };
        assert_eq!(
            (released.order_id.as_str(), released.item_id.as_str()),
            ("o1", "D7")
        );
    }

    #[test]
    fn a_failed_or_expired_provision_cancels_with_a_reason_the_user_reads() {
        let corrupt = gateway::Failure {
            reason: gateway::FailureReason::ChunkCorrupt.into(),
            ..Default::default()
        };
        let failed = provision(
            gateway::CommandState::Failed,
            Some(gateway::command_result::Outcome::Failure(corrupt)),
        );
        let CommandEffect::ProvisionFailed { reason, .. } = effect_of(&failed) else {
            panic!("not failed");
        };
        assert!(
            reason.contains("intact") && reason.ends_with(REFUNDING_IN_FULL),
            "{reason}"
        );
        let expired = provision(gateway::CommandState::Expired, None);
        let CommandEffect::ProvisionFailed { reason, .. } = effect_of(&expired) else {
            panic!("not failed");
        };
        assert!(reason.starts_with(NOT_PROVISIONED_IN_TIME), "{reason}");
        assert!(matches!(
            effect_of(&provision(gateway::CommandState::Acked, None)),
            CommandEffect::Nothing
        ));
    }

    #[test]
    fn a_drive_still_pinned_for_a_finished_order_is_released_again_once_per_report() {
        use crate::domain::order::OrderState as S;
        let pinned = gateway::Bay {
            bay_id: "B1".into(),
            state: gateway::BayState::Pinned.into(),
            item: Some(sneakernet_proto::common::v1::Item {
                item_id: "D7".into(),
                ..Default::default()
            }),
            pinned_order_id: "o1".into(),
        };
        let order = |state, item_id| PinnedFor::Order { state, item_id };
        for finished in [S::Expired, S::Cancelled, S::Refunded, S::Failed, S::Closed] {
            let again = release_again("K-1", &pinned, order(finished, "D7"), false, 42)
                .unwrap_or_else(|| panic!("{finished:?}: released again"));
            assert_eq!(again.key, "release:o1:D7:again:42");
            assert_eq!(again.target, CommandTarget::Kiosk("K-1".into()));
            assert!(again.key.starts_with(&release_key_prefix("o1", "D7")));
        }
        // An earlier release still within its deadline, an order still waiting for its drive
        // or holding this one, an order we do not know: nothing.
        assert!(release_again("K-1", &pinned, order(S::Expired, "D7"), true, 42).is_none());
        for waiting in [S::Paid, S::Provisioning] {
            assert!(release_again("K-1", &pinned, order(waiting, ""), false, 42).is_none());
        }
        for holding in [S::ReadyForPickup, S::Dispensing, S::Lent] {
            assert!(release_again("K-1", &pinned, order(holding, "D7"), false, 42).is_none());
            assert!(
                release_again("K-1", &pinned, order(holding, "D8"), false, 42).is_some(),
                "{holding:?} holds another drive"
            );
        }
        assert!(release_again("K-1", &pinned, PinnedFor::Unknown, false, 42).is_none());
        let ready = gateway::Bay {
            state: gateway::BayState::Ready.into(),
            ..pinned.clone()
        };
        assert!(release_again("K-1", &ready, order(S::Expired, "D7"), false, 42).is_none());
    }

    #[test]
    fn a_drive_waits_the_terms_pickup_window_or_a_day() {
        let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let window = pb::Pricing {
            pickup_window: Some(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
            ..Default::default()
        };
        assert_eq!(
            pickup_deadline(&window, at),
            Some(at + chrono::Duration::hours(1))
        );
        assert_eq!(
            pickup_deadline(&pb::Pricing::default(), at),
            Some(at + chrono::Duration::hours(24))
        );
    }
}
