//! Where package bytes live: an `object_store` (a local directory by default, any
//! S3-compatible bucket by configuration), with the key layout every replica shares.
//!
//! Layout (relative to the local directory or the bucket root):
//! - `chunks/<first 2 hex digits>/<64 hex digits>`: a chunk, named by its BLAKE3 hash, stored
//!   once however many files and packages share it. Written before any row names it.
//! - `staging/<package id>/<file index>/<upload id>`: the bytes of a file past its last full
//!   chunk, kept between upload streams so a resumed upload loses nothing. Replaced by each
//!   stream that ends, deleted when the file completes.

use std::sync::Arc;

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sneakernet_runtime::config::{Config, ObjectStoreKind};

use crate::domain::ContentHash;

/// The object key of a chunk: `chunks/<hex[0..2]>/<hex>`.
pub fn chunk_key(hash: ContentHash) -> String {
    let hex = hash.to_hex();
    format!("chunks/{}/{hex}", &hex[..2])
}

/// The object store holding chunks and staged partial chunks. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
}

impl Objects {
    /// Opens the store `config.content` names: for `local`, creates its directory; for `s3`,
    /// reads credentials from the environment (`AWS_ACCESS_KEY_ID`, ...). The error names the
    /// configuration key at fault.
    pub fn open(config: &Config) -> Result<Self, String> {
        let content = &config.content;
        let store: Arc<dyn ObjectStore> = match content.object_store {
            ObjectStoreKind::Local => {
                let dir = content.local_dir(&config.data_dir);
                std::fs::create_dir_all(&dir).map_err(|e| {
                    format!("content.local_dir: cannot create {}: {e}", dir.display())
                })?;
                let local = LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| format!("content.local_dir: cannot use {}: {e}", dir.display()))?
                    // A stored chunk must survive a power cut like an S3 write would.
                    .with_fsync(true)
                    .with_automatic_cleanup(true);
                Arc::new(local)
            }
            ObjectStoreKind::S3 => {
                let mut builder = AmazonS3Builder::from_env()
                    .with_region(&content.s3_region)
                    .with_allow_http(content.s3_allow_http)
                    .with_virtual_hosted_style_request(content.s3_virtual_hosted_style);
                if let Some(bucket) = &content.s3_bucket {
                    builder = builder.with_bucket_name(bucket);
                }
                if let Some(endpoint) = &content.s3_endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                Arc::new(
                    builder
                        .build()
                        .map_err(|e| format!("content.s3_*: cannot use the S3 store: {e}"))?,
                )
            }
        };
        Ok(Self { store })
    }

    /// Stores a chunk under its hash. Idempotent: equal bytes, equal key.
    pub async fn put_chunk(&self, hash: ContentHash, bytes: Bytes) -> object_store::Result<()> {
        self.store
            .put(&Path::from(chunk_key(hash)), PutPayload::from(bytes))
            .await
            .map(|_| ())
    }

    /// Reads a chunk whole; `Ok(None)` when the store has no such object.
    pub async fn chunk(&self, hash: ContentHash) -> object_store::Result<Option<Bytes>> {
        self.read(&chunk_key(hash)).await
    }

    /// Stores the partial last chunk of an upload under a new key, and returns the key.
    pub async fn put_staging(
        &self,
        package_id: &str,
        file_index: i32,
        upload_id: &str,
        bytes: Bytes,
    ) -> object_store::Result<String> {
        let key = format!("staging/{package_id}/{file_index}/{upload_id}");
        self.store
            .put(&Path::from(key.as_str()), PutPayload::from(bytes))
            .await?;
        Ok(key)
    }

    /// Reads an object whole; `Ok(None)` when it does not exist.
    pub async fn read(&self, key: &str) -> object_store::Result<Option<Bytes>> {
        match self.store.get(&Path::from(key)).await {
            Ok(found) => found.bytes().await.map(Some),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Deletes an object no row names any more. Best effort: a leftover costs space, never
    /// correctness, so a failure is logged and not returned.
    pub async fn discard(&self, key: &str) {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(error) => tracing::warn!(key, %error, "could not delete a stale staging object"),
        }
    }
}
