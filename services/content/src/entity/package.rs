//! `packages`: one row per declared content package.

use sea_orm::entity::prelude::*;

/// One package.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "packages")]
pub struct Model {
    /// Creation order: ListPackages pages newest first by it.
    #[sea_orm(primary_key)]
    pub seq: i64,
    /// The package's id (UUID v7).
    #[sea_orm(unique)]
    pub package_id: String,
    /// Title shown to users.
    pub title: String,
    /// Description shown to users.
    pub description: String,
    /// `UPLOADING` or `READY` (`domain::PackageState`).
    pub state: String,
    /// Bytes per chunk (a power of two).
    pub chunk_size: i64,
    /// Sum of the declared file sizes.
    pub total_size: i64,
    /// How many files it has.
    pub file_count: i32,
    /// Who declared it (`operator:<id>`); with `idempotency_key` it identifies the request.
    pub created_by: String,
    /// The creator's idempotency key.
    pub idempotency_key: String,
    /// Fingerprint of the declaration: the same key with another one is refused.
    pub request_hash: String,
    /// When it was declared.
    pub created_at: DateTimeUtc,
    /// When its last file was verified.
    pub ready_at: Option<DateTimeUtc>,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
