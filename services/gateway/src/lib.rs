//! The device gateway: one long-lived link per device, the durable command log, and the
//! device event log. A device is a kiosk, or a drive's own remote link module (addressed as
//! `DeviceId`; stored as one string, see [`store`]), both on the same link code.
//!
//! - [`api`]: the gRPC surface (KioskLinkService, DeviceCommandService, DeviceEventService).
//! - [`session`]: one task per device link ([`admission`]: how many Hellos at once under a
//!   connect storm; [`progress`]: its progress writes, throttled;
//!   [`budget`]: how often a device may open its link and how fast it may send); [`registry`]: which links this process holds;
//!   [`presence`]: which replica holds which link, and routing commands to it (Redis);
//!   [`liveness`]: the online state kept true (leases renewed in batches, ghosts reconciled);
//!   [`poll`]: one poll per replica for commands whose wake-up was lost.
//! - [`domain::command`]: the command life cycle; [`commands`]: one file per command kind.
//! - [`subscribe`]: the resumable event stream.
//! - [`store`]: queries; [`entity`] and [`migration`]: the tables.

pub mod admission;
pub mod api;
pub mod budget;
pub mod commands;
pub mod domain;
pub mod entity;
pub mod error;
pub mod grants;
pub mod liveness;
pub mod migration;
pub mod poll;
pub mod presence;
pub mod progress;
pub mod registry;
pub mod session;
pub mod store;
pub mod subscribe;

use std::sync::Arc;
use std::time::Duration;

use sneakernet_proto::gateway::v1::device_command_service_server::DeviceCommandServiceServer;
use sneakernet_proto::gateway::v1::device_event_service_server::DeviceEventServiceServer;
use sneakernet_proto::gateway::v1::kiosk_link_service_server::KioskLinkServiceServer;
use sneakernet_runtime::Shutdown;
use sneakernet_runtime::config::Config;
use sneakernet_runtime::role::{RoleContext, ServiceRole, StartError};
use sneakernet_runtime::server::GrpcServices;
use sneakernet_runtime::supervise::{self, Supervised, TaskHealth};

use crate::admission::Admission;
use crate::api::GatewayApi;
use crate::budget::OpenBudget;
use crate::presence::Presence;
use crate::registry::Registry;
use crate::session::{LinkContext, LinkTiming};
use crate::store::Store;

/// The service name used for its database and `--role`.
pub const SERVICE: &str = "gateway";

/// Largest message a kiosk may send on its link. Inventories of a thousand bays fit; anything
/// larger is refused by the transport (OUT_OF_RANGE, "message length too large"), the kiosk is
/// told so, and the link closes cleanly.
pub const MAX_KIOSK_MESSAGE: usize = 256 * 1024;

/// How long a new link may take to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the ids of delivered kiosk messages are remembered for deduplication. A kiosk
/// offline longer than this and then replaying its outbox would have its messages applied
/// again: results stay idempotent at the command (a terminal command ignores a repeat), an
/// ItemReturned would appear twice in the event log.
const MESSAGE_MEMORY: chrono::Duration = chrono::Duration::days(90);
/// How often message ids past [`MESSAGE_MEMORY`] are forgotten.
const FORGET_EVERY: Duration = Duration::from_secs(3600);

/// Commands expired per sweep at most (the next sweep takes the rest).
const EXPIRE_BATCH: u64 = 200;

/// Events deleted per retention transaction: small enough that appends never wait long for
/// the lock (SQLite's one writer; Postgres row locks on the rows deleted only).
const PRUNE_BATCH: u64 = 1000;
/// Pause between two retention batches, so appends get the writer in between.
const PRUNE_PAUSE: Duration = Duration::from_millis(20);

/// The gateway role of the `sneakernet` binary.
#[derive(Debug)]
pub struct GatewayRole;

impl ServiceRole for GatewayRole {
    const NAME: &'static str = SERVICE;

    async fn start(ctx: &RoleContext, services: &mut GrpcServices) -> Result<(), StartError> {
        let api = build(ctx).await?;
        // Without the sweeper, commands past their deadline are never expired and their
        // orders never refunded: DeviceCommandService says NOT_SERVING while it is down.
        spawn_expiry_sweeper(
            &api.link,
            ctx.config.gateway.expiry_sweep_interval,
            services.task_health(),
            vec![<DeviceCommandServiceServer<GatewayApi> as tonic::server::NamedService>::NAME],
        );
        // Retention keeps the event log bounded; nothing is refused while it is down (the log
        // only grows), so it serves no health status.
        spawn_event_retention(
            &api.link,
            ctx.config.gateway.event_retention,
            ctx.config.gateway.event_prune_interval,
            services.task_health(),
        );
        liveness::spawn(
            &api.link,
            &services.task_health(),
            <KioskLinkServiceServer<GatewayApi> as tonic::server::NamedService>::NAME,
            <DeviceEventServiceServer<GatewayApi> as tonic::server::NamedService>::NAME,
        );
        poll::spawn(
            &api.link,
            &services.task_health(),
            <KioskLinkServiceServer<GatewayApi> as tonic::server::NamedService>::NAME,
        );
        services
            .add(
                KioskLinkServiceServer::new(api.clone())
                    .max_decoding_message_size(MAX_KIOSK_MESSAGE),
            )
            .add(DeviceCommandServiceServer::new(api.clone()))
            .add(DeviceEventServiceServer::new(api));
        Ok(())
    }
}

/// Runs the gateway alone until `shutdown` triggers.
pub async fn serve(config: Config, shutdown: Shutdown) -> Result<(), StartError> {
    sneakernet_runtime::role::serve_role::<GatewayRole>(config, shutdown).await
}

/// Opens the database and builds the services.
pub async fn build(ctx: &RoleContext) -> Result<GatewayApi, StartError> {
    let db = sneakernet_runtime::db::open_and_migrate::<migration::Migrator>(&ctx.config, SERVICE)
        .await?;
    let store = Store::new(db)
        .await
        .map_err(|e| StartError::Other(format!("gateway cannot start: {e}")))?;
    let gateway = &ctx.config.gateway;
    let registry = Registry::default();
    let presence = match &ctx.config.redis_url {
        Some(url) => Presence::with_redis(registry, url, gateway.offline_after * 2, &ctx.shutdown)
            .map_err(|e| {
                StartError::Other(format!(
                    "invalid configuration: `redis_url` ({}): {e}",
                    sneakernet_runtime::config::redact_url(url)
                ))
            })?,
        None => Presence::local(registry),
    };
    let link = Arc::new(LinkContext {
        store,
        presence,
        clock: ctx.clock.clone(),
        timing: LinkTiming {
            heartbeat_interval: gateway.heartbeat_interval,
            offline_after: gateway.offline_after,
            poll_interval: gateway.command_poll_interval,
            hello_timeout: HELLO_TIMEOUT,
            liveness_flush: gateway.liveness_flush_interval,
            reconcile_every: gateway.reconcile_interval,
            message_burst: gateway.link_message_burst,
            messages_per_second: gateway.link_messages_per_second,
        },
        shutdown: ctx.shutdown.clone(),
        verifier: ctx.verifier.clone(),
        open_budget: OpenBudget::new(gateway.link_open_burst, gateway.link_open_every),
        admission: Admission::new(admission::hello_turns(
            gateway.max_concurrent_hellos,
            ctx.config.database_max_connections,
        )),
    });
    Ok(GatewayApi { link })
}

/// Expires commands whose deadline passed unacknowledged, with their events, until shutdown;
/// forgets kiosk message ids and refused messages past retention. A supervised task.
/// Several replicas may sweep at once: each expiry is a conditional update, so one wins.
fn spawn_expiry_sweeper(
    link: &Arc<LinkContext>,
    every: Duration,
    health: TaskHealth,
    serves: Vec<&'static str>,
) {
    let task = Supervised {
        name: "gateway-expiry-sweeper",
        serves,
    };
    let link = link.clone();
    let shutdown = link.shutdown.clone();
    supervise::spawn(&shutdown, health, task, move || {
        let link = link.clone();
        async move {
            sweep(&link, every).await;
            Ok::<(), std::convert::Infallible>(())
        }
    });
}

async fn sweep(link: &LinkContext, every: Duration) {
    let token = link.shutdown.token();
    let mut tick = tokio::time::interval(every);
    let mut forget = tokio::time::interval(FORGET_EVERY);
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            _ = forget.tick() => {
                let before = link.clock.now() - MESSAGE_MEMORY;
                match link.store.forget_kiosk_messages(before).await {
                    Ok(0) => {}
                    Ok(forgotten) => tracing::info!(forgotten, "forgot delivered kiosk message ids past retention"),
                    Err(error) => tracing::warn!(%error, "kiosk message retention sweep failed"),
                }
                match link.store.forget_refused(before).await {
                    Ok(0) => {}
                    Ok(forgotten) => tracing::info!(forgotten, "forgot refused kiosk messages past retention"),
                    Err(error) => tracing::warn!(%error, "refused message retention sweep failed"),
                }
                continue;
            }
            _ = tick.tick() => {}
        }
        match link.store.expire_due(link.clock.now(), EXPIRE_BATCH).await {
            Ok(expired) => {
                for command in expired {
                    tracing::warn!(kiosk_id = %command.kiosk_id, command_id = %command.command_id, kind = %command.kind, "command expired unacknowledged");
                }
            }
            Err(error) => tracing::warn!(%error, "expiry sweep failed; retrying next tick"),
        }
    }
}

/// Deletes events older than `retention` every `every`, in batches of [`PRUNE_BATCH`] until
/// none is due, until shutdown. A supervised task. Replicas may prune at once: each batch is
/// a prefix of the log and the horizon only moves forward.
fn spawn_event_retention(
    link: &Arc<LinkContext>,
    retention: Duration,
    every: Duration,
    health: TaskHealth,
) {
    let task = Supervised {
        name: "gateway-event-retention",
        serves: vec![],
    };
    let link = link.clone();
    let shutdown = link.shutdown.clone();
    supervise::spawn(&shutdown, health, task, move || {
        let link = link.clone();
        async move {
            prune(&link, retention, every).await;
            Ok::<(), std::convert::Infallible>(())
        }
    });
}

async fn prune(link: &LinkContext, retention: Duration, every: Duration) {
    let token = link.shutdown.token();
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(before) = link.clock.now().checked_sub_signed(retention) else {
            continue;
        };
        let mut pruned: u64 = 0;
        loop {
            match link.store.prune_events(before, PRUNE_BATCH).await {
                Ok(deleted) => {
                    pruned = pruned.saturating_add(deleted);
                    metrics::counter!("gateway_events_pruned_total").increment(deleted);
                    if deleted < PRUNE_BATCH {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "event retention sweep failed; retrying next tick");
                    break;
                }
            }
            tokio::select! {
                () = token.cancelled() => return,
                () = tokio::time::sleep(PRUNE_PAUSE) => {}
            }
        }
        if pruned > 0 {
            tracing::info!(pruned, %before, "deleted events past retention");
        }
    }
}
