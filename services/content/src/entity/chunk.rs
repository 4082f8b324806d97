//! `chunks`: every chunk in the object store, once, whatever shares it.

use sea_orm::entity::prelude::*;

/// One stored chunk.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "chunks")]
pub struct Model {
    /// BLAKE3 of its bytes, 64 hex digits.
    #[sea_orm(primary_key, auto_increment = false)]
    pub hash: String,
    /// Its length in bytes.
    pub size: i64,
    /// When it was first stored.
    pub stored_at: DateTimeUtc,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
