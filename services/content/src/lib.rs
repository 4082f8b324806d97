//! The content service: content packages, resumable uploads into a content-addressed chunk
//! store, and verified chunk downloads for kiosks.
//!
//! - [`api`]: the gRPC surface (ContentService): caller checks, decoding, error mapping.
//! - [`domain`]: the rules without I/O: declarations, paths, the chunk size, page tokens.
//! - [`upload`]: UploadFile, cutting a stream into stored chunks under a claim on the file.
//! - [`download`]: DownloadChunks, verified chunks through a bounded channel.
//! - [`objects`]: the object store (local directory or S3) and its key layout.
//! - [`store`]: queries; [`entity`] and [`migration`]: the tables.

pub mod api;
pub mod domain;
pub mod download;
pub mod entity;
pub mod error;
pub mod migration;
pub mod objects;
pub mod store;
pub mod upload;

use std::sync::Arc;

use sneakernet_proto::content::v1::content_service_server::ContentServiceServer;
use sneakernet_runtime::Shutdown;
use sneakernet_runtime::clock::SharedClock;
use sneakernet_runtime::config::Config;
use sneakernet_runtime::role::{RoleContext, ServiceRole, StartError};
use sneakernet_runtime::server::GrpcServices;

pub use crate::api::ContentApi;
use crate::objects::Objects;
use crate::store::Store;

/// The service name used for its database and `--role`.
pub const SERVICE: &str = "content";

/// Largest request message the service decodes: a CreatePackage declaring the contract's
/// 100,000 files with paths of about 100 bytes. Upload data messages are still held to 1 MiB
/// by the service itself.
pub const MAX_REQUEST_MESSAGE: usize = 16 * 1024 * 1024;

/// The content role of the `sneakernet` binary. It declares no public RPC: the auth layer
/// refuses a bad token before any handler, and every handler refuses a missing one
/// (UNAUTHENTICATED).
#[derive(Debug)]
pub struct ContentRole;

impl ServiceRole for ContentRole {
    const NAME: &'static str = SERVICE;

    async fn start(ctx: &RoleContext, services: &mut GrpcServices) -> Result<(), StartError> {
        let api = build(ctx).await?;
        services.add(ContentServiceServer::new(api).max_decoding_message_size(MAX_REQUEST_MESSAGE));
        Ok(())
    }
}

/// Runs the content service alone until `shutdown` triggers.
pub async fn serve(config: Config, shutdown: Shutdown) -> Result<(), StartError> {
    sneakernet_runtime::role::serve_role::<ContentRole>(config, shutdown).await
}

/// What every content request works with. Shared by the API, uploads and downloads.
#[derive(Debug)]
pub struct Context {
    /// The database.
    pub store: Store,
    /// The bytes.
    pub objects: Objects,
    /// "Now" (upload claims).
    pub clock: SharedClock,
    /// Upload and download tasks belong to it and end when it triggers.
    pub shutdown: Shutdown,
}

/// Opens the database and the object store, and builds the service.
pub async fn build(ctx: &RoleContext) -> Result<ContentApi, StartError> {
    let db = sneakernet_runtime::db::open_and_migrate::<migration::Migrator>(&ctx.config, SERVICE)
        .await?;
    let objects = Objects::open(&ctx.config)
        .map_err(|e| StartError::Other(format!("invalid configuration: {e}")))?;
    Ok(ContentApi {
        ctx: Arc::new(Context {
            store: Store::new(db),
            objects,
            clock: ctx.clock.clone(),
            shutdown: ctx.shutdown.clone(),
        }),
    })
}
