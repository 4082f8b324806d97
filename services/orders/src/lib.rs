//! The orders service: offers, walk-up rentals, reservations, deposits, payments, the ledger,
//! and the fleet as operators see it.
//!
//! Seed flow 1 end to end: kiosk profiles and prices, ScanKiosk's offer, deposits,
//! CreateRental (hold, charge, order + ledger + outbox in one transaction), the lend through
//! the gateway, the kiosk's result and returns from the gateway's event log, refunds and fees,
//! the auditor. Seed flow 2: FindKiosks, CreateReservation (hold a drive that can take the
//! package, charge, book with the provision), the provision's result, its progress in
//! WatchOrder, cancel, no-show expiry, pickup, and SetWriteProtect (the kiosk before pickup,
//! the drive's own remote link while lent).
//!
//! - [`api`]: the gRPC surface; [`convert`]: checking input at the edge into [`ids`];
//!   [`error`]: the flows' errors, mapped to gRPC codes in one place.
//! - [`flows`]: what the flows share; one module per flow: [`scan`], [`deposits`],
//!   [`rentals`], [`reservations`], [`watch`], [`fleet`], [`lending`], [`nearby`]
//!   (FindKiosks), [`write_protect`] (SetWriteProtect); [`checkout`]: the steps every paid
//!   order runs (price, hold, charge, book); [`prices`]: what a type costs at a site, for
//!   offers and availability alike.
//! - [`settle`]: the worker that finishes what requests started (outbox, refunds, fees,
//!   deadlines, unknown payments).
//! - [`events`]: following the gateway's event log; [`gateway_client`]: commands;
//!   [`content_client`]: what a reservation's package is.
//! - [`domain`]: money, the order, payment attempt and deposit life cycles, the ledger,
//!   pricing, offers, geometry, the reservable rule, availability (pure).
//! - [`inventory`]: inventories summed per item type (pure).
//! - [`payments`]: the PaymentProvider trait and the sandbox provider.
//! - [`sealing`]: QR secrets encrypted at rest.
//! - [`store`]: queries, one transaction per decision; [`entity`] and [`migration`]: tables.

pub mod api;
pub mod checkout;
pub mod content_client;
pub mod convert;
pub mod deposits;
pub mod domain;
pub mod entity;
pub mod error;
pub mod events;
pub mod fleet;
pub mod flows;
pub mod gateway_client;
pub mod ids;
pub mod inventory;
pub mod lending;
pub mod migration;
pub mod nearby;
pub mod orders_list;
pub mod payments;
pub mod prices;
pub mod rentals;
pub mod reservations;
pub mod scan;
pub mod sealing;
pub mod settle;
pub mod store;
pub mod wake;
pub mod watch;
pub mod write_protect;

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
use crate::flows::Flows;
use crate::payments::TimedProvider;
use crate::payments::sandbox::SandboxProvider;
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
        let wakeups = match &ctx.config.redis_url {
            Some(url) => wake::OrderWakeups::with_redis(url, &ctx.shutdown).map_err(|e| {
                StartError::Other(format!(
                    "invalid configuration: `redis_url` ({}): {e}",
                    sneakernet_runtime::config::redact_url(url)
                ))
            })?,
            None => wake::OrderWakeups::local(),
        };
        let store = Store::new(db).with_wakeups(wakeups);
        // Before anything else runs: a replica with another key would answer every scan of
        // a kiosk whose QR secret the others sealed with INTERNAL.
        let sealing =
            sealing::SealingKey::load_shared(&ctx.config, &store, ctx.clock.now()).await?;
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
        let content_url = ctx.peer_url(
            "content",
            ctx.config.orders.content_url.as_ref(),
            "orders.content_url",
            "SNEAKERNET_ORDERS__CONTENT_URL",
        )?;
        let content = Endpoint::from_shared(content_url.clone())
            .map_err(|e| {
                StartError::Config(ConfigError::Invalid {
                    key: "orders.content_url",
                    env: "SNEAKERNET_ORDERS__CONTENT_URL",
                    reason: format!("{content_url}: {e}"),
                })
            })?
            .connect_timeout(Duration::from_secs(10));
        let service = ServiceName::parse(SERVICE).map_err(StartError::Other)?;
        let token =
            ServiceToken::spawn(service, &auth_url, secret, ctx.clock.clone(), &ctx.shutdown)?;
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
        let wake = std::sync::Arc::new(tokio::sync::Notify::new());
        let orders = &ctx.config.orders;
        let deposit =
            flows::configured_deposit(orders.deposit_minor_units, &orders.deposit_currency)
                .map_err(|reason| {
                    StartError::Config(ConfigError::Invalid {
                        key: "orders.deposit_currency",
                        env: "SNEAKERNET_ORDERS__DEPOSIT_CURRENCY",
                        reason,
                    })
                })?;
        let flows = Flows {
            store: store.clone(),
            provider: std::sync::Arc::new(TimedProvider::new(
                SandboxProvider::new(store.connection().clone()),
                orders.payment_timeout,
            )),
            clock: ctx.clock.clone(),
            sealing,
            deposit,
            offer_ttl: orders.offer_ttl,
            lend_deadline: orders.lend_deadline,
            provision_deadline: orders.provision_deadline,
            wake: wake.clone(),
            content: content_client::ContentClient::new(&content, token.clone()),
            gateway: gateway_client::GatewayClient::new(&gateway, token.clone())
                .with_timeout(orders.gateway_timeout),
        };
        let client = flows.gateway.clone();
        // Without these two tasks no order moves: while either is down, both services say
        // NOT_SERVING.
        let serves = vec![
            <OrderServiceServer<OrdersApi> as tonic::server::NamedService>::NAME,
            <FleetServiceServer<OrdersApi> as tonic::server::NamedService>::NAME,
        ];
        events::spawn_kiosk_view(
            store.clone(),
            gateway,
            token,
            wake,
            &ctx.shutdown,
            services.task_health(),
            serves.clone(),
        );
        settle::spawn(
            flows.clone(),
            client,
            orders.sweep_interval,
            &ctx.shutdown,
            services.task_health(),
            serves,
        );
        let grace = orders.sweep_interval * 3 + Duration::from_secs(30);
        let api = OrdersApi {
            flows,
            shutdown: ctx.shutdown.clone(),
            audit_grace: chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::minutes(1)),
            creations: sneakernet_runtime::rate_limit::KeyedLimiter::new(
                "orders and deposits for this account",
                ctx.config.rate_limit.orders_per_account,
                ctx.config.rate_limit.period,
            ),
            watches: watch::Watches::new(
                orders.watch_poll_interval,
                orders.watch_degraded_poll_interval,
                orders.max_watches_per_user,
            ),
        };
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
