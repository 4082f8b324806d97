//! A lend takes effect exactly once (one eject, one result event) when a process dies at the
//! worst moment: the gateway after sending the command and before the ack, or the kiosk agent
//! after ejecting and before reporting. Both are real processes, killed with SIGKILL.

use std::time::Duration;

use sneakernet_integration_tests::kiosk::{self, AgentProcess, agent_config, write_agent_toml};
use sneakernet_integration_tests::{
    Backend, Child, PASSWORD, Sandbox, authed, backends, binary, connect, eventually, fast_links,
    issue_kiosk_secret, test_config,
};
use sneakernet_kiosk_agent::simulated::SimulatedBays;
use sneakernet_proto::auth::v1 as auth;
use sneakernet_proto::auth::v1::auth_service_client::AuthServiceClient;
use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::gateway::v1::device_event_service_client::DeviceEventServiceClient;
use tonic::transport::Channel;

async fn wait_succeeded(
    address: std::net::SocketAddr,
    token: &str,
    command_id: &str,
) -> pb::CommandRecord {
    eventually(Duration::from_secs(60), "the lend to succeed", || async {
        kiosk::command_record(&connect(address).await, token, command_id)
            .await
            .is_some_and(|r| r.state == pb::CommandState::Succeeded as i32)
    })
    .await;
    // SUCCEEDED is final: this read sees the same record.
    kiosk::command_record(&connect(address).await, token, command_id)
        .await
        .expect("record")
}

/// How many state-change events reported this command SUCCEEDED.
async fn success_events(channel: Channel, token: &str, command_id: &str) -> usize {
    let mut stream = DeviceEventServiceClient::new(channel)
        .subscribe(authed(pb::SubscribeRequest::default(), token))
        .await
        .expect("subscribe")
        .into_inner();
    let mut count = 0;
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_millis(700), stream.message())
            .await
            .map(|m| m.transpose())
    {
        if let Some(pb::subscribe_response::Entry::Event(pb::Event {
            kind: Some(pb::event::Kind::CommandStateChanged(changed)),
            ..
        })) = message.entry
        {
            let record = changed.command.expect("record");
            if record.command_id == command_id && record.state == pb::CommandState::Succeeded as i32
            {
                count += 1;
            }
        }
    }
    count
}

fn lent_item(record: &pb::CommandRecord) -> String {
    match record.result.as_ref().and_then(|r| r.outcome.as_ref()) {
        Some(pb::command_result::Outcome::Lend(lend)) => lend.item_id.clone(),
        other => panic!("expected a lend result, got {other:?}"),
    }
}

#[tokio::test]
async fn a_lend_is_executed_once_when_the_gateway_is_killed_after_sending_before_the_ack() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(&backend, &dir.path().join("server"));
        let marker = dir.path().join("sent");
        let listen = format!("127.0.0.1:{}", sneakernet_integration_tests::free_port());
        let hang = format!(
            "gateway::deliver::after_send=return(hang:{})",
            marker.display()
        );
        // Slow liveness on purpose: the hung session sends no heartbeats, and the agent must not
        // give up on it and reconnect (to the still-hung gateway) before the test kills it.
        let fast = [
            ("SNEAKERNET_GATEWAY__HEARTBEAT_INTERVAL", "20s"),
            ("SNEAKERNET_GATEWAY__OFFLINE_AFTER", "60s"),
            ("SNEAKERNET_GATEWAY__COMMAND_POLL_INTERVAL", "100ms"),
        ];
        let mut env = fast.to_vec();
        env.push(("FAILPOINTS", &hang));
        let gateway = Child::standalone_at(binary!(), &config, &listen, &env)
            .await
            .expect("gateway");

        let email = format!("op-{}@example.com", uuid::Uuid::new_v4().simple());
        sneakernet_auth::create_operator(&config, &email, PASSWORD)
            .await
            .expect("operator");
        let mut auth_client = AuthServiceClient::new(connect(gateway.address).await);
        let operator = auth_client
            .login(auth::LoginRequest {
                email,
                password: PASSWORD.into(),
            })
            .await
            .expect("login")
            .into_inner()
            .session
            .expect("session");
        let secret = issue_kiosk_secret(
            connect(gateway.address).await,
            &operator.access_token,
            "K-1",
        )
        .await;
        let agent_dir = dir.path().join("kiosk");
        std::fs::create_dir_all(&agent_dir).unwrap();
        let agent = sneakernet_kiosk_agent::start(agent_config(
            &agent_dir,
            "K-1",
            &secret,
            gateway.address,
            2,
        ))
        .await
        .expect("agent");

        let command_id = kiosk::send_lend(
            connect(gateway.address).await,
            &operator.access_token,
            "order-g",
        )
        .await;
        eventually(
            Duration::from_secs(30),
            "the gateway to send the lend and hang",
            || async { marker.exists() },
        )
        .await;
        // The kiosk got it and ejected; its ack and result reached a gateway that will never read them.
        eventually(Duration::from_secs(30), "the agent to eject", || async {
            agent.bays().eject_count("D-1") + agent.bays().eject_count("D-2") == 1
        })
        .await;
        gateway.kill().await;

        let gateway = Child::standalone_at(binary!(), &config, &listen, &fast)
            .await
            .expect("gateway restarted");
        let done = wait_succeeded(gateway.address, &operator.access_token, &command_id).await;
        let item = lent_item(&done);
        assert_eq!(
            done.attempts, 2,
            "{backend}: the command was delivered twice"
        );
        assert_eq!(agent.bays().eject_count(&item), 1, "{backend}: one eject");
        assert_eq!(
            agent.bays().eject_count("D-1") + agent.bays().eject_count("D-2"),
            1,
            "{backend}"
        );
        assert_eq!(
            success_events(
                connect(gateway.address).await,
                &operator.access_token,
                &command_id
            )
            .await,
            1,
            "{backend}"
        );

        agent.stop().await;
        gateway.kill().await;
        if let Backend::Postgres(_) = backend {
            sneakernet_integration_tests::drop_schemas(&config).await;
        }
    }
}

#[tokio::test]
async fn a_lend_is_executed_once_when_the_agent_is_killed_after_ejecting_before_reporting() {
    for backend in backends() {
        let sandbox = Sandbox::start_with(&backend, fast_links).await;
        let operator = sandbox.operator().await;
        let secret = sandbox.kiosk_secret("K-1").await;
        let dir = tempfile::tempdir().unwrap();
        let config = agent_config(dir.path(), "K-1", &secret, sandbox.node().address, 2);
        let file = write_agent_toml(&config, dir.path());
        let agent_binary = env!("CARGO_BIN_EXE_kiosk-agent-under-test");
        let marker = dir.path().join("ejected");
        let hang = format!("agent::lend::after_eject=return(hang:{})", marker.display());

        let agent = AgentProcess::run(agent_binary, &file, Some(&hang));
        let command_id =
            kiosk::send_lend(sandbox.channel().await, &operator.access_token, "order-a").await;
        eventually(
            Duration::from_secs(30),
            "the agent to eject and hang",
            || async { marker.exists() },
        )
        .await;
        agent.kill().await;

        let agent = AgentProcess::run(agent_binary, &file, None);
        let done =
            wait_succeeded(sandbox.node().address, &operator.access_token, &command_id).await;
        let item = lent_item(&done);
        agent.terminate().await;

        let bays = SimulatedBays::open(&config.data_dir, config.simulation.as_ref().unwrap())
            .await
            .expect("simulator state");
        assert_eq!(bays.eject_count(&item), 1, "{backend}: one eject");
        assert_eq!(
            bays.eject_count("D-1") + bays.eject_count("D-2"),
            1,
            "{backend}"
        );
        assert_eq!(
            success_events(sandbox.channel().await, &operator.access_token, &command_id).await,
            1,
            "{backend}"
        );
        sandbox.stop().await;
    }
}
