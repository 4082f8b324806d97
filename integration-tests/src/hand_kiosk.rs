//! A kiosk driven by hand in rental tests: registered and credentialed as an operator would,
//! speaking the real link message by message through [`FakeKiosk`], so a test can make it lie
//! (about its clock, its bays, another kiosk's drives) and see what orders makes of it.
//! Beside it, what those tests check of the honest rest of the fleet.

use std::time::Duration;

use sneakernet_proto::common::v1 as common;
use sneakernet_proto::gateway::v1 as gw;
use sneakernet_proto::gateway::v1::open_request::Body as Up;
use sneakernet_proto::gateway::v1::open_response::Body as Down;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_proto::orders::v1::OrderState as S;
use sneakernet_runtime::wire::timestamp;
use tonic::transport::Channel;

use crate::fake_kiosk::FakeKiosk;
use crate::rentals::{
    self, CAPACITY, Customer, PACKAGE, SimKiosk, WAIT, create_rental, customer_with_deposit, drive,
    drive_type, fleet, new_qr_secret, qr_payload, register_kiosk, rental_request, scan,
    scan_until_available, start_priced_with, wait_for_state,
};
use crate::{Sandbox, authed};

/// A rentals sandbox ([`start_priced_with`], drives priced) whose links outlive a slow test:
/// with the rentals' 1.5 s `offline_after`, a heartbeat delayed on a busy machine cuts a
/// kiosk's link in the middle of a scripted lie, which these tests do not study (liveness has
/// its own tests).
pub async fn start_for_hand_kiosks(backend: &crate::Backend) -> (Sandbox, Channel, String) {
    start_priced_with(backend, &[common::ItemKind::Drive], |config| {
        config.gateway.offline_after = Duration::from_secs(120);
    })
    .await
}

/// A drive of the rentals' drive type as a kiosk reports it: writable, so a return of it
/// waits for a wipe.
pub fn reported_drive(item_id: &str) -> common::Item {
    reported_drive_protected(item_id, false)
}

/// A drive of the rentals' drive type as a kiosk reports it, write-protected or not (a
/// write-protected drive is lendable again as soon as it is back).
pub fn reported_drive_protected(item_id: &str, write_protected: bool) -> common::Item {
    common::Item {
        item_id: item_id.into(),
        kind: common::ItemKind::Drive.into(),
        attributes: Some(common::ItemAttributes {
            kind: Some(common::item_attributes::Kind::Drive(
                common::DriveAttributes {
                    capacity_bytes: CAPACITY,
                    content_package_id: PACKAGE.into(),
                    write_protected,
                    remote_link: false,
                },
            )),
        }),
    }
}

/// Bay `bay_id` holding `item` (READY), or empty.
pub fn bay(bay_id: &str, item: Option<common::Item>) -> gw::Bay {
    gw::Bay {
        bay_id: bay_id.into(),
        state: if item.is_some() {
            gw::BayState::Ready
        } else {
            gw::BayState::Empty
        }
        .into(),
        item,
        pinned_order_id: String::new(),
    }
}

/// Sends `body` as message `id` and returns the gateway's receipt (commands arriving
/// meanwhile are left unanswered).
pub async fn say(kiosk: &mut FakeKiosk, id: &str, body: Up) -> gw::Receipt {
    kiosk.send(id, body).await;
    loop {
        match kiosk.next().await {
            Ok(Some(Down::Receipt(receipt))) => return receipt,
            Ok(Some(Down::Command(_))) => continue,
            other => panic!("expected a receipt for {id}, got {other:?}"),
        }
    }
}

/// Asserts the gateway accepted the message.
pub fn assert_accepted(receipt: &gw::Receipt) {
    assert_eq!(
        receipt.status,
        gw::ReceiptStatus::Accepted as i32,
        "accepted: {receipt:?}"
    );
}

/// The kiosk reports `item` back in bay A2 at `at` (its clock).
pub fn returned(item: common::Item, at: chrono::DateTime<chrono::Utc>) -> Up {
    Up::ItemReturned(gw::ItemReturned {
        bay_id: "A2".into(),
        item: Some(item),
        returned_at: Some(timestamp(at)),
    })
}

/// The kiosk driven by hand holding one drive L-1 (bay A1) and an empty bay A2; a renter has
/// rented L-1 there and the kiosk holds the Lend command, acknowledged.
pub struct HandKiosk {
    /// The kiosk's link.
    pub link: FakeKiosk,
    /// The renter.
    pub renter: Customer,
    /// The renter's order.
    pub order: pb::Order,
    /// The Lend command the kiosk holds.
    pub lend: gw::Command,
    /// The key of the kiosk's rotating QR code.
    pub qr_secret: Vec<u8>,
}

/// Registers kiosk `kiosk_id` with its credential, connects it by hand holding L-1 in bay A1
/// and nothing in A2, and has a renter rent L-1 there; returns once the kiosk acknowledged
/// the Lend.
pub async fn a_rental_at_a_hand_driven_kiosk(
    sandbox: &Sandbox,
    channel: &Channel,
    operator: &str,
    kiosk_id: &str,
) -> HandKiosk {
    let secret = new_qr_secret();
    let mut link = connect_hand_kiosk(
        sandbox,
        channel,
        operator,
        kiosk_id,
        &secret,
        vec![bay("A1", Some(reported_drive("L-1"))), bay("A2", None)],
    )
    .await;
    let renter = customer_with_deposit(channel).await;
    let offer = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(offer) = scan(channel, &renter.token, &qr_payload(kiosk_id, &secret)).await
                && rentals::line(&offer, &drive_type()).is_some_and(|l| l.available == 1)
            {
                return offer;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the kiosk's drive on offer");
    let order = create_rental(
        channel,
        &renter.token,
        rental_request(&offer, &drive_type(), 1, None, "at-the-hand-kiosk"),
    )
    .await
    .expect("rent at the kiosk");
    let lend = link.next_command().await;
    link.send(
        "",
        Up::Ack(gw::Ack {
            command_id: lend.command_id.clone(),
        }),
    )
    .await;
    HandKiosk {
        link,
        renter,
        order,
        lend,
        qr_secret: secret,
    }
}

/// Registers kiosk `kiosk_id` with `qr_secret` and its credential, and connects it by hand
/// with `bays` in its Hello.
pub async fn connect_hand_kiosk(
    sandbox: &Sandbox,
    channel: &Channel,
    operator: &str,
    kiosk_id: &str,
    qr_secret: &[u8],
    bays: Vec<gw::Bay>,
) -> FakeKiosk {
    register_kiosk(channel, operator, kiosk_id, qr_secret)
        .await
        .expect("register the kiosk");
    let token = sandbox.kiosk_token(kiosk_id).await;
    let mut link = FakeKiosk::connect(
        channel.clone(),
        &token,
        gw::Inventory {
            bays,
            taken_at: None,
        },
    )
    .await
    .expect("the kiosk's link");
    // It lies in what it says, not in staying alive.
    link.keep_alive(Duration::from_millis(200));
    link
}

/// The kiosk's result for `lend`: `item_id` left from bay A1, finished at `finished_at`.
pub fn lend_result_of(
    lend: &gw::Command,
    item_id: &str,
    finished_at: prost_types::Timestamp,
) -> Up {
    Up::Result(gw::CommandResult {
        command_id: lend.command_id.clone(),
        outcome: Some(gw::command_result::Outcome::Lend(gw::LendResult {
            item_id: item_id.into(),
            bay_id: "A1".into(),
            item: Some(reported_drive(item_id)),
        })),
        finished_at: Some(finished_at),
    })
}

/// The kiosk's result for `lend`: L-1 left from bay A1, finished at `finished_at`.
pub fn lend_result(lend: &gw::Command, finished_at: prost_types::Timestamp) -> Up {
    lend_result_of(lend, "L-1", finished_at)
}

/// A user rents one of the `available` drives at the honest kiosk and returns it there into
/// the empty bay `back_into`: LENT, then CLOSED, with only the price charged. `n` keeps its
/// idempotency key apart from the test's other rentals.
pub async fn a_healthy_rental_goes_lent_and_closed(
    channel: &Channel,
    honest: &SimKiosk,
    (n, available, back_into): (u32, u32, &str),
    context: &str,
) {
    let user = customer_with_deposit(channel).await;
    let offer = scan_until_available(channel, &user.token, honest, &drive_type(), available).await;
    let order = create_rental(
        channel,
        &user.token,
        rental_request(&offer, &drive_type(), 1, None, &format!("healthy-{n}")),
    )
    .await
    .unwrap_or_else(|s| panic!("{context}: rent at the honest kiosk: {s:?}"));
    let lent = wait_for_state(channel, &user.token, &order.order_id, &[S::Lent]).await;
    honest.insert(back_into, drive(&lent.item_id)).await;
    let closed = wait_for_state(channel, &user.token, &order.order_id, &[S::Closed]).await;
    assert_eq!(
        closed.amount_charged,
        Some(rentals::price_for(1)),
        "{context}"
    );
}

/// FleetService.ListParkedEvents: the events orders could not apply.
pub async fn parked_events(channel: &Channel, operator: &str) -> Vec<pb::ParkedEvent> {
    fleet(channel)
        .list_parked_events(authed(pb::ListParkedEventsRequest::default(), operator))
        .await
        .expect("list parked events")
        .into_inner()
        .events
}
