//! The content service's queries: packages, files and their upload claims, chunks.
//!
//! Races are settled in the database, so two replicas behave like one: a file is written only
//! by the upload stream holding its claim (`writer`, taken by a conditional update, renewed
//! while it writes, lapsing after [`crate::upload::LEASE`]), and every write an upload makes
//! checks it still holds that claim in the same transaction. A package turns READY in the
//! transaction that completes its last file, under a lock on the package row, so two files
//! finishing at once cannot both miss the moment.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ActiveValue, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection,
    EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, SqlErr,
};
use sneakernet_runtime::db::begin_write;

use crate::domain::{ContentHash, NewPackage, PackageState};
use crate::entity::{chunk, file_chunk, package, package_file};
use crate::error::ContentError;

/// Files inserted per statement when a package is declared (bounded by Postgres' 65,535
/// parameters and SQLite's 32,766).
const FILE_BATCH: usize = 500;

/// What declaring a package did.
#[derive(Clone, Debug)]
pub enum Created {
    /// A new package.
    New(package::Model),
    /// The same caller declared the same package under this idempotency key before.
    Existing(package::Model),
}

/// An upload stream's claim on one file: every write it makes names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileClaim {
    /// The package.
    pub package_id: String,
    /// The file.
    pub file_index: i32,
    /// The stream's lease id.
    pub writer: String,
}

/// A chunk of a file whose bytes are already in the object store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredChunk {
    /// Its position in the file.
    pub index: i64,
    /// Its hash.
    pub hash: ContentHash,
    /// Its length.
    pub size: i64,
}

/// The content service's database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
}

impl Store {
    /// Wraps an opened, migrated connection.
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// Declares a package and its files in one transaction (READY at once when every file is
    /// empty), unless this caller already declared one under this idempotency key: then that
    /// package is returned, or INVALID_ARGUMENT if the declaration differs.
    pub async fn create_package(
        &self,
        new: &NewPackage,
        created_by: &str,
        chunk_size: u32,
        now: DateTime<Utc>,
    ) -> Result<Created, ContentError> {
        let fingerprint = new.fingerprint.clone();
        if let Some(existing) = self.by_key(created_by, &new.idempotency_key).await? {
            return same_request(existing, &fingerprint).map(Created::Existing);
        }
        let ready = new.is_empty();
        let package_id = uuid::Uuid::now_v7().to_string();
        let row = package::Model {
            seq: 0,
            package_id: package_id.clone(),
            title: new.title.clone(),
            description: new.description.clone(),
            state: if ready {
                PackageState::Ready
            } else {
                PackageState::Uploading
            }
            .as_str()
            .to_owned(),
            chunk_size: i64::from(chunk_size),
            total_size: as_i64(new.total_size)?,
            file_count: i32::try_from(new.files.len()).map_err(|_| ContentError::Corrupt {
                what: "file count",
                detail: "more files than an i32".into(),
            })?,
            created_by: created_by.to_owned(),
            idempotency_key: new.idempotency_key.clone(),
            request_hash: fingerprint.clone(),
            created_at: now,
            ready_at: ready.then_some(now),
        };
        let txn = begin_write(&self.db).await?;
        let mut active = row.into_active_model();
        active.seq = ActiveValue::NotSet;
        let inserted = match active.insert(&txn).await {
            Ok(inserted) => inserted,
            Err(error) if matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                // A concurrent request with the same key won the race: answer with its package.
                drop(txn);
                let existing = self
                    .by_key(created_by, &new.idempotency_key)
                    .await?
                    .ok_or(ContentError::Store(error))?;
                return same_request(existing, &fingerprint).map(Created::Existing);
            }
            Err(error) => return Err(error.into()),
        };
        let mut files = Vec::with_capacity(new.files.len());
        for (index, file) in new.files.iter().enumerate() {
            files.push(package_file::ActiveModel {
                package_id: ActiveValue::Set(package_id.clone()),
                file_index: ActiveValue::Set(i32::try_from(index).map_err(|_| {
                    ContentError::Corrupt {
                        what: "file index",
                        detail: "more files than an i32".into(),
                    }
                })?),
                path: ActiveValue::Set(file.path.clone()),
                size: ActiveValue::Set(as_i64(file.size)?),
                blake3: ActiveValue::Set(file.hash.to_hex()),
                bytes_stored: ActiveValue::Set(0),
                complete: ActiveValue::Set(file.size == 0),
                staging_key: ActiveValue::Set(None),
                writer: ActiveValue::Set(None),
                writer_until: ActiveValue::Set(None),
            });
        }
        for batch in files.chunks(FILE_BATCH) {
            package_file::Entity::insert_many(batch.iter().cloned())
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(Created::New(inserted))
    }

    async fn by_key(
        &self,
        created_by: &str,
        key: &str,
    ) -> Result<Option<package::Model>, ContentError> {
        Ok(package::Entity::find()
            .filter(package::Column::CreatedBy.eq(created_by))
            .filter(package::Column::IdempotencyKey.eq(key))
            .one(&self.db)
            .await?)
    }

    /// A package by id.
    pub async fn package(&self, package_id: &str) -> Result<Option<package::Model>, ContentError> {
        Ok(package::Entity::find()
            .filter(package::Column::PackageId.eq(package_id))
            .one(&self.db)
            .await?)
    }

    /// Up to `limit` packages created before position `before` (all when `None`), in `state`
    /// (any when `None`), newest first.
    pub async fn list_packages(
        &self,
        state: Option<PackageState>,
        before: Option<i64>,
        limit: u64,
    ) -> Result<Vec<package::Model>, ContentError> {
        let mut query = package::Entity::find();
        if let Some(state) = state {
            query = query.filter(package::Column::State.eq(state.as_str()));
        }
        if let Some(before) = before {
            query = query.filter(package::Column::Seq.lt(before));
        }
        Ok(query
            .order_by_desc(package::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// Every file of a package, in path order.
    pub async fn files(&self, package_id: &str) -> Result<Vec<package_file::Model>, ContentError> {
        Ok(package_file::Entity::find()
            .filter(package_file::Column::PackageId.eq(package_id))
            .order_by_asc(package_file::Column::FileIndex)
            .all(&self.db)
            .await?)
    }

    /// One file of a package by path.
    pub async fn file_by_path(
        &self,
        package_id: &str,
        path: &str,
    ) -> Result<Option<package_file::Model>, ContentError> {
        Ok(package_file::Entity::find()
            .filter(package_file::Column::PackageId.eq(package_id))
            .filter(package_file::Column::Path.eq(path))
            .one(&self.db)
            .await?)
    }

    /// One file of a package by index.
    pub async fn file(
        &self,
        package_id: &str,
        file_index: i32,
    ) -> Result<Option<package_file::Model>, ContentError> {
        Ok(
            package_file::Entity::find_by_id((package_id.to_owned(), file_index))
                .one(&self.db)
                .await?,
        )
    }

    /// The recorded chunks of a package (`file_index` given: of that file only), in file
    /// order then chunk order.
    pub async fn file_chunks(
        &self,
        package_id: &str,
        file_index: Option<i32>,
    ) -> Result<Vec<file_chunk::Model>, ContentError> {
        let mut query =
            file_chunk::Entity::find().filter(file_chunk::Column::PackageId.eq(package_id));
        if let Some(index) = file_index {
            query = query.filter(file_chunk::Column::FileIndex.eq(index));
        }
        Ok(query
            .order_by_asc(file_chunk::Column::FileIndex)
            .order_by_asc(file_chunk::Column::ChunkIndex)
            .all(&self.db)
            .await?)
    }

    /// The size of each of `hashes` that is a chunk of the package (absent ones are not).
    pub async fn chunk_sizes(
        &self,
        package_id: &str,
        hashes: &[ContentHash],
    ) -> Result<HashMap<ContentHash, u64>, ContentError> {
        let rows: Vec<(String, i64)> = file_chunk::Entity::find()
            .select_only()
            .column(file_chunk::Column::Hash)
            .column(file_chunk::Column::Size)
            .filter(file_chunk::Column::PackageId.eq(package_id))
            .filter(file_chunk::Column::Hash.is_in(hashes.iter().map(|h| h.to_hex())))
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut sizes = HashMap::with_capacity(rows.len());
        for (hex, size) in rows {
            let hash = ContentHash::from_hex(&hex).ok_or_else(|| ContentError::Corrupt {
                what: "chunk hash",
                detail: hex.clone(),
            })?;
            let size = u64::try_from(size).map_err(|_| ContentError::Corrupt {
                what: "chunk size",
                detail: size.to_string(),
            })?;
            sizes.insert(hash, size);
        }
        Ok(sizes)
    }

    /// Whether the object store already holds this chunk (some upload stored and recorded it).
    pub async fn chunk_known(&self, hash: ContentHash) -> Result<bool, ContentError> {
        Ok(chunk::Entity::find_by_id(hash.to_hex())
            .one(&self.db)
            .await?
            .is_some())
    }

    /// Claims an incomplete file for `claim.writer` until `until`, if nobody holds it or their
    /// claim lapsed before `now`. Returns whether the claim was taken.
    pub async fn claim_file(
        &self,
        claim: &FileClaim,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, ContentError> {
        let taken = package_file::Entity::update_many()
            .col_expr(
                package_file::Column::Writer,
                Expr::value(claim.writer.clone()),
            )
            .col_expr(package_file::Column::WriterUntil, Expr::value(until))
            .filter(package_file::Column::PackageId.eq(&claim.package_id))
            .filter(package_file::Column::FileIndex.eq(claim.file_index))
            .filter(package_file::Column::Complete.eq(false))
            .filter(
                Condition::any()
                    .add(package_file::Column::Writer.is_null())
                    .add(package_file::Column::WriterUntil.lt(now)),
            )
            .exec(&self.db)
            .await?
            .rows_affected;
        Ok(taken == 1)
    }

    /// Extends a claim to `until`. Returns false if the claim was lost.
    pub async fn renew_claim(
        &self,
        claim: &FileClaim,
        until: DateTime<Utc>,
    ) -> Result<bool, ContentError> {
        let renewed = claimed(package_file::Entity::update_many(), claim)
            .col_expr(package_file::Column::WriterUntil, Expr::value(until))
            .exec(&self.db)
            .await?
            .rows_affected;
        Ok(renewed == 1)
    }

    /// Gives a claim up (nothing else changes). A lost claim is fine.
    pub async fn release_claim(&self, claim: &FileClaim) -> Result<(), ContentError> {
        released(claimed(package_file::Entity::update_many(), claim))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Records a full chunk of a claimed file: the file now holds `bytes_stored` bytes, all in
    /// recorded chunks (no staging object), and the claim runs until `until`. Returns false,
    /// writing nothing, if the claim was lost.
    pub async fn commit_chunk(
        &self,
        claim: &FileClaim,
        chunk: &StoredChunk,
        bytes_stored: i64,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, ContentError> {
        let txn = begin_write(&self.db).await?;
        let updated = claimed(package_file::Entity::update_many(), claim)
            .col_expr(package_file::Column::BytesStored, Expr::value(bytes_stored))
            .col_expr(
                package_file::Column::StagingKey,
                Expr::value(None::<String>),
            )
            .col_expr(package_file::Column::WriterUntil, Expr::value(until))
            .exec(&txn)
            .await?
            .rows_affected;
        if updated != 1 {
            return Ok(false);
        }
        record_chunk(&txn, claim, chunk, now).await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Ends a claimed upload short of the file's end: the file holds `full_chunks` recorded
    /// chunks plus `staging` (the partial chunk after them), `bytes_stored` in all; later
    /// chunk records are dropped and the claim is released. Returns false if it was lost.
    pub async fn commit_partial(
        &self,
        claim: &FileClaim,
        full_chunks: i64,
        bytes_stored: i64,
        staging: Option<String>,
    ) -> Result<bool, ContentError> {
        let txn = begin_write(&self.db).await?;
        let updated = released(claimed(package_file::Entity::update_many(), claim))
            .col_expr(package_file::Column::BytesStored, Expr::value(bytes_stored))
            .col_expr(package_file::Column::StagingKey, Expr::value(staging))
            .exec(&txn)
            .await?
            .rows_affected;
        if updated != 1 {
            return Ok(false);
        }
        drop_chunks_from(&txn, claim, full_chunks).await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Discards everything stored for a claimed file (its hash did not match): 0 bytes, no
    /// chunk records, claim released. Returns false if the claim was lost.
    pub async fn reset_file(&self, claim: &FileClaim) -> Result<bool, ContentError> {
        self.commit_partial(claim, 0, 0, None).await
    }

    /// Completes a claimed, verified file (recording its partial `last` chunk, if it has one)
    /// and, if it was the package's last incomplete file, makes the package READY, all in one
    /// transaction. Returns the package's state after, or `None` if the claim was lost.
    pub async fn complete_file(
        &self,
        claim: &FileClaim,
        last: Option<&StoredChunk>,
        size: i64,
        now: DateTime<Utc>,
    ) -> Result<Option<PackageState>, ContentError> {
        let txn = begin_write(&self.db).await?;
        // Serializes the files of one package completing at once (FOR UPDATE on Postgres;
        // SQLite's write transaction already excludes other writers): the last one to commit
        // sees every other file complete.
        package::Entity::find()
            .filter(package::Column::PackageId.eq(&claim.package_id))
            .lock_exclusive()
            .one(&txn)
            .await?;
        let updated = released(claimed(package_file::Entity::update_many(), claim))
            .col_expr(package_file::Column::BytesStored, Expr::value(size))
            .col_expr(package_file::Column::Complete, Expr::value(true))
            .col_expr(
                package_file::Column::StagingKey,
                Expr::value(None::<String>),
            )
            .exec(&txn)
            .await?
            .rows_affected;
        if updated != 1 {
            return Ok(None);
        }
        if let Some(last) = last {
            record_chunk(&txn, claim, last, now).await?;
        }
        let incomplete = package_file::Entity::find()
            .filter(package_file::Column::PackageId.eq(&claim.package_id))
            .filter(package_file::Column::Complete.eq(false))
            .count(&txn)
            .await?;
        let state = if incomplete == 0 {
            package::Entity::update_many()
                .col_expr(
                    package::Column::State,
                    Expr::value(PackageState::Ready.as_str()),
                )
                .col_expr(package::Column::ReadyAt, Expr::value(Some(now)))
                .filter(package::Column::PackageId.eq(&claim.package_id))
                .filter(package::Column::State.eq(PackageState::Uploading.as_str()))
                .exec(&txn)
                .await?;
            PackageState::Ready
        } else {
            PackageState::Uploading
        };
        txn.commit().await?;
        Ok(Some(state))
    }
}

/// The update restricted to the file `claim` names, and only while `claim` holds it.
fn claimed(
    update: sea_orm::UpdateMany<package_file::Entity>,
    claim: &FileClaim,
) -> sea_orm::UpdateMany<package_file::Entity> {
    update
        .filter(package_file::Column::PackageId.eq(&claim.package_id))
        .filter(package_file::Column::FileIndex.eq(claim.file_index))
        .filter(package_file::Column::Writer.eq(&claim.writer))
}

/// The update also giving the claim up.
fn released(
    update: sea_orm::UpdateMany<package_file::Entity>,
) -> sea_orm::UpdateMany<package_file::Entity> {
    update
        .col_expr(package_file::Column::Writer, Expr::value(None::<String>))
        .col_expr(
            package_file::Column::WriterUntil,
            Expr::value(None::<DateTime<Utc>>),
        )
}

/// Drops the file's chunk records from chunk `from` on (bytes past an upload's offset are
/// replaced by what follows it).
async fn drop_chunks_from(
    db: &impl ConnectionTrait,
    claim: &FileClaim,
    from: i64,
) -> Result<(), ContentError> {
    file_chunk::Entity::delete_many()
        .filter(file_chunk::Column::PackageId.eq(&claim.package_id))
        .filter(file_chunk::Column::FileIndex.eq(claim.file_index))
        .filter(file_chunk::Column::ChunkIndex.gte(from))
        .exec(db)
        .await?;
    Ok(())
}

/// Records `chunk` as chunk `chunk.index` of the claimed file (replacing that record and any
/// after it) and in the chunk index.
async fn record_chunk(
    db: &impl ConnectionTrait,
    claim: &FileClaim,
    chunk: &StoredChunk,
    now: DateTime<Utc>,
) -> Result<(), ContentError> {
    drop_chunks_from(db, claim, chunk.index).await?;
    let hex = chunk.hash.to_hex();
    file_chunk::Entity::insert(file_chunk::ActiveModel {
        package_id: ActiveValue::Set(claim.package_id.clone()),
        file_index: ActiveValue::Set(claim.file_index),
        chunk_index: ActiveValue::Set(chunk.index),
        hash: ActiveValue::Set(hex.clone()),
        size: ActiveValue::Set(chunk.size),
    })
    .exec_without_returning(db)
    .await?;
    chunk::Entity::insert(chunk::ActiveModel {
        hash: ActiveValue::Set(hex),
        size: ActiveValue::Set(chunk.size),
        stored_at: ActiveValue::Set(now),
    })
    .on_conflict(
        OnConflict::column(chunk::Column::Hash)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(())
}

fn same_request(
    existing: package::Model,
    fingerprint: &str,
) -> Result<package::Model, ContentError> {
    if existing.request_hash == fingerprint {
        Ok(existing)
    } else {
        Err(sneakernet_runtime::FieldViolation::new(
            "idempotency_key",
            "was used for another CreatePackage request",
        )
        .into())
    }
}

fn as_i64(value: u64) -> Result<i64, ContentError> {
    i64::try_from(value).map_err(|_| ContentError::Corrupt {
        what: "size",
        detail: format!("{value} does not fit a database integer"),
    })
}
