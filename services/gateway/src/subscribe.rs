//! `DeviceEventService.Subscribe`: the event log from a cursor, then live.
//!
//! Cursors come from the log table and become visible in cursor order (see `store`), so
//! reading `cursor > n` in order never passes over an event: a consumer that resumes from the
//! last cursor it handled sees no gap and no duplicate, across gateway restarts too. Live
//! following wakes on this process's appends and polls every [`POLL`] for other replicas'.
//! Events older than the configured retention are deleted (`gateway.event_retention`, see the
//! gateway's retention sweeper): a cursor they passed over gets OUT_OF_RANGE, never a gap.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::link_rules;
use sneakernet_runtime::{DeviceId, FieldViolation, ItemId, KioskId};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::error::GatewayError;
use crate::session::LinkContext;

/// Events read per query.
const BATCH: u64 = 500;
/// How often a follower looks for events appended by other replicas.
const POLL: Duration = Duration::from_secs(1);
/// A checkpoint goes out at least this often while nothing matches.
const IDLE_CHECKPOINT: Duration = Duration::from_secs(30);
/// Messages buffered toward one subscriber; when full the reader waits (a slow consumer slows
/// only its own stream).
const BUFFER: usize = 128;
/// Most devices (kiosks and drives together) one subscription may filter on.
const MAX_KIOSKS: usize = 1000;

/// Which events a subscriber wants.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Devices in their stored form (kiosks and drives), as the log's rows name them.
    kiosks: HashSet<String>,
    kinds: HashSet<&'static str>,
}

impl TryFrom<&pb::SubscribeRequest> for Filter {
    type Error = GatewayError;

    fn try_from(request: &pb::SubscribeRequest) -> Result<Self, Self::Error> {
        if request
            .kiosk_ids
            .len()
            .saturating_add(request.drive_ids.len())
            > MAX_KIOSKS
        {
            return Err(FieldViolation::new(
                "kiosk_ids",
                format!("at most {MAX_KIOSKS} with drive_ids"),
            )
            .into());
        }
        let mut kiosks = HashSet::new();
        for (i, id) in request.kiosk_ids.iter().enumerate() {
            let kiosk = KioskId::parse(id)
                .map_err(|why| FieldViolation::new(format!("kiosk_ids[{i}]"), why))?;
            kiosks.insert(DeviceId::Kiosk(kiosk).stored());
        }
        for (i, id) in request.drive_ids.iter().enumerate() {
            let drive = ItemId::parse(id)
                .map_err(|why| FieldViolation::new(format!("drive_ids[{i}]"), why))?;
            kiosks.insert(DeviceId::Drive(drive).stored());
        }
        let mut kinds = HashSet::new();
        for (i, raw) in request.kinds.iter().enumerate() {
            let name = match pb::EventKind::try_from(*raw) {
                Ok(pb::EventKind::CommandStateChanged) => "command_state_changed",
                Ok(pb::EventKind::ItemReturned) => "item_returned",
                Ok(pb::EventKind::InventoryChanged) => "inventory_changed",
                Ok(pb::EventKind::KioskOnline) => "kiosk_online",
                Ok(pb::EventKind::KioskOffline) => "kiosk_offline",
                Ok(pb::EventKind::Unspecified) | Err(_) => {
                    return Err(
                        FieldViolation::new(format!("kinds[{i}]"), "is not an event kind").into(),
                    );
                }
            };
            kinds.insert(name);
        }
        Ok(Self { kiosks, kinds })
    }
}

impl Filter {
    fn matches(&self, kiosk_id: &str, kind: &str) -> bool {
        (self.kiosks.is_empty() || self.kiosks.contains(kiosk_id))
            && (self.kinds.is_empty() || self.kinds.contains(kind))
    }
}

/// Starts a subscription after `after` (0: from the oldest event kept); OUT_OF_RANGE if that
/// is beyond the log's end, or older than retention kept (events after it were deleted: the
/// message names the cursor to resume from). The stream ends with UNAUTHENTICATED when the
/// gateway's clock reaches `token_expires_at` (the subscriber's token expiry): nobody reads
/// the log on a token older than its life.
pub async fn start(
    link: Arc<LinkContext>,
    after: u64,
    filter: Filter,
    token_expires_at: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<ReceiverStream<Result<pb::SubscribeResponse, Status>>, GatewayError> {
    let last = link.store.last_cursor().await?;
    let last = u64::try_from(last).unwrap_or(0);
    if after > last {
        return Err(GatewayError::CursorOutOfRange {
            requested: after,
            last,
        });
    }
    let horizon = u64::try_from(link.store.event_horizon().await?).unwrap_or(0);
    if after != 0 && after < horizon {
        return Err(GatewayError::CursorPruned {
            requested: after,
            pruned_through: horizon,
        });
    }
    let after = after.max(horizon);
    let (sender, receiver) = mpsc::channel(BUFFER);
    let token = link.shutdown.token();
    let tasks = link.shutdown.clone();
    tasks.spawn(async move {
        let expired = async {
            match token_expires_at {
                Some(at) => sneakernet_runtime::clock::reached(link.clock.as_ref(), at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = token.cancelled() => {
                let _ = sender.try_send(Err(GatewayError::Unavailable("gateway shutting down; subscribe again from your cursor").into()));
            }
            () = expired => {
                // Told unless the subscriber stopped reading (then the stream just ends).
                let told = sender.send(Err(GatewayError::TokenExpired.into()));
                let _ = tokio::time::timeout(Duration::from_secs(10), told).await;
            }
            () = follow(&link, after, &filter, &sender) => {}
        }
    });
    Ok(ReceiverStream::new(receiver))
}

/// Sends matching events until the subscriber goes away.
async fn follow(
    link: &LinkContext,
    after: u64,
    filter: &Filter,
    sender: &mpsc::Sender<Result<pb::SubscribeResponse, Status>>,
) {
    let mut cursor = i64::try_from(after).unwrap_or(i64::MAX);
    let mut appended = link.store.watch_events();
    let mut idle_since = tokio::time::Instant::now();
    loop {
        let batch = match link.store.events_after(cursor, BATCH).await {
            Ok(batch) => batch,
            Err(error) => {
                tracing::error!(%error, "subscription cannot read the event log");
                let _ = sender
                    .send(Err(GatewayError::Unavailable(
                        "event log unavailable; subscribe again from your cursor",
                    )
                    .into()))
                    .await;
                return;
            }
        };
        // Events after `cursor` deleted by retention while this subscriber lagged: it must
        // not pass over them silently. (An empty batch lost nothing: the newest event is
        // never deleted, so a pruned event after `cursor` means a kept one after it too.)
        if !batch.is_empty() {
            match link.store.event_horizon().await {
                Ok(horizon) if horizon > cursor => {
                    let pruned = GatewayError::CursorPruned {
                        requested: u64::try_from(cursor).unwrap_or(0),
                        pruned_through: u64::try_from(horizon).unwrap_or(0),
                    };
                    tracing::warn!(
                        cursor,
                        horizon,
                        "subscriber fell behind event retention; ending its stream with OUT_OF_RANGE"
                    );
                    let _ = sender.send(Err(pruned.into())).await;
                    return;
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(%error, "subscription cannot read the event log's horizon");
                    let _ = sender
                        .send(Err(GatewayError::Unavailable(
                            "event log unavailable; subscribe again from your cursor",
                        )
                        .into()))
                        .await;
                    return;
                }
            }
        }
        let mut skipped = false;
        for row in &batch {
            cursor = row.cursor;
            if !filter.matches(&row.kiosk_id, &row.kind) {
                skipped = true;
                continue;
            }
            skipped = false;
            let event = deliverable(row);
            let message = pb::SubscribeResponse {
                entry: Some(pb::subscribe_response::Entry::Event(event)),
            };
            if sender.send(Ok(message)).await.is_err() {
                return;
            }
            idle_since = tokio::time::Instant::now();
        }
        if skipped && !checkpoint(sender, cursor).await {
            return;
        }
        if !batch.is_empty() {
            continue;
        }
        tokio::select! {
            () = sender.closed() => return,
            changed = appended.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(POLL) => {}
        }
        if idle_since.elapsed() >= IDLE_CHECKPOINT {
            if !checkpoint(sender, cursor).await {
                return;
            }
            idle_since = tokio::time::Instant::now();
        }
    }
}

/// The event a row holds, as a subscriber may receive it. An event that cannot be decoded, or
/// that would encode past [`link_rules::MAX_EVENT_BYTES`] (the most any subscriber must
/// accept), goes out without its kind, which consumers skip (the contract says so): one bad
/// row never stops a subscription, and never makes a consumer resubscribe forever.
fn deliverable(row: &crate::entity::event::Model) -> pb::Event {
    let cursor = u64::try_from(row.cursor).unwrap_or(0);
    let mut event = match pb::Event::decode(row.body.as_slice()) {
        Ok(event) => event,
        Err(error) => {
            tracing::error!(cursor = row.cursor, %error, "corrupt event in the log; sent without its kind");
            metrics::counter!("gateway_events_withheld_total", "why" => "corrupt").increment(1);
            pb::Event::default()
        }
    };
    event.cursor = cursor;
    // The row names the device in its stored form; the contract splits it.
    (event.kiosk_id, event.drive_id) = crate::store::wire_device(&row.kiosk_id);
    if event.occurred_at.is_none() {
        event.occurred_at = Some(sneakernet_runtime::wire::timestamp(row.occurred_at));
    }
    if event.encoded_len() > link_rules::MAX_EVENT_BYTES {
        tracing::error!(cursor = row.cursor, kiosk_id = %row.kiosk_id, bytes = event.encoded_len(), "event too large to send; sent without its kind");
        metrics::counter!("gateway_events_withheld_total", "why" => "too_large").increment(1);
        event.kind = None;
    }
    event
}

async fn checkpoint(
    sender: &mpsc::Sender<Result<pb::SubscribeResponse, Status>>,
    cursor: i64,
) -> bool {
    let message = pb::SubscribeResponse {
        entry: Some(pb::subscribe_response::Entry::Checkpoint(pb::Checkpoint {
            cursor: u64::try_from(cursor).unwrap_or(0),
        })),
    };
    sender.send(Ok(message)).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_validated_and_match_both_dimensions() {
        let request = pb::SubscribeRequest {
            after_cursor: 0,
            kiosk_ids: vec!["K-1".into()],
            kinds: vec![pb::EventKind::KioskOnline as i32],
            drive_ids: vec![],
        };
        let filter = Filter::try_from(&request).unwrap();
        assert!(filter.matches("K-1", "kiosk_online"));
        assert!(!filter.matches("K-2", "kiosk_online"));
        assert!(!filter.matches("K-1", "kiosk_offline"));
        assert!(Filter::default().matches("K-9", "item_returned"));

        let bad = pb::SubscribeRequest {
            after_cursor: 0,
            kiosk_ids: vec![],
            kinds: vec![0],
            drive_ids: vec![],
        };
        assert!(
            matches!(Filter::try_from(&bad), Err(GatewayError::Invalid(v)) if v[0].field == "kinds[0]")
        );
        let bad = pb::SubscribeRequest {
            after_cursor: 0,
            kiosk_ids: vec!["bad id".into()],
            kinds: vec![],
            drive_ids: vec![],
        };
        assert!(
            matches!(Filter::try_from(&bad), Err(GatewayError::Invalid(v)) if v[0].field == "kiosk_ids[0]")
        );
    }
}
