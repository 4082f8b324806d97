//! Fault matrix cell (issue 12, docs/reliability.md): duplicated and reordered kiosk messages.
//! A kiosk's outbox is replayed after every reconnect, so the gateway can hear a message twice
//! and hear a newer one before an older one: here the renter hands the drive back at once, and
//! the kiosk's return reaches the gateway before the lend's result, which then arrives twice
//! (the same message again, and the same result under a new message id). What must hold
//! (DESIGN.md §10): the order is lent and returned once, charged its price once, the drive is
//! on offer again, nothing is parked and the audit is clean. Only gRPC, on every backend.

use sneakernet_integration_tests::hand_kiosk::{
    a_rental_at_a_hand_driven_kiosk, assert_accepted, lend_result, parked_events,
    reported_drive_protected, returned, say, start_for_hand_kiosks,
};
use sneakernet_integration_tests::rentals::{
    self, assert_audit_clean, customer_with_deposit, drive_type, get_order, price_for, qr_payload,
    scan, wait_for_state,
};
use sneakernet_integration_tests::{backends, eventually};
use sneakernet_proto::gateway::v1 as gw;
use sneakernet_proto::orders::v1::OrderState as S;
use sneakernet_runtime::wire::timestamp;

#[tokio::test]
async fn a_return_heard_before_its_lends_result_and_a_result_heard_twice_close_the_order_once() {
    for backend in backends() {
        let (sandbox, channel, operator) = start_for_hand_kiosks(&backend).await;
        let mut hand = a_rental_at_a_hand_driven_kiosk(&sandbox, &channel, &operator, "K-H").await;
        let lent_at = chrono::Utc::now();
        let back_at = lent_at + chrono::Duration::seconds(30);

        // Newer first: the return (into bay A2), then the lend's result.
        let receipt = say(
            &mut hand.link,
            "m-return",
            returned(reported_drive_protected("L-1", true), back_at),
        )
        .await;
        assert_accepted(&receipt);
        let result = lend_result(&hand.lend, timestamp(lent_at));
        assert_accepted(&say(&mut hand.link, "m-result", result.clone()).await);
        // The same message again, and the same result under another id: both duplicates.
        for id in ["m-result", "m-result-again"] {
            let receipt = say(&mut hand.link, id, result.clone()).await;
            assert_eq!(
                receipt.status,
                gw::ReceiptStatus::Duplicate as i32,
                "{backend}: {id}: {receipt:?}"
            );
        }

        let order = &hand.order;
        let closed =
            wait_for_state(&channel, &hand.renter.token, &order.order_id, &[S::Closed]).await;
        assert_eq!(closed.item_id, "L-1", "{backend}: {closed:?}");
        assert_eq!(closed.amount_charged, Some(price_for(1)), "{backend}");
        assert!(
            closed
                .amount_refunded
                .as_ref()
                .is_none_or(|m| m.minor_units == 0),
            "{backend}: {closed:?}"
        );
        let again = get_order(&channel, &hand.renter.token, &order.order_id)
            .await
            .expect("order");
        assert_eq!(again.state, S::Closed as i32, "{backend}");

        // The drive is back on offer at the kiosk.
        let looker = customer_with_deposit(&channel).await;
        let qr = qr_payload("K-H", &hand.qr_secret);
        eventually(rentals::WAIT, "L-1 on offer again", || async {
            scan(&channel, &looker.token, &qr).await.is_ok_and(|offer| {
                rentals::line(&offer, &drive_type()).is_some_and(|l| l.available == 1)
            })
        })
        .await;
        assert!(
            parked_events(&channel, &operator).await.is_empty(),
            "{backend}: nothing parked"
        );
        assert_audit_clean(&channel, &operator, &backend.to_string()).await;
        sandbox.stop().await;
    }
}
