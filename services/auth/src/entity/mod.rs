//! sea-orm entities of the auth service's tables. Only this crate reads or writes them.

pub mod kiosk_credential;
pub mod refresh_family;
pub mod refresh_token;
pub mod service_credential;
pub mod signing_key;
pub mod user;
