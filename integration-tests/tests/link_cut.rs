//! A lend takes effect exactly once when the network cuts the link mid-command: the gateway has
//! sent the command, the kiosk has done it, and neither its ack nor its result got through.
//! The gateway delivers the command again on the new link; the kiosk answers from its journal.
//!
//! Alone in its test binary: it arms a failpoint in this process, which would touch any other
//! test running beside it.

use std::time::Duration;

use sneakernet_integration_tests::kiosk::{self, agent_config};
use sneakernet_integration_tests::proxy::CuttableProxy;
use sneakernet_integration_tests::{Sandbox, authed, backends, eventually, fast_links};
use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::gateway::v1::device_command_service_client::DeviceCommandServiceClient;

#[tokio::test]
async fn a_lend_is_executed_once_when_the_stream_is_cut_mid_command() {
    for backend in backends() {
        let sandbox = Sandbox::start_with(&backend, |config| {
            fast_links(config);
            // The frozen session sends no heartbeats; the agent must not drop the link on its
            // own before the test cuts it.
            config.gateway.heartbeat_interval = Duration::from_secs(20);
            config.gateway.offline_after = Duration::from_secs(60);
        })
        .await;
        let operator = sandbox.operator().await;
        let secret = sandbox.kiosk_secret("K-1").await;
        let proxy = CuttableProxy::start(sandbox.node().address).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut config = agent_config(dir.path(), "K-1", &secret, sandbox.node().address, 2);
        config.gateway_url = format!("http://{}", proxy.address);
        let agent = sneakernet_kiosk_agent::start(config).await.expect("agent");

        // The first delivery freezes its link's session right after sending: nothing the
        // kiosk answers on that link is ever read.
        let marker = dir.path().join("sent");
        fail::cfg(
            "gateway::deliver::after_send",
            &format!("1*return(hang:{})", marker.display()),
        )
        .unwrap();

        let deadline = chrono::Utc::now() + chrono::Duration::minutes(5);
        let mut commands = DeviceCommandServiceClient::new(sandbox.channel().await);
        let command_id = commands
            .send_command(authed(
                pb::SendCommandRequest {
                    kiosk_id: "K-1".into(),
                    payload: Some(kiosk::lend("order-c")),
                    idempotency_key: "lend:order-c".into(),
                    deadline: Some(prost_types::Timestamp {
                        seconds: deadline.timestamp(),
                        nanos: 0,
                    }),
                    drive_id: String::new(),
                },
                &operator.access_token,
            ))
            .await
            .expect("send")
            .into_inner()
            .command
            .unwrap()
            .command_id;
        eventually(
            Duration::from_secs(30),
            "the command to be sent",
            || async { marker.exists() },
        )
        .await;
        eventually(Duration::from_secs(30), "the kiosk to eject", || async {
            agent.bays().eject_count("D-1") + agent.bays().eject_count("D-2") == 1
        })
        .await;
        proxy.cut();

        let succeeded = || {
            let mut commands = commands.clone();
            let request = authed(
                pb::GetCommandRequest {
                    command_id: command_id.clone(),
                },
                &operator.access_token,
            );
            async move {
                commands
                    .get_command(request)
                    .await
                    .ok()
                    .and_then(|r| r.into_inner().command)
            }
        };
        eventually(
            Duration::from_secs(60),
            "the lend to succeed over the new link",
            || async {
                succeeded()
                    .await
                    .is_some_and(|r| r.state == pb::CommandState::Succeeded as i32)
            },
        )
        .await;
        // SUCCEEDED is final: this read sees the same record.
        let done = succeeded().await.unwrap();
        assert_eq!(done.attempts, 2, "{backend}: delivered twice");
        assert_eq!(
            agent.bays().eject_count("D-1") + agent.bays().eject_count("D-2"),
            1,
            "{backend}: one eject"
        );
        fail::remove("gateway::deliver::after_send");
        agent.stop().await;
        sandbox.stop().await;
    }
}
