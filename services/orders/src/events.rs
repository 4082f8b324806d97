//! Consuming the gateway's kiosk event log: a resumable subscription from the stored cursor,
//! each event applied once (see `Store::apply_kiosk_event`), reconnecting with backoff when
//! the gateway or the link is away. The events keep the kiosk view and the unit view, and
//! move orders: a lend's result makes an order LENT or FAILED, a returned item RETURNED.

use std::time::Duration;

use sneakernet_proto::gateway::v1 as gateway;
use sneakernet_proto::gateway::v1::device_event_service_client::DeviceEventServiceClient;
use sneakernet_runtime::Shutdown;
use sneakernet_runtime::service_token::ServiceToken;
use tonic::transport::Endpoint;

use crate::store::Store;

/// The kiosk view's consumer name (its cursor row).
pub const KIOSK_VIEW: &str = "kiosk-view";

/// Keeps the kiosk view in step with the gateway's events until shutdown.
pub fn spawn_kiosk_view(
    store: Store,
    gateway: Endpoint,
    token: ServiceToken,
    wake: std::sync::Arc<tokio::sync::Notify>,
    shutdown: &Shutdown,
) {
    let stop = shutdown.clone();
    shutdown.spawn(async move {
        let mut backoff = Duration::from_millis(200);
        loop {
            let run = follow(&store, &gateway, &token, &wake);
            let outcome = tokio::select! {
                () = stop.triggered() => return,
                outcome = run => outcome,
            };
            match outcome {
                Ok(()) => backoff = Duration::from_millis(200),
                Err(error) => {
                    tracing::warn!(%error, "kiosk event subscription interrupted; resubscribing");
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
            tokio::select! {
                () = stop.triggered() => return,
                () = tokio::time::sleep(backoff) => {}
            }
        }
    });
}

/// One subscription, from the stored cursor, until it ends.
async fn follow(
    store: &Store,
    gateway: &Endpoint,
    token: &ServiceToken,
    wake: &tokio::sync::Notify,
) -> Result<(), String> {
    let Some(bearer) = token.ready().await else {
        return Err("no service token".into());
    };
    let after = store.cursor(KIOSK_VIEW).await.map_err(|e| e.to_string())?;
    let mut request = tonic::Request::new(gateway::SubscribeRequest {
        after_cursor: u64::try_from(after).unwrap_or(0),
        kiosk_ids: vec![],
        kinds: vec![
            gateway::EventKind::KioskOnline.into(),
            gateway::EventKind::KioskOffline.into(),
            gateway::EventKind::InventoryChanged.into(),
            gateway::EventKind::CommandStateChanged.into(),
            gateway::EventKind::ItemReturned.into(),
        ],
    });
    let value = format!("Bearer {bearer}")
        .parse()
        .map_err(|_| "service token is not ASCII".to_owned())?;
    request.metadata_mut().insert("authorization", value);
    let mut client = DeviceEventServiceClient::new(gateway.connect_lazy());
    let mut stream = match client.subscribe(request).await {
        Ok(response) => response.into_inner(),
        Err(status) if status.code() == tonic::Code::OutOfRange => {
            // Our cursor is past the log's end: the gateway's log was reset. Rebuild.
            tracing::error!(
                after,
                "gateway event log is behind our cursor; rebuilding the kiosk view"
            );
            store.reset(KIOSK_VIEW).await.map_err(|e| e.to_string())?;
            return Ok(());
        }
        Err(status) => return Err(format!("{}: {}", status.code(), status.message())),
    };
    loop {
        let message = match stream.message().await {
            Ok(Some(message)) => message,
            Ok(None) => return Err("the gateway ended the subscription".into()),
            Err(status) => return Err(format!("{}: {}", status.code(), status.message())),
        };
        match message.entry {
            Some(gateway::subscribe_response::Entry::Event(event)) => {
                store
                    .apply_kiosk_event(KIOSK_VIEW, &event)
                    .await
                    .map_err(|e| e.to_string())?;
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
                    .map_err(|e| e.to_string())?;
            }
            None => {}
        }
    }
}
