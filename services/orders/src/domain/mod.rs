//! The orders service's rules, free of I/O: money, the order life cycle, the ledger, pricing,
//! and the geometry of finding kiosks nearby (`geo`, for FindKiosks).

pub mod geo;
pub mod ledger;
pub mod money;
pub mod order;
pub mod pricing;
