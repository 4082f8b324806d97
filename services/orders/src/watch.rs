//! WatchOrder: the order now, then each change from its history as it is written, until the
//! order ends, the watcher goes away, or the service shuts down.

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

impl Flows {
    /// Streams `first` (the order as it is at `order.version`), then every later change, from
    /// a task owned by `shutdown` that ends when the receiver drops, the order reaches a
    /// final state, or the service shuts down (the watcher is told UNAVAILABLE: watch again).
    pub fn watch(
        &self,
        order: order::Model,
        first: pb::Order,
        shutdown: &Shutdown,
    ) -> tokio::sync::mpsc::Receiver<Result<pb::WatchOrderResponse, Status>> {
        let store = self.store.clone();
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
            let message = pb::WatchOrderResponse {
                state: first.state,
                reason: first.state_reason.clone(),
                time: first.updated_at,
                order: Some(first),
            };
            if tx.send(Ok(message)).await.is_err() || done {
                return;
            }
            loop {
                tokio::select! {
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
                    let done = terminal(snapshot.state);
                    let message = pb::WatchOrderResponse {
                        state: snapshot.state,
                        reason: row.reason,
                        time: Some(timestamp(row.at)),
                        order: Some(snapshot),
                    };
                    if tx.send(Ok(message)).await.is_err() || done {
                        return;
                    }
                }
            }
        });
        rx
    }
}
