//! The device gateway: one link per kiosk, the durable command log, the kiosk event log.
//!
//! Skeleton: the role starts, is reported SERVING by health and listed by reflection, and every
//! RPC answers UNIMPLEMENTED until the kiosk-link issue (#4) fills it in.

use sneakernet_proto::gateway::v1::device_command_service_server::{
    DeviceCommandService, DeviceCommandServiceServer,
};
use sneakernet_proto::gateway::v1::device_event_service_server::{
    DeviceEventService, DeviceEventServiceServer,
};
use sneakernet_proto::gateway::v1::kiosk_link_service_server::{
    KioskLinkService, KioskLinkServiceServer,
};
use sneakernet_runtime::Shutdown;
use sneakernet_runtime::config::Config;
use sneakernet_runtime::role::{RoleContext, ServiceRole, StartError};
use sneakernet_runtime::server::GrpcServices;

/// The service name used for its database and `--role`.
pub const SERVICE: &str = "gateway";

/// The gateway role of the `sneakernet` binary.
#[derive(Debug)]
pub struct GatewayRole;

impl ServiceRole for GatewayRole {
    const NAME: &'static str = SERVICE;

    async fn start(_ctx: &RoleContext, services: &mut GrpcServices) -> Result<(), StartError> {
        services
            .add(KioskLinkServiceServer::new(GatewayApi))
            .add(DeviceCommandServiceServer::new(GatewayApi))
            .add(DeviceEventServiceServer::new(GatewayApi));
        Ok(())
    }
}

/// Runs the gateway alone until `shutdown` triggers.
pub async fn serve(config: Config, shutdown: Shutdown) -> Result<(), StartError> {
    sneakernet_runtime::role::serve_role::<GatewayRole>(config, shutdown).await
}

/// The gateway's services (skeleton: every RPC is UNIMPLEMENTED).
#[derive(Clone, Copy, Debug)]
pub struct GatewayApi;

#[tonic::async_trait]
impl KioskLinkService for GatewayApi {}

#[tonic::async_trait]
impl DeviceCommandService for GatewayApi {}

#[tonic::async_trait]
impl DeviceEventService for GatewayApi {}
