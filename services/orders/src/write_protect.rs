//! SetWriteProtect: the user turns their drive's write protection on or off (orders.proto).
//! Where the change goes depends on where the drive is:
//!
//! - PAID or PROVISIONING (a reservation; no drive yet): the wish is recorded on the order;
//!   once the kiosk reports the drive ready, a SetWriteProtect follows if the drive does not
//!   have it ([`after_provisioned`]).
//! - READY_FOR_PICKUP: a SetWriteProtect naming the pinned drive goes to the kiosk, which
//!   applies it before it hands the drive out (commands reach a kiosk oldest first, so before
//!   the lend of a pickup that follows).
//! - LENT: the drive's own remote link, when it has one (SendCommandRequest.drive_id);
//!   "NO_REMOTE_LINK" when it has none.
//! - DISPENSING, and a walk-up rental's PAID: the drive is leaving the kiosk now and which
//!   drive it is, with or without a link, is known only once it is lent; ABORTED, to be
//!   asked again once the order is LENT. (The contract names PAID, PROVISIONING and
//!   READY_FOR_PICKUP as "before the drive leaves"; a walk-up rental's lend already carries
//!   the write protection chosen with CreateRental, and a reservation's PAID is the
//!   provision's, not a lend's.)
//! - past LENT (RETURNED, CLOSED, FAILED, CANCELLED, EXPIRED, REFUNDED): "ORDER_FINISHED".
//!
//! Asking for what the drive has and nothing else is on its way answers `applied`; asking
//! again for what is already on its way sends nothing more. The command's result comes back
//! through the gateway's event log ([`effect_of`]): the confirmed setting shows on the order
//! (Order.write_protected, with a change WatchOrder streams); a failure leaves it, and the
//! order's reason says what happened.

use prost::Message;
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::gateway::v1 as gateway;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_runtime::{PreconditionViolation, UserId};

use crate::domain::order::{OrderKind, OrderState};
use crate::entity::order;
use crate::error::OrdersError;
use crate::flows::{Flows, violation};
use crate::ids::OrderId;
use crate::lending::{CommandTarget, FollowUp};
use crate::store::StoreError;
use crate::store::orders::kind_and_state;

/// How often a request decided on a read that a concurrent change overtook is decided again.
const TRIES: u32 = 3;
/// How long a kiosk has to apply a change to a drive in its bay.
const KIOSK_WITHIN: chrono::Duration = chrono::Duration::days(1);
/// How long a drive on the road has to confirm: it may be out of coverage for a while, and
/// the command waits in the gateway's log until its link is back (at most a week ahead).
const DRIVE_WITHIN: chrono::Duration = chrono::Duration::days(3);
/// The idempotency keys of write-protect commands start with this, then the order's id.
const KEY_PREFIX: &str = "write-protect:";

/// SetWriteProtect's input, checked at the edge.
#[derive(Clone, Debug)]
pub struct WriteProtectAsk {
    /// The order whose drive to change.
    pub order_id: OrderId,
    /// True for on.
    pub on: bool,
}

/// What a drive's answer to a write-protect command means for its order (see
/// [`crate::lending::CommandEffect::WriteProtect`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The order that asked.
    pub order_id: String,
    /// The drive.
    pub item_id: String,
    /// The setting asked.
    pub asked: bool,
    /// The drive's write protection now, when it confirmed; `None` when it failed.
    pub confirmed: Option<bool>,
    /// What the user reads.
    pub reason: String,
}

/// What a request does, decided from the order alone.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Decision {
    /// FAILED_PRECONDITION with these.
    Refuse(Vec<PreconditionViolation>),
    /// The drive is leaving the kiosk now: ask again once it is lent.
    Leaving,
    /// The drive has it and nothing else is on its way.
    Applied,
    /// It is already on its way (or already the wish for a drive being prepared).
    OnItsWay,
    /// No drive yet: record the wish for when it is ready.
    Record,
    /// Record the wish and send it there.
    Send(CommandTarget),
}

fn decide(current: &order::Model, kind: OrderKind, state: OrderState, on: bool) -> Decision {
    let subject = format!("orders/{}", current.order_id);
    let mut refusals = Vec::new();
    // An unreadable stored choice reads as empty: no drive.
    let choice = pb::ItemChoice::decode(current.choice.as_slice()).unwrap_or_default();
    let is_drive = choice
        .spec
        .as_ref()
        .and_then(|s| s.item_type.as_ref())
        .is_some_and(|t| t.kind == i32::from(common::ItemKind::Drive));
    if !is_drive {
        refusals.push(violation(
            "NOT_A_DRIVE",
            subject.clone(),
            "Only drives have write protection.",
        ));
    }
    let finished = matches!(
        state,
        OrderState::Returned
            | OrderState::Closed
            | OrderState::Failed
            | OrderState::Cancelled
            | OrderState::Expired
            | OrderState::Refunded
    );
    if finished {
        refusals.push(violation(
            "ORDER_FINISHED",
            subject.clone(),
            "This order is finished; its drive can no longer be changed.",
        ));
    }
    if state == OrderState::Lent && is_drive && !current.remote_link {
        refusals.push(violation(
            "NO_REMOTE_LINK",
            subject,
            "Your drive has no remote link, so its write protection can be changed only when it is back in a kiosk.",
        ));
    }
    if !refusals.is_empty() {
        return Decision::Refuse(refusals);
    }
    match (kind, state) {
        (OrderKind::Reservation, OrderState::Paid | OrderState::Provisioning) => {
            let wanted = choice.spec.as_ref().is_some_and(|s| s.write_protect);
            if current.write_protect_wanted.unwrap_or(wanted) == on {
                Decision::OnItsWay
            } else {
                Decision::Record
            }
        }
        (_, OrderState::ReadyForPickup | OrderState::Lent) => {
            let wanted = current
                .write_protect_wanted
                .unwrap_or(current.write_protected);
            if wanted != on {
                Decision::Send(if state == OrderState::Lent {
                    CommandTarget::Drive(current.item_id.clone())
                } else {
                    CommandTarget::Kiosk(current.kiosk_id.clone())
                })
            } else if current.write_protected == on {
                Decision::Applied
            } else {
                Decision::OnItsWay
            }
        }
        _ => Decision::Leaving,
    }
}

impl Flows {
    /// SetWriteProtect for `owner`'s order (`None`: an operator's request, for any order, as
    /// support does for a renter who calls): the order after the request, and whether the
    /// drive already has the setting.
    pub async fn set_write_protect(
        &self,
        owner: Option<UserId>,
        ask: WriteProtectAsk,
    ) -> Result<(order::Model, bool), OrdersError> {
        for _ in 0..TRIES {
            let current = match &owner {
                Some(user) => self.own_order(user, &ask.order_id).await?,
                None => self
                    .store
                    .order(&ask.order_id.to_string())
                    .await?
                    .ok_or_else(|| OrdersError::OrderNotFound(ask.order_id.to_string()))?,
            };
            let (kind, state) = kind_and_state(&current)?;
            let (reason, command) = match decide(&current, kind, state, ask.on) {
                Decision::Refuse(violations) => {
                    return Err(OrdersError::refused(violations, None));
                }
                Decision::Leaving => {
                    return Err(OrdersError::Raced(
                        "the kiosk is handing out the drive now; ask again once it is lent".into(),
                    ));
                }
                Decision::Applied => return Ok((current, true)),
                Decision::OnItsWay => return Ok((current, false)),
                Decision::Record => (when_ready_reason(ask.on), None),
                Decision::Send(target) => {
                    let within = match target {
                        CommandTarget::Kiosk(_) => KIOSK_WITHIN,
                        CommandTarget::Drive(_) => DRIVE_WITHIN,
                    };
                    let reason = on_its_way_reason(&target, ask.on);
                    (reason, Some(command(&current, target, ask.on, within)))
                }
            };
            match self
                .store
                .want_write_protect(
                    &current.order_id,
                    current.version,
                    ask.on,
                    &reason,
                    command.as_ref(),
                    self.now(),
                )
                .await
            {
                Ok(wanting) => {
                    if command.is_some() {
                        self.wake.notify_one();
                    }
                    return Ok((wanting, false));
                }
                Err(StoreError::Raced(_)) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        Err(OrdersError::Raced(
            "the order kept changing; try again".into(),
        ))
    }
}

/// The command carrying `on` to `target` for the order as it is now (its version makes the
/// key unique per decision).
fn command(
    current: &order::Model,
    target: CommandTarget,
    on: bool,
    within: chrono::Duration,
) -> FollowUp {
    FollowUp {
        target,
        key: format!("{KEY_PREFIX}{}:{}", current.order_id, current.version),
        command: gateway::CommandPayload {
            kind: Some(gateway::command_payload::Kind::SetWriteProtect(
                gateway::SetWriteProtectCommand {
                    item_id: current.item_id.clone(),
                    on,
                },
            )),
        },
        within,
    }
}

/// The reservation just became READY_FOR_PICKUP with its drive: the write protection its user
/// asked while it was being prepared goes to the kiosk, if the drive does not have it.
pub fn after_provisioned(ready: &order::Model) -> Option<FollowUp> {
    let wanted = ready.write_protect_wanted?;
    (wanted != ready.write_protected).then(|| {
        command(
            ready,
            CommandTarget::Kiosk(ready.kiosk_id.clone()),
            wanted,
            KIOSK_WITHIN,
        )
    })
}

/// What a write-protect command of ours in its new state means; `None` when nothing (a state
/// between, or not an order's command).
pub fn effect_of(
    record: &gateway::CommandRecord,
    command: &gateway::SetWriteProtectCommand,
) -> Option<Outcome> {
    let order_id = order_of_key(&record.idempotency_key)?;
    let state = gateway::CommandState::try_from(record.state).unwrap_or_default();
    let result = record.result.as_ref().and_then(|r| r.outcome.as_ref());
    let item_id = command.item_id.clone();
    let outcome = |confirmed: Option<bool>, reason: String| Outcome {
        order_id: order_id.to_owned(),
        item_id: item_id.clone(),
        asked: command.on,
        confirmed,
        reason,
    };
    match (state, result) {
        (
            gateway::CommandState::Succeeded,
            Some(gateway::command_result::Outcome::SetWriteProtect(done)),
        ) => Some(outcome(
            Some(done.write_protected),
            confirmed_reason(&command.item_id, done.write_protected),
        )),
        (gateway::CommandState::Failed, failure) => {
            let why = match failure {
                Some(gateway::command_result::Outcome::Failure(f)) => describe_failure(f),
                _ => "it reported a failure",
            };
            Some(outcome(None, failed_reason(&command.item_id, why)))
        }
        (gateway::CommandState::Expired, _) => Some(outcome(
            None,
            failed_reason(&command.item_id, "it did not confirm in time"),
        )),
        _ => None,
    }
}

/// A write-protect command of an order that the gateway refused for good (it never reaches
/// the drive): the wish fails, and the user reads why. `None` for any other outbox row.
pub fn never_sent(row: &crate::entity::outbox::Model) -> Option<Outcome> {
    let payload = gateway::CommandPayload::decode(row.payload.as_slice()).ok()?;
    let Some(gateway::command_payload::Kind::SetWriteProtect(command)) = payload.kind else {
        return None;
    };
    let order_id = order_of_key(&row.idempotency_key)?;
    Some(Outcome {
        order_id: order_id.to_owned(),
        item_id: command.item_id.clone(),
        asked: command.on,
        confirmed: None,
        reason: failed_reason(&command.item_id, "it could not be sent"),
    })
}

/// The order a write-protect command's key names (`write-protect:<order id>:<version>`).
fn order_of_key(key: &str) -> Option<&str> {
    let (order_id, _version) = key.strip_prefix(KEY_PREFIX)?.rsplit_once(':')?;
    (!order_id.is_empty()).then_some(order_id)
}

fn setting(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

/// What the user reads while the drive is being prepared.
fn when_ready_reason(on: bool) -> String {
    format!(
        "Write protection will be turned {} when your drive is ready.",
        setting(on)
    )
}

/// What the user reads while the change is on its way.
fn on_its_way_reason(target: &CommandTarget, on: bool) -> String {
    match target {
        CommandTarget::Kiosk(kiosk_id) => format!(
            "Kiosk {kiosk_id} is turning write protection {} before you collect your drive.",
            setting(on)
        ),
        CommandTarget::Drive(item_id) => format!(
            "Turning write protection {} over drive {item_id}'s remote link; it confirms once it is in coverage.",
            setting(on)
        ),
    }
}

/// What the user reads when the drive confirmed.
fn confirmed_reason(item_id: &str, on: bool) -> String {
    if on {
        format!("Write protection of drive {item_id} is on: nothing can be written to it.")
    } else {
        format!("Write protection of drive {item_id} is off: you can write to it.")
    }
}

/// What the user reads when the change failed.
fn failed_reason(item_id: &str, why: &str) -> String {
    format!(
        "The write protection of drive {item_id} could not be changed: {why}. It is as before; you may try again."
    )
}

fn describe_failure(failure: &gateway::Failure) -> &'static str {
    use gateway::FailureReason as R;
    match R::try_from(failure.reason).unwrap_or_default() {
        R::WriteProtectFailed => "the drive refused the change",
        R::BayFault => "the kiosk's bay reported a fault",
        R::DeadlineExceeded => "it was asked too late",
        _ => "it reported a failure",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order_in(kind: OrderKind, state: OrderState, item: common::ItemKind) -> order::Model {
        let choice = pb::ItemChoice {
            spec: Some(common::ItemSpec {
                item_type: Some(common::ItemType {
                    kind: item.into(),
                    capacity_bytes: 1000,
                    content_package_id: String::new(),
                }),
                write_protect: false,
            }),
            duration_days: 1,
        };
        let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        order::Model {
            order_id: "o1".into(),
            user_id: "u1".into(),
            kind: kind.as_str().into(),
            state: state.as_str().into(),
            state_reason: String::new(),
            kiosk_id: "K-1".into(),
            choice: choice.encode_to_vec(),
            item_id: "D-1".into(),
            returned_kiosk_id: String::new(),
            write_protected: false,
            pricing: Vec::new(),
            price: 100,
            currency: "EUR".into(),
            amount_charged: 100,
            amount_refunded: 0,
            idempotency_key: "k".into(),
            request_hash: "h".into(),
            charge_id: "c".into(),
            card_token: "t".into(),
            command_id: None,
            late_item_id: None,
            lost_fee_charged: false,
            version: 4,
            deadline: now,
            created_at: now,
            updated_at: now,
            lent_at: None,
            due_at: None,
            returned_at: None,
            closed_at: None,
            pickup_deadline: None,
            content_title: String::new(),
            remote_link: false,
            write_protect_wanted: None,
        }
    }

    fn kinds(decision: &Decision) -> Vec<&str> {
        match decision {
            Decision::Refuse(violations) => violations.iter().map(|v| v.kind.as_str()).collect(),
            _ => vec![],
        }
    }

    #[test]
    fn each_state_sends_the_change_where_the_drive_is_or_refuses_it() {
        use OrderKind::{Rental, Reservation};
        use OrderState as S;
        let drive = common::ItemKind::Drive;
        let at = |kind, state| decide(&order_in(kind, state, drive), kind, state, true);
        assert_eq!(at(Reservation, S::Paid), Decision::Record);
        assert_eq!(at(Reservation, S::Provisioning), Decision::Record);
        assert_eq!(
            at(Reservation, S::ReadyForPickup),
            Decision::Send(CommandTarget::Kiosk("K-1".into()))
        );
        assert_eq!(at(Reservation, S::Dispensing), Decision::Leaving);
        assert_eq!(at(Rental, S::Paid), Decision::Leaving);
        assert_eq!(at(Rental, S::Dispensing), Decision::Leaving);
        assert_eq!(kinds(&at(Rental, S::Lent)), ["NO_REMOTE_LINK"]);
        let mut linked = order_in(Rental, S::Lent, drive);
        linked.remote_link = true;
        assert_eq!(
            decide(&linked, Rental, S::Lent, true),
            Decision::Send(CommandTarget::Drive("D-1".into()))
        );
        for state in [
            S::Returned,
            S::Closed,
            S::Failed,
            S::Cancelled,
            S::Expired,
            S::Refunded,
        ] {
            assert_eq!(
                kinds(&at(Reservation, state)),
                ["ORDER_FINISHED"],
                "{state}"
            );
        }
        let bank = order_in(Rental, S::Lent, common::ItemKind::PowerBank);
        assert_eq!(
            kinds(&decide(&bank, Rental, S::Lent, true)),
            ["NOT_A_DRIVE"]
        );
    }

    #[test]
    fn what_the_drive_has_is_applied_and_what_is_on_its_way_is_not_sent_twice() {
        let mut lent = order_in(OrderKind::Rental, OrderState::Lent, common::ItemKind::Drive);
        lent.remote_link = true;
        assert_eq!(
            decide(&lent, OrderKind::Rental, OrderState::Lent, false),
            Decision::Applied
        );
        lent.write_protect_wanted = Some(true);
        assert_eq!(
            decide(&lent, OrderKind::Rental, OrderState::Lent, true),
            Decision::OnItsWay
        );
        // Off again while on is on its way: off must be sent too, or on would win.
        assert_eq!(
            decide(&lent, OrderKind::Rental, OrderState::Lent, false),
            Decision::Send(CommandTarget::Drive("D-1".into()))
        );
        let paid = order_in(
            OrderKind::Reservation,
            OrderState::Paid,
            common::ItemKind::Drive,
        );
        assert_eq!(
            decide(&paid, OrderKind::Reservation, OrderState::Paid, false),
            Decision::OnItsWay
        );
    }

    #[test]
    fn a_ready_drive_gets_the_wish_made_while_it_was_prepared_only_if_it_lacks_it() {
        let mut ready = order_in(
            OrderKind::Reservation,
            OrderState::ReadyForPickup,
            common::ItemKind::Drive,
        );
        assert!(after_provisioned(&ready).is_none());
        ready.write_protect_wanted = Some(false);
        assert!(after_provisioned(&ready).is_none());
        ready.write_protect_wanted = Some(true);
        let follow_up = after_provisioned(&ready).expect("sent");
        assert_eq!(follow_up.target, CommandTarget::Kiosk("K-1".into()));
        assert_eq!(follow_up.key, "write-protect:o1:4");
    }

    fn record(
        key: &str,
        state: gateway::CommandState,
        outcome: Option<gateway::command_result::Outcome>,
    ) -> gateway::CommandRecord {
        gateway::CommandRecord {
            command_id: "c1".into(),
            drive_id: "D-1".into(),
            state: state.into(),
            idempotency_key: key.into(),
            result: outcome.map(|outcome| gateway::CommandResult {
                outcome: Some(outcome),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_drives_answer_confirms_or_explains_and_others_commands_are_ignored() {
        let command = gateway::SetWriteProtectCommand {
            item_id: "D-1".into(),
            on: true,
        };
        let done =
            gateway::command_result::Outcome::SetWriteProtect(gateway::SetWriteProtectResult {
                item_id: "D-1".into(),
                write_protected: true,
            });
        let confirmed = effect_of(
            &record(
                "write-protect:o1:4",
                gateway::CommandState::Succeeded,
                Some(done),
            ),
            &command,
        )
        .expect("an outcome");
        assert_eq!(
            (confirmed.order_id.as_str(), confirmed.confirmed),
            ("o1", Some(true))
        );
        let failed = effect_of(
            &record("write-protect:o1:5", gateway::CommandState::Expired, None),
            &command,
        )
        .expect("an outcome");
        assert_eq!(failed.confirmed, None);
        assert!(failed.reason.contains("in time"), "{}", failed.reason);
        assert!(
            effect_of(
                &record("write-protect:o1:6", gateway::CommandState::Acked, None),
                &command
            )
            .is_none()
        );
        assert!(
            effect_of(
                &record("wp:off", gateway::CommandState::Expired, None),
                &command
            )
            .is_none(),
            "an operator's command is no order's"
        );
    }
}
