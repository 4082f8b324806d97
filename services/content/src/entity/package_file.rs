//! `package_files`: each declared file, its upload progress, and who may write it now.

use sea_orm::entity::prelude::*;

/// One file of one package.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "package_files")]
pub struct Model {
    /// The package.
    #[sea_orm(primary_key, auto_increment = false)]
    pub package_id: String,
    /// Position in path order (manifests list files in it).
    #[sea_orm(primary_key, auto_increment = false)]
    pub file_index: i32,
    /// Path inside the package.
    pub path: String,
    /// Declared size in bytes.
    pub size: i64,
    /// Declared BLAKE3 of the whole file, 64 hex digits.
    pub blake3: String,
    /// Bytes durably stored from offset 0: the recorded full chunks plus the staging object.
    pub bytes_stored: i64,
    /// Every byte stored and the whole-file hash verified.
    pub complete: bool,
    /// Object key of the partial last chunk (bytes past the last full chunk), if any.
    pub staging_key: Option<String>,
    /// The upload stream that may write this file now (a lease id), if any.
    pub writer: Option<String>,
    /// When that lease lapses unless renewed; another upload may take the file after it.
    pub writer_until: Option<DateTimeUtc>,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
