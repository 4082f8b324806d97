//! The command life cycle, in one place.
//!
//! ```text
//! QUEUED ──send──▶ SENT ──ack──▶ ACKED ──result──▶ SUCCEEDED | FAILED
//!   │  └───────ack──────────────▲   │
//!   │                               └─(a result may overtake a lost ack)
//!   └──expire──▶ EXPIRED ◀──expire── SENT        EXPIRED ──late result──▶ SUCCEEDED | FAILED
//! ```
//!
//! A kiosk never starts a command after its deadline, but its ack can be lost: a command that
//! did reach the kiosk may report a result after it was expired (a "late result", flagged on
//! the record). An ACKED command is never expired: the kiosk has journaled it and always
//! reports. Duplicates (a second ack, the same result twice) are not errors: they leave the
//! state as it is, and [`Transition::changed`] says so, so callers write nothing.

use std::fmt;
use std::str::FromStr;

/// Where a command is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CommandState {
    /// In the log, not yet sent on a link.
    Queued,
    /// Sent at least once, not acknowledged.
    Sent,
    /// The kiosk journaled it; a result will follow.
    Acked,
    /// The kiosk did it.
    Succeeded,
    /// The kiosk reported failure.
    Failed,
    /// The deadline passed unacknowledged.
    Expired,
}

/// What happens to a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CommandEvent {
    /// Sent (or resent) on a link.
    Send,
    /// The kiosk acknowledged it.
    Ack,
    /// The kiosk reported success.
    Succeed,
    /// The kiosk reported failure.
    Fail,
    /// Its deadline passed.
    Expire,
}

/// The outcome of applying an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The state after the event.
    pub to: CommandState,
    /// False when the event was a harmless duplicate and nothing must be written.
    pub changed: bool,
    /// True when a result arrived after the command had expired.
    pub late_result: bool,
}

/// An event that cannot happen in this state (a resend of a finished command, a success
/// reported for a command that already failed, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("command cannot go from {from} on {event:?}")]
pub struct IllegalTransition {
    /// The state it was in.
    pub from: CommandState,
    /// The event refused.
    pub event: CommandEvent,
}

impl CommandState {
    /// Every state.
    pub const ALL: [CommandState; 6] = [
        CommandState::Queued,
        CommandState::Sent,
        CommandState::Acked,
        CommandState::Succeeded,
        CommandState::Failed,
        CommandState::Expired,
    ];

    /// Whether the kiosk's result is in (nothing more will change).
    pub fn is_final(self) -> bool {
        matches!(self, CommandState::Succeeded | CommandState::Failed)
    }

    /// Whether the command still waits to be delivered (and may be resent).
    pub fn awaits_delivery(self) -> bool {
        matches!(self, CommandState::Queued | CommandState::Sent)
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandState::Queued => "queued",
            CommandState::Sent => "sent",
            CommandState::Acked => "acked",
            CommandState::Succeeded => "succeeded",
            CommandState::Failed => "failed",
            CommandState::Expired => "expired",
        }
    }
}

impl fmt::Display for CommandState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CommandState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CommandState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown command state {s:?}"))
    }
}

impl CommandEvent {
    /// Every event.
    pub const ALL: [CommandEvent; 5] = [
        CommandEvent::Send,
        CommandEvent::Ack,
        CommandEvent::Succeed,
        CommandEvent::Fail,
        CommandEvent::Expire,
    ];
}

/// The one transition function of the command life cycle.
pub fn transition(
    from: CommandState,
    event: CommandEvent,
) -> Result<Transition, IllegalTransition> {
    use CommandEvent as E;
    use CommandState as S;
    let moved = |to| {
        Ok(Transition {
            to,
            changed: true,
            late_result: false,
        })
    };
    let stays = || {
        Ok(Transition {
            to: from,
            changed: false,
            late_result: false,
        })
    };
    match (from, event) {
        (S::Queued | S::Sent, E::Send) => moved(S::Sent),
        (S::Queued | S::Sent, E::Ack) => moved(S::Acked),
        (S::Acked | S::Succeeded | S::Failed | S::Expired, E::Ack) => stays(),
        (S::Queued | S::Sent | S::Acked, E::Succeed) => moved(S::Succeeded),
        (S::Queued | S::Sent | S::Acked, E::Fail) => moved(S::Failed),
        (S::Expired, E::Succeed) => Ok(Transition {
            to: S::Succeeded,
            changed: true,
            late_result: true,
        }),
        (S::Expired, E::Fail) => Ok(Transition {
            to: S::Failed,
            changed: true,
            late_result: true,
        }),
        (S::Succeeded, E::Succeed) | (S::Failed, E::Fail) => stays(),
        (S::Queued | S::Sent, E::Expire) => moved(S::Expired),
        (S::Expired, E::Expire) => stays(),
        (S::Acked | S::Succeeded | S::Failed, E::Expire)
        | (S::Acked | S::Succeeded | S::Failed | S::Expired, E::Send)
        | (S::Succeeded, E::Fail)
        | (S::Failed, E::Succeed) => Err(IllegalTransition { from, event }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CommandEvent as E;
    use CommandState as S;
    use proptest::prelude::*;

    /// Every (state, event) pair and what it must give: Some((to, changed)) or None (illegal).
    fn expected(from: S, event: E) -> Option<(S, bool)> {
        Some(match (from, event) {
            (S::Queued, E::Send) | (S::Sent, E::Send) => (S::Sent, true),
            (S::Queued, E::Ack) | (S::Sent, E::Ack) => (S::Acked, true),
            (S::Acked, E::Ack)
            | (S::Succeeded, E::Ack)
            | (S::Failed, E::Ack)
            | (S::Expired, E::Ack) => (from, false),
            (S::Queued | S::Sent | S::Acked | S::Expired, E::Succeed) => (S::Succeeded, true),
            (S::Queued | S::Sent | S::Acked | S::Expired, E::Fail) => (S::Failed, true),
            (S::Succeeded, E::Succeed) | (S::Failed, E::Fail) | (S::Expired, E::Expire) => {
                (from, false)
            }
            (S::Queued | S::Sent, E::Expire) => (S::Expired, true),
            _ => return None,
        })
    }

    #[test]
    fn every_state_event_pair_is_as_the_table_says() {
        for from in S::ALL {
            for event in E::ALL {
                let got = transition(from, event).ok().map(|t| (t.to, t.changed));
                assert_eq!(got, expected(from, event), "{from} on {event:?}");
            }
        }
    }

    #[test]
    fn only_results_after_expiry_are_late() {
        for from in S::ALL {
            for event in E::ALL {
                if let Ok(t) = transition(from, event) {
                    assert_eq!(
                        t.late_result,
                        from == S::Expired && matches!(event, E::Succeed | E::Fail)
                    );
                }
            }
        }
    }

    #[test]
    fn states_round_trip_through_their_stored_names() {
        for state in S::ALL {
            assert_eq!(state.as_str().parse::<S>(), Ok(state));
        }
        assert!("lost".parse::<S>().is_err());
    }

    fn any_event() -> impl Strategy<Value = E> {
        prop::sample::select(E::ALL.to_vec())
    }

    proptest! {
        /// Whatever the kiosk and the network do, a command's life keeps its promises.
        #[test]
        fn random_event_sequences_keep_the_invariants(events in prop::collection::vec(any_event(), 0..40)) {
            let mut state = S::Queued;
            let mut acked = false;
            let mut final_state: Option<S> = None;
            for event in events {
                match transition(state, event) {
                    Ok(t) => {
                        if let Some(done) = final_state {
                            prop_assert_eq!(t.to, done, "a reported result never changes");
                        }
                        if acked {
                            prop_assert_ne!(t.to, S::Expired, "an acked command never expires");
                        }
                        prop_assert_eq!(t.changed, t.to != state || event == E::Send);
                        state = t.to;
                        acked |= state == S::Acked;
                        if state.is_final() {
                            final_state = Some(state);
                        }
                    }
                    Err(illegal) => {
                        prop_assert_eq!(illegal.from, state);
                    }
                }
            }
        }
    }
}
