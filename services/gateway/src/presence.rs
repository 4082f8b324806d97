//! Which replica holds which kiosk's link, across replicas, and how a command accepted by one
//! replica reaches the replica that holds the link.
//!
//! In-process only (no `redis_url`, e.g. standalone): the [`Registry`] is the whole truth.
//! With Redis: each replica records `sneakernet:presence:<kiosk>` = its replica id with a TTL
//! refreshed by heartbeats, and listens on `sneakernet:replica:<id>`; a replica that accepts a
//! command for a kiosk it does not hold publishes the kiosk id to the holder's channel.
//!
//! Redis is an accelerator, never the truth: every Redis operation goes through one worker task
//! fed by a bounded queue (dropped when full or when Redis is down), and the replica polls the
//! command log for its links ([`crate::poll`]) at `gateway.command_poll_interval` while it is
//! not subscribed, so with Redis gone commands still arrive, only later. The reconcilers ([`crate::liveness`]) ask it whether a kiosk whose
//! database lease lapsed still has a live presence key (its holder is alive, its flush late).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use sneakernet_runtime::Shutdown;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;

use crate::registry::Registry;

/// Redis operations waiting for the worker. When full, new ones are dropped: presence heals
/// at the next heartbeat and delivery falls back to polling.
const QUEUE: usize = 4096;
/// How long one Redis operation may take before it is abandoned.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// The presence of this replica's links, local and (optionally) in Redis. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Presence {
    registry: Registry,
    redis: Option<mpsc::Sender<Op>>,
    /// True while this replica is not subscribed to its Redis channel: wake-ups from other
    /// replicas cannot reach it, so it polls the log for its links fast.
    degraded: Arc<AtomicBool>,
}

#[derive(Debug)]
enum Op {
    Hold(String),
    Release(String),
    Route(String),
    /// Which of these kiosks some replica holds (a live presence key), in order.
    Live(Vec<String>, oneshot::Sender<Vec<bool>>),
}

impl Presence {
    /// Presence without Redis: one replica, or standalone.
    pub fn local(registry: Registry) -> Self {
        Self {
            registry,
            redis: None,
            degraded: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Presence shared through Redis at `url`. Starts the worker and the listener on
    /// `shutdown`; neither needs Redis to be up now (they retry with backoff).
    pub fn with_redis(
        registry: Registry,
        url: &str,
        ttl: Duration,
        shutdown: &Shutdown,
    ) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let replica = uuid::Uuid::now_v7().to_string();
        let (sender, receiver) = mpsc::channel(QUEUE);
        let degraded = Arc::new(AtomicBool::new(true));
        shutdown.spawn(worker(
            client.clone(),
            replica.clone(),
            ttl,
            receiver,
            shutdown.clone(),
        ));
        shutdown.spawn(listener(
            client,
            replica.clone(),
            registry.clone(),
            degraded.clone(),
            shutdown.clone(),
        ));
        tracing::info!(replica = %replica, "kiosk presence shared through redis");
        Ok(Self {
            registry,
            redis: Some(sender),
            degraded,
        })
    }

    /// Whether wake-ups from other replicas may be lost right now (Redis configured but this
    /// replica is not subscribed): the command log is polled at the fast interval.
    pub fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// This process's sessions.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    fn enqueue(&self, op: Op) {
        if let Some(redis) = &self.redis
            && redis.try_send(op).is_err()
        {
            tracing::debug!("presence queue full or closed; relying on polling");
        }
    }

    /// This replica holds (or still holds, on each heartbeat) the kiosk's link.
    pub fn hold(&self, kiosk_id: &str) {
        self.enqueue(Op::Hold(kiosk_id.to_owned()));
    }

    /// This replica no longer holds the kiosk's link.
    pub fn release(&self, kiosk_id: &str) {
        self.enqueue(Op::Release(kiosk_id.to_owned()));
    }

    /// Which of `kiosks` some replica holds according to Redis (a live presence key), in
    /// order; `None` when that cannot be told (no Redis configured, Redis down or slow, the
    /// queue full): the caller then decides by the database's lease alone.
    pub async fn live(&self, kiosks: &[String]) -> Option<Vec<bool>> {
        let redis = self.redis.as_ref()?;
        if kiosks.is_empty() {
            return Some(Vec::new());
        }
        let (answer, answered) = oneshot::channel();
        redis.try_send(Op::Live(kiosks.to_vec(), answer)).ok()?;
        // The worker answers within its own Redis timeout, or drops the question.
        answered.await.ok()
    }

    /// A command for the kiosk was logged: wake its link here, or tell the replica holding it.
    pub fn wake(&self, kiosk_id: &str) {
        if !self.registry.wake(kiosk_id) {
            self.enqueue(Op::Route(kiosk_id.to_owned()));
        }
    }
}

fn presence_key(kiosk_id: &str) -> String {
    format!("sneakernet:presence:{kiosk_id}")
}

fn replica_channel(replica: &str) -> String {
    format!("sneakernet:replica:{replica}")
}

/// Deletes the presence key only if this replica still owns it (a newer holder keeps it).
const RELEASE_SCRIPT: &str = r"if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

async fn worker(
    client: redis::Client,
    replica: String,
    ttl: Duration,
    mut ops: mpsc::Receiver<Op>,
    shutdown: Shutdown,
) {
    let ttl_secs = ttl.as_secs().max(1);
    let mut connection: Option<ConnectionManager> = None;
    let mut retry_at = tokio::time::Instant::now();
    let release = redis::Script::new(RELEASE_SCRIPT);
    loop {
        let op = tokio::select! {
            () = shutdown.triggered() => return,
            op = ops.recv() => match op {
                Some(op) => op,
                None => return,
            },
        };
        if connection.is_none() {
            if tokio::time::Instant::now() < retry_at {
                continue; // Redis is down: drop the operation, polling covers it.
            }
            connection = sneakernet_runtime::redis_link::connect(
                &client,
                REDIS_TIMEOUT,
                "kiosk commands fall back to polling",
            )
            .await;
            if connection.is_none() {
                retry_at = tokio::time::Instant::now() + Duration::from_secs(2);
                continue;
            }
        }
        let Some(redis) = connection.as_mut() else {
            continue;
        };
        if let Op::Live(kiosks, answer) = op {
            let keys: Vec<String> = kiosks.iter().map(|k| presence_key(k)).collect();
            match redis.mget::<_, Vec<Option<String>>>(&keys).await {
                Ok(holders) if holders.len() == keys.len() => {
                    let _ = answer.send(holders.iter().map(Option::is_some).collect());
                }
                Ok(_) => tracing::warn!("redis answered a presence lookup with the wrong count"),
                Err(error) => tracing::warn!(%error, "presence lookup failed"),
            }
            continue;
        }
        let done: redis::RedisResult<()> = match &op {
            Op::Hold(kiosk) => redis.set_ex(presence_key(kiosk), &replica, ttl_secs).await,
            Op::Release(kiosk) => release
                .key(presence_key(kiosk))
                .arg(&replica)
                .invoke_async::<i64>(redis)
                .await
                .map(drop),
            Op::Route(kiosk) => {
                let holder: Option<String> = match redis.get(presence_key(kiosk)).await {
                    Ok(holder) => holder,
                    Err(error) => {
                        tracing::debug!(%error, "presence lookup failed");
                        None
                    }
                };
                match holder {
                    Some(holder) if holder != replica => redis
                        .publish(replica_channel(&holder), kiosk)
                        .await
                        .map(|_: i64| ()),
                    _ => Ok(()),
                }
            }
            Op::Live(..) => Ok(()), // answered above
        };
        if let Err(error) = done {
            tracing::warn!(%error, ?op, "redis operation failed; relying on polling");
        }
    }
}

async fn listener(
    client: redis::Client,
    replica: String,
    registry: Registry,
    degraded: Arc<AtomicBool>,
    shutdown: Shutdown,
) {
    let channel = replica_channel(&replica);
    let mut backoff = Duration::from_millis(200);
    loop {
        let subscribed = async {
            let mut pubsub = tokio::time::timeout(REDIS_TIMEOUT * 2, client.get_async_pubsub())
                .await
                .ok()?
                .ok()?;
            pubsub.subscribe(&channel).await.ok()?;
            Some(pubsub)
        };
        let pubsub = tokio::select! {
            () = shutdown.triggered() => return,
            pubsub = subscribed => pubsub,
        };
        if let Some(pubsub) = pubsub {
            backoff = Duration::from_millis(200);
            degraded.store(false, Ordering::Relaxed);
            let mut messages = pubsub.into_on_message();
            loop {
                tokio::select! {
                    () = shutdown.triggered() => return,
                    message = messages.next() => match message {
                        Some(message) => {
                            if let Ok(kiosk) = message.get_payload::<String>() {
                                registry.wake(&kiosk);
                            }
                        }
                        None => break,
                    },
                }
            }
            tracing::warn!("redis subscription lost; resubscribing");
        }
        degraded.store(true, Ordering::Relaxed);
        tokio::select! {
            () = shutdown.triggered() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}
