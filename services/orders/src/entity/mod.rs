//! sea-orm entities of the orders service's tables. Only this crate reads or writes them.

pub mod account;
pub mod deposit;
pub mod event_cursor;
pub mod kiosk;
pub mod kiosk_item;
pub mod kiosk_view;
pub mod ledger_entry;
pub mod ledger_transaction;
pub mod offer;
pub mod order;
pub mod order_change;
pub mod outbox;
pub mod parked_event;
pub mod payment_attempt;
pub mod pricing_rule;
pub mod sandbox_charge;
pub mod sealing_key;
