//! `sealing_keys`: the fingerprint of the key every orders process on this database must
//! seal with (never the key itself).

use sea_orm::entity::prelude::*;

/// The key recorded for one purpose.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sealing_keys")]
pub struct Model {
    /// What the key seals (`qr_secrets`).
    #[sea_orm(primary_key, auto_increment = false)]
    pub purpose: String,
    /// A BLAKE3 key derivation from the key: tells keys apart, reveals nothing of them.
    pub fingerprint: String,
    /// When the first process recorded it.
    pub recorded_at: DateTimeUtc,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
