//! A reservation cancelled while its kiosk is copying the content (PROVISIONING): everything
//! paid comes back at once, and the drive the kiosk was writing is released (unpinned and
//! wiped) when the kiosk reports the copy, so the next user can reserve it (issue 11). Its
//! own test binary, because it holds the kiosk agent (in this process) halfway through the
//! copy with a process-wide pause point, which would stall other tests' provisions.

use std::time::Duration;

use sneakernet_integration_tests::content::MIB;
use sneakernet_integration_tests::rentals::{
    SimKiosk, WAIT, assert_audit_clean, customer_with_deposit, get_order, start_priced_with,
    wait_for_state,
};
use sneakernet_integration_tests::reservations::{
    bay_of, blank_drive, cancel_reservation, eventually_reserved, publish, reservation_request,
};
use sneakernet_integration_tests::{backends, eventually};
use sneakernet_kiosk_agent::bays::BayState;
use sneakernet_kiosk_agent::executor::MID_COPY_POINT;
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::orders::v1::OrderState as S;

#[tokio::test]
async fn a_reservation_cancelled_while_provisioning_is_refunded_and_its_drive_released_for_the_next_user()
 {
    for backend in backends() {
        let (sandbox, channel, operator) =
            start_priced_with(&backend, &[common::ItemKind::Drive], |_| {}).await;
        let source = tempfile::tempdir().unwrap();
        let (_package, package_id) = publish(
            &channel,
            &operator,
            source.path(),
            "cancel-mid-copy",
            &[("films/first.mkv", 4 * MIB), ("films/second.mkv", 4 * MIB)],
        )
        .await;
        // The kiosk stops after the first file is on the drive, and says so through the
        // marker: the order is provably PROVISIONING then. The pause is long enough for a
        // loaded machine to cancel inside it (a cancel after the copy would leave the order
        // holding D-1, which the assertions below catch).
        let marks = tempfile::tempdir().unwrap();
        let marker = marks.path().join("mid-copy");
        fail::cfg(
            MID_COPY_POINT,
            &format!("1*return(pause:10000:{})", marker.display()),
        )
        .expect("arm the pause");
        let capacity = 64 * MIB;
        let kiosk = SimKiosk::healthy(
            sandbox.node().address,
            &operator,
            "K-CP1",
            vec![Some(blank_drive("D-1", capacity))],
        )
        .await;
        let first = customer_with_deposit(&channel).await;
        let request = reservation_request("K-CP1", &package_id, capacity, false, 1, "cp-1");
        let order = eventually_reserved(&channel, &first.token, request, &backend).await;
        eventually(WAIT, &format!("{backend}: the copy paused"), || async {
            marker.exists()
        })
        .await;
        let copying = get_order(&channel, &first.token, &order.order_id)
            .await
            .expect("order");
        assert_eq!(
            copying.state,
            S::Provisioning as i32,
            "{backend}: {copying:?}"
        );
        assert_eq!(
            bay_of(&kiosk, "D-1").map(|(state, _)| state),
            Some(BayState::Busy),
            "{backend}: the kiosk is writing D-1"
        );

        cancel_reservation(&channel, &first.token, &order.order_id)
            .await
            .expect("cancel while provisioning");
        let refunded =
            wait_for_state(&channel, &first.token, &order.order_id, &[S::Refunded]).await;
        assert_eq!(
            refunded.amount_refunded, refunded.amount_charged,
            "{backend}: everything paid comes back: {refunded:?}"
        );
        assert!(refunded.amount_charged.is_some(), "{backend}: it was paid");

        // The copy goes on after the pause; its result finds the order cancelled, so the drive
        // is released: unpinned and wiped, ready again.
        eventually(
            WAIT + Duration::from_secs(10),
            &format!("{backend}: D-1 released blank"),
            || async { bay_of(&kiosk, "D-1") == Some((BayState::Ready, true)) },
        )
        .await;
        let cancelled = get_order(&channel, &first.token, &order.order_id)
            .await
            .expect("order");
        assert_eq!(
            cancelled.state,
            S::Refunded as i32,
            "{backend}: the late result does not revive it"
        );
        assert!(
            cancelled.item_id.is_empty(),
            "{backend}: no drive stays pinned to it: {cancelled:?}"
        );

        // The next user gets that drive, provisioned for them.
        let second = customer_with_deposit(&channel).await;
        let request = reservation_request("K-CP1", &package_id, capacity, false, 1, "cp-2");
        let next = eventually_reserved(&channel, &second.token, request, &backend).await;
        let ready = wait_for_state(
            &channel,
            &second.token,
            &next.order_id,
            &[S::ReadyForPickup],
        )
        .await;
        assert_eq!(ready.item_id, "D-1", "{backend}: {ready:?}");
        assert_audit_clean(&channel, &operator, &format!("{backend}: after")).await;
        fail::remove(MID_COPY_POINT);
        sandbox.stop().await;
    }
}
