//! UploadFile: one file of a package, from an offset, cut into chunks as it arrives.
//!
//! What is durable, and when: every full chunk is hashed, put into the object store under its
//! hash and recorded (one transaction that also checks this stream still holds the file's
//! claim) as soon as its last byte arrives; the bytes after the last full chunk stay in memory
//! until the stream ends, however it ends (closed, broken, server shutting down), and are then
//! put as one staging object and recorded. A crash loses at most those in-memory bytes, and
//! `bytes_stored` never counts them. The whole-file hash is checked when the last byte is in:
//! only a matching file is marked complete, and the package turns READY with its last file.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use sneakernet_proto::content::v1 as pb;
use sneakernet_proto::content::v1::upload_file_request::Part;
use sneakernet_runtime::FieldViolation;
use tonic::Streaming;

use crate::Context;
use crate::domain::request::{MAX_PIECE, UploadHeader};
use crate::domain::{ContentHash, PackageState};
use crate::entity::package_file;
use crate::error::ContentError;
use crate::store::{FileClaim, StoredChunk};

/// How long an upload stream's claim on a file lasts without being renewed. A stream renews it
/// with every chunk and at least every third of it while data arrives; a broken stream's claim
/// is released at once, a crashed server's lapses after this, so a resumed upload waits at
/// most this long.
pub const LEASE: Duration = Duration::from_secs(30);

/// Runs one upload stream to its end and answers it. Operator check done by the caller.
pub async fn upload(
    ctx: Arc<Context>,
    mut stream: Streaming<pb::UploadFileRequest>,
) -> Result<pb::UploadFileResponse, ContentError> {
    let header = match next(&ctx, &mut stream).await? {
        Some(Part::Header(header)) => {
            UploadHeader::from_wire(header).map_err(ContentError::Invalid)?
        }
        _ => {
            return Err(FieldViolation::new(
                "header",
                "the first message of an upload must be its UploadHeader",
            )
            .into());
        }
    };
    let (file, state) = declared_file(&ctx, &header).await?;
    if file.complete {
        return Ok(answer(&file, state));
    }
    let claim = FileClaim {
        package_id: file.package_id.clone(),
        file_index: file.file_index,
        writer: uuid::Uuid::new_v4().to_string(),
    };
    let now = ctx.clock.now();
    if !ctx.store.claim_file(&claim, now, now + lease()).await? {
        // Completed by another stream in the meantime: that is an answer too.
        let (file, state) = declared_file(&ctx, &header).await?;
        if file.complete {
            return Ok(answer(&file, state));
        }
        return Err(ContentError::UploadInProgress {
            path: header.path,
            lease_secs: LEASE.as_secs(),
        });
    }
    tracing::info!(package_id = %header.package_id, path = %header.path, offset = header.offset, "upload started");
    let result = match FileUpload::resume(&ctx, claim.clone(), &file, header.offset).await {
        Ok(mut upload) => upload.run(&mut stream).await,
        Err(error) => Err(error),
    };
    match &result {
        Ok(_) => {}
        Err(ContentError::LeaseLost { .. }) => {}
        Err(error) => {
            tracing::info!(package_id = %header.package_id, path = %header.path, %error, "upload ended with an error");
            // Already released when the stream's bytes were saved; otherwise free the file
            // for the next attempt now rather than after the lease.
            if let Err(release) = ctx.store.release_claim(&claim).await {
                tracing::warn!(package_id = %header.package_id, path = %header.path, error = %release, "could not release an upload claim; it lapses on its own");
            }
        }
    }
    result
}

fn lease() -> chrono::Duration {
    chrono::Duration::from_std(LEASE).unwrap_or(chrono::Duration::seconds(30))
}

/// The next message, or `None` when the client closed its side. A broken stream or a server
/// shutting down is [`ContentError::StreamBroken`].
async fn next(
    ctx: &Context,
    stream: &mut Streaming<pb::UploadFileRequest>,
) -> Result<Option<Part>, ContentError> {
    let token = ctx.shutdown.token();
    let message = tokio::select! {
        message = stream.message() => message,
        () = token.cancelled() => {
            return Err(ContentError::StreamBroken("the server is shutting down".into()));
        }
    };
    match message {
        Ok(Some(pb::UploadFileRequest { part: Some(part) })) => Ok(Some(part)),
        Ok(Some(pb::UploadFileRequest { part: None })) => {
            Err(FieldViolation::new("part", "a message must hold a header or data").into())
        }
        Ok(None) => Ok(None),
        Err(status) => Err(ContentError::StreamBroken(status.message().to_owned())),
    }
}

/// The file a header names, checked against its declaration, with its package's state.
async fn declared_file(
    ctx: &Context,
    header: &UploadHeader,
) -> Result<(package_file::Model, PackageState), ContentError> {
    let id = header.package_id.as_str();
    let Some(package) = ctx.store.package(id).await? else {
        return Err(ContentError::PackageNotFound(header.package_id.clone()));
    };
    let state = crate::api::state_of(&package)?;
    let file = ctx.store.file_by_path(id, &header.path).await?;
    let declared = file.as_ref().is_some_and(|file| {
        u64::try_from(file.size).ok() == Some(header.size) && file.blake3 == header.hash.to_hex()
    });
    match (file, state) {
        (Some(file), _) if declared => Ok((file, state)),
        (_, PackageState::Ready) => Err(ContentError::PackageReady {
            package: header.package_id.clone(),
            path: header.path.clone(),
        }),
        (None, PackageState::Uploading) => {
            Err(FieldViolation::new("header.path", format!("is not a file of package {id}")).into())
        }
        (Some(file), PackageState::Uploading) => {
            let mut violations = Vec::new();
            if u64::try_from(file.size).ok() != Some(header.size) {
                violations.push(FieldViolation::new(
                    "header.size_bytes",
                    format!("the file was declared with {} bytes", file.size),
                ));
            }
            if file.blake3 != header.hash.to_hex() {
                violations.push(FieldViolation::new(
                    "header.blake3",
                    format!("the file was declared with hash {}", file.blake3),
                ));
            }
            Err(ContentError::Invalid(violations))
        }
    }
}

fn answer(file: &package_file::Model, state: PackageState) -> pb::UploadFileResponse {
    pb::UploadFileResponse {
        bytes_stored: u64::try_from(file.bytes_stored).unwrap_or(0),
        complete: file.complete,
        package_state: state.to_wire().into(),
    }
}

/// One claimed file being written by one stream.
struct FileUpload<'a> {
    ctx: &'a Context,
    claim: FileClaim,
    path: String,
    size: u64,
    declared: ContentHash,
    chunk_size: usize,
    /// Full chunks recorded; the buffer starts right after them.
    full_chunks: u64,
    /// Bytes after the last full chunk, not yet durable.
    buffer: Vec<u8>,
    /// BLAKE3 of every byte before the buffer.
    hasher: blake3::Hasher,
    /// The staging object the file's row names, replaced when this stream saves or seals.
    staging: Option<String>,
    renewed_at: DateTime<Utc>,
}

impl<'a> FileUpload<'a> {
    /// Prepares to write from `offset`: the recorded chunks below it are re-read and hashed
    /// (the whole-file hash needs every byte), the bytes of the chunk it falls in are
    /// reloaded into the buffer, and anything stored past it will be replaced.
    async fn resume(
        ctx: &'a Context,
        claim: FileClaim,
        file: &package_file::Model,
        offset: u64,
    ) -> Result<Self, ContentError> {
        let stored = u64::try_from(file.bytes_stored).unwrap_or(0);
        if offset > stored {
            return Err(ContentError::OffsetBeyondStored {
                path: file.path.clone(),
                offset,
                stored,
            });
        }
        let package =
            ctx.store
                .package(&claim.package_id)
                .await?
                .ok_or_else(|| ContentError::Corrupt {
                    what: "package",
                    detail: format!("{} vanished during an upload", claim.package_id),
                })?;
        let chunk_size = usize::try_from(package.chunk_size)
            .ok()
            .filter(|size| *size > 0)
            .ok_or_else(|| ContentError::Corrupt {
                what: "chunk size",
                detail: package.chunk_size.to_string(),
            })?;
        let declared =
            ContentHash::from_hex(&file.blake3).ok_or_else(|| ContentError::Corrupt {
                what: "file hash",
                detail: file.blake3.clone(),
            })?;
        let full_chunks = offset / chunk_size as u64;
        let keep = usize::try_from(offset % chunk_size as u64).unwrap_or(0);
        let chunks = ctx
            .store
            .file_chunks(&claim.package_id, Some(claim.file_index))
            .await?;
        let mut hasher = blake3::Hasher::new();
        let mut buffer = Vec::with_capacity(chunk_size);
        let mut renewed_at = ctx.clock.now();
        for row in &chunks {
            let index = u64::try_from(row.chunk_index).unwrap_or(u64::MAX);
            if index > full_chunks || (index == full_chunks && keep == 0) {
                break;
            }
            let hash = ContentHash::from_hex(&row.hash).ok_or_else(|| ContentError::Corrupt {
                what: "chunk hash",
                detail: row.hash.clone(),
            })?;
            let bytes = ctx
                .objects
                .chunk(hash)
                .await?
                .ok_or(ContentError::CorruptChunk { hash })?;
            if index < full_chunks {
                hasher = hash_into(hasher, bytes).await?;
                // Re-reading gigabytes can outlast the claim: keep it.
                let now = ctx.clock.now();
                if now - renewed_at > lease() / 3 {
                    if !ctx.store.renew_claim(&claim, now + lease()).await? {
                        return Err(ContentError::LeaseLost {
                            path: file.path.clone(),
                        });
                    }
                    renewed_at = now;
                }
            } else {
                let kept = bytes
                    .get(..keep)
                    .ok_or(ContentError::CorruptChunk { hash })?;
                buffer.extend_from_slice(kept);
            }
        }
        if keep > 0 && buffer.is_empty() {
            // The bytes past the last full chunk are in the staging object.
            let staged = match &file.staging_key {
                Some(key) => ctx.objects.read(key).await?,
                None => None,
            };
            let staged = staged.filter(|bytes| bytes.len() >= keep).ok_or_else(|| {
                ContentError::Corrupt {
                    what: "staging object",
                    detail: format!("{} holds fewer than {keep} bytes", file.path),
                }
            })?;
            buffer.extend_from_slice(&staged[..keep]);
        }
        Ok(Self {
            ctx,
            claim,
            path: file.path.clone(),
            size: u64::try_from(file.size).unwrap_or(0),
            declared,
            chunk_size,
            full_chunks,
            buffer,
            hasher,
            staging: file.staging_key.clone(),
            renewed_at,
        })
    }

    /// Bytes of the file this stream holds (recorded or in memory).
    fn position(&self) -> u64 {
        self.full_chunks * self.chunk_size as u64 + self.buffer.len() as u64
    }

    async fn run(
        &mut self,
        stream: &mut Streaming<pb::UploadFileRequest>,
    ) -> Result<pb::UploadFileResponse, ContentError> {
        loop {
            match next(self.ctx, stream).await {
                Ok(Some(Part::Data(data))) => self.accept(data).await?,
                Ok(Some(Part::Header(_))) => {
                    return Err(FieldViolation::new(
                        "header",
                        "only the first message of an upload may be a header",
                    )
                    .into());
                }
                Ok(None) if self.position() == self.size => return self.complete().await,
                Ok(None) => {
                    let stored = self.save().await?;
                    return Ok(pb::UploadFileResponse {
                        bytes_stored: stored,
                        complete: false,
                        package_state: pb::PackageState::Uploading.into(),
                    });
                }
                Err(ContentError::StreamBroken(why)) => {
                    let stored = self.save().await?;
                    tracing::info!(package_id = %self.claim.package_id, path = %self.path, bytes_stored = stored, "upload stream broke; its bytes are kept");
                    return Err(ContentError::StreamBroken(why));
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn accept(&mut self, data: Vec<u8>) -> Result<(), ContentError> {
        if data.is_empty() || data.len() > MAX_PIECE {
            return Err(FieldViolation::new(
                "data",
                format!("must be 1 to {MAX_PIECE} bytes, got {}", data.len()),
            )
            .into());
        }
        if self.position() + data.len() as u64 > self.size {
            return Err(FieldViolation::new(
                "data",
                format!(
                    "more bytes than the {} declared for {:?}",
                    self.size, self.path
                ),
            )
            .into());
        }
        self.buffer.extend_from_slice(&data);
        while self.buffer.len() >= self.chunk_size {
            let rest = self.buffer.split_off(self.chunk_size);
            let full = std::mem::replace(&mut self.buffer, rest);
            self.buffer.reserve(self.chunk_size);
            self.seal(full).await?;
        }
        let now = self.ctx.clock.now();
        if now - self.renewed_at > lease() / 3 {
            if !self
                .ctx
                .store
                .renew_claim(&self.claim, now + lease())
                .await?
            {
                return Err(self.lost());
            }
            self.renewed_at = now;
        }
        Ok(())
    }

    /// Stores and records one full chunk.
    async fn seal(&mut self, full: Vec<u8>) -> Result<(), ContentError> {
        let bytes = Bytes::from(full);
        let hash = self.hash_chunk(bytes.clone()).await?;
        self.store_chunk(hash, bytes.clone()).await?;
        let chunk = StoredChunk {
            index: as_i64(self.full_chunks),
            hash,
            size: as_i64(bytes.len() as u64),
        };
        let stored = as_i64((self.full_chunks + 1) * self.chunk_size as u64);
        let now = self.ctx.clock.now();
        if !self
            .ctx
            .store
            .commit_chunk(&self.claim, &chunk, stored, now + lease(), now)
            .await?
        {
            return Err(self.lost());
        }
        self.renewed_at = now;
        self.full_chunks += 1;
        if let Some(old) = self.staging.take() {
            self.ctx.objects.discard(&old).await;
        }
        Ok(())
    }

    /// Hashes a chunk on the blocking pool, adding it to the whole-file hash on the way.
    async fn hash_chunk(&mut self, bytes: Bytes) -> Result<ContentHash, ContentError> {
        let file = std::mem::take(&mut self.hasher);
        let (chunk, file) = tokio::task::spawn_blocking(move || {
            let chunk = ContentHash::of(&bytes);
            let mut file = file;
            file.update_rayon(&bytes);
            (chunk, file)
        })
        .await
        .map_err(|e| ContentError::Task(e.to_string()))?;
        self.hasher = file;
        Ok(chunk)
    }

    async fn store_chunk(&self, hash: ContentHash, bytes: Bytes) -> Result<(), ContentError> {
        if !self.ctx.store.chunk_known(hash).await? {
            self.ctx.objects.put_chunk(hash, bytes).await?;
        }
        Ok(())
    }

    /// Makes what this stream holds durable and gives the file up: the in-memory bytes become
    /// the staging object. Returns the bytes stored.
    async fn save(&mut self) -> Result<u64, ContentError> {
        let stored = self.position();
        let staging = if self.buffer.is_empty() {
            None
        } else {
            Some(
                self.ctx
                    .objects
                    .put_staging(
                        &self.claim.package_id,
                        self.claim.file_index,
                        &self.claim.writer,
                        Bytes::from(std::mem::take(&mut self.buffer)),
                    )
                    .await?,
            )
        };
        let committed = self
            .ctx
            .store
            .commit_partial(
                &self.claim,
                as_i64(self.full_chunks),
                as_i64(stored),
                staging.clone(),
            )
            .await?;
        if !committed {
            if let Some(new) = &staging {
                self.ctx.objects.discard(new).await;
            }
            return Err(self.lost());
        }
        if let Some(old) = self.staging.take()
            && Some(&old) != staging.as_ref()
        {
            self.ctx.objects.discard(&old).await;
        }
        self.staging = staging;
        Ok(stored)
    }

    /// The last byte is in: verify the whole file, then complete it (or discard it).
    async fn complete(&mut self) -> Result<pb::UploadFileResponse, ContentError> {
        let last = if self.buffer.is_empty() {
            None
        } else {
            let bytes = Bytes::from(std::mem::take(&mut self.buffer));
            let hash = self.hash_chunk(bytes.clone()).await?;
            let size = as_i64(bytes.len() as u64);
            Some((
                StoredChunk {
                    index: as_i64(self.full_chunks),
                    hash,
                    size,
                },
                bytes,
            ))
        };
        let actual = ContentHash::from(std::mem::take(&mut self.hasher).finalize());
        if actual != self.declared {
            let reset = self.ctx.store.reset_file(&self.claim).await?;
            if let Some(old) = self.staging.take() {
                self.ctx.objects.discard(&old).await;
            }
            if !reset {
                return Err(self.lost());
            }
            tracing::warn!(package_id = %self.claim.package_id, path = %self.path, declared = %self.declared, %actual, "uploaded file does not match its declared hash; discarded");
            return Err(ContentError::FileHashMismatch {
                path: self.path.clone(),
                declared: self.declared,
                actual,
            });
        }
        if let Some((chunk, bytes)) = &last {
            self.store_chunk(chunk.hash, bytes.clone()).await?;
        }
        let now = self.ctx.clock.now();
        let state = self
            .ctx
            .store
            .complete_file(
                &self.claim,
                last.as_ref().map(|(chunk, _)| chunk),
                as_i64(self.size),
                now,
            )
            .await?
            .ok_or_else(|| self.lost())?;
        if let Some(old) = self.staging.take() {
            self.ctx.objects.discard(&old).await;
        }
        tracing::info!(package_id = %self.claim.package_id, path = %self.path, size = self.size, package_state = state.as_str(), "file uploaded and verified");
        Ok(pb::UploadFileResponse {
            bytes_stored: self.size,
            complete: true,
            package_state: state.to_wire().into(),
        })
    }

    fn lost(&self) -> ContentError {
        tracing::warn!(package_id = %self.claim.package_id, path = %self.path, "upload lost its claim on the file");
        ContentError::LeaseLost {
            path: self.path.clone(),
        }
    }
}

async fn hash_into(hasher: blake3::Hasher, bytes: Bytes) -> Result<blake3::Hasher, ContentError> {
    tokio::task::spawn_blocking(move || {
        let mut hasher = hasher;
        hasher.update_rayon(&bytes);
        hasher
    })
    .await
    .map_err(|e| ContentError::Task(e.to_string()))
}

fn as_i64(value: u64) -> i64 {
    // Sizes were checked to fit an i64 when the package was declared.
    i64::try_from(value).unwrap_or(i64::MAX)
}
