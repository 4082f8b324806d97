//! The content service: content packages, resumable uploads, the chunk store, kiosk downloads.
//!
//! Skeleton: the role starts, is reported SERVING by health and listed by reflection, and every
//! RPC answers UNIMPLEMENTED until the content issue fills it in.

use sneakernet_proto::content::v1::content_service_server::{ContentService, ContentServiceServer};
use sneakernet_runtime::Shutdown;
use sneakernet_runtime::config::Config;
use sneakernet_runtime::role::{RoleContext, ServiceRole, StartError};
use sneakernet_runtime::server::GrpcServices;

/// The service name used for its database and `--role`.
pub const SERVICE: &str = "content";

/// The content role of the `sneakernet` binary.
#[derive(Debug)]
pub struct ContentRole;

impl ServiceRole for ContentRole {
    const NAME: &'static str = SERVICE;

    async fn start(_ctx: &RoleContext, services: &mut GrpcServices) -> Result<(), StartError> {
        services.add(ContentServiceServer::new(ContentApi));
        Ok(())
    }
}

/// Runs the content service alone until `shutdown` triggers.
pub async fn serve(config: Config, shutdown: Shutdown) -> Result<(), StartError> {
    sneakernet_runtime::role::serve_role::<ContentRole>(config, shutdown).await
}

/// The ContentService implementation (skeleton: every RPC is UNIMPLEMENTED).
#[derive(Clone, Copy, Debug)]
pub struct ContentApi;

#[tonic::async_trait]
impl ContentService for ContentApi {}
