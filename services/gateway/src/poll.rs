//! The replica's command poll: the fallback for a lost wake-up, one task per replica instead
//! of a timer per link.
//!
//! A command reaches its link by a wake-up: from the replica that logged it, or through Redis
//! from another one ([`crate::presence`]). A wake-up can be lost (Redis down, a publish
//! dropped), so every `gateway.command_poll_interval` while this replica is not subscribed to
//! Redis, and every [`SAFETY_POLL`] otherwise, this task asks the command log which of the
//! links it holds have a command past what their session last put on the link, one query per
//! [`POLL_CHUNK`] links, and wakes only those sessions. An idle link costs no timer and no
//! query of its own.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sneakernet_runtime::supervise::{self, Supervised, TaskHealth};
use tokio::time::Instant;

use crate::error::GatewayError;
use crate::registry::{Registry, SessionHandle};
use crate::session::LinkContext;
use crate::store::Store;

/// Without degraded routing, the log is still polled this often: a safety net for a wake-up
/// lost some other way (at 50,000 links a poll per link every 2 s would be 25,000 queries a
/// second for nothing; per replica it is one query per [`POLL_CHUNK`] links).
pub const SAFETY_POLL: Duration = Duration::from_secs(30);
/// Links asked about in one query at most (one bound parameter each, well within SQLite's
/// and Postgres's limits).
pub const POLL_CHUNK: usize = 1000;

/// Starts the poll on the link's shutdown, supervised. While it is down a lost wake-up is not
/// made good: `link_service` says NOT_SERVING.
pub fn spawn(link: &Arc<LinkContext>, health: &TaskHealth, link_service: &'static str) {
    let shutdown = link.shutdown.clone();
    let poller = link.clone();
    supervise::spawn(
        &shutdown,
        health.clone(),
        Supervised {
            name: "gateway-command-poll",
            serves: vec![link_service],
        },
        move || {
            let link = poller.clone();
            async move {
                poll_every(&link).await;
                Ok::<(), std::convert::Infallible>(())
            }
        },
    );
}

async fn poll_every(link: &LinkContext) {
    let token = link.shutdown.token();
    let every = link.timing.poll_interval;
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_poll = Instant::now();
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Fast while wake-ups from other replicas cannot reach this one, otherwise slow.
        if !link.presence.degraded() && last_poll.elapsed() < SAFETY_POLL {
            continue;
        }
        last_poll = Instant::now();
        match wake_pending(&link.store, link.presence.registry(), link.clock.now()).await {
            Ok(0) => {}
            Ok(woken) => {
                metrics::counter!("gateway_poll_wakeups_total").increment(woken as u64);
                tracing::debug!(woken, "command poll woke links with undelivered commands");
            }
            Err(error) => tracing::warn!(%error, "command poll failed; retrying next interval"),
        }
    }
}

/// Wakes each link held in `registry` that has a command newer than what its session put on
/// it, asking `store` once per [`POLL_CHUNK`] links. Returns how many it woke; a failed chunk
/// does not stop the others (the first error is returned after all were tried).
pub async fn wake_pending(
    store: &Store,
    registry: &Registry,
    now: DateTime<Utc>,
) -> Result<usize, GatewayError> {
    let held = registry.held();
    let mut woken = 0;
    let mut failed = None;
    for chunk in held.chunks(POLL_CHUNK) {
        metrics::counter!("gateway_poll_queries_total").increment(1);
        let kiosks: Vec<&str> = chunk.iter().map(|(kiosk, _)| kiosk.as_str()).collect();
        let newest = match store.newest_undelivered(&kiosks, now).await {
            Ok(newest) => newest,
            Err(error) => {
                failed.get_or_insert(error);
                continue;
            }
        };
        let handles: HashMap<&str, &SessionHandle> = chunk
            .iter()
            .map(|(kiosk, handle)| (kiosk.as_str(), handle))
            .collect();
        for (kiosk, seq) in newest {
            let Some(handle) = handles.get(kiosk.as_str()) else {
                continue;
            };
            if seq > handle.delivered_through() {
                handle.wake.notify_one();
                woken += 1;
            }
        }
    }
    failed.map_or(Ok(woken), Err)
}

#[cfg(test)]
mod tests {
    use sneakernet_proto::gateway::v1 as pb;
    use sneakernet_runtime::{DeviceId, KioskId};

    use super::*;
    use crate::store::{Logged, NewCommand};

    async fn store(dir: &std::path::Path) -> Store {
        let config = sneakernet_runtime::Config {
            data_dir: dir.to_owned(),
            ..Default::default()
        };
        let db = sneakernet_runtime::db::open_and_migrate::<crate::migration::Migrator>(
            &config, "gateway",
        )
        .await
        .expect("gateway db");
        Store::new(db).await.expect("store")
    }

    async fn log_wipe(store: &Store, kiosk: &str, key: &str, now: DateTime<Utc>) -> i64 {
        let logged = store
            .log_command(
                NewCommand {
                    device: DeviceId::Kiosk(KioskId::parse(kiosk).unwrap()),
                    requested_by: "test".into(),
                    idempotency_key: key.into(),
                    kind: crate::commands::wipe::KIND,
                    payload: pb::CommandPayload {
                        kind: Some(pb::command_payload::Kind::Wipe(pb::WipeCommand {
                            item_id: "D-1".into(),
                        })),
                    },
                    deadline: now + chrono::Duration::minutes(5),
                    deadline_chosen_by_caller: false,
                },
                now,
            )
            .await
            .expect("log command");
        match logged {
            Logged::Created(row) | Logged::Existing(row) => row.seq,
        }
    }

    /// Whether `handle` was woken since it last looked (a Notify keeps one permit).
    async fn woken(handle: &SessionHandle) -> bool {
        tokio::time::timeout(Duration::from_millis(50), handle.wake.notified())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_command_whose_wake_up_was_lost_wakes_only_its_link_and_only_once_delivered_past_it()
    {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path()).await;
        let registry = Registry::default();
        let k1 = SessionHandle::new("s-1".into());
        let k2 = SessionHandle::new("s-2".into());
        registry.claim("K-1", k1.clone());
        registry.claim("K-2", k2.clone());
        let now = Utc::now();

        // Logged with nobody told (as when Redis is down): no wake-up was sent.
        let seq = log_wipe(&store, "K-1", "lost-wake-up", now).await;
        // A command of a kiosk held elsewhere is not this replica's business.
        log_wipe(&store, "K-9", "elsewhere", now).await;

        assert_eq!(wake_pending(&store, &registry, now).await.unwrap(), 1);
        assert!(woken(&k1).await, "the link with the command is woken");
        assert!(!woken(&k2).await, "an idle link is not");

        // Once its session put the command on the link, the poll leaves it alone (a SENT
        // command is resent only on a new link).
        k1.delivered(seq);
        assert_eq!(wake_pending(&store, &registry, now).await.unwrap(), 0);
        assert!(!woken(&k1).await);

        // A command past its deadline is nobody's work.
        let later = now + chrono::Duration::minutes(10);
        let fresh = SessionHandle::new("s-3".into());
        registry.claim("K-1", fresh.clone());
        assert_eq!(wake_pending(&store, &registry, later).await.unwrap(), 0);
        assert!(!woken(&fresh).await);
    }

    #[tokio::test]
    async fn the_poll_asks_about_more_links_than_one_query_holds() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path()).await;
        let registry = Registry::default();
        let mut handles = Vec::new();
        for n in 0..POLL_CHUNK + 5 {
            let handle = SessionHandle::new(format!("s-{n}"));
            registry.claim(&format!("K-{n}"), handle.clone());
            handles.push(handle);
        }
        let now = Utc::now();
        // Whichever chunk the registry puts them in, both are found.
        log_wipe(&store, "K-3", "first", now).await;
        log_wipe(&store, &format!("K-{}", POLL_CHUNK + 2), "last", now).await;
        assert_eq!(wake_pending(&store, &registry, now).await.unwrap(), 2);
        assert!(woken(&handles[3]).await);
        assert!(woken(&handles[POLL_CHUNK + 2]).await);
    }
}
