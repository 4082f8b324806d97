//! `kiosk_credentials`: the one credential of each kiosk.

use sea_orm::entity::prelude::*;

/// A kiosk's credential.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "kiosk_credentials")]
pub struct Model {
    /// The kiosk's identification number.
    #[sea_orm(primary_key, auto_increment = false)]
    pub kiosk_id: String,
    /// BLAKE3 hash (hex) of the secret (a high-entropy random string, so a fast hash suffices).
    pub secret_hash: String,
    /// When this credential was issued (re-issuing replaces the row).
    pub issued_at: DateTimeUtc,
    /// The operator who issued it.
    pub issued_by: String,
    /// Set when revoked; a revoked kiosk cannot log in.
    pub revoked_at: Option<DateTimeUtc>,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
