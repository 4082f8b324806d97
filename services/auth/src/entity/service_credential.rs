//! `service_credentials`: the one credential of each Sneakernet service that calls others.

use sea_orm::entity::prelude::*;

/// A service's credential.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "service_credentials")]
pub struct Model {
    /// The service's name (`orders`, `content`).
    #[sea_orm(primary_key, auto_increment = false)]
    pub service: String,
    /// BLAKE3 hash (hex) of the secret.
    pub secret_hash: String,
    /// When this credential was issued (re-issuing replaces the row).
    pub issued_at: DateTimeUtc,
    /// Who issued it.
    pub issued_by: String,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
