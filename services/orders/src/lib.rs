//! The orders service: offers, walk-up rentals, reservations, deposits, payments, the ledger,
//! and the fleet's public profile.
//!
//! Skeleton: the role starts, is reported SERVING by health and listed by reflection, and every
//! RPC answers UNIMPLEMENTED until the rentals issue (#5) fills it in.

use sneakernet_proto::orders::v1::fleet_service_server::{FleetService, FleetServiceServer};
use sneakernet_proto::orders::v1::order_service_server::{OrderService, OrderServiceServer};
use sneakernet_runtime::Shutdown;
use sneakernet_runtime::config::Config;
use sneakernet_runtime::role::{RoleContext, ServiceRole, StartError};
use sneakernet_runtime::server::GrpcServices;

/// The service name used for its database and `--role`.
pub const SERVICE: &str = "orders";

/// The orders role of the `sneakernet` binary.
#[derive(Debug)]
pub struct OrdersRole;

impl ServiceRole for OrdersRole {
    const NAME: &'static str = SERVICE;

    async fn start(_ctx: &RoleContext, services: &mut GrpcServices) -> Result<(), StartError> {
        services
            .add(OrderServiceServer::new(OrdersApi))
            .add(FleetServiceServer::new(OrdersApi));
        Ok(())
    }
}

/// Runs the orders service alone until `shutdown` triggers.
pub async fn serve(config: Config, shutdown: Shutdown) -> Result<(), StartError> {
    sneakernet_runtime::role::serve_role::<OrdersRole>(config, shutdown).await
}

/// The OrderService and FleetService implementation (skeleton: every RPC is UNIMPLEMENTED).
#[derive(Clone, Copy, Debug)]
pub struct OrdersApi;

#[tonic::async_trait]
impl OrderService for OrdersApi {}

#[tonic::async_trait]
impl FleetService for OrdersApi {}
