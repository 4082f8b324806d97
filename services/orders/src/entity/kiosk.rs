//! `kiosks`: A kiosk's public profile, set by RegisterKiosk.

use sea_orm::entity::prelude::*;

/// One row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "kiosks")]
pub struct Model {
    /// The kiosk's id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub kiosk_id: String,
    /// The site it stands at.
    pub site_id: String,
    /// The site's display name.
    pub site_name: String,
    /// Degrees north.
    pub latitude: f64,
    /// Degrees east.
    pub longitude: f64,
    /// The QR secret, sealed with the orders secret key (nonce then ciphertext).
    pub qr_secret: Vec<u8>,
    /// Taken out of service by an operator.
    pub out_of_service: bool,
    /// First registration.
    pub registered_at: DateTimeUtc,
    /// Last change.
    pub updated_at: DateTimeUtc,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
