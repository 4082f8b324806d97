//! Which kiosks are shown online, kept true without a database commit per heartbeat.
//!
//! A kiosk's row says `online` with the session of its current link, and `last_seen_at`: the
//! lease of that link, renewed by the replica that holds it. Heartbeats are noted in memory
//! only (each session's own silence timer); every `gateway.liveness_flush_interval` a
//! replica renews the lease of all the links it holds in one statement per
//! [`FLUSH_CHUNK`] links ([`flush`]), so its commits per second do not grow with its links.
//!
//! A link normally ends through its session, which marks the kiosk offline (retrying until
//! the write lands). What a session cannot do (its process was killed, or shut down while
//! the database failed) the reconcilers do: every replica, at startup and every
//! `gateway.reconcile_interval` ([`reconcile`]), marks offline, with its KioskOffline event,
//! each kiosk shown online whose lease lapsed — last seen longer ago than [`lease`]
//! (`offline_after` + 2 × the flush interval), not held by this replica, and, with Redis,
//! with no live presence key. A live holder renews its leases every flush interval, so it
//! never loses a kiosk to another replica's reconciler; the offline write is conditional on
//! the session and the lapsed lease, so a renewal racing it wins, and one transition writes
//! one event.
//!
//! A ghost (a kiosk shown online that no replica holds) therefore lasts at most
//! [`lease`] (with Redis, at least until its presence key expires) + the reconcile interval.

use std::sync::Arc;
use std::time::Duration;

use sneakernet_proto::gateway::v1 as pb;
use sneakernet_runtime::supervise::{self, Supervised, TaskHealth};
use sneakernet_runtime::wire::timestamp;

use crate::error::GatewayError;
use crate::session::{LinkContext, LinkTiming};

/// Links whose lease one statement renews at most (two bound parameters each, well within
/// SQLite's and Postgres's limits).
pub const FLUSH_CHUNK: usize = 1000;
/// Lapsed kiosks read per query by the reconciler.
const RECONCILE_BATCH: u64 = 500;

/// How long a link's lease lasts after its last renewal: the link timeout, plus a margin of
/// two flush intervals, so a live holder (which renews every interval) always renews in time.
pub fn lease(timing: &LinkTiming) -> Duration {
    timing.offline_after + timing.liveness_flush * 2
}

/// Starts the liveness flush and the reconciler on the link's shutdown, supervised. While the
/// flush is down this replica's leases are not renewed: `link_service` says NOT_SERVING.
/// While the reconciler is down ghosts are not cleared: `event_service` says NOT_SERVING.
pub fn spawn(
    link: &Arc<LinkContext>,
    health: &TaskHealth,
    link_service: &'static str,
    event_service: &'static str,
) {
    let shutdown = link.shutdown.clone();
    let flusher = link.clone();
    supervise::spawn(
        &shutdown,
        health.clone(),
        Supervised {
            name: "gateway-liveness-flush",
            serves: vec![link_service],
        },
        move || {
            let link = flusher.clone();
            async move {
                flush_every(&link).await;
                Ok::<(), std::convert::Infallible>(())
            }
        },
    );
    let reconciler = link.clone();
    supervise::spawn(
        &shutdown,
        health.clone(),
        Supervised {
            name: "gateway-reconciler",
            serves: vec![event_service],
        },
        move || {
            let link = reconciler.clone();
            async move {
                reconcile_every(&link).await;
                Ok::<(), std::convert::Infallible>(())
            }
        },
    );
}

async fn flush_every(link: &LinkContext) {
    let token = link.shutdown.token();
    let every = link.timing.liveness_flush;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(error) = flush(link).await {
            tracing::warn!(%error, "liveness flush failed; retrying next interval");
        }
    }
}

async fn reconcile_every(link: &LinkContext) {
    let token = link.shutdown.token();
    // The first tick is at once: a replica reconciles when it starts.
    let mut tick = tokio::time::interval(link.timing.reconcile_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        match reconcile(link).await {
            Ok(0) => {}
            Ok(marked) => tracing::warn!(marked, "marked offline kiosks whose link lease lapsed"),
            Err(error) => tracing::warn!(%error, "reconcile failed; retrying next interval"),
        }
    }
}

/// Renews the lease of every link this replica holds, a statement per [`FLUSH_CHUNK`]
/// links. A link whose kiosk's row names another session, or says offline, is no longer the
/// kiosk's online link: its session is told so and asks the kiosk to reconnect.
pub async fn flush(link: &LinkContext) -> Result<(), GatewayError> {
    let held = link.presence.registry().held();
    let now = link.clock.now();
    let mut failed = None;
    for chunk in held.chunks(FLUSH_CHUNK) {
        let pairs: Vec<(&str, &str)> = chunk
            .iter()
            .map(|(kiosk, handle)| (kiosk.as_str(), handle.session_id.as_str()))
            .collect();
        metrics::counter!("gateway_liveness_writes_total").increment(1);
        let renewed = match link.store.renew_leases(&pairs, now).await {
            Ok(renewed) => renewed,
            Err(error) => {
                // The other chunks may still go through; this one's sessions keep their
                // leases until the lease lapses.
                failed = Some(error);
                continue;
            }
        };
        for (kiosk, handle) in chunk {
            if !renewed.contains(kiosk) {
                tracing::info!(device = %kiosk, session_id = %handle.session_id, "link is no longer its device's online link; closing it");
                handle.replaced.cancel();
            }
        }
    }
    metrics::counter!("gateway_liveness_flushes_total").increment(1);
    failed.map_or(Ok(()), Err)
}

/// Marks offline, with their KioskOffline events, the kiosks shown online whose lease lapsed
/// and that no live replica holds (see the module docs). Returns how many it marked.
pub async fn reconcile(link: &LinkContext) -> Result<u64, GatewayError> {
    let now = link.clock.now();
    // Configuration bounds the lease to hours; the fallbacks only keep this free of panics.
    let lease = chrono::Duration::from_std(lease(&link.timing)).unwrap_or(chrono::Duration::MAX);
    let seen_before = now
        .checked_sub_signed(lease)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    let registry = link.presence.registry();
    let mut after = String::new();
    let mut marked = 0;
    loop {
        let lapsed = link
            .store
            .lapsed_kiosks(seen_before, &after, RECONCILE_BATCH)
            .await?;
        let Some((last, _, _)) = lapsed.last() else {
            break;
        };
        after = last.clone();
        let full = lapsed.len() as u64 == RECONCILE_BATCH;
        let unheld: Vec<_> = lapsed
            .into_iter()
            .filter(|(kiosk, session, _)| !registry.holds(kiosk, session))
            .collect();
        let keys: Vec<String> = unheld.iter().map(|(kiosk, _, _)| kiosk.clone()).collect();
        let live = link.presence.live(&keys).await;
        for (index, (kiosk, session, seen)) in unheld.iter().enumerate() {
            if live.as_ref().is_some_and(|live| live[index]) {
                // Another replica still refreshes its presence: its flush is late, not gone.
                continue;
            }
            let offline = pb::KioskOffline {
                reason: pb::OfflineReason::HeartbeatTimeout.into(),
                message: format!(
                    "no gateway replica holds its link any more (lease lapsed {}s after it was last renewed)",
                    lease.num_seconds()
                ),
                last_seen_at: Some(timestamp(*seen)),
            };
            if link
                .store
                .lapse_kiosk(kiosk, session, seen_before, offline, now)
                .await?
            {
                tracing::info!(device = %kiosk, session_id = %session, last_seen_at = %seen, "device offline: link lease lapsed");
                metrics::counter!("gateway_kiosks_reconciled_offline_total").increment(1);
                marked += 1;
            }
        }
        if !full {
            break;
        }
    }
    Ok(marked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_outlasts_the_link_timeout_by_two_flush_intervals() {
        let timing = LinkTiming {
            heartbeat_interval: Duration::from_secs(15),
            offline_after: Duration::from_secs(45),
            poll_interval: Duration::from_secs(2),
            hello_timeout: Duration::from_secs(30),
            liveness_flush: Duration::from_secs(15),
            reconcile_every: Duration::from_secs(15),
            message_burst: 200,
            messages_per_second: 50,
        };
        assert_eq!(lease(&timing), Duration::from_secs(75));
        assert!(lease(&timing) > timing.offline_after + timing.liveness_flush);
    }
}
