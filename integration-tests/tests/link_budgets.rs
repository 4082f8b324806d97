//! Per-kiosk budgets on the link (issue #12, defect 4): link opens past a kiosk's burst are
//! refused RESOURCE_EXHAUSTED with when to retry, before anything is written, while other
//! kiosks open as usual; a flood of messages on one link is read more slowly, never dropped or
//! refused.

use std::time::{Duration, Instant};

use sneakernet_integration_tests::fake_kiosk::{self, FakeKiosk};
use sneakernet_integration_tests::{Sandbox, authed, backends, fast_links};
use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::gateway::v1::device_event_service_client::DeviceEventServiceClient;
use sneakernet_proto::gateway::v1::open_request::Body as Up;
use tonic::Code;

/// How many KioskOnline events kiosk `kiosk_id` has in the log.
async fn online_events(sandbox: &Sandbox, kiosk_id: &str) -> usize {
    let operator = sandbox.operator().await.access_token;
    let mut stream = DeviceEventServiceClient::new(sandbox.channel().await)
        .subscribe(authed(
            pb::SubscribeRequest {
                after_cursor: 0,
                kiosk_ids: vec![kiosk_id.to_owned()],
                kinds: vec![],
                drive_ids: vec![],
            },
            &operator,
        ))
        .await
        .expect("subscribe")
        .into_inner();
    let mut online = 0;
    // The log is finite: read until the stream has nothing for a moment.
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_millis(700), stream.message())
        .await
        .map(|m| m.expect("stream ok"))
    {
        if let Some(pb::subscribe_response::Entry::Event(pb::Event {
            kind: Some(pb::event::Kind::KioskOnline(_)),
            ..
        })) = message.entry
        {
            online += 1;
        }
    }
    online
}

#[tokio::test]
async fn an_open_storm_from_one_kiosk_is_refused_after_its_burst_and_other_kiosks_are_unaffected() {
    for backend in backends() {
        let sandbox = Sandbox::start_with(&backend, |config| {
            fast_links(config);
            config.gateway.link_open_burst = 3;
            config.gateway.link_open_every = Duration::from_secs(600);
        })
        .await;
        let stormy = sandbox.kiosk_token("K-1").await;
        let calm = sandbox.kiosk_token("K-2").await;
        let mut refused = None;
        for attempt in 1..=6 {
            match FakeKiosk::connect(sandbox.channel().await, &stormy, fake_kiosk::inventory(1))
                .await
            {
                Ok(link) => {
                    assert!(attempt <= 3, "{backend}: open {attempt} is past the burst");
                    drop(link);
                }
                Err(status) => {
                    assert!(attempt > 3, "{backend}: open {attempt} refused: {status:?}");
                    refused.get_or_insert(status);
                }
            }
        }
        let refused = refused.expect("opens past the burst are refused");
        assert_eq!(
            refused.code(),
            Code::ResourceExhausted,
            "{backend}: {refused:?}"
        );
        assert!(
            refused.message().contains("link opens") && refused.message().contains("retry in"),
            "{backend}: says which budget and when to retry: {refused:?}"
        );
        // Another kiosk opens as usual.
        FakeKiosk::connect(sandbox.channel().await, &calm, fake_kiosk::inventory(1))
            .await
            .unwrap_or_else(|s| panic!("{backend}: another kiosk: {s:?}"));
        // Nothing was written for the refused opens.
        assert_eq!(online_events(&sandbox, "K-1").await, 3, "{backend}");
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn a_message_flood_on_one_link_is_slowed_not_dropped_every_receipt_arrives() {
    const BURST: u32 = 5;
    const PER_SECOND: u32 = 20;
    const SENT: usize = 45;
    for backend in backends() {
        let sandbox = Sandbox::start_with(&backend, |config| {
            fast_links(config);
            config.gateway.link_message_burst = BURST;
            config.gateway.link_messages_per_second = PER_SECOND;
        })
        .await;
        let token = sandbox.kiosk_token("K-1").await;
        let mut link =
            FakeKiosk::connect(sandbox.channel().await, &token, fake_kiosk::inventory(1))
                .await
                .unwrap_or_else(|s| panic!("{backend}: open: {s:?}"));
        let started = Instant::now();
        let sender = {
            let ids: Vec<String> = (0..SENT).map(|n| format!("flood-{n}")).collect();
            let bodies: Vec<Up> = (0..SENT)
                .map(|_| {
                    Up::InventoryChanged(pb::InventoryChanged {
                        change: Some(pb::inventory_changed::Change::Full(fake_kiosk::inventory(
                            1,
                        ))),
                    })
                })
                .collect();
            (ids, bodies)
        };
        for (id, body) in sender.0.iter().zip(sender.1) {
            link.send(id, body).await;
        }
        let mut receipted = Vec::new();
        while receipted.len() < SENT {
            let receipt = link.next_receipt().await;
            assert_eq!(
                receipt.status,
                pb::ReceiptStatus::Accepted as i32,
                "{backend}: {receipt:?}"
            );
            receipted.push(receipt.message_id);
        }
        receipted.sort();
        let mut expected = sender.0;
        expected.sort();
        assert_eq!(receipted, expected, "{backend}: every message, once");
        // The budget's floor, not a performance figure: past the burst the link is read at
        // most PER_SECOND messages a second.
        let floor =
            Duration::from_secs_f64((SENT as f64 - f64::from(BURST) - 1.0) / f64::from(PER_SECOND));
        assert!(
            started.elapsed() >= floor,
            "{backend}: {SENT} messages read in {:?}, faster than the budget allows",
            started.elapsed()
        );
        sandbox.stop().await;
    }
}
