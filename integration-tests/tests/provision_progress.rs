//! WatchOrder carries a reservation's provisioning progress (issue 11): phase and bytes, at a
//! bounded rate, only while PROVISIONING, never going back. Its own test binary, because it
//! holds the kiosk agent (in this process) for a few seconds halfway through the copy with a
//! process-wide pause point, which would stall other tests' provisions.

use sneakernet_integration_tests::content::MIB;
use sneakernet_integration_tests::rentals::{
    SimKiosk, customer_with_deposit, follow, start_priced_with, states, watch,
};
use sneakernet_integration_tests::reservations::{
    blank_drive, eventually_reserved, publish, reservation_request,
};
use sneakernet_integration_tests::{Backend, Sandbox, backends};
use sneakernet_kiosk_agent::executor::MID_COPY_POINT;
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_proto::orders::v1::OrderState as S;
use tonic::transport::Channel;

async fn start(
    backend: &Backend,
    adjust: impl FnOnce(&mut sneakernet_runtime::Config),
) -> (Sandbox, Channel, String) {
    start_priced_with(backend, &[common::ItemKind::Drive], adjust).await
}

#[tokio::test]
async fn a_watcher_sees_provisioning_progress_advance_before_the_drive_is_ready() {
    for backend in backends() {
        let (sandbox, channel, operator) = start(&backend, |_| {}).await;
        let source = tempfile::tempdir().unwrap();
        // Two files: the kiosk stops for a while after the first one is on the drive (the
        // watcher reads progress at most once a second, and a fast machine copies in less).
        let (_package, package_id) = publish(
            &channel,
            &operator,
            source.path(),
            "progress",
            &[("films/first.mkv", 8 * MIB), ("films/second.mkv", 8 * MIB)],
        )
        .await;
        fail::cfg(MID_COPY_POINT, "1*return(pause:3000:)").expect("arm the pause");
        let capacity = 128 * MIB;
        let _here = SimKiosk::healthy(
            sandbox.node().address,
            &operator,
            "K-P1",
            vec![Some(blank_drive("D-1", capacity))],
        )
        .await;
        let user = customer_with_deposit(&channel).await;
        let request = reservation_request("K-P1", &package_id, capacity, false, 1, "p-1");
        let order = eventually_reserved(&channel, &user.token, request, &backend).await;
        let mut stream = watch(&channel, &user.token, &order.order_id)
            .await
            .expect("watch");
        let seen = follow(&mut stream, &format!("{backend}: provisioning"), |m| {
            m.state == S::ReadyForPickup as i32
        })
        .await;
        assert_eq!(
            seen.last().map(|m| m.state),
            Some(S::ReadyForPickup as i32),
            "{backend}: READY arrives"
        );
        let progress: Vec<(i32, pb::ProvisioningProgress)> = seen
            .iter()
            .filter_map(|m| m.progress.map(|p| (m.state, p)))
            .collect();
        assert!(
            !progress.is_empty(),
            "{backend}: no progress seen: {:?}",
            states(&seen)
        );
        for (state, now) in &progress {
            assert_eq!(*state, S::Provisioning as i32, "{backend}: {now:?}");
            assert!(
                now.bytes_total == 0 || now.bytes_done <= now.bytes_total,
                "{backend}: {now:?}"
            );
        }
        // Phases only move forward, and bytes within a phase only grow.
        for pair in progress.windows(2) {
            let (before, after) = (&pair[0].1, &pair[1].1);
            assert!(
                (before.phase, before.bytes_done) < (after.phase, after.bytes_done),
                "{backend}: progress went back: {before:?} then {after:?}"
            );
        }
        fail::remove(MID_COPY_POINT);
        sandbox.stop().await;
    }
}
