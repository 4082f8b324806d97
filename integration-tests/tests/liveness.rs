//! The online state tells the truth without a commit per heartbeat: a gateway killed with
//! SIGKILL leaves no ghost (its kiosks go offline with their event after a restart, and
//! orders stops offering them); an offline write that fails is retried until it lands, once;
//! a replica marks offline a dead replica's kiosks but never those a live replica holds; and
//! liveness reaches the database in batches, not once per heartbeat.

use std::time::Duration;

use sneakernet::{Node, NodeRole};
use sneakernet_integration_tests::fake_kiosk::{self, FakeKiosk};
use sneakernet_integration_tests::rentals::{
    self, SimKiosk, assert_refused, create_rental, customer_with_deposit, power_bank,
    power_bank_type, rental_request, scan, scan_until_available, set_default_pricing,
};
use sneakernet_integration_tests::{
    Backend, Child, Sandbox, authed, backends, binary, connect, drop_schemas, eventually,
    fast_links, issue_kiosk_secret, test_config,
};
use sneakernet_proto::auth::v1 as auth;
use sneakernet_proto::auth::v1::auth_service_client::AuthServiceClient;
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::gateway::v1::device_event_service_client::DeviceEventServiceClient;
use sneakernet_proto::gateway::v1::open_request::Body as Up;
use sneakernet_proto::orders::v1 as orders;
use sneakernet_runtime::Shutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

/// How long a test waits for the system to act.
const WAIT: Duration = Duration::from_secs(60);

/// Fast link timing for a child process, as [`fast_links`] sets in-process.
const FAST_LINKS: [(&str, &str); 6] = [
    ("SNEAKERNET_GATEWAY__HEARTBEAT_INTERVAL", "200ms"),
    ("SNEAKERNET_GATEWAY__OFFLINE_AFTER", "1500ms"),
    ("SNEAKERNET_GATEWAY__COMMAND_POLL_INTERVAL", "100ms"),
    ("SNEAKERNET_GATEWAY__EXPIRY_SWEEP_INTERVAL", "100ms"),
    ("SNEAKERNET_GATEWAY__LIVENESS_FLUSH_INTERVAL", "300ms"),
    ("SNEAKERNET_GATEWAY__RECONCILE_INTERVAL", "300ms"),
];

/// The gateway's events of `kiosk` from the start, each as "online", "offline:<reason>" or
/// its kind, read until the stream is quiet for a moment.
async fn events_of(channel: &Channel, token: &str, kiosk: &str) -> Vec<String> {
    let mut stream = DeviceEventServiceClient::new(channel.clone())
        .subscribe(authed(
            pb::SubscribeRequest {
                after_cursor: 0,
                kiosk_ids: vec![kiosk.to_owned()],
                kinds: vec![],
                drive_ids: vec![],
            },
            token,
        ))
        .await
        .expect("subscribe")
        .into_inner();
    let mut events = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_millis(700), stream.message())
        .await
        .map(|m| m.expect("stream ok"))
    {
        if let Some(pb::subscribe_response::Entry::Event(event)) = message.entry {
            events.push(match event.kind {
                Some(pb::event::Kind::KioskOnline(_)) => "online".to_owned(),
                Some(pb::event::Kind::KioskOffline(offline)) => format!(
                    "offline:{:?}",
                    pb::OfflineReason::try_from(offline.reason).unwrap_or_default()
                ),
                Some(pb::event::Kind::InventoryChanged(_)) => "inventory".to_owned(),
                Some(pb::event::Kind::ItemReturned(_)) => "returned".to_owned(),
                Some(pb::event::Kind::CommandStateChanged(_)) => "command".to_owned(),
                None => "none".to_owned(),
            });
        }
    }
    events
}

fn offline_count(events: &[String]) -> usize {
    events.iter().filter(|e| e.starts_with("offline")).count()
}

/// ListKiosks as orders shows it: (kiosk id, online).
async fn fleet_view(channel: &Channel, operator: &str) -> Vec<(String, bool)> {
    rentals::fleet(channel)
        .list_kiosks(authed(
            orders::ListKiosksRequest {
                page_size: 100,
                ..Default::default()
            },
            operator,
        ))
        .await
        .map(|r| {
            r.into_inner()
                .kiosks
                .into_iter()
                .map(|k| (k.profile.map(|p| p.kiosk_id).unwrap_or_default(), k.online))
                .collect()
        })
        .unwrap_or_default()
}

/// The value of counter `name` on the metrics endpoint at `address` (0 when not yet there).
async fn counter(address: std::net::SocketAddr, name: &str) -> f64 {
    let Ok(mut stream) = tokio::net::TcpStream::connect(address).await else {
        return 0.0;
    };
    let request = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    if stream.write_all(request).await.is_err() {
        return 0.0;
    }
    let mut body = String::new();
    if tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut body))
        .await
        .is_err()
    {
        return 0.0;
    }
    body.lines()
        .filter_map(|line| line.strip_prefix(name))
        .filter_map(|rest| rest.strip_prefix(' '))
        .filter_map(|value| value.trim().parse::<f64>().ok())
        .sum()
}

/// A kiosk token for `kiosk` from a child process: credential issued by `operator`, logged in.
async fn kiosk_token(channel: &Channel, operator: &str, kiosk: &str) -> String {
    let secret = issue_kiosk_secret(channel.clone(), operator, kiosk).await;
    AuthServiceClient::new(channel.clone())
        .kiosk_login(auth::KioskLoginRequest {
            kiosk_id: kiosk.into(),
            secret,
        })
        .await
        .expect("kiosk login")
        .into_inner()
        .access_token
}

async fn cleanup(backend: &Backend, config: &sneakernet_runtime::Config) {
    if let Backend::Postgres(_) = backend {
        drop_schemas(config).await;
    }
}

#[tokio::test]
async fn a_killed_gateway_leaves_no_ghost_its_kiosks_go_offline_and_are_no_longer_offered() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(&backend, &dir.path().join("server"));
        let env = [
            FAST_LINKS.as_slice(),
            &[("SNEAKERNET_ORDERS__SWEEP_INTERVAL", "200ms")],
        ]
        .concat();
        let first = Child::standalone_without_kiosks(binary!(), &config, &env)
            .await
            .expect("gateway");
        let channel = connect(first.address).await;
        let operator = rentals::operator_token(&channel, &config).await;
        set_default_pricing(&channel, &operator, common::ItemKind::PowerBank)
            .await
            .expect("pricing");
        let mut k1 = SimKiosk::healthy(
            first.address,
            &operator,
            "K-1",
            vec![Some(power_bank("P-1"))],
        )
        .await;
        let mut k2 = SimKiosk::healthy(
            first.address,
            &operator,
            "K-2",
            vec![Some(power_bank("P-2"))],
        )
        .await;
        let user = customer_with_deposit(&channel).await;
        let offer = scan_until_available(&channel, &user.token, &k1, &power_bank_type(), 1).await;
        scan_until_available(&channel, &user.token, &k2, &power_bank_type(), 1).await;

        // No shutdown path runs: the kiosks stay `online` in the database.
        first.kill().await;
        // Restarted on another port: the agents keep calling the old one, so they stay away.
        let second = Child::standalone_without_kiosks(binary!(), &config, &env)
            .await
            .expect("gateway restarted");
        let channel = connect(second.address).await;
        eventually(WAIT, "orders to show both kiosks offline", || async {
            let view = fleet_view(&channel, &operator).await;
            view.len() == 2 && view.iter().all(|(_, online)| !online)
        })
        .await;
        for kiosk in ["K-1", "K-2"] {
            let events = events_of(&channel, &operator, kiosk).await;
            assert_eq!(offline_count(&events), 1, "{backend}: {kiosk}: {events:?}");
            assert_eq!(
                events.last().map(String::as_str),
                Some("offline:HeartbeatTimeout"),
                "{backend}: {kiosk}: {events:?}"
            );
        }
        // An offline kiosk is not offered, and an offer from before the crash cannot be rented.
        assert_refused(
            scan(&channel, &user.token, &k1.qr()).await,
            "KIOSK_OFFLINE",
            &format!("{backend}: scan after the crash"),
        );
        assert_refused(
            create_rental(
                &channel,
                &user.token,
                rental_request(&offer, &power_bank_type(), 1, None, "after-crash"),
            )
            .await,
            "KIOSK_OFFLINE",
            &format!("{backend}: rent after the crash"),
        );

        k1.stop().await;
        k2.stop().await;
        second.kill().await;
        cleanup(&backend, &config).await;
    }
}

#[tokio::test]
async fn failed_offline_writes_are_retried_until_each_kiosk_is_offline_once() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(&backend, &dir.path().join("server"));
        let metrics_listen = format!("127.0.0.1:{}", sneakernet_integration_tests::free_port());
        let env = [
            ("SNEAKERNET_GATEWAY__HEARTBEAT_INTERVAL", "5s"),
            ("SNEAKERNET_GATEWAY__OFFLINE_AFTER", "30s"),
            // Only the sessions' own retries can write these offlines: no reconcile after
            // the one at startup.
            ("SNEAKERNET_GATEWAY__RECONCILE_INTERVAL", "1h"),
            ("SNEAKERNET_METRICS_LISTEN", metrics_listen.as_str()),
            ("FAILPOINTS", "gateway::offline::write=3*return(error)"),
        ];
        let node = Child::standalone_without_kiosks(binary!(), &config, &env)
            .await
            .expect("gateway");
        let metrics: std::net::SocketAddr = metrics_listen.parse().unwrap();
        let channel = connect(node.address).await;
        let operator = rentals::operator_token(&channel, &config).await;
        let kiosks = ["K-1", "K-2", "K-3"];
        let mut links = Vec::new();
        for kiosk in kiosks {
            let token = kiosk_token(&channel, &operator, kiosk).await;
            links.push(
                FakeKiosk::connect(
                    connect(node.address).await,
                    &token,
                    fake_kiosk::inventory(1),
                )
                .await
                .expect("link"),
            );
        }
        for link in links {
            link.hang_up();
        }
        eventually(WAIT, "every kiosk offline", || async {
            let mut all = true;
            for kiosk in kiosks {
                all &= offline_count(&events_of(&channel, &operator, kiosk).await) >= 1;
            }
            all
        })
        .await;
        for kiosk in kiosks {
            let events = events_of(&channel, &operator, kiosk).await;
            assert_eq!(
                events,
                ["online", "inventory", "offline:Disconnected"],
                "{backend}: {kiosk}"
            );
        }
        assert_eq!(
            counter(metrics, "gateway_offline_write_failures_total").await,
            3.0,
            "{backend}: the first three writes failed and were retried"
        );
        node.kill().await;
        cleanup(&backend, &config).await;
    }
}

#[tokio::test]
async fn liveness_reaches_the_database_in_batches_not_once_per_heartbeat() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(&backend, &dir.path().join("server"));
        let metrics_listen = format!("127.0.0.1:{}", sneakernet_integration_tests::free_port());
        let env = [
            // The fake kiosks read nothing: the gateway's own heartbeats must not fill them.
            ("SNEAKERNET_GATEWAY__HEARTBEAT_INTERVAL", "20s"),
            ("SNEAKERNET_GATEWAY__OFFLINE_AFTER", "60s"),
            ("SNEAKERNET_GATEWAY__LIVENESS_FLUSH_INTERVAL", "200ms"),
            ("SNEAKERNET_METRICS_LISTEN", metrics_listen.as_str()),
        ];
        let node = Child::standalone_without_kiosks(binary!(), &config, &env)
            .await
            .expect("gateway");
        let metrics: std::net::SocketAddr = metrics_listen.parse().unwrap();
        let channel = connect(node.address).await;
        let operator = rentals::operator_token(&channel, &config).await;
        const KIOSKS: usize = 20;
        let mut links = Vec::new();
        for n in 1..=KIOSKS {
            let token = kiosk_token(&channel, &operator, &format!("K-{n}")).await;
            links.push(
                FakeKiosk::connect(
                    connect(node.address).await,
                    &token,
                    fake_kiosk::inventory(1),
                )
                .await
                .expect("link"),
            );
        }
        let heartbeats_before = counter(metrics, "gateway_heartbeats_received_total").await;
        let flushes_before = counter(metrics, "gateway_liveness_flushes_total").await;
        let writes_before = counter(metrics, "gateway_liveness_writes_total").await;
        // Heartbeat far faster than the flush, until several flushes passed.
        let mut round = 0;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            round += 1;
            assert!(
                tokio::time::Instant::now() < deadline,
                "{backend}: heartbeats or flushes never arrived"
            );
            for link in &links {
                link.send(
                    &format!("hb-{round}"),
                    Up::Heartbeat(pb::Heartbeat::default()),
                )
                .await;
            }
            let heartbeats =
                counter(metrics, "gateway_heartbeats_received_total").await - heartbeats_before;
            let flushes = counter(metrics, "gateway_liveness_flushes_total").await - flushes_before;
            if heartbeats >= (KIOSKS * 10) as f64 && flushes >= 3.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let heartbeats =
            counter(metrics, "gateway_heartbeats_received_total").await - heartbeats_before;
        // Read writes before flushes: a flush counts its write first.
        let writes = counter(metrics, "gateway_liveness_writes_total").await - writes_before;
        let flushes = counter(metrics, "gateway_liveness_flushes_total").await - flushes_before;
        eprintln!(
            "{backend}: {KIOSKS} links, {heartbeats} heartbeats, {flushes} flushes, {writes} liveness writes"
        );
        assert!(
            writes <= flushes + 1.0,
            "{backend}: one statement per flush for {KIOSKS} links, got {writes} writes in {flushes} flushes"
        );
        assert!(
            heartbeats >= writes * 10.0,
            "{backend}: {heartbeats} heartbeats made {writes} writes"
        );
        drop(links);
        node.kill().await;
        cleanup(&backend, &config).await;
    }
}

/// A gateway-only replica in this process sharing the sandbox's database; it reconciles only
/// at its start, so another replica's reconciler is the one under test.
async fn live_replica(sandbox: &Sandbox) -> Node {
    let mut config = sandbox.config.clone();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.auth.url = Some(format!("http://{}", sandbox.node().address));
    config.auth.keys_refresh_interval = Duration::from_millis(200);
    config.gateway.reconcile_interval = Duration::from_secs(3600);
    sneakernet::node::start(config, &[NodeRole::Gateway], Shutdown::new(), None)
        .await
        .expect("live gateway replica")
}

/// Links `kiosk` to the replica at `address` (retrying while it has not fetched the signing
/// keys yet) and keeps the link alive from a task: a heartbeat every 200 ms, and everything
/// the gateway sends read. The task ends when the link does.
async fn heartbeating(
    sandbox: &Sandbox,
    kiosk: &str,
    address: std::net::SocketAddr,
) -> tokio::task::JoinHandle<()> {
    let token = sandbox.kiosk_token(kiosk).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut link = loop {
        match FakeKiosk::connect(connect(address).await, &token, fake_kiosk::inventory(1)).await {
            Ok(link) => break link,
            Err(status)
                if status.code() == tonic::Code::Unauthenticated
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("cannot link {kiosk}: {status:?}"),
        }
    };
    tokio::spawn(async move {
        for n in 0.. {
            link.send(&format!("hb-{n}"), Up::Heartbeat(pb::Heartbeat::default()))
                .await;
            if !link.hears_nothing_for(Duration::from_millis(200)).await {
                return; // anything but a heartbeat (a Reconnect, the end): the test sees why
            }
        }
    })
}

#[tokio::test]
async fn a_replica_clears_a_killed_replica_s_kiosks_but_never_those_a_live_replica_holds() {
    for backend in backends() {
        // No Redis: the database lease alone must tell a live holder from a dead one.
        let sandbox = Sandbox::start_with(&backend, fast_links).await;
        let operator = sandbox.operator().await.access_token;
        let live = live_replica(&sandbox).await;
        let auth_url = format!("http://{}", sandbox.node().address);
        let env = [
            FAST_LINKS.as_slice(),
            &[
                ("SNEAKERNET_AUTH__URL", auth_url.as_str()),
                ("SNEAKERNET_AUTH__KEYS_REFRESH_INTERVAL", "200ms"),
            ],
        ]
        .concat();
        let doomed = Child::serve(binary!(), &sandbox.config, "gateway", &env)
            .await
            .expect("doomed gateway replica");
        let channel = sandbox.channel().await;

        // K-1 links to the live replica first, K-2 to the doomed one after it: K-2's lease
        // cannot lapse before K-1's would, unless K-1's holder renews it.
        let k1 = heartbeating(&sandbox, "K-1", live.address).await;
        eventually(WAIT, "K-1 online", || async {
            events_of(&channel, &operator, "K-1")
                .await
                .contains(&"online".to_owned())
        })
        .await;
        let k2 = heartbeating(&sandbox, "K-2", doomed.address).await;
        eventually(WAIT, "K-2 online", || async {
            events_of(&channel, &operator, "K-2")
                .await
                .contains(&"online".to_owned())
        })
        .await;

        doomed.kill().await;
        eventually(
            WAIT,
            "K-2 marked offline by the sandbox's reconciler",
            || async { offline_count(&events_of(&channel, &operator, "K-2").await) == 1 },
        )
        .await;
        let k1_events = events_of(&channel, &operator, "K-1").await;
        assert_eq!(
            offline_count(&k1_events),
            0,
            "{backend}: a kiosk a live replica holds stays online: {k1_events:?}"
        );
        assert_eq!(
            k1_events.iter().filter(|e| *e == "online").count(),
            1,
            "{backend}: and its link was never cut: {k1_events:?}"
        );
        let k2_events = events_of(&channel, &operator, "K-2").await;
        assert_eq!(
            k2_events.last().map(String::as_str),
            Some("offline:HeartbeatTimeout"),
            "{backend}: {k2_events:?}"
        );

        k1.abort();
        k2.abort();
        live.stop();
        live.wait().await.unwrap();
        sandbox.stop().await;
    }
}
