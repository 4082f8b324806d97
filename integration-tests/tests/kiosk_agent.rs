//! The real kiosk agent against the real gateway: the kiosk chooses the item for a walk-up
//! lend and says which; a jammed bay is a clear failure; an item put back is reported.

use std::time::Duration;

use sneakernet_integration_tests::kiosk::{self, agent_config};
use sneakernet_integration_tests::{Sandbox, authed, backends, fast_links};
use sneakernet_kiosk_agent::config::{SimItemConfig, SimItemKind};
use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::gateway::v1::device_event_service_client::DeviceEventServiceClient;
use tonic::transport::Channel;

async fn lend_and_wait(channel: Channel, token: &str, order: &str) -> pb::CommandRecord {
    let command_id = kiosk::send_lend(channel.clone(), token, order).await;
    kiosk::finished_command(&channel, token, &command_id, Duration::from_secs(30)).await
}

#[tokio::test]
async fn the_kiosk_chooses_the_item_reports_it_and_reports_its_return() {
    for backend in backends() {
        let sandbox = Sandbox::start_with(&backend, fast_links).await;
        let operator = sandbox.operator().await;
        let secret = sandbox.kiosk_secret("K-1").await;
        let dir = tempfile::tempdir().unwrap();
        let agent = sneakernet_kiosk_agent::start(agent_config(
            dir.path(),
            "K-1",
            &secret,
            sandbox.node().address,
            2,
        ))
        .await
        .expect("agent");

        let done = lend_and_wait(sandbox.channel().await, &operator.access_token, "order-1").await;
        assert_eq!(
            done.state,
            pb::CommandState::Succeeded as i32,
            "{backend}: {done:?}"
        );
        let Some(pb::command_result::Outcome::Lend(lent)) = done.result.and_then(|r| r.outcome)
        else {
            panic!("{backend}: no lend result");
        };
        // Both drives match and neither was lent before: the rules pick the lower bay id.
        assert_eq!(
            (lent.item_id.as_str(), lent.bay_id.as_str()),
            ("D-1", "A1"),
            "{backend}"
        );
        assert!(lent.item.as_ref().is_some_and(|i| i.item_id == "D-1"));

        // The user brings it back to the same kiosk.
        agent
            .bays()
            .insert(
                "A1",
                SimItemConfig {
                    kind: SimItemKind::Drive,
                    item_id: "D-1".into(),
                    capacity_bytes: Some(kiosk::CAPACITY),
                    content_package_id: Some(kiosk::PACKAGE.into()),
                    write_protected: true,
                    charge_percent: None,
                    remote_link: false,
                },
            )
            .await
            .expect("insert");
        let mut events = DeviceEventServiceClient::new(sandbox.channel().await)
            .subscribe(authed(
                pb::SubscribeRequest {
                    after_cursor: 0,
                    kiosk_ids: vec![],
                    kinds: vec![pb::EventKind::ItemReturned as i32],
                    drive_ids: vec![],
                },
                &operator.access_token,
            ))
            .await
            .unwrap()
            .into_inner();
        let returned = loop {
            let message = tokio::time::timeout(Duration::from_secs(30), events.message())
                .await
                .expect("an ItemReturned event in time")
                .expect("stream ok")
                .expect("stream open");
            if let Some(pb::subscribe_response::Entry::Event(pb::Event {
                kind: Some(pb::event::Kind::ItemReturned(r)),
                ..
            })) = message.entry
            {
                break r;
            }
        };
        assert_eq!(returned.bay_id, "A1", "{backend}");
        assert_eq!(
            returned.item.map(|i| i.item_id).as_deref(),
            Some("D-1"),
            "{backend}"
        );
        agent.stop().await;
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn a_jammed_bay_is_a_clear_failure_and_nothing_leaves_the_kiosk() {
    let sandbox =
        Sandbox::start_with(&sneakernet_integration_tests::Backend::Sqlite, fast_links).await;
    let operator = sandbox.operator().await;
    let secret = sandbox.kiosk_secret("K-1").await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = agent_config(dir.path(), "K-1", &secret, sandbox.node().address, 1);
    if let Some(simulation) = config.simulation.as_mut() {
        simulation.faults.jammed_bays = vec!["A1".into()];
    }
    let agent = sneakernet_kiosk_agent::start(config).await.expect("agent");

    let done = lend_and_wait(sandbox.channel().await, &operator.access_token, "order-j").await;
    assert_eq!(done.state, pb::CommandState::Failed as i32, "{done:?}");
    let Some(pb::command_result::Outcome::Failure(failure)) = done.result.and_then(|r| r.outcome)
    else {
        panic!("no failure result");
    };
    assert_eq!(
        failure.reason,
        pb::FailureReason::EjectJammed as i32,
        "{failure:?}"
    );
    assert_eq!(agent.bays().eject_count("D-1"), 0, "nothing left the kiosk");
    agent.stop().await;
    sandbox.stop().await;
}
