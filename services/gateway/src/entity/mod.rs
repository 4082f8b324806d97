//! sea-orm entities of the gateway's tables. Only this crate reads or writes them.

pub mod command;
pub mod event;
pub mod event_horizon;
pub mod kiosk;
pub mod kiosk_message;
pub mod refused_message;
