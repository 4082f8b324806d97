//! `offers`: An offer answered by ScanKiosk, bound to its user and kiosk until it expires.

use sea_orm::entity::prelude::*;

/// One row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "offers")]
pub struct Model {
    /// Its id (UUID).
    #[sea_orm(primary_key, auto_increment = false)]
    pub offer_id: String,
    /// Whom it was made to.
    pub user_id: String,
    /// The kiosk scanned.
    pub kiosk_id: String,
    /// Until when CreateRental honours it.
    pub expires_at: DateTimeUtc,
    /// Encoded `orders.v1.Offer`.
    pub body: Vec<u8>,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
