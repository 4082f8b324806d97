//! Consuming the gateway's kiosk event log: a resumable subscription from the stored cursor,
//! each event applied once (see `Store::apply_kiosk_event`), reconnecting with backoff when
//! the gateway or the link is away. An event that cannot be applied (data this service
//! cannot store, a defect, even a panic) is parked with its error and the cursor moves on
//! (`store::parked`), so one bad event never stops the events of every other kiosk. The events keep the kiosk view and the unit view, and
//! move orders: a lend's result makes an order LENT or FAILED, a returned item RETURNED.

// What a kiosk sent flows through here: no arithmetic that can panic or wrap.
#![deny(clippy::arithmetic_side_effects)]

use std::time::Duration;

use sneakernet_proto::gateway::v1 as gateway;
use sneakernet_proto::gateway::v1::device_event_service_client::DeviceEventServiceClient;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use sneakernet_proto::link_rules;
use sneakernet_runtime::Shutdown;
use sneakernet_runtime::service_token::ServiceToken;
use sneakernet_runtime::supervise::{self, Supervised, TaskHealth};
use tonic::transport::Endpoint;

use crate::store::{Store, StoreError};

/// The kiosk view's consumer name (its cursor row).
pub const KIOSK_VIEW: &str = "kiosk-view";
/// Longest wait between resubscriptions while the gateway is away.
const MAX_RESUBSCRIBE_BACKOFF: Duration = Duration::from_secs(5);
/// Tries of an event that fails with an error not known to be transient, before it is parked
/// (a flaky connection can look permanent once).
const TRIES_BEFORE_PARKING: u32 = 3;

/// Why applying one event failed.
#[derive(Debug, thiserror::Error)]
enum ApplyError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Applying it panicked (a defect): the transaction was rolled back.
    #[error("panicked: {0}")]
    Panicked(String),
}

/// Keeps the kiosk view (and the orders kiosk events move) in step with the gateway's events
/// until shutdown: one supervised task (health NOT_SERVING for `serves` while it is down).
pub fn spawn_kiosk_view(
    store: Store,
    gateway: Endpoint,
    token: ServiceToken,
    wake: std::sync::Arc<tokio::sync::Notify>,
    shutdown: &Shutdown,
    health: TaskHealth,
    serves: Vec<&'static str>,
) {
    let task = Supervised {
        name: "orders-kiosk-events",
        serves,
    };
    let stop = shutdown.clone();
    supervise::spawn(shutdown, health, task, move || {
        let (store, gateway, token, wake, stop) = (
            store.clone(),
            gateway.clone(),
            token.clone(),
            wake.clone(),
            stop.clone(),
        );
        async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                match follow(&store, &gateway, &token, &wake).await {
                    Ok(()) => backoff = Duration::from_millis(200),
                    Err(Follow::Interrupted(error)) => {
                        tracing::warn!(%error, "kiosk event subscription interrupted; resubscribing");
                        backoff = backoff.saturating_mul(2).min(MAX_RESUBSCRIBE_BACKOFF);
                    }
                    // The store cannot park either: let the supervisor restart us.
                    Err(Follow::Failed(error)) => return Err(error),
                }
                tokio::select! {
                    () = stop.triggered() => return Ok(()),
                    () = tokio::time::sleep(backoff) => {}
                }
            }
        }
    });
}

/// How a subscription ended.
enum Follow {
    /// The link or the gateway went away: resubscribe.
    Interrupted(String),
    /// This service's own storage failed in a way resubscribing will not mend.
    Failed(String),
}

/// Applies one event, catching a panic as an error; retries an error that may be transient,
/// and parks the event when it keeps failing. Errs only when parking fails too.
async fn apply_or_park(store: &Store, event: &gateway::Event) -> Result<(), Follow> {
    let mut tries: u32 = 0;
    loop {
        tries = tries.saturating_add(1);
        let applied = AssertUnwindSafe(async {
            // Tests make applying panic here, to see the event parked.
            sneakernet_runtime::failpoint::pause_point("orders::events::apply").await;
            store.apply_kiosk_event(KIOSK_VIEW, event).await
        })
        .catch_unwind()
        .await;
        let error = match applied {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(error)) if error.is_transient() => {
                return Err(Follow::Interrupted(format!("storage: {error}")));
            }
            Ok(Err(error)) => ApplyError::Store(error),
            Err(panic) => ApplyError::Panicked(supervise::panic_message(panic.as_ref())),
        };
        if tries < TRIES_BEFORE_PARKING {
            tracing::warn!(cursor = event.cursor, kiosk_id = %event.kiosk_id, %error, "kiosk event not applied; trying again");
            let pause = 4u32.saturating_pow(tries.saturating_sub(1));
            tokio::time::sleep(Duration::from_millis(100).saturating_mul(pause)).await;
            continue;
        }
        tracing::error!(cursor = event.cursor, kiosk_id = %event.kiosk_id, %error, "kiosk event cannot be applied; parked for an operator (FleetService.ListParkedEvents)");
        metrics::counter!("orders_events_parked_total").increment(1);
        return store
            .park(KIOSK_VIEW, event, &error.to_string(), chrono::Utc::now())
            .await
            .map_err(|e| Follow::Failed(format!("cannot park event {}: {e}", event.cursor)));
    }
}

/// One subscription, from the stored cursor, until it ends.
async fn follow(
    store: &Store,
    gateway: &Endpoint,
    token: &ServiceToken,
    wake: &tokio::sync::Notify,
) -> Result<(), Follow> {
    let after = store
        .cursor(KIOSK_VIEW)
        .await
        .map_err(|e| Follow::Interrupted(format!("storage: {e}")))?;
    let request = token
        .authorize(gateway::SubscribeRequest {
            after_cursor: u64::try_from(after).unwrap_or(0),
            kiosk_ids: vec![],
            kinds: vec![
                gateway::EventKind::KioskOnline.into(),
                gateway::EventKind::KioskOffline.into(),
                gateway::EventKind::InventoryChanged.into(),
                gateway::EventKind::CommandStateChanged.into(),
                gateway::EventKind::ItemReturned.into(),
            ],
            drive_ids: vec![],
        })
        .await
        .map_err(|status| Follow::Interrupted(status.message().to_owned()))?;
    // The gateway never sends an event larger than MAX_EVENT_BYTES; leave room for framing.
    let mut client = DeviceEventServiceClient::new(gateway.connect_lazy())
        .max_decoding_message_size(2 * link_rules::MAX_EVENT_BYTES);
    let mut stream = match client.subscribe(request).await {
        Ok(response) => response.into_inner(),
        Err(status) if status.code() == tonic::Code::OutOfRange => {
            return out_of_range(store, after, status.message()).await;
        }
        Err(status) => {
            return Err(Follow::Interrupted(format!(
                "{}: {}",
                status.code(),
                status.message()
            )));
        }
    };
    let mut heard = false;
    loop {
        let message = match stream.message().await {
            Ok(Some(message)) => message,
            Ok(None) => {
                return Err(Follow::Interrupted(
                    "the gateway ended the subscription".into(),
                ));
            }
            // The subscription lives as long as the token it was opened with: subscribe again
            // at once, with the fresh token the service keeps, not as after a failure. Unless
            // it ended before anything arrived (a token the gateway's clock already finds
            // expired): that backs off as a failure does, rather than resubscribing in a loop.
            Err(status) if status.code() == tonic::Code::Unauthenticated && heard => {
                tracing::debug!("kiosk event subscription's token expired; resubscribing");
                return Ok(());
            }
            Err(status) if status.code() == tonic::Code::OutOfRange => {
                let at = store
                    .cursor(KIOSK_VIEW)
                    .await
                    .map_err(|e| Follow::Interrupted(format!("storage: {e}")))?;
                return out_of_range(store, at, status.message()).await;
            }
            Err(status) => {
                return Err(Follow::Interrupted(format!(
                    "{}: {}",
                    status.code(),
                    status.message()
                )));
            }
        };
        heard = true;
        match message.entry {
            Some(gateway::subscribe_response::Entry::Event(event)) => {
                apply_or_park(store, &event).await?;
                if matches!(
                    event.kind,
                    Some(
                        gateway::event::Kind::CommandStateChanged(_)
                            | gateway::event::Kind::ItemReturned(_)
                    )
                ) {
                    // A refund or a settlement may be due now.
                    wake.notify_one();
                }
            }
            Some(gateway::subscribe_response::Entry::Checkpoint(checkpoint)) => {
                let cursor = i64::try_from(checkpoint.cursor).unwrap_or(i64::MAX);
                store
                    .advance(KIOSK_VIEW, cursor)
                    .await
                    .map_err(|e| Follow::Interrupted(format!("storage: {e}")))?;
            }
            None => {}
        }
    }
}

/// The gateway refused our cursor (OUT_OF_RANGE); its message ends with the cursor to resume
/// from, as the contract says. Past the log's end (the resume cursor is below ours) the
/// gateway's log was reset: the kiosk view is rebuilt from the start. Older than the log
/// keeps (events after our cursor were deleted by retention, the resume cursor is above ours):
/// those events are lost to us, which is said at ERROR and counted
/// (`orders_events_lost_to_retention_total`), and the cursor moves to the resume cursor, so
/// the subscription never loops on the same refusal. What the lost events would have told is
/// mended elsewhere: lends and provisions in flight are asked of the gateway by the settling
/// worker (GetCommand) once past their deadline, every kiosk's inventory comes again with its
/// next link open; a lost ItemReturned leaves its order LENT until a return or the lost-item
/// fee closes it, which an audit (`sneakernet audit`) shows.
async fn out_of_range(store: &Store, after: i64, message: &str) -> Result<(), Follow> {
    let resume = resume_cursor(message);
    match resume {
        Some(resume) if resume > after => {
            tracing::error!(
                after,
                resume,
                gateway = message,
                "kiosk events after our cursor were deleted by the gateway's retention before we read them; skipping to the oldest kept (lends and provisions in flight are asked of the gateway, inventories come again at each kiosk's next link open; run an audit for returns)"
            );
            metrics::counter!("orders_events_lost_to_retention_total").increment(1);
            store
                .advance(KIOSK_VIEW, resume)
                .await
                .map_err(|e| Follow::Interrupted(format!("storage: {e}")))?;
        }
        _ => {
            // Our cursor is past the log's end: the gateway's log was reset. Rebuild.
            tracing::error!(
                after,
                gateway = message,
                "gateway event log is behind our cursor; rebuilding the kiosk view"
            );
            store
                .reset(KIOSK_VIEW)
                .await
                .map_err(|e| Follow::Interrupted(format!("storage: {e}")))?;
        }
    }
    Ok(())
}

/// The cursor an OUT_OF_RANGE message says to resume from ("... resume from N").
fn resume_cursor(message: &str) -> Option<i64> {
    let (_, tail) = message.rsplit_once("resume from ")?;
    let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resume_cursor_is_read_from_both_out_of_range_messages() {
        assert_eq!(
            resume_cursor(
                "out of range: cursor 3 is older than the event log keeps (events up to cursor 70 were deleted after the retention period); resynchronise (GetCommand, RequestInventory) and resume from 70"
            ),
            Some(70)
        );
        assert_eq!(
            resume_cursor(
                "out of range: cursor 9 is beyond the end of the event log (4); resume from 4"
            ),
            Some(4)
        );
        assert_eq!(resume_cursor("out of range: something else"), None);
        assert_eq!(resume_cursor("resume from -1"), None);
    }
}
