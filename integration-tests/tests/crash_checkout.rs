//! Fault matrix cell (issue 12, docs/reliability.md): the orders process killed between the
//! provider's charge and the order's booking. The payment provider has taken the money; the
//! process dies before the order, its postings and its Lend are written. What must hold
//! (DESIGN.md §10): the user's retry with the same idempotency key finds that charge and books
//! it (never a second charge), the order is lent once, and the auditor finds the payment
//! matched. Real processes (`Child`), SIGKILL, on every backend of this run.

use sneakernet_integration_tests::rentals::{
    self, CARD_OK, SimKiosk, WAIT, assert_audit_clean, create_rental, customer_with_deposit,
    get_order, list_orders, movements, power_bank, power_bank_type, price_for, rental_request,
    scan_until_available, set_default_pricing, wait_for_state,
};
use sneakernet_integration_tests::{Child, backends, binary, connect, eventually, test_config};
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_proto::orders::v1::OrderState as S;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_after_the_charge_before_the_booking_books_that_charge_on_retry_once() {
    for backend in backends() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = test_config(&backend, &dir.path().join("server"));
        let listen = format!("127.0.0.1:{}", sneakernet_integration_tests::free_port());
        let fast = [
            ("SNEAKERNET_GATEWAY__HEARTBEAT_INTERVAL", "200ms"),
            ("SNEAKERNET_GATEWAY__OFFLINE_AFTER", "1500ms"),
            ("SNEAKERNET_GATEWAY__COMMAND_POLL_INTERVAL", "100ms"),
            ("SNEAKERNET_ORDERS__SWEEP_INTERVAL", "200ms"),
        ];
        let marker = dir.path().join("charged");
        let hang = format!(
            "orders::sandbox::charge::answer=1*return(hang:{})",
            marker.display()
        );
        let mut armed = fast.to_vec();
        armed.push(("FAILPOINTS", hang.as_str()));
        let node = Child::standalone_at(binary!(), &config, &listen, &armed)
            .await
            .expect("node");
        let channel = connect(node.address).await;
        let operator = rentals::operator_token(&channel, &config).await;
        set_default_pricing(&channel, &operator, common::ItemKind::PowerBank)
            .await
            .expect("pricing");
        let mut kiosk = SimKiosk::healthy(
            node.address,
            &operator,
            "K-1",
            vec![Some(power_bank("P-1")), Some(power_bank("P-2"))],
        )
        .await;
        let user = customer_with_deposit(&channel).await;
        let offer =
            scan_until_available(&channel, &user.token, &kiosk, &power_bank_type(), 2).await;
        let request = rental_request(&offer, &power_bank_type(), 1, Some(CARD_OK), "killed-paid");

        // The provider charges, and the process dies before it hears the answer.
        let pending = {
            let (channel, token, request) = (channel.clone(), user.token.clone(), request.clone());
            tokio::spawn(async move { create_rental(&channel, &token, request).await })
        };
        eventually(WAIT, "the provider to have charged", || async {
            marker.exists()
        })
        .await;
        node.kill().await;
        let lost = pending.await.expect("the pending call");
        assert!(
            lost.is_err(),
            "{backend}: the killed call answered: {lost:?}"
        );

        // The same request again, to the restarted node: that charge becomes the order.
        let node = Child::standalone_at(binary!(), &config, &listen, &fast)
            .await
            .expect("node restarted");
        let channel = connect(node.address).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        let order = loop {
            match create_rental(&channel, &user.token, request.clone()).await {
                Ok(order) => break order,
                Err(status) if tokio::time::Instant::now() < deadline => {
                    eprintln!("{backend}: retry answered {status:?}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(status) => panic!("{backend}: the retried rental: {status:?}"),
            }
        };
        let lent = wait_for_state(&channel, &user.token, &order.order_id, &[S::Lent]).await;
        assert_eq!(kiosk.eject_count(&lent.item_id), 1, "{backend}: {lent:?}");
        assert_eq!(
            kiosk.eject_count("P-1") + kiosk.eject_count("P-2"),
            1,
            "{backend}: one item left the kiosk"
        );
        let lent = get_order(&channel, &user.token, &lent.order_id)
            .await
            .expect("order");
        let charges = movements(&lent, pb::MoneyMovementKind::Price);
        assert_eq!(
            charges.len(),
            1,
            "{backend}: charged once: {:?}",
            lent.movements
        );
        assert_eq!(lent.amount_charged, Some(price_for(1)), "{backend}");
        assert_eq!(
            list_orders(&channel, &user.token)
                .await
                .expect("list")
                .len(),
            1,
            "{backend}: one key, one order"
        );
        assert_audit_clean(&channel, &operator, &backend.to_string()).await;

        kiosk.stop().await;
        node.kill().await;
        sneakernet_integration_tests::drop_schemas(&config).await;
    }
}
