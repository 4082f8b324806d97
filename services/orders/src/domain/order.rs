//! The order life cycle, in one place (DESIGN.md §4).
//!
//! ```text
//! rental:      PAID ─lend─▶ DISPENSING ─lent─▶ LENT ─returned─▶ RETURNED ─settled─▶ CLOSED
//!                └─lend failed─┴─▶ FAILED ─refunded─▶ REFUNDED
//! reservation: PAID ─provision─▶ PROVISIONING ─provisioned─▶ READY_FOR_PICKUP ─lend─▶ DISPENSING ─▶ … as a rental
//!                └──────cancel / provision failed──────┴─▶ CANCELLED ─refunded─▶ REFUNDED
//!                                         READY_FOR_PICKUP ─pickup expired─▶ EXPIRED
//! ```
//!
//! Every transition not drawn is an error: in particular a lend reported for an order that
//! already FAILED (the money went back) is refused here and surfaced by the auditor, never
//! applied silently.

use std::fmt;

/// Walk-up rental or reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrderKind {
    /// Seed flow 1: scan, pay, the kiosk ejects.
    Rental,
    /// Seed flow 2: pay ahead, the kiosk provisions a drive, the user collects it.
    Reservation,
}

/// Where an order is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrderState {
    /// Charged; a unit is held.
    Paid,
    /// Reservation: the kiosk copies content onto a drive.
    Provisioning,
    /// Reservation: a drive is pinned to the order, waiting for its user.
    ReadyForPickup,
    /// The kiosk was told to lend.
    Dispensing,
    /// The item is with the user.
    Lent,
    /// The item is back; fees are being settled.
    Returned,
    /// Settled. Terminal.
    Closed,
    /// Nothing was lent; a refund follows.
    Failed,
    /// Reservation cancelled (by the user or a failed provisioning); a refund follows.
    Cancelled,
    /// Everything charged was paid back. Terminal.
    Refunded,
    /// Reservation not collected in time. Terminal.
    Expired,
}

/// What happens to an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrderEvent {
    /// The lend command was sent (rental after payment; reservation at pickup).
    LendRequested,
    /// Reservation: the provision command was sent.
    ProvisionRequested,
    /// Reservation: the kiosk reports the drive ready.
    Provisioned,
    /// Reservation: provisioning failed, or the kiosk could not be asked in time.
    ProvisionFailed,
    /// The kiosk reports the item ejected.
    Lent,
    /// The kiosk could not lend, or the command expired, or it was never sent.
    LendFailed,
    /// The item came back to a kiosk.
    Returned,
    /// Every fee is charged.
    Settled,
    /// The refund went through.
    Refunded,
    /// Reservation: the user cancels.
    Cancelled,
    /// Reservation: the pickup window passed.
    PickupExpired,
}

impl OrderKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderKind::Rental => "rental",
            OrderKind::Reservation => "reservation",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "rental" => Some(OrderKind::Rental),
            "reservation" => Some(OrderKind::Reservation),
            _ => None,
        }
    }
}

impl OrderState {
    /// Every state.
    pub const ALL: [OrderState; 11] = [
        OrderState::Paid,
        OrderState::Provisioning,
        OrderState::ReadyForPickup,
        OrderState::Dispensing,
        OrderState::Lent,
        OrderState::Returned,
        OrderState::Closed,
        OrderState::Failed,
        OrderState::Cancelled,
        OrderState::Refunded,
        OrderState::Expired,
    ];

    /// Whether nothing can happen to the order any more.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            OrderState::Closed | OrderState::Refunded | OrderState::Expired
        )
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::Paid => "paid",
            OrderState::Provisioning => "provisioning",
            OrderState::ReadyForPickup => "ready_for_pickup",
            OrderState::Dispensing => "dispensing",
            OrderState::Lent => "lent",
            OrderState::Returned => "returned",
            OrderState::Closed => "closed",
            OrderState::Failed => "failed",
            OrderState::Cancelled => "cancelled",
            OrderState::Refunded => "refunded",
            OrderState::Expired => "expired",
        }
    }
}

impl fmt::Display for OrderState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for OrderState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OrderState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown order state {s:?}"))
    }
}

impl OrderEvent {
    /// Every event.
    pub const ALL: [OrderEvent; 11] = [
        OrderEvent::LendRequested,
        OrderEvent::ProvisionRequested,
        OrderEvent::Provisioned,
        OrderEvent::ProvisionFailed,
        OrderEvent::Lent,
        OrderEvent::LendFailed,
        OrderEvent::Returned,
        OrderEvent::Settled,
        OrderEvent::Refunded,
        OrderEvent::Cancelled,
        OrderEvent::PickupExpired,
    ];
}

/// An event that cannot happen to an order of this kind in this state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a {kind:?} order in state {from} cannot take {event:?}")]
pub struct IllegalTransition {
    /// The order's kind.
    pub kind: OrderKind,
    /// Its state.
    pub from: OrderState,
    /// The event refused.
    pub event: OrderEvent,
}

/// The one transition function of the order life cycle.
pub fn transition(
    kind: OrderKind,
    from: OrderState,
    event: OrderEvent,
) -> Result<OrderState, IllegalTransition> {
    use OrderEvent as E;
    use OrderKind as K;
    use OrderState as S;
    let to = match (kind, from, event) {
        (K::Rental, S::Paid, E::LendRequested) => S::Dispensing,
        (K::Rental, S::Paid, E::LendFailed) => S::Failed,
        (K::Reservation, S::Paid, E::ProvisionRequested) => S::Provisioning,
        (K::Reservation, S::Provisioning, E::Provisioned) => S::ReadyForPickup,
        (K::Reservation, S::Paid | S::Provisioning, E::ProvisionFailed) => S::Cancelled,
        (K::Reservation, S::Paid | S::Provisioning | S::ReadyForPickup, E::Cancelled) => {
            S::Cancelled
        }
        (K::Reservation, S::ReadyForPickup, E::LendRequested) => S::Dispensing,
        (K::Reservation, S::ReadyForPickup, E::PickupExpired) => S::Expired,
        (_, S::Dispensing, E::Lent) => S::Lent,
        (_, S::Dispensing, E::LendFailed) => S::Failed,
        (_, S::Lent, E::Returned) => S::Returned,
        (_, S::Returned, E::Settled) => S::Closed,
        (_, S::Failed | S::Cancelled, E::Refunded) => S::Refunded,
        _ => return Err(IllegalTransition { kind, from, event }),
    };
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use OrderEvent as E;
    use OrderKind as K;
    use OrderState as S;
    use proptest::prelude::*;

    /// The legal moves, written out once more by hand: every other triple must be refused.
    const LEGAL: &[(K, S, E, S)] = &[
        (K::Rental, S::Paid, E::LendRequested, S::Dispensing),
        (K::Rental, S::Paid, E::LendFailed, S::Failed),
        (K::Rental, S::Dispensing, E::Lent, S::Lent),
        (K::Rental, S::Dispensing, E::LendFailed, S::Failed),
        (K::Rental, S::Lent, E::Returned, S::Returned),
        (K::Rental, S::Returned, E::Settled, S::Closed),
        (K::Rental, S::Failed, E::Refunded, S::Refunded),
        (K::Rental, S::Cancelled, E::Refunded, S::Refunded),
        (
            K::Reservation,
            S::Paid,
            E::ProvisionRequested,
            S::Provisioning,
        ),
        (K::Reservation, S::Paid, E::Cancelled, S::Cancelled),
        (K::Reservation, S::Paid, E::ProvisionFailed, S::Cancelled),
        (
            K::Reservation,
            S::Provisioning,
            E::Provisioned,
            S::ReadyForPickup,
        ),
        (
            K::Reservation,
            S::Provisioning,
            E::ProvisionFailed,
            S::Cancelled,
        ),
        (K::Reservation, S::Provisioning, E::Cancelled, S::Cancelled),
        (
            K::Reservation,
            S::ReadyForPickup,
            E::LendRequested,
            S::Dispensing,
        ),
        (
            K::Reservation,
            S::ReadyForPickup,
            E::Cancelled,
            S::Cancelled,
        ),
        (
            K::Reservation,
            S::ReadyForPickup,
            E::PickupExpired,
            S::Expired,
        ),
        (K::Reservation, S::Dispensing, E::Lent, S::Lent),
        (K::Reservation, S::Dispensing, E::LendFailed, S::Failed),
        (K::Reservation, S::Lent, E::Returned, S::Returned),
        (K::Reservation, S::Returned, E::Settled, S::Closed),
        (K::Reservation, S::Failed, E::Refunded, S::Refunded),
        (K::Reservation, S::Cancelled, E::Refunded, S::Refunded),
    ];

    #[test]
    fn every_kind_state_event_triple_is_as_the_table_says() {
        for kind in [K::Rental, K::Reservation] {
            for from in S::ALL {
                for event in E::ALL {
                    let expected = LEGAL
                        .iter()
                        .find(|(k, f, e, _)| *k == kind && *f == from && *e == event)
                        .map(|(.., to)| *to);
                    assert_eq!(
                        transition(kind, from, event).ok(),
                        expected,
                        "{kind:?} {from} {event:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_lend_after_a_failure_is_refused_not_applied() {
        let refused = transition(K::Rental, S::Failed, E::Lent).unwrap_err();
        assert_eq!((refused.from, refused.event), (S::Failed, E::Lent));
        assert!(transition(K::Rental, S::Refunded, E::Lent).is_err());
    }

    #[test]
    fn states_round_trip_through_their_stored_names() {
        for state in S::ALL {
            assert_eq!(state.as_str().parse::<S>(), Ok(state));
        }
    }

    proptest! {
        /// Whatever arrives in whatever order, an order never leaves a terminal state, a rental
        /// never enters a reservation-only state, and money is never both lent and refunded.
        #[test]
        fn random_event_sequences_keep_the_invariants(
            reservation in any::<bool>(),
            events in prop::collection::vec(prop::sample::select(E::ALL.to_vec()), 0..40),
        ) {
            let kind = if reservation { K::Reservation } else { K::Rental };
            let mut state = S::Paid;
            let mut was_lent = false;
            for event in events {
                if let Ok(to) = transition(kind, state, event) {
                    prop_assert!(!state.is_terminal(), "left terminal {state}");
                    if kind == K::Rental {
                        prop_assert!(!matches!(to, S::Provisioning | S::ReadyForPickup | S::Cancelled | S::Expired));
                    }
                    was_lent |= to == S::Lent;
                    prop_assert!(!(was_lent && to == S::Refunded), "a lent order was refunded");
                    state = to;
                }
            }
        }
    }
}
