//! A connect storm is admitted at the rate the gateway takes Hellos: with one Hello at a time
//! and the first one held, the kiosks opening meanwhile are told to come back later
//! (Reconnect REBALANCE with a retry_after), come back after it, and all end online.
//!
//! Alone in its test binary: it arms a failpoint in this process, which would touch any other
//! test running beside it.

use std::time::Duration;

use sneakernet_integration_tests::fake_kiosk;
use sneakernet_integration_tests::{Sandbox, backends, fast_links, issue_kiosk_secret};
use sneakernet_proto::auth::v1 as auth;
use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::gateway::v1::open_response::Body as Down;

const KIOSKS: usize = 20;

/// An open link, kept so the kiosk stays online.
type Link = (
    tokio::sync::mpsc::Sender<pb::OpenRequest>,
    tonic::Streaming<pb::OpenResponse>,
);

/// Opens `kiosk`'s link until it is welcomed, honouring every Reconnect's retry_after as the
/// agent does; returns how often it was told to come back, and the open link. Any other
/// answer fails the test.
async fn open_until_welcomed(sandbox: &Sandbox, kiosk: String, token: String) -> (usize, Link) {
    let mut deferred = 0;
    loop {
        let (outbound, mut inbound) = fake_kiosk::open_raw(
            sandbox.channel().await,
            Some(&token),
            fake_kiosk::hello(fake_kiosk::inventory(1)),
        )
        .await
        .unwrap_or_else(|status| panic!("{kiosk}: open refused: {status:?}"));
        let first = tokio::time::timeout(Duration::from_secs(30), inbound.message())
            .await
            .unwrap_or_else(|_| panic!("{kiosk}: no answer to Hello"))
            .unwrap_or_else(|status| panic!("{kiosk}: link failed: {status:?}"))
            .and_then(|m| m.body);
        match first {
            Some(Down::Welcome(_)) => return (deferred, (outbound, inbound)),
            Some(Down::Reconnect(reconnect)) => {
                assert_eq!(
                    reconnect.reason,
                    pb::ReconnectReason::Rebalance as i32,
                    "{kiosk}: {reconnect:?}"
                );
                let wait = reconnect.retry_after.expect("a retry_after");
                let wait = Duration::new(wait.seconds as u64, wait.nanos as u32);
                assert!(
                    (Duration::from_secs(1)..=Duration::from_secs(5)).contains(&wait),
                    "{kiosk}: {wait:?}"
                );
                assert!(
                    inbound.message().await.is_ok_and(|m| m.is_none()),
                    "{kiosk}: the deferred stream ends cleanly after the Reconnect"
                );
                deferred += 1;
                tokio::time::sleep(wait).await;
            }
            other => panic!("{kiosk}: expected Welcome or Reconnect, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_connect_storm_past_the_hello_limit_is_told_to_retry_and_every_kiosk_ends_online() {
    for backend in backends() {
        let sandbox = Sandbox::start_with(&backend, |config| {
            fast_links(config);
            config.gateway.offline_after = Duration::from_secs(60);
            config.gateway.max_concurrent_hellos = 1;
        })
        .await;
        let operator = sandbox.operator().await;
        let mut tokens = Vec::new();
        for n in 1..=KIOSKS {
            let kiosk = format!("K-{n}");
            let secret =
                issue_kiosk_secret(sandbox.channel().await, &operator.access_token, &kiosk).await;
            let token = sandbox
                .auth()
                .await
                .kiosk_login(auth::KioskLoginRequest {
                    kiosk_id: kiosk.clone(),
                    secret,
                })
                .await
                .expect("kiosk login")
                .into_inner()
                .access_token;
            tokens.push((kiosk, token));
        }

        // The first Hello admitted holds its turn for 2.5 s: every other one waits past the
        // admission wait (1 s) meanwhile.
        fail::cfg("gateway::hello::admitted", "1*return(pause:2500:)").unwrap();
        let opens: Vec<_> = tokens
            .into_iter()
            .map(|(kiosk, token)| {
                let sandbox = &sandbox;
                async move { open_until_welcomed(sandbox, kiosk, token).await }
            })
            .collect();
        let opened = futures::future::join_all(opens).await;
        fail::remove("gateway::hello::admitted");
        assert_eq!(
            opened.len(),
            KIOSKS,
            "{backend}: every kiosk welcomed, links held"
        );
        let deferred: Vec<usize> = opened.iter().map(|(deferred, _)| *deferred).collect();

        let told_to_retry = deferred.iter().filter(|d| **d > 0).count();
        assert!(
            told_to_retry >= KIOSKS / 2,
            "{backend}: most kiosks opening while the turn was held were deferred: {deferred:?}"
        );
        drop(opened);
        sandbox.stop().await;
    }
}
