//! sea-orm entities of the orders service's tables. Only this crate reads or writes them.

pub mod event_cursor;
pub mod kiosk_view;
pub mod sandbox_charge;
