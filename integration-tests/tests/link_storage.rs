//! A kiosk's link outlives its gateway's storage failing: the kiosk message whose commit
//! failed is not receipted but held, and applied once when storage is back, on the same link;
//! only an outage as long as `offline_after` closes the link, UNAVAILABLE, and the kiosk
//! replays the message on its next link.
//!
//! Alone in its test binary: it arms a failpoint in this process (the event commit fails and
//! rolls back), which would touch any other test running beside it. The tests here take
//! [`FAULTS`] so they do not touch each other either.

use std::time::Duration;

use sneakernet_integration_tests::fake_kiosk::{self, FakeKiosk};
use sneakernet_integration_tests::{Sandbox, backends, eventually, fast_links};
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::gateway::v1::device_event_service_client::DeviceEventServiceClient;
use sneakernet_proto::gateway::v1::open_request::Body as Up;
use sneakernet_proto::gateway::v1::open_response::Body as Down;
use tonic::Code;

/// Where the gateway commits a kiosk's item-returned or inventory message.
const COMMIT: &str = "gateway::kiosk_event::commit";

/// One test at a time holds the failpoint.
static FAULTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn returned(item_id: &str) -> Up {
    Up::ItemReturned(pb::ItemReturned {
        bay_id: "A1".into(),
        item: Some(common::Item {
            item_id: item_id.into(),
            kind: common::ItemKind::Drive.into(),
            attributes: None,
        }),
        returned_at: None,
    })
}

/// K-1's events so far, as `returned:<item>` / `offline:<reason>` / the kind's name.
async fn events_of_k1(sandbox: &Sandbox) -> Vec<String> {
    let operator = sandbox.operator().await;
    let mut stream = DeviceEventServiceClient::new(sandbox.channel().await)
        .subscribe(sneakernet_integration_tests::authed(
            pb::SubscribeRequest {
                after_cursor: 0,
                kiosk_ids: vec!["K-1".into()],
                kinds: vec![],
                drive_ids: vec![],
            },
            &operator.access_token,
        ))
        .await
        .expect("subscribe")
        .into_inner();
    let mut events = Vec::new();
    // The log is finite: read until the stream has nothing for a moment.
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_millis(700), stream.message())
        .await
        .map(|m| m.expect("stream ok"))
    {
        let Some(pb::subscribe_response::Entry::Event(event)) = message.entry else {
            continue;
        };
        events.push(match event.kind {
            Some(pb::event::Kind::ItemReturned(r)) => {
                format!("returned:{}", r.item.map(|i| i.item_id).unwrap_or_default())
            }
            Some(pb::event::Kind::KioskOffline(off)) => format!(
                "offline:{:?}",
                pb::OfflineReason::try_from(off.reason).unwrap_or_default()
            ),
            Some(pb::event::Kind::KioskOnline(_)) => "online".into(),
            Some(pb::event::Kind::InventoryChanged(_)) => "inventory".into(),
            other => format!("{other:?}"),
        });
    }
    events
}

fn count(events: &[String], what: &str) -> usize {
    events.iter().filter(|e| e.as_str() == what).count()
}

#[tokio::test]
async fn a_link_outlives_a_storage_outage_and_its_unreceipted_message_is_applied_once_after() {
    let _faults = FAULTS.lock().await;
    for backend in backends() {
        let sandbox = Sandbox::start_with(&backend, |config| {
            fast_links(config);
            config.gateway.offline_after = Duration::from_secs(20);
        })
        .await;
        let token = sandbox.kiosk_token("K-1").await;
        let mut kiosk =
            FakeKiosk::connect(sandbox.channel().await, &token, fake_kiosk::inventory(1))
                .await
                .unwrap();
        kiosk.keep_alive(Duration::from_millis(200));

        fail::cfg(COMMIT, "return(error)").unwrap();
        kiosk.send("m-1", returned("D-9")).await;
        // A commit takes milliseconds: no receipt for two seconds means every try met the
        // fault, and the gateway's heartbeats meanwhile mean the link stayed open.
        assert!(
            kiosk.hears_nothing_for(Duration::from_secs(2)).await,
            "{backend}: while storage fails, nothing is receipted and the link stays open"
        );
        fail::remove(COMMIT);

        let receipt = kiosk.next_receipt().await;
        assert_eq!(receipt.message_id, "m-1", "{backend}");
        assert_eq!(
            receipt.status,
            pb::ReceiptStatus::Accepted as i32,
            "{backend}: applied once storage is back, on the same link: {receipt:?}"
        );
        // The link reads on: the next message, and a replay of the first, are answered.
        kiosk.send("m-1", returned("D-9")).await;
        let again = kiosk.next_receipt().await;
        assert_eq!(
            again.status,
            pb::ReceiptStatus::Duplicate as i32,
            "{backend}: {again:?}"
        );
        kiosk.send("m-2", returned("D-8")).await;
        assert_eq!(
            kiosk.next_receipt().await.status,
            pb::ReceiptStatus::Accepted as i32,
            "{backend}"
        );

        let events = events_of_k1(&sandbox).await;
        assert_eq!(count(&events, "returned:D-9"), 1, "{backend}: {events:?}");
        assert_eq!(count(&events, "returned:D-8"), 1, "{backend}: {events:?}");
        assert!(
            !events.iter().any(|e| e.starts_with("offline")),
            "{backend}: never offline: {events:?}"
        );
        drop(kiosk);
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn storage_failing_for_offline_after_closes_the_link_unavailable_and_the_replay_lands_once() {
    let _faults = FAULTS.lock().await;
    for backend in backends() {
        // fast_links: offline_after is 3 s.
        let sandbox = Sandbox::start_with(&backend, fast_links).await;
        let offline_after = sandbox.config.gateway.offline_after;
        let token = sandbox.kiosk_token("K-1").await;
        let mut kiosk =
            FakeKiosk::connect(sandbox.channel().await, &token, fake_kiosk::inventory(1))
                .await
                .unwrap();
        kiosk.keep_alive(Duration::from_millis(200));

        fail::cfg(COMMIT, "return(error)").unwrap();
        let failing_since = tokio::time::Instant::now();
        kiosk.send("m-1", returned("D-9")).await;
        let ended = loop {
            match kiosk.next().await {
                Ok(Some(Down::Receipt(receipt))) => {
                    panic!("{backend}: receipted while storage fails: {receipt:?}")
                }
                Ok(Some(_)) => continue,
                other => break other,
            }
        };
        let status = ended.expect_err("the link ends with a status");
        assert_eq!(status.code(), Code::Unavailable, "{backend}: {status:?}");
        assert!(
            failing_since.elapsed() >= offline_after.mul_f64(0.9),
            "{backend}: closed only after the outage lasted offline_after ({offline_after:?}), \
             not at the first failure ({:?})",
            failing_since.elapsed()
        );
        fail::remove(COMMIT);

        eventually(
            Duration::from_secs(10),
            "the kiosk marked offline, closed by the gateway",
            || async {
                events_of_k1(&sandbox)
                    .await
                    .last()
                    .is_some_and(|e| e == "offline:ClosedByGateway")
            },
        )
        .await;
        // The kiosk reconnects and replays what was not receipted: it lands once.
        let mut kiosk =
            FakeKiosk::connect(sandbox.channel().await, &token, fake_kiosk::inventory(1))
                .await
                .unwrap();
        kiosk.send("m-1", returned("D-9")).await;
        let receipt = kiosk.next_receipt().await;
        assert_eq!(
            receipt.status,
            pb::ReceiptStatus::Accepted as i32,
            "{backend}: nothing of the failed commits was kept: {receipt:?}"
        );
        let events = events_of_k1(&sandbox).await;
        assert_eq!(count(&events, "returned:D-9"), 1, "{backend}: {events:?}");
        drop(kiosk);
        sandbox.stop().await;
    }
}
