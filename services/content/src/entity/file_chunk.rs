//! `file_chunks`: which chunk holds which part of a file. A row exists only for a chunk whose
//! bytes are in the object store.

use sea_orm::entity::prelude::*;

/// Chunk `chunk_index` of one file.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "file_chunks")]
pub struct Model {
    /// The package.
    #[sea_orm(primary_key, auto_increment = false)]
    pub package_id: String,
    /// The file (`package_files.file_index`).
    #[sea_orm(primary_key, auto_increment = false)]
    pub file_index: i32,
    /// Position of the chunk in the file.
    #[sea_orm(primary_key, auto_increment = false)]
    pub chunk_index: i64,
    /// BLAKE3 of the chunk's bytes, 64 hex digits (its object key).
    pub hash: String,
    /// The chunk's length: the chunk size, or less for a file's last chunk.
    pub size: i64,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
