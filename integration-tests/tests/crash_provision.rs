//! Fault matrix cell (issue 12, docs/reliability.md): the server killed while a kiosk
//! provisions a reservation. The node (orders, gateway, content, auth as one child process) is
//! SIGKILLed while the kiosk agent is halfway through copying the package onto the drive; the
//! agent finishes, keeps its result in its outbox, and reports it to the restarted node. What
//! must hold (DESIGN.md §10): the reservation becomes READY_FOR_PICKUP once, with the pinned
//! drive holding the package's bytes, charged once, and the audit clean.

use sneakernet_integration_tests::content::MIB;
use sneakernet_integration_tests::rentals::{
    self, SimKiosk, WAIT, assert_audit_clean, customer_with_deposit, get_order, movements,
    price_for, set_default_pricing, wait_for_state,
};
use sneakernet_integration_tests::reservations::{
    blank_drive, eventually_reserved, publish, reservation_request,
};
use sneakernet_integration_tests::{Child, backends, binary, connect, eventually, test_config};
use sneakernet_kiosk_agent::executor::MID_COPY_POINT;
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_proto::orders::v1::OrderState as S;

const FILES: [(&str, u64); 2] = [("films/first.mkv", 3 * MIB + 5), ("films/second.mkv", MIB)];
const CAPACITY: u64 = 64 * MIB;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_provision_gets_the_kiosks_result_after_restart_and_the_drive_is_ready() {
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
        let node = Child::standalone_at(binary!(), &config, &listen, &fast)
            .await
            .expect("node");
        let channel = connect(node.address).await;
        let operator = rentals::operator_token(&channel, &config).await;
        set_default_pricing(&channel, &operator, common::ItemKind::Drive)
            .await
            .expect("pricing");
        let source = tempfile::tempdir().expect("temp dir");
        let (package, package_id) = publish(
            &channel,
            &operator,
            source.path(),
            "killed-mid-copy",
            &FILES,
        )
        .await;

        // The kiosk (in this process) pauses after its first file is on the drive.
        let marker = dir.path().join("mid-copy");
        fail::cfg(
            MID_COPY_POINT,
            &format!("1*return(pause:3000:{})", marker.display()),
        )
        .expect("arm the pause");
        let kiosk = SimKiosk::healthy(
            node.address,
            &operator,
            "K-P",
            vec![Some(blank_drive("D-1", CAPACITY)), None],
        )
        .await;
        let user = customer_with_deposit(&channel).await;
        let request = reservation_request("K-P", &package_id, CAPACITY, false, 2, "killed-copy");
        let order = eventually_reserved(&channel, &user.token, request, &backend).await;
        eventually(WAIT, "the kiosk halfway through the copy", || async {
            marker.exists()
        })
        .await;
        node.kill().await;
        fail::remove(MID_COPY_POINT);

        let node = Child::standalone_at(binary!(), &config, &listen, &fast)
            .await
            .expect("node restarted");
        let channel = connect(node.address).await;
        let ready =
            wait_for_state(&channel, &user.token, &order.order_id, &[S::ReadyForPickup]).await;
        assert_eq!(ready.item_id, "D-1", "{backend}: {ready:?}");
        let drive = kiosk.agent().bays().drive_dir("D-1");
        for file in &package.files {
            assert_eq!(
                std::fs::read(drive.join(&file.path)).expect("on the drive"),
                std::fs::read(package.dir.join(&file.path)).expect("uploaded"),
                "{backend}: {} is the package's",
                file.path
            );
        }
        let ready = get_order(&channel, &user.token, &order.order_id)
            .await
            .expect("order");
        assert_eq!(ready.state, S::ReadyForPickup as i32, "{backend}");
        let charges = movements(&ready, pb::MoneyMovementKind::Price);
        assert_eq!(
            charges.len(),
            1,
            "{backend}: charged once: {:?}",
            ready.movements
        );
        assert_eq!(charges[0].amount, Some(price_for(2)), "{backend}");
        assert_audit_clean(&channel, &operator, &backend.to_string()).await;
        let mut kiosk = kiosk;
        kiosk.stop().await;
        node.kill().await;
        sneakernet_integration_tests::drop_schemas(&config).await;
    }
}
