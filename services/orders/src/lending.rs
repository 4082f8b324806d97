//! The third instruction's outcome: what a kiosk's answer to a lend (or a wipe) means for
//! its order, decided here from the command record alone: the texts the user reads and the
//! follow-up command to send. The store applies the decision in the event's transaction
//! (`Store::apply_command`) and decides nothing itself.

use sneakernet_proto::gateway::v1 as gateway;

/// How soon a kiosk must answer the inventory request sent after a failed lend.
const INVENTORY_AFTER_FAILURE: chrono::Duration = chrono::Duration::minutes(5);

/// A kiosk command to send after an event, queued in the outbox in the event's transaction.
#[derive(Clone, Debug)]
pub struct FollowUp {
    /// The kiosk to ask.
    pub kiosk_id: String,
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
        /// Why, as the user reads it.
        reason: String,
        /// The item the kiosk could not hand out (a jammed bay): not lendable until the
        /// kiosk says so.
        not_ready_item: Option<String>,
        /// Ask the kiosk what it holds now (our view proved wrong).
        follow_up: Option<FollowUp>,
    },
    /// A drive was wiped: lendable again.
    Wiped {
        /// The drive.
        item_id: String,
    },
}

/// What an order's user reads when its item came back at `kiosk_id`.
pub fn returned_reason(kiosk_id: &str) -> String {
    format!("Returned at kiosk {kiosk_id}. Settling the rental.")
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
                    CommandEffect::LendFailed {
                        order_id,
                        reason: format!("{why} Your payment is being refunded."),
                        not_ready_item,
                        follow_up: Some(FollowUp {
                            kiosk_id: record.kiosk_id.clone(),
                            key: format!("inventory-after:{}", record.command_id),
                            command: ask,
                            within: INVENTORY_AFTER_FAILURE,
                        }),
                    }
                }
                (gateway::CommandState::Expired, _) => CommandEffect::LendFailed {
                    order_id,
                    reason: "The kiosk did not hand out an item in time. Your payment is being refunded.".into(),
                    not_ready_item: None,
                    follow_up: None,
                },
                _ => CommandEffect::Nothing,
            }
        }
        gateway::command_payload::Kind::Wipe(wipe) if state == gateway::CommandState::Succeeded => {
            CommandEffect::Wiped {
                item_id: wipe.item_id.clone(),
            }
        }
        _ => CommandEffect::Nothing,
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
            follow_up: Some(follow_up),
            ..
        } = effect_of(&record)
        else {
            panic!("not a failed lend");
        };
        assert_eq!(
            reason,
            "The kiosk's bay jammed while handing out your item. Your payment is being refunded."
        );
        assert_eq!(not_ready_item.as_deref(), Some("D1"));
        assert_eq!(follow_up.key, "inventory-after:c1");
        assert_eq!(follow_up.kiosk_id, "K-1");
    }

    #[test]
    fn an_expired_lend_asks_nothing_more_and_a_pending_one_does_nothing() {
        let expired = effect_of(&lend(gateway::CommandState::Expired, None));
        assert!(matches!(
            expired,
            CommandEffect::LendFailed {
                follow_up: None,
                not_ready_item: None,
                ..
            }
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
}
