//! The orders service: offers, walk-up rentals, reservations, deposits, payments, the ledger,
//! and the fleet as operators see it.
//!
//! So far: the kiosk view (online state, last inventory) kept from the gateway's event log
//! ([`events`]), served by FleetService.ListKiosks and GetKiosk ([`api`]). Everything else
//! answers UNIMPLEMENTED until the rentals issue (#5).
//!
//! - [`domain`]: money, the order life cycle, the ledger, pricing (pure; wired by #5).
//! - [`inventory`]: inventories summed per item type (pure).
//! - [`payments`]: the PaymentProvider trait and the sandbox provider (wired by #5).
//! - [`store`]: queries; [`entity`] and [`migration`]: the tables.

pub mod api;
pub mod domain;
pub mod entity;
pub mod events;
pub mod inventory;
pub mod migration;
pub mod payments;
pub mod store;

use std::time::Duration;

use sneakernet_proto::orders::v1::fleet_service_server::FleetServiceServer;
use sneakernet_proto::orders::v1::order_service_server::OrderServiceServer;
use sneakernet_runtime::config::{Config, ConfigError};
use sneakernet_runtime::role::{RoleContext, ServiceRole, StartError};
use sneakernet_runtime::server::GrpcServices;
use sneakernet_runtime::service_token::ServiceToken;
use sneakernet_runtime::{ServiceName, Shutdown};
use tonic::transport::Endpoint;

use crate::api::OrdersApi;
use crate::store::Store;

/// The service name used for its database and `--role`.
pub const SERVICE: &str = "orders";

/// The orders role of the `sneakernet` binary.
#[derive(Debug)]
pub struct OrdersRole;

impl ServiceRole for OrdersRole {
    const NAME: &'static str = SERVICE;

    async fn start(ctx: &RoleContext, services: &mut GrpcServices) -> Result<(), StartError> {
        let db =
            sneakernet_runtime::db::open_and_migrate::<migration::Migrator>(&ctx.config, SERVICE)
                .await?;
        let store = Store::new(db);
        let auth_url = ctx.peer_url(
            "auth",
            ctx.config.auth.url.as_ref(),
            "auth.url",
            "SNEAKERNET_AUTH__URL",
        )?;
        let secret = ctx.service_secret.clone().ok_or_else(|| {
            StartError::Config(ConfigError::Invalid {
                key: "auth.service_secret_file",
                env: "SNEAKERNET_AUTH__SERVICE_SECRET_FILE",
                reason: "must be set when this process serves orders without auth (orders logs in as a service to read kiosk events)".into(),
            })
        })?;
        let gateway_url = ctx.peer_url(
            "gateway",
            ctx.config.orders.gateway_url.as_ref(),
            "orders.gateway_url",
            "SNEAKERNET_ORDERS__GATEWAY_URL",
        )?;
        let service = ServiceName::parse(SERVICE).map_err(StartError::Other)?;
        let token = ServiceToken::spawn(service, &auth_url, secret, &ctx.shutdown)?;
        let gateway = Endpoint::from_shared(gateway_url.clone())
            .map_err(|e| {
                StartError::Config(ConfigError::Invalid {
                    key: "orders.gateway_url",
                    env: "SNEAKERNET_ORDERS__GATEWAY_URL",
                    reason: format!("{gateway_url}: {e}"),
                })
            })?
            .connect_timeout(Duration::from_secs(10))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        events::spawn_kiosk_view(store.clone(), gateway, token, &ctx.shutdown);
        let api = OrdersApi { store };
        services
            .add(OrderServiceServer::new(api.clone()))
            .add(FleetServiceServer::new(api));
        Ok(())
    }
}

/// Runs the orders service alone until `shutdown` triggers.
pub async fn serve(config: Config, shutdown: Shutdown) -> Result<(), StartError> {
    sneakernet_runtime::role::serve_role::<OrdersRole>(config, shutdown).await
}
