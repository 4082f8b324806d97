//! The orders service's rules, free of I/O: money, the order life cycle, the ledger, pricing,
//! offers, deposits and payment attempts (each state machine with one `transition`), the
//! geometry of finding kiosks nearby (`geo`, for FindKiosks), which drives a reservation may
//! take (`reservable`: what FindKiosks counts and CreateReservation holds by) and what a kiosk
//! shows per type (`availability`).

pub mod availability;
pub mod deposit;
pub mod geo;
pub mod ledger;
pub mod money;
pub mod offer;
pub mod order;
pub mod payment_attempt;
pub mod pricing;
pub mod reservable;

/// Test helpers shared by the state machines' table tests.
#[cfg(test)]
pub(crate) mod table {
    use std::fmt::Debug;

    /// Walks every (state, event) pair: `transition` must give exactly what `legal` lists,
    /// and refuse every pair it does not list.
    pub(crate) fn walk<S, E, X>(
        states: &[S],
        events: &[E],
        legal: &[(S, E, S)],
        transition: impl Fn(S, E) -> Result<S, X>,
    ) where
        S: Copy + PartialEq + Debug,
        E: Copy + PartialEq + Debug,
    {
        for &from in states {
            for &event in events {
                let expected = legal
                    .iter()
                    .find(|(f, e, _)| *f == from && *e == event)
                    .map(|(.., to)| *to);
                assert_eq!(transition(from, event).ok(), expected, "{from:?} {event:?}");
            }
        }
    }

    /// Every state survives its stored name, and an unknown name is refused.
    pub(crate) fn round_trip<S: Copy + PartialEq + Debug>(
        states: &[S],
        as_str: impl Fn(S) -> &'static str,
        parse: impl Fn(&str) -> Option<S>,
    ) {
        for &state in states {
            assert_eq!(parse(as_str(state)), Some(state));
        }
        assert_eq!(parse("no such state"), None);
    }
}
