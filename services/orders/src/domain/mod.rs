//! The orders service's rules, free of I/O: money, the order life cycle, the ledger, pricing.
//! The rentals issue (#5) wires them to the API and the store.

pub mod deposit;
pub mod ledger;
pub mod money;
pub mod offer;
pub mod order;
pub mod payment_attempt;
pub mod pricing;
