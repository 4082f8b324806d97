//! One kiosk must not be able to stop orders for the fleet, nor set fees with its clock (issue
//! #9). A lying kiosk, registered as an operator would, speaks the real link message by
//! message: a lend result from the year 262142, inventories that grow without end, a return a
//! month in its future, a NUL in an item id. Each is refused at the gateway's edge and kept for
//! operators; a healthy kiosk's rentals still go LENT and CLOSED; nothing is parked, nothing
//! panics, and the same holds after a restart. Then the background tasks: a settle worker
//! that panics is restarted while health says NOT_SERVING, and an event that cannot be applied
//! is parked, listed and retried by an operator. Only gRPC, on every backend of this run.

use sneakernet_integration_tests::hand_kiosk::{
    HandKiosk, a_healthy_rental_goes_lent_and_closed, a_rental_at_a_hand_driven_kiosk,
    assert_accepted, bay, lend_result, parked_events, reported_drive, returned, say,
    start_for_hand_kiosks,
};
use sneakernet_integration_tests::rentals::{
    self, SimKiosk, WAIT, assert_audit_clean, create_rental, customer_with_deposit, drive,
    drive_type, fleet, rental_request, scan_until_available, set_default_pricing, wait_for_state,
};
use sneakernet_integration_tests::{
    Backend, Child, Sandbox, authed, backends, binary, connect, eventually, test_config,
};
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::gateway::v1 as gw;
use sneakernet_proto::gateway::v1::device_event_service_client::DeviceEventServiceClient;
use sneakernet_proto::gateway::v1::open_request::Body as Up;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_proto::orders::v1::OrderState as S;
use sneakernet_runtime::wire::timestamp;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const LIAR: &str = "K-LIAR";

async fn start(backend: &Backend) -> (Sandbox, Channel, String) {
    start_for_hand_kiosks(backend).await
}

fn assert_refused(receipt: &gw::Receipt, field: &str) {
    assert_eq!(
        receipt.status,
        gw::ReceiptStatus::Rejected as i32,
        "refused: {receipt:?}"
    );
    assert!(
        receipt.error.starts_with(field),
        "the refusal names {field}: {receipt:?}"
    );
}

async fn refused_messages(channel: &Channel, operator: &str) -> Vec<gw::RefusedMessage> {
    DeviceEventServiceClient::new(channel.clone())
        .list_refused_messages(authed(
            gw::ListRefusedMessagesRequest {
                kiosk_id: LIAR.into(),
                page_size: 500,
                page_token: String::new(),
            },
            operator,
        ))
        .await
        .expect("list refused messages")
        .into_inner()
        .messages
}

async fn health(channel: &Channel, service: &str) -> i32 {
    HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health")
        .into_inner()
        .status
}

#[tokio::test]
async fn a_lying_kiosk_is_refused_at_the_edge_and_the_fleet_keeps_renting() {
    for backend in backends() {
        let (sandbox, channel, operator) = start(&backend).await;
        let address = sandbox.node().address;
        let honest = SimKiosk::healthy(
            address,
            &operator,
            "K-HONEST",
            vec![Some(drive("D-1")), Some(drive("D-2")), None, None],
        )
        .await;
        // 1. A lend result stamped late in the year 262142.
        let HandKiosk {
            link: mut liar,
            renter,
            order,
            lend,
            ..
        } = a_rental_at_a_hand_driven_kiosk(&sandbox, &channel, &operator, LIAR).await;
        let result = |finished_at| lend_result(&lend, finished_at);
        let far = prost_types::Timestamp {
            seconds: 8_210_266_833_599,
            nanos: 0,
        };
        let receipt = say(&mut liar, "far-future", result(far)).await;
        assert_refused(&receipt, "result.finished_at");
        a_healthy_rental_goes_lent_and_closed(
            &channel,
            &honest,
            (1, 2, "A3"),
            &format!("{backend}: after 1"),
        )
        .await;

        // 2. Partial inventories, each within a message's limits, that would grow the kiosk's
        //    inventory past its bounds.
        let mut accepted = 0;
        let mut refused = None;
        for n in 0..25 {
            let bays = (0..50)
                .map(|b| bay(&format!("P{n:02}-{b:02}-{}", "x".repeat(20)), None))
                .collect();
            let receipt = say(
                &mut liar,
                &format!("partial-{n}"),
                Up::InventoryChanged(gw::InventoryChanged {
                    change: Some(gw::inventory_changed::Change::Partial(gw::Inventory {
                        bays,
                        taken_at: None,
                    })),
                }),
            )
            .await;
            if receipt.status == gw::ReceiptStatus::Accepted as i32 {
                accepted += 1;
            } else {
                refused = Some(receipt);
                break;
            }
        }
        let refused = refused.expect("a partial past the kiosk's bounds is refused");
        assert_refused(&refused, "inventory_changed.partial");
        assert!(refused.error.contains("1024 bays"), "{refused:?}");
        assert_eq!(accepted, 20, "{backend}: 2 + 20 x 50 bays fit in 1024");
        a_healthy_rental_goes_lent_and_closed(
            &channel,
            &honest,
            (2, 1, "A4"),
            &format!("{backend}: after 2"),
        )
        .await;

        // 3. The lend, honestly this time; then a return a month in the kiosk's future.
        let now = chrono::Utc::now();
        let receipt = say(&mut liar, "honest-lend", result(timestamp(now))).await;
        assert_accepted(&receipt);
        wait_for_state(&channel, &renter.token, &order.order_id, &[S::Lent]).await;
        let receipt = say(
            &mut liar,
            "month-ahead",
            returned(reported_drive("L-1"), now + chrono::Duration::days(30)),
        )
        .await;
        assert_refused(&receipt, "item_returned.returned_at");

        // 4. A NUL byte in an item id.
        let receipt = say(
            &mut liar,
            "nul-byte",
            returned(reported_drive("L-\u{0}1"), now),
        )
        .await;
        assert_refused(&receipt, "item_returned.item.item_id");

        // The return, with a clock a few minutes fast (within tolerance): the order closes
        // with its price alone, whatever the kiosk's clock says.
        let receipt = say(
            &mut liar,
            "return",
            returned(reported_drive("L-1"), now + chrono::Duration::minutes(4)),
        )
        .await;
        assert_accepted(&receipt);
        let closed = wait_for_state(&channel, &renter.token, &order.order_id, &[S::Closed]).await;
        assert_eq!(
            closed.amount_charged,
            Some(rentals::price_for(1)),
            "{backend}: no fee from the kiosk's clock"
        );
        let back = closed.returned_at.expect("returned_at");
        assert!(
            back.seconds <= chrono::Utc::now().timestamp(),
            "{backend}: the return is not dated in the future: {back:?}"
        );

        // Operators see each refusal; nothing needed parking; orders is serving.
        let kept = refused_messages(&channel, &operator).await;
        let fields: Vec<&str> = kept.iter().map(|m| m.field.as_str()).collect();
        for field in [
            "result.finished_at",
            "inventory_changed.partial",
            "item_returned.returned_at",
            "item_returned.item.item_id",
        ] {
            assert!(
                fields.contains(&field),
                "{backend}: {field} kept: {fields:?}"
            );
        }
        assert!(kept.iter().all(|m| m.message.is_some()), "{backend}");
        assert!(
            parked_events(&channel, &operator).await.is_empty(),
            "{backend}"
        );
        assert_eq!(
            health(&channel, "sneakernet.orders.v1.OrderService").await,
            ServingStatus::Serving as i32
        );
        assert_audit_clean(&channel, &operator, &backend.to_string()).await;

        // The same after a restart: the refusals are still listed, rentals still flow.
        drop(liar);
        let mut honest = honest;
        honest.stop().await;
        let sandbox = sandbox.restart().await;
        let channel = sandbox.channel().await;
        let operator = sandbox.operator().await.access_token;
        assert_eq!(
            refused_messages(&channel, &operator).await.len(),
            kept.len()
        );
        let honest = SimKiosk::healthy(
            sandbox.node().address,
            &operator,
            "K-AFTER",
            vec![Some(drive("D-7")), None],
        )
        .await;
        a_healthy_rental_goes_lent_and_closed(
            &channel,
            &honest,
            (3, 1, "A2"),
            &format!("{backend}: after restart"),
        )
        .await;
        assert!(
            parked_events(&channel, &operator).await.is_empty(),
            "{backend}"
        );
        assert_audit_clean(&channel, &operator, &backend.to_string()).await;
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn a_return_reported_a_day_late_by_an_offline_kiosk_is_charged_by_the_kiosks_time_within_the_window()
 {
    for backend in backends() {
        let (sandbox, channel, operator) = start(&backend).await;
        let HandKiosk {
            link: mut kiosk,
            mut renter,
            order,
            lend,
            ..
        } = a_rental_at_a_hand_driven_kiosk(&sandbox, &channel, &operator, LIAR).await;
        let receipt = say(
            &mut kiosk,
            "lend",
            lend_result(&lend, timestamp(chrono::Utc::now())),
        )
        .await;
        assert_accepted(&receipt);
        let lent = wait_for_state(&channel, &renter.token, &order.order_id, &[S::Lent]).await;
        let lent_at = lent.lent_at.expect("lent_at");
        let lent_at = chrono::DateTime::from_timestamp(lent_at.seconds, 0).expect("time");

        // Three days pass. The drive came back two days after the lend (a day late), but the
        // kiosk was offline and reports it only now: the late fee is one day's, not two.
        sandbox.clock.advance(chrono::Duration::days(3));
        // Tokens are judged by the clock that issued them: the old ones expired meanwhile.
        renter.log_in_again(&channel).await;
        let operator = rentals::operator_token(&channel, &sandbox.config).await;
        let back = lent_at + chrono::Duration::days(2);
        let receipt = say(
            &mut kiosk,
            "late-report",
            returned(reported_drive("L-1"), back),
        )
        .await;
        assert_accepted(&receipt);
        let closed = wait_for_state(&channel, &renter.token, &order.order_id, &[S::Closed]).await;
        assert_eq!(
            closed.returned_at.map(|t| t.seconds),
            Some(back.timestamp()),
            "{backend}: the kiosk's time, inside [lent_at, received]"
        );
        let price = rentals::price_for(1).minor_units;
        assert_eq!(
            closed.amount_charged.map(|m| m.minor_units),
            Some(price + 300),
            "{backend}: one started day late"
        );
        assert_audit_clean(&channel, &operator, &backend.to_string()).await;
        sandbox.stop().await;
    }
}

/// Follows a service's health until it has been `first`, then `second` (the Watch stream
/// sends every change, so no sleep decides what was seen).
async fn health_goes(
    channel: &Channel,
    service: &str,
    steps: &[ServingStatus],
    meanwhile: impl std::future::Future<Output = ()>,
) {
    let mut stream = HealthClient::new(channel.clone())
        .watch(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health watch")
        .into_inner();
    let first = stream.message().await.expect("watch").expect("status");
    assert_eq!(first.status, steps[0] as i32, "starts {:?}", steps[0]);
    let watching = async {
        for step in &steps[1..] {
            let next = tokio::time::timeout(WAIT, stream.message())
                .await
                .unwrap_or_else(|_| panic!("health never became {step:?}"))
                .expect("watch")
                .expect("status");
            assert_eq!(next.status, *step as i32);
        }
    };
    tokio::join!(watching, meanwhile);
}

#[tokio::test]
async fn a_settle_worker_that_panics_is_restarted_and_health_says_not_serving_meanwhile() {
    for backend in backends() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = test_config(&backend, dir.path());
        let env = [
            // The first time a lend waits in the outbox, the worker panics.
            ("FAILPOINTS", "orders::settle::outbox=1*return(panic:)"),
            ("SNEAKERNET_ORDERS__SWEEP_INTERVAL", "200ms"),
        ];
        let node = Child::standalone(binary!(), &config, &env)
            .await
            .expect("node");
        let channel = connect(node.address).await;
        // Standalone says NOT_SERVING until its own simulated kiosks are online.
        eventually(WAIT, "standalone ready", || async {
            health(&channel, "sneakernet.orders.v1.OrderService").await
                == ServingStatus::Serving as i32
        })
        .await;
        let operator = rentals::operator_token(&channel, &config).await;
        set_default_pricing(&channel, &operator, common::ItemKind::Drive)
            .await
            .expect("pricing");
        let kiosk =
            SimKiosk::healthy(node.address, &operator, "K-1", vec![Some(drive("D-1"))]).await;
        let user = customer_with_deposit(&channel).await;
        let offer = scan_until_available(&channel, &user.token, &kiosk, &drive_type(), 1).await;
        let rent = async {
            let order = create_rental(
                &channel,
                &user.token,
                rental_request(&offer, &drive_type(), 1, None, "supervised"),
            )
            .await
            .expect("rent");
            // The work is done after the restart: the lend reaches the kiosk.
            let lent = wait_for_state(&channel, &user.token, &order.order_id, &[S::Lent]).await;
            assert_eq!(kiosk.eject_count(&lent.item_id), 1, "{backend}");
        };
        health_goes(
            &channel,
            "sneakernet.orders.v1.OrderService",
            &[
                ServingStatus::Serving,
                ServingStatus::NotServing,
                ServingStatus::Serving,
            ],
            rent,
        )
        .await;
        node.kill().await;
    }
}

#[tokio::test]
async fn an_event_that_cannot_be_applied_is_parked_listed_and_retried_by_an_operator() {
    for backend in backends() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = test_config(&backend, dir.path());
        // The first event the kiosk view meets fails every try.
        let env = [("FAILPOINTS", "orders::events::apply=3*return(panic:)")];
        let node = Child::standalone(binary!(), &config, &env)
            .await
            .expect("node");
        let channel = connect(node.address).await;
        let operator = rentals::operator_token(&channel, &config).await;
        eventually(WAIT, "an event parked", || async {
            !parked_events(&channel, &operator).await.is_empty()
        })
        .await;
        let parked = parked_events(&channel, &operator).await;
        assert_eq!(parked.len(), 1, "{backend}: {parked:?}");
        let event = &parked[0];
        assert!(event.error.contains("panicked"), "{backend}: {event:?}");
        assert_eq!(event.attempts, 1);
        assert!(event.event.is_some(), "{backend}");

        // The events after it flowed on: a kiosk comes online and its drive is on offer.
        set_default_pricing(&channel, &operator, common::ItemKind::Drive)
            .await
            .expect("pricing");
        let kiosk =
            SimKiosk::healthy(node.address, &operator, "K-1", vec![Some(drive("D-1"))]).await;
        let user = customer_with_deposit(&channel).await;
        scan_until_available(&channel, &user.token, &kiosk, &drive_type(), 1).await;

        // The operator retries it: applied, and gone from the list.
        fleet(&channel)
            .retry_parked_event(authed(
                pb::RetryParkedEventRequest {
                    cursor: event.cursor,
                },
                &operator,
            ))
            .await
            .unwrap_or_else(|s| panic!("{backend}: retry: {s:?}"));
        assert!(parked_events(&channel, &operator).await.is_empty());
        let gone = fleet(&channel)
            .retry_parked_event(authed(
                pb::RetryParkedEventRequest {
                    cursor: event.cursor,
                },
                &operator,
            ))
            .await
            .expect_err("retried twice");
        assert_eq!(gone.code(), tonic::Code::NotFound);
        // Users may not see or touch parked events.
        let denied = fleet(&channel)
            .list_parked_events(authed(pb::ListParkedEventsRequest::default(), &user.token))
            .await
            .expect_err("a user");
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        node.kill().await;
    }
}
