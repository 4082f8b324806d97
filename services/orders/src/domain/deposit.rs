//! The life cycle of a deposit: held while the account may rent, refunding once asked back,
//! refunded when paid back (less what fees took). The stored names are the `deposits.state`
//! column's values.

use std::fmt;

/// Where a deposit is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DepositState {
    /// Paid and held: the account may rent.
    Held,
    /// Asked back; the settling worker pays it back.
    Refunding,
    /// Paid back.
    Refunded,
}

/// What happens to a deposit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DepositEvent {
    /// RefundDeposit, with nothing open on the account.
    RefundAsked,
    /// The refund was paid and booked.
    RefundPaid,
}

/// An event that cannot happen to a deposit in this state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a deposit in state {from} cannot take {event:?}")]
pub struct IllegalDepositTransition {
    /// The deposit's state.
    pub from: DepositState,
    /// The event refused.
    pub event: DepositEvent,
}

impl DepositState {
    /// Every state.
    pub const ALL: [DepositState; 3] = [
        DepositState::Held,
        DepositState::Refunding,
        DepositState::Refunded,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DepositState::Held => "held",
            DepositState::Refunding => "refunding",
            DepositState::Refunded => "refunded",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }
}

impl fmt::Display for DepositState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl DepositEvent {
    /// Every event.
    pub const ALL: [DepositEvent; 2] = [DepositEvent::RefundAsked, DepositEvent::RefundPaid];
}

/// The one transition function of deposits.
pub fn transition(
    from: DepositState,
    event: DepositEvent,
) -> Result<DepositState, IllegalDepositTransition> {
    use DepositEvent as E;
    use DepositState as S;
    match (from, event) {
        (S::Held, E::RefundAsked) => Ok(S::Refunding),
        (S::Refunding, E::RefundPaid) => Ok(S::Refunded),
        _ => Err(IllegalDepositTransition { from, event }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DepositEvent as E;
    use DepositState as S;

    const LEGAL: &[(S, E, S)] = &[
        (S::Held, E::RefundAsked, S::Refunding),
        (S::Refunding, E::RefundPaid, S::Refunded),
    ];

    #[test]
    fn every_state_event_pair_is_as_the_table_says() {
        crate::domain::table::walk(&S::ALL, &E::ALL, LEGAL, transition);
    }

    #[test]
    fn states_round_trip_through_their_stored_names() {
        crate::domain::table::round_trip(&S::ALL, S::as_str, S::parse);
    }
}
