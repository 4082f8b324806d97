//! A kiosk link renewed on the open stream (issue #12, defect 4): RenewToken moves the link's
//! end to the new token's expiry without a new session (no second Welcome, no second
//! KioskOnline, no inventory written again), and a renewal with a token for another device,
//! another role or a forged one is refused with the reason while the link still ends at the
//! old expiry.
//!
//! Token lifetimes here are a few seconds of real time: the link's end is the token's, on the
//! gateway's timer.

use std::time::{Duration, Instant};

use sneakernet_integration_tests::fake_kiosk::{self, FakeKiosk};
use sneakernet_integration_tests::rentals::{SimKiosk, drive};
use sneakernet_integration_tests::{Sandbox, authed, backends, fast_links};
use sneakernet_proto::auth::v1 as auth;
use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::gateway::v1::device_event_service_client::DeviceEventServiceClient;
use sneakernet_proto::gateway::v1::open_request::Body as Up;
use sneakernet_proto::gateway::v1::open_response::Body as Down;
use tonic::Code;

/// The sandbox's access token lifetime in these tests: long enough that a login (an argon2
/// verify) and a renewal fit in a fraction of it on a loaded machine.
const TTL: Duration = Duration::from_secs(12);

async fn short_tokens(backend: &sneakernet_integration_tests::Backend) -> Sandbox {
    Sandbox::start_with(backend, |config| {
        fast_links(config);
        config.auth.access_token_ttl = TTL;
    })
    .await
}

/// A fresh access token for kiosk `kiosk_id` from its credential's `secret`.
async fn login(sandbox: &Sandbox, kiosk_id: &str, secret: &str) -> String {
    sandbox
        .auth()
        .await
        .kiosk_login(auth::KioskLoginRequest {
            kiosk_id: kiosk_id.into(),
            secret: secret.into(),
        })
        .await
        .expect("kiosk login")
        .into_inner()
        .access_token
}

/// Sends RenewToken with `token` and returns the gateway's answer, skipping heartbeats (and
/// sending ours, so the link stays alive while we wait).
async fn renew(link: &mut FakeKiosk, token: &str) -> pb::TokenRenewal {
    link.send(
        "",
        Up::RenewToken(pb::RenewToken {
            access_token: token.into(),
        }),
    )
    .await;
    let deadline = Instant::now() + fake_kiosk::WAIT;
    loop {
        assert!(Instant::now() < deadline, "no TokenRenewal in time");
        match tokio::time::timeout(Duration::from_millis(200), link.next()).await {
            Ok(Ok(Some(Down::TokenRenewal(answer)))) => return answer,
            Ok(Ok(Some(Down::Welcome(_)))) => panic!("a renewal is not a new session"),
            Ok(Ok(Some(_))) | Err(_) => {
                link.send("", Up::Heartbeat(pb::Heartbeat { sent_at: None }))
                    .await;
            }
            Ok(other) => panic!("the link ended while renewing: {other:?}"),
        }
    }
}

/// Heartbeats on `link` for `how_long`; panics if the link ends or says Welcome again.
async fn hold(link: &mut FakeKiosk, how_long: Duration) {
    let until = Instant::now() + how_long;
    while Instant::now() < until {
        link.send("", Up::Heartbeat(pb::Heartbeat { sent_at: None }))
            .await;
        match tokio::time::timeout(Duration::from_millis(200), link.next()).await {
            Err(_) | Ok(Ok(Some(Down::Heartbeat(_) | Down::Receipt(_)))) => {}
            Ok(other) => panic!("the held link got {other:?}"),
        }
    }
}

/// Heartbeats on `link` until the gateway ends it; the status it ended with.
async fn until_ended(link: &mut FakeKiosk, within: Duration) -> tonic::Status {
    let deadline = Instant::now() + within;
    loop {
        assert!(
            Instant::now() < deadline,
            "the link did not end within {within:?}"
        );
        link.send("", Up::Heartbeat(pb::Heartbeat { sent_at: None }))
            .await;
        match tokio::time::timeout(Duration::from_millis(200), link.next()).await {
            Err(_) | Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => panic!("the link ended without a status"),
            Ok(Err(status)) => return status,
        }
    }
}

/// The kinds of kiosk `kiosk_id`'s online/offline and inventory events, in log order.
async fn link_events(sandbox: &Sandbox, kiosk_id: &str) -> Vec<String> {
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
    let mut kinds = Vec::new();
    // The log is finite: read until the stream has nothing for a moment.
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_millis(700), stream.message())
        .await
        .map(|m| m.expect("stream ok"))
    {
        use pb::event::Kind;
        if let Some(pb::subscribe_response::Entry::Event(event)) = message.entry {
            kinds.push(
                match event.kind {
                    Some(Kind::KioskOnline(_)) => "online",
                    Some(Kind::KioskOffline(_)) => "offline",
                    Some(Kind::InventoryChanged(_)) => "inventory",
                    _ => "other",
                }
                .to_owned(),
            );
        }
    }
    kinds
}

#[tokio::test]
async fn a_link_renewed_on_the_stream_outlives_several_token_lifetimes_as_one_session() {
    for backend in backends() {
        let sandbox = short_tokens(&backend).await;
        let secret = sandbox.kiosk_secret("K-1").await;
        let token = login(&sandbox, "K-1", &secret).await;
        let mut link =
            FakeKiosk::connect(sandbox.channel().await, &token, fake_kiosk::inventory(1))
                .await
                .unwrap_or_else(|s| panic!("{backend}: open: {s:?}"));
        // Heartbeats in the background too, so reading the event log below leaves no silence.
        link.keep_alive(Duration::from_millis(200));
        let opened = Instant::now();
        for round in 1..=5 {
            // Renew at half the token's life (an `exp` in whole seconds may come up to a
            // second early).
            hold(&mut link, TTL / 2).await;
            let fresh = login(&sandbox, "K-1", &secret).await;
            let answer = renew(&mut link, &fresh).await;
            assert!(
                answer.error.is_empty(),
                "{backend}: round {round}: {answer:?}"
            );
            assert!(answer.expires_at.is_some(), "{backend}: {answer:?}");
        }
        assert!(
            opened.elapsed() > TTL * 2,
            "{backend}: the link outlived two token lifetimes"
        );
        // Read at once: the last renewed token has most of its life left.
        assert_eq!(
            link_events(&sandbox, "K-1").await,
            ["online", "inventory"],
            "{backend}: one session: no second KioskOnline, no inventory written again"
        );
        hold(&mut link, Duration::from_millis(500)).await;
        drop(link);
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn a_renewal_for_another_device_or_a_forged_token_is_refused_and_the_link_ends_at_the_old_expiry()
 {
    for backend in backends() {
        let sandbox = short_tokens(&backend).await;
        // Credentials first (slow: each is issued by a new operator); tokens only once the
        // link is open, so none has expired when it is tried.
        let own_secret = sandbox.kiosk_secret("K-1").await;
        let other_secret = sandbox.kiosk_secret("K-2").await;
        let drive_secret = sandbox.drive_secret("D-1").await;
        let token = login(&sandbox, "K-1", &own_secret).await;
        let mut link =
            FakeKiosk::connect(sandbox.channel().await, &token, fake_kiosk::inventory(1))
                .await
                .unwrap_or_else(|s| panic!("{backend}: open: {s:?}"));
        link.keep_alive(Duration::from_millis(200));
        let opened = Instant::now();
        // Tried halfway through the first token's life, so a renewal wrongly taken would
        // move the end well past the first token's.
        hold(&mut link, TTL / 2).await;

        let other_kiosk = login(&sandbox, "K-2", &other_secret).await;
        let answer = renew(&mut link, &other_kiosk).await;
        assert!(
            answer.expires_at.is_none() && answer.error.contains("another device"),
            "{backend}: another kiosk's token: {answer:?}"
        );
        let a_drive = sandbox
            .auth()
            .await
            .drive_login(auth::DriveLoginRequest {
                item_id: "D-1".into(),
                secret: drive_secret,
            })
            .await
            .expect("drive login")
            .into_inner()
            .access_token;
        let answer = renew(&mut link, &a_drive).await;
        assert!(
            answer.expires_at.is_none() && answer.error.contains("another device"),
            "{backend}: a drive's token: {answer:?}"
        );
        // Our own kind of token with one character of its signature changed.
        let mut forged = login(&sandbox, "K-1", &own_secret).await.into_bytes();
        let at = forged.len() - 20;
        forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).expect("ascii");
        let answer = renew(&mut link, &forged).await;
        assert!(
            answer.expires_at.is_none() && answer.error.contains("signature"),
            "{backend}: a forged token: {answer:?}"
        );
        let answer = renew(&mut link, "not-a-token").await;
        assert!(
            answer.expires_at.is_none() && answer.error.contains("malformed"),
            "{backend}: garbage: {answer:?}"
        );

        // Nothing moved the link's end: it ends with the token it was opened with.
        let status = until_ended(&mut link, TTL * 3).await;
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{backend}: {status:?}"
        );
        assert!(
            opened.elapsed() < TTL + TTL / 4,
            "{backend}: ended after {:?}, not at the old expiry",
            opened.elapsed()
        );
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn the_agent_renews_on_its_open_link_and_stays_one_session() {
    for backend in backends() {
        // The agent renews at four fifths of a token's life: a lifetime whose fifth is well
        // over the second an `exp` in whole seconds may cut off.
        let ttl = Duration::from_secs(8);
        let sandbox = Sandbox::start_with(&backend, |config| {
            fast_links(config);
            config.auth.access_token_ttl = ttl;
        })
        .await;
        let operator = sandbox.operator().await.access_token;
        let mut kiosk = SimKiosk::healthy(
            sandbox.node().address,
            &operator,
            "K-AGENT",
            vec![Some(drive("D-1"))],
        )
        .await;
        // Wait for the agent's session, then let three token lifetimes pass.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !link_events(&sandbox, "K-AGENT")
            .await
            .contains(&"online".to_owned())
        {
            assert!(
                Instant::now() < deadline,
                "{backend}: the agent never came online"
            );
        }
        // What is asserted is that nothing happens while three tokens expire: that takes
        // three token lifetimes of real time (the gateway ends a link on its timer).
        tokio::time::sleep(ttl * 3).await;
        let events = link_events(&sandbox, "K-AGENT").await;
        assert_eq!(
            events.iter().filter(|k| *k == "online").count(),
            1,
            "{backend}: one session across three token lifetimes: {events:?}"
        );
        assert!(
            !events.contains(&"offline".to_owned()),
            "{backend}: never offline: {events:?}"
        );
        kiosk.stop().await;
        sandbox.stop().await;
    }
}
