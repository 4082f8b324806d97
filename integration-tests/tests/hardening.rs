//! Hardening (issue #12): defects an outside reading found, each shown by a test that failed
//! before its fix. Only gRPC, on every backend of this run.

use sneakernet_integration_tests::rentals::{
    CARD_OK, DEPOSIT_MINOR_UNITS, SimKiosk, assert_audit_clean, bays, create_rental, drive,
    drive_type, eur, get_order, movements, pay_deposit, power_bank, price_for, register_user,
    rental_request, scan_until_available, start_priced, wait_for_state,
};
use sneakernet_integration_tests::backends;
use sneakernet_kiosk_agent::config::SimFaults;
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_proto::orders::v1::OrderState as S;

/// The longest idempotency key the contract allows: 128 characters, most of them several
/// bytes long (512 bytes in all but a few), starting with `tag`.
fn longest_key(tag: char) -> String {
    let key = format!("{tag}{}{}", "é".repeat(63), "𝄞".repeat(64));
    assert_eq!(key.chars().count(), 128);
    key
}

/// Defect 1: the provider key grew with the user's key (`rental:<user>:<key>`) past the
/// provider's 128-byte limit, so such a payment could not be made or paid back.
#[tokio::test]
async fn the_longest_idempotency_keys_pay_a_deposit_charge_a_rental_and_refund_its_failed_lend() {
    for backend in backends() {
        let (sandbox, channel, operator) = start_priced(
            &backend,
            &[common::ItemKind::Drive, common::ItemKind::PowerBank],
        )
        .await;
        let faults = SimFaults {
            jammed_bays: vec!["A1".into()],
            ..SimFaults::default()
        };
        let mut kiosk = SimKiosk::start(
            sandbox.node().address,
            &operator,
            "K-1",
            bays(vec![Some(drive("D-1")), Some(power_bank("P-1"))]),
            faults,
        )
        .await;
        let user = register_user(&channel).await;
        let deposit = pay_deposit(
            &channel,
            &user.token,
            eur(DEPOSIT_MINOR_UNITS),
            CARD_OK,
            &longest_key('d'),
        )
        .await
        .unwrap_or_else(|s| panic!("{backend}: deposit with the longest key: {s:?}"));
        assert_eq!(deposit.state, pb::DepositState::Held as i32, "{backend}");

        let offer = scan_until_available(&channel, &user.token, &kiosk, &drive_type(), 1).await;
        let request = rental_request(&offer, &drive_type(), 2, None, &longest_key('r'));
        let order = create_rental(&channel, &user.token, request.clone())
            .await
            .unwrap_or_else(|s| panic!("{backend}: rental with the longest key: {s:?}"));
        let again = create_rental(&channel, &user.token, request)
            .await
            .unwrap_or_else(|s| panic!("{backend}: the same longest key again: {s:?}"));
        assert_eq!(
            again.order_id, order.order_id,
            "{backend}: one order per key"
        );

        // The jammed bay fails the lend: the order is paid back in full.
        wait_for_state(&channel, &user.token, &order.order_id, &[S::Refunded]).await;
        let refunded = get_order(&channel, &user.token, &order.order_id)
            .await
            .expect("order");
        assert_eq!(refunded.amount_charged, Some(price_for(2)), "{backend}");
        assert_eq!(refunded.amount_refunded, Some(price_for(2)), "{backend}");
        assert_eq!(
            movements(&refunded, pb::MoneyMovementKind::Price).len(),
            1,
            "{backend}: charged once: {:?}",
            refunded.movements
        );
        assert_audit_clean(&channel, &operator, &backend.to_string()).await;
        kiosk.stop().await;
        sandbox.stop().await;
    }
}
