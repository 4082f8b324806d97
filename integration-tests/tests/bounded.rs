//! Nothing grows or waits forever, through gRPC only: events past `gateway.event_retention`
//! are deleted by the sweeper (a subscriber resuming from a cursor they passed over gets
//! OUT_OF_RANGE naming where to resume, one resuming from a kept cursor misses nothing), and
//! a lend its kiosk acknowledged and never answered is escalated, not left DISPENSING unseen.

use std::time::Duration;

use sneakernet_integration_tests::hand_kiosk::{
    HandKiosk, a_rental_at_a_hand_driven_kiosk, assert_accepted, lend_result, say,
    start_for_hand_kiosks,
};
use sneakernet_integration_tests::rentals::{get_order, wait_for_state};
use sneakernet_integration_tests::{Sandbox, authed, backends, eventually, fast_links};
use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::gateway::v1::device_command_service_client::DeviceCommandServiceClient;
use sneakernet_proto::gateway::v1::device_event_service_client::DeviceEventServiceClient;
use sneakernet_proto::orders::v1::OrderState as S;
use sneakernet_runtime::clock::Clock;
use sneakernet_runtime::wire::timestamp;
use tonic::Code;

/// Logs a wipe for `kiosk` (its event goes in the log at once, kiosk online or not).
async fn send_wipe(sandbox: &Sandbox, token: &str, kiosk: &str, key: &str) -> pb::CommandRecord {
    let deadline = sandbox.clock.now() + chrono::Duration::minutes(10);
    DeviceCommandServiceClient::new(sandbox.channel().await)
        .send_command(authed(
            pb::SendCommandRequest {
                kiosk_id: kiosk.into(),
                payload: Some(pb::CommandPayload {
                    kind: Some(pb::command_payload::Kind::Wipe(pb::WipeCommand {
                        item_id: "D-1".into(),
                    })),
                }),
                idempotency_key: key.into(),
                deadline: Some(sneakernet_runtime::wire::timestamp(deadline)),
                drive_id: String::new(),
            },
            token,
        ))
        .await
        .expect("send command")
        .into_inner()
        .command
        .expect("record")
}

async fn subscribe(
    sandbox: &Sandbox,
    token: &str,
    after: u64,
) -> Result<tonic::Streaming<pb::SubscribeResponse>, tonic::Status> {
    DeviceEventServiceClient::new(sandbox.channel().await)
        .subscribe(authed(
            pb::SubscribeRequest {
                after_cursor: after,
                kiosk_ids: vec![],
                kinds: vec![],
                drive_ids: vec![],
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// The events a subscription from `after` delivers until the log has nothing more for a
/// moment, as (cursor, command id).
async fn events(sandbox: &Sandbox, token: &str, after: u64) -> Vec<(u64, String)> {
    let mut stream = subscribe(sandbox, token, after).await.expect("subscribe");
    let mut events = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_millis(700), stream.message())
        .await
        .map(|m| m.expect("stream ok"))
    {
        if let Some(pb::subscribe_response::Entry::Event(event)) = message.entry {
            let command = match event.kind {
                Some(pb::event::Kind::CommandStateChanged(c)) => {
                    c.command.map(|c| c.command_id).unwrap_or_default()
                }
                _ => String::new(),
            };
            events.push((event.cursor, command));
        }
    }
    events
}

#[tokio::test]
async fn events_past_retention_are_pruned_and_a_cursor_they_passed_gets_out_of_range() {
    for backend in backends() {
        let sandbox = Sandbox::start_with(&backend, |config| {
            fast_links(config);
            config.gateway.event_prune_interval = Duration::from_millis(100);
        })
        .await;
        let operator = sandbox.operator().await;
        for n in 0..5 {
            send_wipe(&sandbox, &operator.access_token, "K-1", &format!("old{n}")).await;
        }
        let logged = events(&sandbox, &operator.access_token, 0).await;
        assert_eq!(logged.len(), 5, "{backend}: {logged:?}");
        let (first, oldest_kept_before) = (logged[0].0, logged[4].0);

        // A month and a day later (the default retention is 30 days), new commands are logged
        // and the sweeper deletes the old events.
        sandbox.clock.advance(chrono::Duration::days(31));
        let operator = sandbox.operator().await;
        let mut new = Vec::new();
        for n in 0..3 {
            new.push(
                send_wipe(&sandbox, &operator.access_token, "K-1", &format!("new{n}"))
                    .await
                    .command_id,
            );
        }
        let token = operator.access_token.clone();
        eventually(Duration::from_secs(20), "the old events pruned", || {
            let sandbox = &sandbox;
            let token = token.clone();
            async move { subscribe(sandbox, &token, first).await.is_err() }
        })
        .await;

        let refused = subscribe(&sandbox, &token, first)
            .await
            .expect_err("a pruned cursor is refused");
        assert_eq!(refused.code(), Code::OutOfRange, "{backend}");
        assert!(
            refused
                .message()
                .ends_with(&format!("resume from {oldest_kept_before}")),
            "{backend}: the message names the cursor to resume from: {}",
            refused.message()
        );

        // From the cursor the error names, and from 0 (the oldest kept), exactly what is kept:
        // every new command's event, none of the old ones.
        let resumed = events(&sandbox, &token, oldest_kept_before).await;
        let from_start = events(&sandbox, &token, 0).await;
        assert_eq!(resumed, from_start, "{backend}");
        assert!(resumed.iter().all(|(c, _)| *c > oldest_kept_before));
        for id in &new {
            assert!(
                resumed.iter().any(|(_, command)| command == id),
                "{backend}: {id} kept: {resumed:?}"
            );
        }
        // A kept cursor resumes exactly after itself: no gap, no duplicate.
        let middle = resumed[1].0;
        let after_middle = events(&sandbox, &token, middle).await;
        assert_eq!(after_middle, resumed[2..].to_vec(), "{backend}");
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn a_lend_acknowledged_and_never_answered_is_escalated_and_a_late_result_still_counts() {
    for backend in backends() {
        let (sandbox, channel, operator) = start_for_hand_kiosks(&backend).await;
        let HandKiosk {
            link: mut kiosk,
            renter,
            order,
            lend,
            ..
        } = a_rental_at_a_hand_driven_kiosk(&sandbox, &channel, &operator, "K-U").await;
        let dispensing =
            wait_for_state(&channel, &renter.token, &order.order_id, &[S::Dispensing]).await;
        assert!(
            !escalated(&dispensing),
            "{backend}: not before the deadline"
        );

        // The lend's deadline (2 minutes) and the 5-minute margin pass with no result.
        sandbox.clock.advance(chrono::Duration::minutes(8));
        let token = renter.token.clone();
        eventually(WAIT_ESCALATION, "the unanswered lend escalated", || {
            let (channel, token, id) = (&channel, token.clone(), order.order_id.clone());
            async move {
                get_order(channel, &token, &id)
                    .await
                    .is_ok_and(|o| escalated(&o) && o.state == S::Dispensing as i32)
            }
        })
        .await;

        // The kiosk's late result still decides the order.
        let receipt = say(
            &mut kiosk,
            "late",
            lend_result(&lend, timestamp(sandbox.clock.now())),
        )
        .await;
        assert_accepted(&receipt);
        wait_for_state(&channel, &renter.token, &order.order_id, &[S::Lent]).await;
        sandbox.stop().await;
    }
}

/// How long the settling worker may take to notice (it runs every 200 ms in rentals tests).
const WAIT_ESCALATION: Duration = Duration::from_secs(20);

/// Whether the order says its kiosk never answered (orders' `settle::UNANSWERED`).
fn escalated(order: &sneakernet_proto::orders::v1::Order) -> bool {
    order.state_reason.contains("never said whether")
}
