//! A node: one process serving a set of roles on one gRPC listener, the way Quickwit and
//! GreptimeDB pick roles per process. `standalone` is a node with every role.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use sneakernet_auth::AuthRole;
use sneakernet_content::ContentRole;
use sneakernet_gateway::GatewayRole;
use sneakernet_orders::OrdersRole;
use sneakernet_runtime::clock::SharedClock;
use sneakernet_runtime::config::Config;
use sneakernet_runtime::db::{DbOpenError, open_and_migrate};
use sneakernet_runtime::role::{RoleContext, ServiceRole, StartError};
use sneakernet_runtime::server::GrpcServices;
use sneakernet_runtime::supervise::TaskHealth;
use sneakernet_runtime::{Shutdown, TokenVerifier};
use tokio::task::JoinHandle;

/// A role this binary can serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeRole {
    /// Accounts, tokens, kiosk credentials.
    Auth,
    /// Offers, orders, payments, the fleet.
    Orders,
    /// Content packages and chunk downloads.
    Content,
    /// Kiosk links, commands, kiosk events.
    Gateway,
}

impl NodeRole {
    /// Every role, in start order (auth first: the others verify tokens with its keys).
    pub const ALL: [NodeRole; 4] = [
        NodeRole::Auth,
        NodeRole::Orders,
        NodeRole::Content,
        NodeRole::Gateway,
    ];

    fn name(self) -> &'static str {
        match self {
            NodeRole::Auth => AuthRole::NAME,
            NodeRole::Orders => OrdersRole::NAME,
            NodeRole::Content => ContentRole::NAME,
            NodeRole::Gateway => GatewayRole::NAME,
        }
    }

    /// Opens this role's database and applies its migrations, exactly as its start does
    /// (idempotent; Postgres under an advisory lock), then closes it.
    pub async fn migrate(self, config: &Config) -> Result<(), DbOpenError> {
        let db = match self {
            NodeRole::Auth => {
                use sneakernet_auth::{SERVICE, migration::Migrator};
                open_and_migrate::<Migrator>(config, SERVICE).await?
            }
            NodeRole::Orders => {
                use sneakernet_orders::{SERVICE, migration::Migrator};
                open_and_migrate::<Migrator>(config, SERVICE).await?
            }
            NodeRole::Content => {
                use sneakernet_content::{SERVICE, migration::Migrator};
                open_and_migrate::<Migrator>(config, SERVICE).await?
            }
            NodeRole::Gateway => {
                use sneakernet_gateway::{SERVICE, migration::Migrator};
                open_and_migrate::<Migrator>(config, SERVICE).await?
            }
        };
        // Closing flushes SQLite's write-ahead log into the file; an error here changes
        // nothing that was committed.
        if let Err(error) = db.close().await {
            tracing::warn!(role = %self, %error, "closing the database after migrating failed");
        }
        Ok(())
    }

    async fn start(self, ctx: &RoleContext, services: &mut GrpcServices) -> Result<(), StartError> {
        match self {
            NodeRole::Auth => AuthRole::start(ctx, services).await,
            NodeRole::Orders => OrdersRole::start(ctx, services).await,
            NodeRole::Content => ContentRole::start(ctx, services).await,
            NodeRole::Gateway => GatewayRole::start(ctx, services).await,
        }
    }
}

impl fmt::Display for NodeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for NodeRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeRole::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| format!("unknown role {s:?}; roles are auth, orders, content, gateway"))
    }
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    /// The bound gRPC address (the real port when `listen` asked for port 0).
    pub address: SocketAddr,
    /// The bound metrics address, if metrics are on.
    pub metrics_address: Option<SocketAddr>,
    /// The verifier behind the node's auth layer.
    pub verifier: TokenVerifier,
    shutdown: Shutdown,
    grace: std::time::Duration,
    server: JoinHandle<Result<(), StartError>>,
    /// Where [`Node::ready`] lifts a readiness hold.
    task_health: TaskHealth,
    /// The health names a readiness hold keeps NOT_SERVING (empty without a hold).
    held: Vec<&'static str>,
}

/// The name a readiness hold is marked under in [`TaskHealth`].
const READINESS_HOLD: &str = "node-readiness";

/// How [`start_with`] starts a node beyond [`start`].
#[derive(Clone, Copy, Debug, Default)]
pub struct StartOptions {
    /// Health reports NOT_SERVING, for every service and overall, until [`Node::ready`]:
    /// standalone serves its own simulated kiosks on the node before it is ready for anyone
    /// else.
    pub held_until_ready: bool,
}

/// Starts `roles` (deduplicated, auth first) on `config.listen`. Fails before serving anything
/// if any role cannot start.
pub async fn start(
    config: Config,
    roles: &[NodeRole],
    shutdown: Shutdown,
    clock: Option<SharedClock>,
) -> Result<Node, StartError> {
    start_with(config, roles, shutdown, clock, StartOptions::default()).await
}

/// [`start`] with `options`.
pub async fn start_with(
    config: Config,
    roles: &[NodeRole],
    shutdown: Shutdown,
    clock: Option<SharedClock>,
    options: StartOptions,
) -> Result<Node, StartError> {
    // Before any role builds a TLS client (remote keys, the gateway) or the TLS listener.
    sneakernet_runtime::tls::install_crypto_provider();
    let mut roles = roles.to_vec();
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        return Err(StartError::Other(
            "no role to serve; pass --role auth,orders,content,gateway".into(),
        ));
    }
    let listener = sneakernet_runtime::role::bind(&config).await?;
    let address = listener.local_addr().map_err(|e| StartError::Listen {
        address: config.listen.to_string(),
        reason: e.to_string(),
    })?;
    let service_secret = service_secret(&config, &roles).await?;
    let mut ctx = match clock {
        Some(clock) => RoleContext::with_clock(config, shutdown.clone(), clock),
        None => RoleContext::new(config, shutdown.clone()),
    };
    ctx.local_address = Some(address);
    ctx.local_roles = roles.iter().map(|role| role.name()).collect();
    ctx.service_secret = service_secret;
    let metrics_address = match ctx.config.metrics_listen {
        Some(addr) => Some(
            sneakernet_runtime::telemetry::serve_metrics(addr, &shutdown)
                .await
                .map_err(|e| StartError::Other(e.to_string()))?,
        ),
        None => None,
    };
    let mut services = GrpcServices::new();
    services.trust_forwarded_from(ctx.config.rate_limit.trusted_proxies.clone());
    let started = async {
        for role in &roles {
            role.start(&ctx, &mut services).await?;
        }
        if !roles.contains(&NodeRole::Auth) {
            ctx.fetch_keys_from_auth()?;
        }
        Ok::<(), StartError>(())
    }
    .await;
    if let Err(error) = started {
        // Stop whatever the roles that did start have spawned (metrics, key reloads).
        shutdown.trigger();
        shutdown.wait(ctx.config.shutdown_grace).await;
        return Err(error);
    }
    let task_health = services.task_health();
    let held = if options.held_until_ready {
        // Before the server reads health: nothing is SERVING until the hold is lifted.
        let held: Vec<&'static str> = services.names().iter().copied().chain([""]).collect();
        task_health.set(READINESS_HOLD, &held, true);
        held
    } else {
        Vec::new()
    };
    tracing::info!(%address, roles = ?roles.iter().map(ToString::to_string).collect::<Vec<_>>(), "node started");
    let verifier = ctx.verifier.clone();
    let grace = ctx.config.shutdown_grace;
    let server_shutdown = shutdown.clone();
    let server = tokio::spawn(async move {
        let result = sneakernet_runtime::server::serve(
            listener,
            services,
            ctx.verifier.clone(),
            ctx.config.tls.as_ref(),
            ctx.config.shutdown_grace,
            server_shutdown.clone(),
        )
        .await;
        // A server that stops on its own (transport failure) takes the node down with it.
        server_shutdown.trigger();
        result.map_err(StartError::from)
    });
    Ok(Node {
        address,
        metrics_address,
        verifier,
        shutdown,
        grace,
        server,
        task_health,
        held,
    })
}

impl Node {
    /// Lifts the readiness hold of [`StartOptions::held_until_ready`]: health reports SERVING
    /// (unless a supervised task is down). Without a hold, nothing changes.
    pub fn ready(&self) {
        self.task_health.set(READINESS_HOLD, &self.held, false);
    }

    /// Starts shutdown.
    pub fn stop(&self) {
        self.shutdown.trigger();
    }

    /// Waits until the node has stopped (after [`Node::stop`], a signal, or a server failure)
    /// and its tasks have drained.
    pub async fn wait(self) -> Result<(), StartError> {
        let result = match self.server.await {
            Ok(result) => result,
            Err(join) => Err(StartError::Other(format!(
                "gRPC server task failed: {join}"
            ))),
        };
        self.shutdown.trigger();
        self.shutdown.wait(self.grace).await;
        result
    }
}

/// The orders role's service secret: from `auth.service_secret_file`, or issued now when this
/// process also serves auth (standalone), or none when orders is not served here.
async fn service_secret(config: &Config, roles: &[NodeRole]) -> Result<Option<String>, StartError> {
    if !roles.contains(&NodeRole::Orders) {
        return Ok(None);
    }
    if let Some(file) = &config.auth.service_secret_file {
        return sneakernet_runtime::role::read_secret(
            file,
            "auth.service_secret_file",
            "SNEAKERNET_AUTH__SERVICE_SECRET_FILE",
        )
        .map(Some);
    }
    if roles.contains(&NodeRole::Auth) {
        return sneakernet_auth::issue_service_secret(config, OrdersRole::NAME)
            .await
            .map(Some);
    }
    Ok(None)
}
