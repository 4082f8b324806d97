//! Reservations as a phone makes them (seed flow 2), through gRPC only: a package published
//! through ContentService, kiosks with blank drives, CreateReservation, CancelReservation,
//! CollectReservation; and a content address that never answers, to hold a provision in flight.

use std::path::Path;

use sneakernet::content::Upload;
use sneakernet_kiosk_agent::bays::{BayState, ItemFacts};
use sneakernet_kiosk_agent::config::{SimItemConfig, SimItemKind};
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::orders::v1 as pb;
use tonic::Status;
use tonic::transport::Channel;

use crate::rentals::{SimKiosk, WAIT, card_method, get_order, orders};
use crate::{authed, content, eventually};

/// A blank, writable drive `item_id` of `capacity_bytes`.
pub fn blank_drive(item_id: &str, capacity_bytes: u64) -> SimItemConfig {
    SimItemConfig {
        kind: SimItemKind::Drive,
        item_id: item_id.into(),
        capacity_bytes: Some(capacity_bytes),
        content_package_id: None,
        write_protected: false,
        charge_percent: None,
        remote_link: false,
    }
}

/// Generates and uploads a package of `files` under `dir`; returns it with its id.
pub async fn publish(
    channel: &Channel,
    operator: &str,
    dir: &Path,
    seed: &str,
    files: &[(&str, u64)],
) -> (Upload, String) {
    let package = content::generate(dir, seed, seed, files);
    let ready = sneakernet::content::upload_dir(channel, operator, &package, |_| {})
        .await
        .expect("upload");
    (package, ready.package_id)
}

/// A CreateReservation of `package` (empty: a blank drive) on a drive of `capacity` at
/// `kiosk_id`, `days` long, with the remembered card.
pub fn reservation_request(
    kiosk_id: &str,
    package: &str,
    capacity: u64,
    write_protect: bool,
    days: u32,
    idempotency_key: &str,
) -> pb::CreateReservationRequest {
    pb::CreateReservationRequest {
        kiosk_id: kiosk_id.into(),
        choice: Some(pb::ItemChoice {
            spec: Some(common::ItemSpec {
                item_type: Some(common::ItemType {
                    kind: common::ItemKind::Drive.into(),
                    capacity_bytes: capacity,
                    content_package_id: package.into(),
                }),
                write_protect,
            }),
            duration_days: days,
        }),
        payment_method: Some(card_method(crate::rentals::CARD_OK)),
        idempotency_key: idempotency_key.into(),
    }
}

/// OrderService.CreateReservation.
pub async fn create_reservation(
    channel: &Channel,
    token: &str,
    request: pb::CreateReservationRequest,
) -> Result<pb::Order, Status> {
    orders(channel)
        .create_reservation(authed(request, token))
        .await
        .map(|r| r.into_inner().order.expect("order"))
}

/// CreateReservation until the kiosk's drives reached orders (its inventory comes through
/// the gateway's events): TYPE_UNAVAILABLE and KIOSK_OFFLINE are retried, nothing charged.
pub async fn eventually_reserved(
    channel: &Channel,
    token: &str,
    request: pb::CreateReservationRequest,
    context: &dyn std::fmt::Display,
) -> pb::Order {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match create_reservation(channel, token, request.clone()).await {
            Ok(order) => return order,
            Err(status)
                if status.code() == tonic::Code::FailedPrecondition
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(status) => panic!("{context}: reserve: {status:?}"),
        }
    }
}

/// Polls GetOrder until the order shows write protection `on` (the drive confirmed it).
pub async fn wait_write_protected(
    channel: &Channel,
    token: &str,
    order_id: &str,
    on: bool,
) -> pb::Order {
    eventually(
        WAIT,
        &format!("order {order_id} to show write protection {on}"),
        || async {
            get_order(channel, token, order_id)
                .await
                .is_ok_and(|o| o.write_protected == on)
        },
    )
    .await;
    get_order(channel, token, order_id).await.expect("order")
}

/// OrderService.CancelReservation.
pub async fn cancel_reservation(
    channel: &Channel,
    token: &str,
    order_id: &str,
) -> Result<pb::Order, Status> {
    orders(channel)
        .cancel_reservation(authed(
            pb::CancelReservationRequest {
                order_id: order_id.into(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().order.expect("order"))
}

/// OrderService.CollectReservation with the QR payload `qr_payload`.
pub async fn collect_reservation(
    channel: &Channel,
    token: &str,
    order_id: &str,
    qr_payload: &str,
) -> Result<pb::Order, Status> {
    orders(channel)
        .collect_reservation(authed(
            pb::CollectReservationRequest {
                order_id: order_id.into(),
                qr_payload: qr_payload.into(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().order.expect("order"))
}

/// OrderService.SetWriteProtect.
pub async fn set_write_protect(
    channel: &Channel,
    token: &str,
    order_id: &str,
    on: bool,
) -> Result<pb::SetWriteProtectResponse, Status> {
    orders(channel)
        .set_write_protect(authed(
            pb::SetWriteProtectRequest {
                order_id: order_id.into(),
                on,
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// The state of the bay holding `item_id` in `kiosk`, and whether the drive is blank.
pub fn bay_of(kiosk: &SimKiosk, item_id: &str) -> Option<(BayState, bool)> {
    kiosk
        .agent()
        .bays()
        .snapshot()
        .into_iter()
        .find(|b| b.item.as_ref().is_some_and(|i| i.item_id == item_id))
        .map(|bay| {
            let blank = matches!(
                bay.item.as_ref().map(|i| &i.facts),
                Some(ItemFacts::Drive {
                    content_package_id: None,
                    ..
                })
            );
            (bay.state, blank)
        })
}

/// A loopback address that accepts connections and never answers on them: a content service
/// a kiosk can reach but never hears back from, so its provision stays in flight.
pub async fn silent_address() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (address, task)
}
