//! `kiosk_credentials`: the one credential of each device that holds a link to the gateway:
//! every kiosk, and every drive's remote link module.

use sea_orm::entity::prelude::*;

/// A device's credential.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "kiosk_credentials")]
pub struct Model {
    /// The device in its stored form ([`sneakernet_runtime::DeviceId::stored`]): a kiosk's
    /// identification number as it always was, or `drive:<item id>` for a drive's module
    /// (kiosk ids hold no `:`, so the two never collide).
    #[sea_orm(primary_key, auto_increment = false)]
    pub kiosk_id: String,
    /// BLAKE3 hash (hex) of the secret (a high-entropy random string, so a fast hash suffices).
    pub secret_hash: String,
    /// When this credential was issued (re-issuing replaces the row).
    pub issued_at: DateTimeUtc,
    /// The operator who issued it.
    pub issued_by: String,
    /// Set when revoked; a revoked device cannot log in.
    pub revoked_at: Option<DateTimeUtc>,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
