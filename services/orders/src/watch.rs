//! WatchOrder: the order now, then each change from its history as it is written, until the
//! order ends, the watcher goes away, or the service shuts down; while a reservation is
//! PROVISIONING, the kiosk's progress too, read from the gateway at a bounded rate.

use std::time::Duration;

use prost::Message;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_runtime::Shutdown;
use sneakernet_runtime::wire::timestamp;
use tonic::Status;

use crate::entity::order;
use crate::error::OrdersError;
use crate::flows::Flows;

/// How often a watcher re-reads its order even without a local signal (a change made by
/// another replica).
const WATCH_POLL: Duration = Duration::from_secs(1);
/// How often a watcher of a PROVISIONING order asks the gateway for the kiosk's progress (the
/// contract promises at most once a second).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

impl Flows {
    /// Streams `first` (the order as it is at `order.version`), then every later change, from
    /// a task owned by `shutdown` that ends when the receiver drops, the order reaches a
    /// final state, the service shuts down (the watcher is told UNAVAILABLE: watch again), or
    /// this service's clock reaches `token_expires_at`, the watcher's token expiry (told
    /// UNAUTHENTICATED: log in again).
    pub fn watch(
        &self,
        order: order::Model,
        first: pb::Order,
        token_expires_at: Option<chrono::DateTime<chrono::Utc>>,
        shutdown: &Shutdown,
    ) -> tokio::sync::mpsc::Receiver<Result<pb::WatchOrderResponse, Status>> {
        let store = self.store.clone();
        let gateway = self.gateway.clone();
        let clock = self.clock.clone();
        // Small: a watcher that does not read holds its task at `send` (backpressure), and
        // changes wait in the database, not in memory.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::WatchOrderResponse, Status>>(4);
        let stop = shutdown.clone();
        let mut changes = store.order_changes();
        shutdown.spawn(async move {
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
            loop {
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
                    changed = changes.recv() => match changed {
                        Ok(id) if id != order.order_id => continue,
                        // The service is going away: the client watches again elsewhere.
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                            let _ = tx.send(Err(OrdersError::GoingAway("watch again").into())).await;
                            return;
                        }
                        // Ours, or lagged (some signals lost): read what changed.
                        _ => {}
                    },
                    () = tokio::time::sleep(WATCH_POLL) => {}
                }
                let rows = match store.changes_after(&order.order_id, version).await {
                    Ok(rows) => rows,
                    Err(error) => {
                        tracing::warn!(%error, order_id = %order.order_id, "watch cannot read changes");
                        continue;
                    }
                };
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
