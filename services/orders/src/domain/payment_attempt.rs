//! The life cycle of a payment attempt: one provider key asked to charge once, for a deposit
//! or an order. A charge's outcome may be unknown (a timeout): then the attempt stays pending
//! until a retry with the same key or the settling worker resolves it. The stored names are
//! the `payment_attempts.state` column's values.

use std::fmt;

/// Where a payment attempt is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttemptState {
    /// Asked (or about to be); the outcome is not booked.
    Pending,
    /// Charged and booked.
    Charged,
    /// Declined by the card; final for its key.
    Declined,
    /// Nothing was charged (a processor error); a retry with the key may charge.
    Failed,
    /// The settling worker is finding out what happened.
    Resolving,
    /// The settling worker found the charge and is paying it back: nothing can book it any
    /// more (a late answer or a retry of the key is told it was paid back).
    Refunding,
    /// Charged, but nothing took it: paid back.
    Refunded,
}

/// What happens to a payment attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttemptEvent {
    /// A retry with the key asks again (after nothing was charged, or still pending).
    Retried,
    /// The charge went through and is booked.
    Charged,
    /// The card declined.
    Declined,
    /// The processor failed before charging.
    NothingCharged,
    /// The settling worker claims a stale pending attempt to resolve it.
    Claimed,
    /// The provider still did not answer: back to pending for the next round.
    Unclaimed,
    /// The worker found a charge nothing booked and starts paying it back.
    RefundStarted,
    /// Resolved: a charge was found and paid back.
    ResolvedRefunded,
    /// Resolved: the card had declined.
    ResolvedDeclined,
    /// Resolved: nothing was charged.
    ResolvedFailed,
    /// A charge went through but its booking lost a race: pending again with the charge, for
    /// a retry to find or the worker to pay back.
    Orphaned,
}

/// An event that cannot happen to an attempt in this state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a payment attempt in state {from} cannot take {event:?}")]
pub struct IllegalAttemptTransition {
    /// The attempt's state.
    pub from: AttemptState,
    /// The event refused.
    pub event: AttemptEvent,
}

impl AttemptState {
    /// Every state.
    pub const ALL: [AttemptState; 7] = [
        AttemptState::Pending,
        AttemptState::Charged,
        AttemptState::Declined,
        AttemptState::Failed,
        AttemptState::Resolving,
        AttemptState::Refunding,
        AttemptState::Refunded,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptState::Pending => "pending",
            AttemptState::Charged => "charged",
            AttemptState::Declined => "declined",
            AttemptState::Failed => "failed",
            AttemptState::Resolving => "resolving",
            AttemptState::Refunding => "refunding",
            AttemptState::Refunded => "refunded",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }
}

impl fmt::Display for AttemptState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AttemptEvent {
    /// Every event.
    pub const ALL: [AttemptEvent; 11] = [
        AttemptEvent::Retried,
        AttemptEvent::Charged,
        AttemptEvent::Declined,
        AttemptEvent::NothingCharged,
        AttemptEvent::Claimed,
        AttemptEvent::Unclaimed,
        AttemptEvent::RefundStarted,
        AttemptEvent::ResolvedRefunded,
        AttemptEvent::ResolvedDeclined,
        AttemptEvent::ResolvedFailed,
        AttemptEvent::Orphaned,
    ];

    /// The states this event moves an attempt from (for a conditional update) and the one
    /// it moves it to: every event has one target.
    pub fn moves(self) -> (Vec<AttemptState>, AttemptState) {
        let from: Vec<AttemptState> = AttemptState::ALL
            .into_iter()
            .filter(|s| transition(*s, self).is_ok())
            .collect();
        let to = from
            .first()
            .and_then(|s| transition(*s, self).ok())
            .unwrap_or(AttemptState::Pending);
        (from, to)
    }
}

/// The one transition function of payment attempts.
pub fn transition(
    from: AttemptState,
    event: AttemptEvent,
) -> Result<AttemptState, IllegalAttemptTransition> {
    use AttemptEvent as E;
    use AttemptState as S;
    let to = match (from, event) {
        (S::Pending | S::Failed, E::Retried) => S::Pending,
        (S::Pending, E::Charged) => S::Charged,
        (S::Pending, E::Declined) => S::Declined,
        (S::Pending, E::NothingCharged) => S::Failed,
        (S::Pending, E::Claimed) => S::Resolving,
        (S::Resolving, E::Unclaimed) => S::Pending,
        (S::Resolving, E::RefundStarted) => S::Refunding,
        // Only from REFUNDING: a charge being paid back is never reopened (an orphaned
        // booking moves RESOLVING back to PENDING, never REFUNDING), so nothing books it.
        (S::Refunding, E::ResolvedRefunded) => S::Refunded,
        (S::Resolving, E::ResolvedDeclined) => S::Declined,
        (S::Resolving, E::ResolvedFailed) => S::Failed,
        (S::Pending | S::Failed | S::Resolving, E::Orphaned) => S::Pending,
        _ => return Err(IllegalAttemptTransition { from, event }),
    };
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use AttemptEvent as E;
    use AttemptState as S;

    /// The legal moves, written out once more by hand: every other pair must be refused.
    const LEGAL: &[(S, E, S)] = &[
        (S::Pending, E::Retried, S::Pending),
        (S::Failed, E::Retried, S::Pending),
        (S::Pending, E::Charged, S::Charged),
        (S::Pending, E::Declined, S::Declined),
        (S::Pending, E::NothingCharged, S::Failed),
        (S::Pending, E::Claimed, S::Resolving),
        (S::Resolving, E::Unclaimed, S::Pending),
        (S::Resolving, E::RefundStarted, S::Refunding),
        (S::Refunding, E::ResolvedRefunded, S::Refunded),
        (S::Resolving, E::ResolvedDeclined, S::Declined),
        (S::Resolving, E::ResolvedFailed, S::Failed),
        (S::Pending, E::Orphaned, S::Pending),
        (S::Failed, E::Orphaned, S::Pending),
        (S::Resolving, E::Orphaned, S::Pending),
    ];

    #[test]
    fn every_state_event_pair_is_as_the_table_says() {
        crate::domain::table::walk(&S::ALL, &E::ALL, LEGAL, transition);
    }

    #[test]
    fn every_event_has_one_target_and_final_states_take_none() {
        for event in E::ALL {
            let (from, to) = event.moves();
            assert!(!from.is_empty(), "{event:?} applies somewhere");
            for state in from {
                assert_eq!(transition(state, event), Ok(to), "{event:?}");
            }
        }
        for done in [S::Charged, S::Declined, S::Refunded] {
            assert!(
                E::ALL.iter().all(|e| transition(done, *e).is_err()),
                "{done}"
            );
        }
    }

    #[test]
    fn states_round_trip_through_their_stored_names() {
        crate::domain::table::round_trip(&S::ALL, S::as_str, S::parse);
    }
}
