//! Wake-ups for WatchOrder: after an order change commits, its watchers are woken, in this
//! replica and in the others.
//!
//! Each replica keeps one entry per watched order (a `tokio::sync::watch` counter every watcher
//! of that order follows), so a change wakes only that order's watchers and a wake-up that
//! lands between two reads is never lost (the counter remembers it). With Redis (`redis_url`):
//! a change is also published as `<replica>|<order id>` on [`CHANNEL`], and one subscription
//! per replica wakes its own watchers of that order; its own messages are skipped.
//!
//! Redis is an accelerator, never the truth (as the gateway's presence): publishing goes
//! through one worker fed by a bounded queue (dropped when full or when Redis is down), and
//! each watcher re-reads its order at `orders.watch_poll_interval` anyway, or at
//! `orders.watch_degraded_poll_interval` while this replica is not subscribed. When the
//! subscription is lost, every watcher of this replica is woken once (to wait again at the
//! degraded interval), and again when it comes back (what was published meanwhile is lost
//! to it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;
use sneakernet_runtime::Shutdown;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;

/// The Redis channel order changes are published on.
pub const CHANNEL: &str = "sneakernet:orders:changed";
/// Order ids waiting to be published. When full, new ones are dropped: watchers on other
/// replicas see the change at their next safety poll.
const QUEUE: usize = 4096;
/// How long one Redis operation may take before it is abandoned.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// This replica's watchers by order, and the way to the others. Cheap to clone.
#[derive(Clone, Debug)]
pub struct OrderWakeups {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Watched orders: each watcher holds a receiver of its order's counter.
    watched: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// The publishing worker's queue, with Redis.
    publish: Option<mpsc::Sender<String>>,
    /// This replica's id in published messages (its own are skipped).
    replica: String,
    /// True while wake-ups from other replicas may be lost: Redis is configured and this
    /// replica is not subscribed.
    degraded: AtomicBool,
}

impl Default for OrderWakeups {
    fn default() -> Self {
        Self::local()
    }
}

impl OrderWakeups {
    /// Wake-ups within this process only: one replica, or standalone.
    pub fn local() -> Self {
        Self::build(None, false)
    }

    fn build(publish: Option<mpsc::Sender<String>>, degraded: bool) -> Self {
        Self {
            inner: Arc::new(Inner {
                watched: Mutex::new(HashMap::new()),
                publish,
                replica: uuid::Uuid::now_v7().to_string(),
                degraded: AtomicBool::new(degraded),
            }),
        }
    }

    /// Wake-ups shared through Redis at `url`. Starts the publisher and the subscriber on
    /// `shutdown`; neither needs Redis to be up now (they retry with backoff).
    pub fn with_redis(url: &str, shutdown: &Shutdown) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let (sender, receiver) = mpsc::channel(QUEUE);
        let wakeups = Self::build(Some(sender), true);
        shutdown.spawn(publisher(
            client.clone(),
            wakeups.inner.replica.clone(),
            receiver,
            shutdown.clone(),
        ));
        shutdown.spawn(subscriber(client, wakeups.clone(), shutdown.clone()));
        tracing::info!(replica = %wakeups.inner.replica, "order wake-ups shared through redis");
        Ok(wakeups)
    }

    /// Whether wake-ups from other replicas may be lost right now: watchers should re-read
    /// at the degraded interval.
    pub fn degraded(&self) -> bool {
        self.inner.degraded.load(Ordering::Relaxed)
    }

    /// Follows `order_id`: the returned [`Wakeup`] fires for every change announced after
    /// this call (a change between two waits is remembered, not lost).
    pub fn follow(&self, order_id: &str) -> Wakeup {
        let mut watched = self.lock();
        let receiver = match watched.get(order_id) {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = watch::channel(0);
                watched.insert(order_id.to_owned(), sender);
                receiver
            }
        };
        Wakeup {
            order_id: order_id.to_owned(),
            receiver: Some(receiver),
            wakeups: self.clone(),
        }
    }

    /// An order changed here (after its commit): wakes its watchers in this replica and
    /// publishes it to the others.
    pub fn announce(&self, order_id: &str) {
        self.wake(order_id);
        if let Some(publish) = &self.inner.publish
            && publish.try_send(order_id.to_owned()).is_err()
        {
            tracing::debug!("order wake-up queue full or closed; other replicas poll");
        }
    }

    /// Wakes this replica's watchers of `order_id`, if any.
    fn wake(&self, order_id: &str) {
        if let Some(sender) = self.lock().get(order_id) {
            sender.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Wakes every watcher of this replica (wake-ups may have been lost).
    fn wake_all(&self) {
        for sender in self.lock().values() {
            sender.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// How many orders this replica's watchers follow.
    pub fn watched_orders(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<u64>>> {
        // A panic while holding the map leaves it consistent (inserts and removes only).
        self.inner
            .watched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One watcher's wake-up for one order; the order's entry goes when its last watcher does.
#[derive(Debug)]
pub struct Wakeup {
    order_id: String,
    receiver: Option<watch::Receiver<u64>>,
    wakeups: OrderWakeups,
}

impl Wakeup {
    /// Waits for a change announced since the last wait (or since [`OrderWakeups::follow`]).
    pub async fn changed(&mut self) {
        let Some(receiver) = self.receiver.as_mut() else {
            return std::future::pending().await;
        };
        if receiver.changed().await.is_err() {
            // The sender lives in the map while a receiver does: not reached.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Wakeup {
    fn drop(&mut self) {
        let mut watched = self.wakeups.lock();
        drop(self.receiver.take());
        if watched
            .get(&self.order_id)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            watched.remove(&self.order_id);
        }
    }
}

/// Publishes each announced order id, dropping them while Redis is down.
async fn publisher(
    client: redis::Client,
    replica: String,
    mut orders: mpsc::Receiver<String>,
    shutdown: Shutdown,
) {
    let mut connection: Option<ConnectionManager> = None;
    let mut retry_at = tokio::time::Instant::now();
    loop {
        let order_id = tokio::select! {
            () = shutdown.triggered() => return,
            order_id = orders.recv() => match order_id {
                Some(order_id) => order_id,
                None => return,
            },
        };
        if connection.is_none() {
            if tokio::time::Instant::now() < retry_at {
                continue; // Redis is down: the other replicas' polls cover it.
            }
            connection = sneakernet_runtime::redis_link::connect(
                &client,
                REDIS_TIMEOUT,
                "order watchers fall back to polling",
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
        let published: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(CHANNEL)
            .arg(format!("{replica}|{order_id}"))
            .query_async(redis)
            .await;
        if let Err(error) = published {
            tracing::warn!(%error, order_id = %order_id, "order wake-up not published; other replicas poll");
        }
    }
}

/// Subscribes to [`CHANNEL`] and wakes this replica's watchers of each order announced by
/// another replica; resubscribes with backoff, degraded meanwhile.
async fn subscriber(client: redis::Client, wakeups: OrderWakeups, shutdown: Shutdown) {
    let mut backoff = Duration::from_millis(200);
    let own = format!("{}|", wakeups.inner.replica);
    loop {
        let subscribed = async {
            let mut pubsub = tokio::time::timeout(REDIS_TIMEOUT * 2, client.get_async_pubsub())
                .await
                .ok()?
                .ok()?;
            pubsub.subscribe(CHANNEL).await.ok()?;
            Some(pubsub)
        };
        let pubsub = tokio::select! {
            () = shutdown.triggered() => return,
            pubsub = subscribed => pubsub,
        };
        if let Some(pubsub) = pubsub {
            backoff = Duration::from_millis(200);
            wakeups.inner.degraded.store(false, Ordering::Relaxed);
            // Whatever was published while this replica was not listening is lost to it.
            wakeups.wake_all();
            let mut messages = pubsub.into_on_message();
            loop {
                tokio::select! {
                    () = shutdown.triggered() => return,
                    message = messages.next() => match message {
                        Some(message) => {
                            if let Ok(payload) = message.get_payload::<String>()
                                && !payload.starts_with(&own)
                                && let Some((_, order_id)) = payload.split_once('|')
                            {
                                wakeups.wake(order_id);
                            }
                        }
                        None => break,
                    },
                }
            }
            tracing::warn!("redis subscription for order wake-ups lost; resubscribing");
            wakeups.inner.degraded.store(true, Ordering::Relaxed);
            // Each watcher waits at the pace it chose when it began: wake them all, so they
            // re-read and wait again at the degraded interval.
            wakeups.wake_all();
        }
        wakeups.inner.degraded.store(true, Ordering::Relaxed);
        tokio::select! {
            () = shutdown.triggered() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_change_announced_between_two_waits_is_remembered() {
        let wakeups = OrderWakeups::local();
        let mut wakeup = wakeups.follow("o-1");
        wakeups.announce("o-1");
        wakeups.announce("o-1");
        // Both announcements came before the wait: it returns at once, and once.
        tokio::time::timeout(Duration::from_secs(5), wakeup.changed())
            .await
            .expect("remembered");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), wakeup.changed())
                .await
                .is_err(),
            "nothing new since"
        );
    }

    #[tokio::test]
    async fn only_the_changed_orders_watchers_wake_and_the_last_one_out_removes_the_entry() {
        let wakeups = OrderWakeups::local();
        let mut first = wakeups.follow("o-1");
        let mut second = wakeups.follow("o-1");
        let mut other = wakeups.follow("o-2");
        assert_eq!(wakeups.watched_orders(), 2);
        wakeups.announce("o-1");
        tokio::time::timeout(Duration::from_secs(5), first.changed())
            .await
            .expect("first watcher woken");
        tokio::time::timeout(Duration::from_secs(5), second.changed())
            .await
            .expect("second watcher woken");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), other.changed())
                .await
                .is_err(),
            "another order's watcher sleeps on"
        );
        drop(first);
        assert_eq!(wakeups.watched_orders(), 2, "o-1 still has a watcher");
        drop(second);
        drop(other);
        assert_eq!(wakeups.watched_orders(), 0);
        // Announcing an order nobody watches is fine.
        wakeups.announce("o-1");
    }
}
