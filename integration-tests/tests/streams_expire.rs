//! Long-lived streams end when the access token they were opened with expires, judged on the
//! services' clock (issue #12): the gateway's Subscribe and orders' WatchOrder answer
//! UNAUTHENTICATED "token expired" once the clock passes the token's `exp`, and keep
//! delivering until then.

use sneakernet_integration_tests::rentals::{
    SimKiosk, WAIT, create_rental, customer_with_deposit, drive, drive_type, follow,
    rental_request, scan_until_available, start_priced, watch,
};
use sneakernet_integration_tests::{Sandbox, authed, backends};
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::gateway::v1 as gw;
use sneakernet_proto::gateway::v1::device_command_service_client::DeviceCommandServiceClient;
use sneakernet_proto::gateway::v1::device_event_service_client::DeviceEventServiceClient;
use sneakernet_proto::orders::v1::OrderState as S;
use sneakernet_runtime::clock::Clock;
use tonic::Code;

/// How long before its token's expiry a stream is shown still delivering: room for a slow
/// machine between issuing the token and the check.
fn margin() -> chrono::Duration {
    chrono::Duration::minutes(5)
}

/// The sandbox's access token lifetime.
fn ttl(sandbox: &Sandbox) -> chrono::Duration {
    chrono::Duration::from_std(sandbox.config.auth.access_token_ttl).expect("a short ttl")
}

/// Reads `stream` past any messages to the status it ends with.
async fn end_of<T>(stream: &mut tonic::Streaming<T>, context: &str) -> tonic::Status {
    tokio::time::timeout(WAIT, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("{context}: the stream ended without a status"),
                Err(status) => return status,
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{context}: the stream did not end within {WAIT:?}"))
}

fn assert_token_expired(status: &tonic::Status, context: &str) {
    assert_eq!(
        status.code(),
        Code::Unauthenticated,
        "{context}: {status:?}"
    );
    assert!(
        status.message().contains("token expired"),
        "{context}: {status:?}"
    );
}

#[tokio::test]
async fn a_subscription_ends_unauthenticated_once_the_clock_passes_its_tokens_expiry_not_before() {
    for backend in backends() {
        let sandbox = Sandbox::start(&backend).await;
        let operator = sandbox.operator().await.access_token;
        let mut events = DeviceEventServiceClient::new(sandbox.channel().await)
            .subscribe(authed(gw::SubscribeRequest::default(), &operator))
            .await
            .unwrap_or_else(|s| panic!("{backend}: subscribe: {s:?}"))
            .into_inner();

        // Shortly before the token expires, the stream still delivers what happens.
        sandbox.clock.advance(ttl(&sandbox) - margin());
        let deadline = sandbox.clock.now() + chrono::Duration::minutes(5);
        let command = DeviceCommandServiceClient::new(sandbox.channel().await)
            .send_command(authed(
                gw::SendCommandRequest {
                    kiosk_id: "K-1".into(),
                    payload: Some(gw::CommandPayload {
                        kind: Some(gw::command_payload::Kind::Wipe(gw::WipeCommand {
                            item_id: "D-1".into(),
                        })),
                    }),
                    idempotency_key: "before-expiry".into(),
                    deadline: Some(prost_types::Timestamp {
                        seconds: deadline.timestamp(),
                        nanos: 0,
                    }),
                    drive_id: String::new(),
                },
                &operator,
            ))
            .await
            .unwrap_or_else(|s| panic!("{backend}: send command: {s:?}"))
            .into_inner()
            .command
            .expect("record");
        loop {
            let message = tokio::time::timeout(WAIT, events.message())
                .await
                .unwrap_or_else(|_| panic!("{backend}: the command's event never came"))
                .unwrap_or_else(|s| panic!("{backend}: ended before its token expired: {s:?}"))
                .expect("the stream is still open");
            let ours = match message.entry {
                Some(gw::subscribe_response::Entry::Event(gw::Event {
                    kind: Some(gw::event::Kind::CommandStateChanged(changed)),
                    ..
                })) => changed
                    .command
                    .is_some_and(|c| c.command_id == command.command_id),
                _ => false,
            };
            if ours {
                break;
            }
        }

        // Past the expiry, it ends.
        sandbox.clock.advance(margin() * 2);
        let status = end_of(&mut events, &backend.to_string()).await;
        assert_token_expired(&status, &backend.to_string());
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn a_watch_ends_unauthenticated_once_the_clock_passes_its_tokens_expiry_not_before() {
    for backend in backends() {
        let (sandbox, channel, operator) = start_priced(&backend, &[common::ItemKind::Drive]).await;
        let mut kiosk = SimKiosk::healthy(
            sandbox.node().address,
            &operator,
            "K-1",
            vec![Some(drive("D-1")), Some(drive("D-2"))],
        )
        .await;
        // Two renters, each watching their own lent order with the token they logged in with.
        let mut watches = Vec::new();
        for (n, available) in [(1, 2), (2, 1)] {
            let user = customer_with_deposit(&channel).await;
            let offer =
                scan_until_available(&channel, &user.token, &kiosk, &drive_type(), available).await;
            let request = rental_request(&offer, &drive_type(), 1, None, &format!("watched-{n}"));
            let order = create_rental(&channel, &user.token, request)
                .await
                .unwrap_or_else(|s| panic!("{backend}: rent: {s:?}"));
            let mut stream = watch(&channel, &user.token, &order.order_id)
                .await
                .unwrap_or_else(|s| panic!("{backend}: watch: {s:?}"));
            let seen = follow(&mut stream, "until LENT", |m| m.state == S::Lent as i32).await;
            let item = seen
                .last()
                .and_then(|m| m.order.as_ref())
                .map(|o| o.item_id.clone())
                .expect("the lent item");
            watches.push((stream, item));
        }
        let (mut returning, mut waiting) = (watches.remove(0), watches.remove(0));

        // Shortly before the tokens expire, a watch still follows its order: the first
        // renter's drive comes back and the watch shows it.
        sandbox.clock.advance(ttl(&sandbox) - margin());
        let bay = if returning.1 == "D-1" { "A1" } else { "A2" };
        kiosk.insert(bay, drive(&returning.1)).await;
        follow(&mut returning.0, "until RETURNED", |m| {
            m.state == S::Returned as i32 || m.state == S::Closed as i32
        })
        .await;

        // Past the expiry, the other renter's watch ends.
        sandbox.clock.advance(margin() * 2);
        let status = end_of(&mut waiting.0, &backend.to_string()).await;
        assert_token_expired(&status, &backend.to_string());
        kiosk.stop().await;
        sandbox.stop().await;
    }
}
