//! WatchOrder: the order now, then each change from its history as it is written, until the
//! order ends, the watcher goes away, or the service shuts down; while a reservation is
//! PROVISIONING, the kiosk's progress too, read from the gateway at a bounded rate.
//!
//! A watcher reads its order's history when woken ([`crate::wake`]: a change committed in
//! this replica or, through Redis, in another), and otherwise only at the safety poll
//! (`orders.watch_poll_interval`, faster while the wake-ups are degraded). It follows its
//! order before its first read, so a change committed at any moment is either in that read
//! or wakes it after. Each account holds at most `orders.max_watches_per_user` watches per
//! replica; a slot is freed when its watch ends, however it ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_runtime::Shutdown;
use sneakernet_runtime::wire::timestamp;
use tonic::Status;

use crate::entity::order;
use crate::error::OrdersError;
use crate::flows::Flows;

/// How often a watcher of a PROVISIONING order asks the gateway for the kiosk's progress (the
/// contract promises at most once a second).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// How watchers re-read without a wake-up, and how many each account may hold. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Watches {
    /// Re-read this often with no wake-up (a lost signal).
    pub poll: Duration,
    /// Re-read this often while wake-ups from other replicas may be lost.
    pub degraded_poll: Duration,
    slots: WatchSlots,
}

impl Watches {
    /// Watchers polling at `poll` (`degraded_poll` while degraded), at most `per_user` per
    /// account in this replica.
    pub fn new(poll: Duration, degraded_poll: Duration, per_user: u32) -> Self {
        Self {
            poll,
            degraded_poll,
            slots: WatchSlots {
                per_user: usize::try_from(per_user).unwrap_or(usize::MAX),
                open: Arc::new(Mutex::new(HashMap::new())),
            },
        }
    }

    /// A slot for one more watch of `account`: RESOURCE_EXHAUSTED naming the limit when the
    /// account already holds as many as it may.
    pub fn take_slot(&self, account: &str) -> Result<WatchSlot, Status> {
        self.slots.take(account)
    }

    /// Watches open in this replica (all accounts).
    pub fn open(&self) -> usize {
        self.slots.lock().values().sum()
    }
}

/// Open watches per account in this replica.
#[derive(Clone, Debug)]
struct WatchSlots {
    per_user: usize,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl WatchSlots {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        // Counts are only incremented and decremented under the lock: consistent after a panic.
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take(&self, account: &str) -> Result<WatchSlot, Status> {
        let mut open = self.lock();
        let count = open.entry(account.to_owned()).or_insert(0);
        if *count >= self.per_user {
            metrics::counter!("orders_watches_refused_total").increment(1);
            return Err(sneakernet_runtime::ApiError::ResourceExhausted {
                message: format!(
                    "too many order watches open for this account: at most {} at once (orders.max_watches_per_user); close one and watch again",
                    self.per_user
                ),
                retry_after: Duration::from_secs(1),
            }
            .into());
        }
        *count += 1;
        metrics::gauge!("orders_watches_open").increment(1.0);
        Ok(WatchSlot {
            account: account.to_owned(),
            slots: self.clone(),
        })
    }
}

/// One open watch of an account; dropping it (the watch's task ending, for whatever reason)
/// frees the slot.
#[derive(Debug)]
pub struct WatchSlot {
    account: String,
    slots: WatchSlots,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        metrics::gauge!("orders_watches_open").decrement(1.0);
        let mut open = self.slots.lock();
        if let Some(count) = open.get_mut(&self.account) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.account);
            }
        }
    }
}

impl Flows {
    /// Streams `first` (the order as it is at `order.version`), then every later change, from
    /// a task owned by `shutdown` that ends when the receiver drops, the order reaches a
    /// final state, the service shuts down (the watcher is told UNAVAILABLE: watch again), or
    /// this service's clock reaches `token_expires_at`, the watcher's token expiry (told
    /// UNAUTHENTICATED: log in again). The task holds `slot` until it ends.
    #[allow(clippy::too_many_arguments)]
    pub fn watch(
        &self,
        order: order::Model,
        first: pb::Order,
        token_expires_at: Option<chrono::DateTime<chrono::Utc>>,
        watches: &Watches,
        slot: WatchSlot,
        shutdown: &Shutdown,
    ) -> tokio::sync::mpsc::Receiver<Result<pb::WatchOrderResponse, Status>> {
        let store = self.store.clone();
        let gateway = self.gateway.clone();
        let clock = self.clock.clone();
        // Small: a watcher that does not read holds its task at `send` (backpressure), and
        // changes wait in the database, not in memory.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::WatchOrderResponse, Status>>(4);
        let stop = shutdown.clone();
        let wakeups = store.wakeups().clone();
        // Before the first read of the history: a change committed after that read wakes it.
        let mut wakeup = wakeups.follow(&order.order_id);
        let watches = watches.clone();
        shutdown.spawn(async move {
            let _slot = slot;
            let terminal = |state: i32| {
                matches!(
                    pb::OrderState::try_from(state),
                    Ok(pb::OrderState::Closed | pb::OrderState::Refunded | pb::OrderState::Expired)
                )
            };
            let mut version = order.version;
            let done = terminal(first.state);
            let mut latest = first.clone();
            let mut progress = Progress::default();
            let message = pb::WatchOrderResponse {
                state: first.state,
                reason: first.state_reason.clone(),
                time: first.updated_at,
                order: Some(first),
                progress: None,
            };
            if tx.send(Ok(message)).await.is_err() || done {
                return;
            }
            let expiry_clock = clock.clone();
            let token_expired = async move {
                match token_expires_at {
                    Some(at) => sneakernet_runtime::clock::reached(expiry_clock.as_ref(), at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(token_expired);
            // The first pass reads at once: what changed between the caller's read and the
            // follow above.
            let mut woken = true;
            // The last read failed: try again soon, not at the safety poll.
            let mut read_failed = false;
            loop {
                if !woken {
                    let poll = if wakeups.degraded() {
                        watches.degraded_poll
                    } else {
                        watches.poll
                    };
                    // While PROVISIONING the kiosk's progress is asked about at its own pace.
                    let mut wait = if latest.state == pb::OrderState::Provisioning as i32 {
                        poll.min(PROGRESS_EVERY)
                    } else {
                        poll
                    };
                    if read_failed {
                        wait = wait.min(watches.degraded_poll);
                    }
                    tokio::select! {
                        // An expired token ends the watch before anything else is sent.
                        biased;
                        () = &mut token_expired => {
                            let _ = tx.send(Err(OrdersError::TokenExpired.into())).await;
                            return;
                        }
                        () = stop.triggered() => {
                            let _ = tx.send(Err(OrdersError::GoingAway("the server is shutting down; watch again").into())).await;
                            return;
                        }
                        () = tx.closed() => return,
                        () = wakeup.changed() => {}
                        () = tokio::time::sleep(wait) => {}
                    }
                }
                woken = false;
                let rows = match store.changes_after(&order.order_id, version).await {
                    Ok(rows) => rows,
                    Err(error) => {
                        tracing::warn!(%error, order_id = %order.order_id, "watch cannot read changes");
                        read_failed = true;
                        continue;
                    }
                };
                read_failed = false;
                for row in rows {
                    version = row.version;
                    let Ok(snapshot) = pb::Order::decode(row.snapshot.as_slice()) else {
                        continue;
                    };
                    latest = snapshot.clone();
                    let done = terminal(snapshot.state);
                    let message = pb::WatchOrderResponse {
                        state: snapshot.state,
                        reason: row.reason,
                        time: Some(timestamp(row.at)),
                        order: Some(snapshot),
                        progress: None,
                    };
                    if tx.send(Ok(message)).await.is_err() || done {
                        return;
                    }
                }
                if latest.state == pb::OrderState::Provisioning as i32
                    && let Some(now) = progress.read(&store, &gateway, &order.order_id).await
                {
                    let message = pb::WatchOrderResponse {
                        state: latest.state,
                        reason: latest.state_reason.clone(),
                        time: Some(timestamp(clock.now())),
                        order: Some(latest.clone()),
                        progress: Some(now),
                    };
                    if tx.send(Ok(message)).await.is_err() {
                        return;
                    }
                }
            }
        });
        rx
    }
}

/// What one watcher last read of a provision's progress, and when.
#[derive(Default)]
struct Progress {
    asked_at: Option<tokio::time::Instant>,
    last: Option<pb::ProvisioningProgress>,
}

impl Progress {
    /// The kiosk's progress on the order's provision if it is time to ask again (at most every
    /// [`PROGRESS_EVERY`]) and it changed since the last read; `None` otherwise, and when the
    /// gateway cannot say (the next tick asks again).
    async fn read(
        &mut self,
        store: &crate::store::Store,
        gateway: &crate::gateway_client::GatewayClient,
        order_id: &str,
    ) -> Option<pb::ProvisioningProgress> {
        if self
            .asked_at
            .is_some_and(|at| at.elapsed() < PROGRESS_EVERY)
        {
            return None;
        }
        self.asked_at = Some(tokio::time::Instant::now());
        let command_id = store.order(order_id).await.ok()??.command_id?;
        let reported = gateway.get(&command_id).await.ok()?.progress?;
        let now = pb::ProvisioningProgress {
            phase: reported.phase,
            bytes_done: reported.bytes_done,
            bytes_total: reported.bytes_total,
        };
        if self.last.as_ref() == Some(&now) {
            return None;
        }
        self.last = Some(now);
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_over_its_cap_is_refused_naming_it_and_a_dropped_slot_is_free_again() {
        let watches = Watches::new(Duration::from_secs(30), Duration::from_secs(1), 2);
        let first = watches.take_slot("alice").expect("first");
        let _second = watches.take_slot("alice").expect("second");
        let refused = watches
            .take_slot("alice")
            .expect_err("third is over the cap");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("at most 2")
                && refused.message().contains("orders.max_watches_per_user"),
            "{}",
            refused.message()
        );
        let _bob = watches
            .take_slot("bob")
            .expect("another account has its own");
        assert_eq!(watches.open(), 3);
        drop(first);
        assert_eq!(watches.open(), 2);
        let _again = watches.take_slot("alice").expect("the freed slot");
    }
}
