//! A write-protect toggle sent while a lent drive is out of coverage waits in the gateway's
//! log, is delivered when the drive's link comes back, and takes effect exactly once even
//! when that link is cut again right after the command went out: the gateway resends it on
//! the next link and the module's journal answers it.
//!
//! Alone in its test binary: it arms a failpoint in this process, which would touch any other
//! test running beside it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use sneakernet_integration_tests::kiosk::{
    self, CountedModule, agent_config, drive_config, finished_command, send_write_protect,
    with_remote_links,
};
use sneakernet_integration_tests::proxy::CuttableProxy;
use sneakernet_integration_tests::{Sandbox, backends, eventually, fast_links};
use sneakernet_kiosk_agent::bays::DriveError;
use sneakernet_kiosk_agent::drive;
use sneakernet_proto::gateway::v1 as pb;

const WITHIN: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_toggle_sent_out_of_coverage_takes_effect_once_when_the_drive_is_back() {
    for backend in backends() {
        let sandbox = Sandbox::start_with(&backend, |config| {
            fast_links(config);
            // The frozen session sends no heartbeats; the module must not drop the link on
            // its own before the test cuts it.
            config.gateway.heartbeat_interval = Duration::from_secs(20);
            config.gateway.offline_after = Duration::from_secs(60);
        })
        .await;
        let address = sandbox.node().address;
        let operator = sandbox.operator().await.access_token;
        let channel = sandbox.channel().await;
        let dir = tempfile::tempdir().unwrap();
        let secret = sandbox.kiosk_secret("K-1").await;
        let mut config = agent_config(dir.path(), "K-1", &secret, address, 1);
        with_remote_links(&mut config, &["D-1"]);
        let agent = sneakernet_kiosk_agent::start(config).await.expect("agent");
        let lend = kiosk::send_lend(channel.clone(), &operator, "order-1").await;
        let lent = finished_command(&channel, &operator, &lend, WITHIN).await;
        assert_eq!(lent.state, pb::CommandState::Succeeded as i32, "{backend}");

        // The drive's module reaches the gateway through a network the test controls.
        let proxy = CuttableProxy::start(address).await.unwrap();
        let counted = CountedModule::of(agent.bays(), "D-1");
        let calls = counted.counter();
        let module_secret = sandbox.drive_secret("D-1").await;
        let module = drive::start(
            drive_config(dir.path(), "D-1", &module_secret, address, proxy.address),
            counted,
        )
        .await
        .expect("drive module");

        // Out of coverage: the toggle is logged and waits.
        proxy.take_down();
        let off = send_write_protect(&channel, &operator, "D-1", false, "wp:off").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let waiting = kiosk::command_record(&channel, &operator, &off)
            .await
            .expect("record");
        assert!(
            waiting.state == pb::CommandState::Queued as i32
                || waiting.state == pb::CommandState::Sent as i32,
            "{backend}: {waiting:?}"
        );
        assert_eq!(
            agent.bays().write_as_user("D-1", "mine.txt", b"1"),
            Err(DriveError::WriteProtected("D-1".into())),
            "{backend}: still as lent"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 0);

        // Back in coverage: the first delivery freezes its session right after sending, so
        // nothing the module answers on that link is read.
        let marker = dir.path().join("sent");
        fail::cfg(
            "gateway::deliver::after_send",
            &format!("1*return(hang:{})", marker.display()),
        )
        .unwrap();
        proxy.bring_up();
        eventually(WITHIN, "the toggle to be sent", || async {
            marker.exists()
        })
        .await;
        eventually(WITHIN, "the module to act", || async {
            agent.bays().write_protected_anywhere("D-1") == Some(false)
        })
        .await;
        // Cut again before its ack or result got through: the next link gets it again.
        proxy.cut();
        let done = finished_command(&channel, &operator, &off, WITHIN).await;
        assert_eq!(done.state, pb::CommandState::Succeeded as i32, "{backend}");
        assert!(done.attempts >= 2, "{backend}: resent ({})", done.attempts);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "{backend}: the resend was answered from the journal"
        );
        assert_eq!(
            agent.bays().write_as_user("D-1", "mine.txt", b"22"),
            Ok(2),
            "{backend}: the user writes again"
        );

        fail::remove("gateway::deliver::after_send");
        module.stop().await;
        agent.stop().await;
        sandbox.stop().await;
    }
}
