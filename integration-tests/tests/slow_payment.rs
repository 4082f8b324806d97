//! Issue #12, defect 2: a payment provider that never answers a charge. CreateRental must
//! give up within the configured payment timeout (not hang past the two-minute limit after
//! which the settling worker takes the attempt as abandoned), and once the worker has found
//! the charge and paid it back, a retry of the same key is answered as paid back and never
//! books an order.
//!
//! Alone in its test binary: it arms a failpoint in this process, which would touch any other
//! test running beside it.

use std::time::Duration;

use sneakernet_integration_tests::rentals::{
    CARD_OK, SimKiosk, WAIT, assert_audit_clean, audit, create_rental, customer_with_deposit,
    list_orders, power_bank, power_bank_type, rental_request, scan_until_available,
    start_priced_with,
};
use sneakernet_integration_tests::{backends, eventually};
use sneakernet_proto::common::v1 as common;
use tonic::Code;

#[tokio::test]
async fn a_charge_the_provider_never_answers_times_out_and_once_paid_back_is_never_booked() {
    for backend in backends() {
        let (sandbox, channel, operator) =
            start_priced_with(&backend, &[common::ItemKind::PowerBank], |config| {
                config.orders.payment_timeout = Duration::from_secs(1);
            })
            .await;
        let mut kiosk = SimKiosk::healthy(
            sandbox.node().address,
            &operator,
            "K-1",
            vec![Some(power_bank("P-1"))],
        )
        .await;
        let user = customer_with_deposit(&channel).await;
        let offer =
            scan_until_available(&channel, &user.token, &kiosk, &power_bank_type(), 1).await;
        let request = rental_request(&offer, &power_bank_type(), 1, Some(CARD_OK), "slow");

        // From now on the sandbox records every charge and never answers it.
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("charged");
        fail::cfg(
            "orders::sandbox::charge::answer",
            &format!("return(hang:{})", marker.display()),
        )
        .unwrap();
        let answer =
            tokio::time::timeout(WAIT, create_rental(&channel, &user.token, request.clone()))
                .await
                .unwrap_or_else(|_| {
                    panic!("{backend}: CreateRental still waits for the provider after {WAIT:?}")
                });
        fail::remove("orders::sandbox::charge::answer");
        assert!(marker.exists(), "{backend}: the charge was made");
        let status = answer.expect_err("no answer from the provider, no order");
        assert_eq!(status.code(), Code::Unavailable, "{backend}: {status:?}");

        // Past the stale limit the settling worker finds the charge and pays it back (two
        // more ledger transactions: the charge, its refund); the same key is then answered as
        // paid back, never booked.
        let before = audit(&channel, &operator)
            .await
            .unwrap()
            .transactions_checked;
        sandbox.clock.advance(chrono::Duration::minutes(3));
        eventually(WAIT, "the worker to pay the charge back", || async {
            audit(&channel, &operator)
                .await
                .is_ok_and(|a| a.transactions_checked >= before + 2)
        })
        .await;
        let status = create_rental(&channel, &user.token, request.clone())
            .await
            .expect_err("a key paid back books nothing");
        assert_eq!(status.code(), Code::Aborted, "{backend}: {status:?}");
        let orders = list_orders(&channel, &user.token).await.unwrap();
        assert!(orders.is_empty(), "{backend}: no order: {orders:?}");
        assert_audit_clean(&channel, &operator, &backend.to_string()).await;
        kiosk.stop().await;
        sandbox.stop().await;
    }
}
