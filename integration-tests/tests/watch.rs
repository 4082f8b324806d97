//! WatchOrder at scale (issue 12, defect 5): a watcher is woken by changes committed on another
//! orders replica (through Redis, with polling set so slow that only a wake-up can deliver),
//! falls back to polling while Redis is down, each account holds a bounded number of watches
//! whose slots are freed when they end, and one HTTP/2 connection carries 1,000 of them.

use std::time::Duration;

use sneakernet::{Node, NodeRole};
use sneakernet_integration_tests::rentals::{
    Customer, SimKiosk, assert_moves_along, create_rental, customer_with_deposit, drive,
    drive_type, follow, rental_request, scan_until_available, start_priced_with, states, watch,
};
use sneakernet_integration_tests::reservations::silent_address;
use sneakernet_integration_tests::{RedisServer, Sandbox, backends, connect, eventually};
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_proto::orders::v1::OrderState as S;
use sneakernet_runtime::Shutdown;
use tonic::Code;
use tonic::transport::Channel;

/// So slow that no test here lives to see it: what a watcher sees came by a wake-up.
const NEVER: Duration = Duration::from_secs(3600);

/// A second orders replica on the sandbox's database and Redis that commits no order change
/// of its own: its gateway never answers (so it neither applies kiosk events nor sends
/// commands) and its sweeper sleeps. Every change a watcher on it sees was committed by the
/// sandbox's node.
async fn watching_replica(sandbox: &Sandbox) -> (Node, tokio::task::JoinHandle<()>) {
    let (silent, silence) = silent_address().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let secret_file = dir.path().join("orders.secret");
    let secret = sneakernet_auth::issue_service_secret(&sandbox.config, "orders")
        .await
        .expect("service secret");
    std::fs::write(&secret_file, format!("{secret}\n")).expect("write secret");
    let mut config = sandbox.config.clone();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.auth.url = Some(format!("http://{}", sandbox.node().address));
    config.auth.keys_refresh_interval = Duration::from_millis(200);
    config.auth.service_secret_file = Some(secret_file);
    config.orders.gateway_url = Some(format!("http://{silent}"));
    config.orders.content_url = Some(format!("http://{}", sandbox.node().address));
    config.orders.sweep_interval = Duration::from_secs(600);
    let node = sneakernet::node::start(config, &[NodeRole::Orders], Shutdown::new(), None)
        .await
        .expect("second orders replica");
    // The secret was read at start.
    drop(dir);
    (node, silence)
}

/// Waits until `replicas` orders replicas listen for order changes on Redis.
async fn subscribed(url: &str, replicas: i64) {
    let client = redis::Client::open(url).unwrap();
    eventually(
        Duration::from_secs(20),
        "the replicas' subscriptions to order changes",
        || {
            let client = client.clone();
            async move {
                let Ok(mut redis) = client.get_multiplexed_async_connection().await else {
                    return false;
                };
                let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
                    .arg("NUMSUB")
                    .arg("sneakernet:orders:changed")
                    .query_async(&mut redis)
                    .await
                    .unwrap_or_default();
                counts.first().is_some_and(|(_, n)| *n >= replicas)
            }
        },
    )
    .await;
}

/// Opens a watch on `channel`, retrying while the replica has not fetched the signing keys.
async fn watch_on(
    channel: &Channel,
    token: &str,
    order_id: &str,
) -> tonic::Streaming<pb::WatchOrderResponse> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match watch(channel, token, order_id).await {
            Ok(stream) => return stream,
            Err(status)
                if status.code() == Code::Unauthenticated
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("watch: {status:?}"),
        }
    }
}

/// Rents a drive at `kiosk` for `user` (with `available` ready there) and returns the order.
async fn rent(
    channel: &Channel,
    user: &Customer,
    kiosk: &SimKiosk,
    available: u32,
    key: &str,
) -> pb::Order {
    let offer = scan_until_available(channel, &user.token, kiosk, &drive_type(), available).await;
    create_rental(
        channel,
        &user.token,
        rental_request(&offer, &drive_type(), 1, None, key),
    )
    .await
    .unwrap_or_else(|s| panic!("rent: {s:?}"))
}

/// The item of the last message's order.
fn item_of(seen: &[pb::WatchOrderResponse]) -> String {
    seen.last()
        .and_then(|m| m.order.as_ref())
        .map(|o| o.item_id.clone())
        .expect("the lent item")
}

fn bay_of(item: &str) -> &'static str {
    if item == "D-1" { "A1" } else { "A2" }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_on_one_orders_replica_sees_every_change_committed_on_another_in_order() {
    for backend in backends() {
        let Some(redis) = RedisServer::start().await else {
            return;
        };
        let (sandbox, channel, operator) =
            start_priced_with(&backend, &[common::ItemKind::Drive], |config| {
                config.redis_url = Some(redis.url.clone());
                config.orders.watch_poll_interval = NEVER;
                config.orders.watch_degraded_poll_interval = NEVER;
            })
            .await;
        let (replica, silence) = watching_replica(&sandbox).await;
        subscribed(&redis.url, 2).await;
        let on_replica = connect(replica.address).await;
        let mut kiosk = SimKiosk::healthy(
            sandbox.node().address,
            &operator,
            "K-1",
            vec![Some(drive("D-1")), None],
        )
        .await;
        let user = customer_with_deposit(&channel).await;
        let order = rent(&channel, &user, &kiosk, 1, "across-replicas").await;

        // PAID, DISPENSING, LENT follow each other within milliseconds, all committed by
        // the sandbox's node: the watcher on the other replica sees each, in order.
        let mut stream = watch_on(&on_replica, &user.token, &order.order_id).await;
        let mut seen = follow(&mut stream, "until LENT", |m| m.state == S::Lent as i32).await;
        eprintln!("{backend}: watched {:?}", states(&seen));

        // Back in its bay: RETURNED then CLOSED in one quick succession, both seen.
        let item = item_of(&seen);
        kiosk.insert(bay_of(&item), drive(&item)).await;
        seen.extend(follow(&mut stream, "until CLOSED", |m| m.state == S::Closed as i32).await);
        assert_moves_along(
            &seen,
            &[S::Paid, S::Dispensing, S::Lent, S::Returned, S::Closed],
            &backend.to_string(),
        );
        let times: Vec<(i64, i32)> = seen
            .iter()
            .filter_map(|m| m.time.as_ref())
            .map(|t| (t.seconds, t.nanos))
            .collect();
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "{backend}: changes in the order they were made: {times:?}"
        );
        let end = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("the stream ends after CLOSED");
        assert!(matches!(end, Ok(None)), "{backend}: ends with OK: {end:?}");

        kiosk.stop().await;
        replica.stop();
        replica.wait().await.unwrap();
        silence.abort();
        sandbox.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_stopped_a_watcher_on_another_replica_sees_changes_through_the_degraded_poll() {
    for backend in backends() {
        let Some(mut redis) = RedisServer::start().await else {
            return;
        };
        let (sandbox, channel, operator) =
            start_priced_with(&backend, &[common::ItemKind::Drive], |config| {
                config.redis_url = Some(redis.url.clone());
                config.orders.watch_poll_interval = NEVER;
                config.orders.watch_degraded_poll_interval = Duration::from_millis(200);
            })
            .await;
        let (replica, silence) = watching_replica(&sandbox).await;
        subscribed(&redis.url, 2).await;
        let on_replica = connect(replica.address).await;
        let mut kiosk = SimKiosk::healthy(
            sandbox.node().address,
            &operator,
            "K-1",
            vec![Some(drive("D-1")), None],
        )
        .await;
        let user = customer_with_deposit(&channel).await;
        let order = rent(&channel, &user, &kiosk, 1, "redis-down").await;
        let mut stream = watch_on(&on_replica, &user.token, &order.order_id).await;
        let mut seen = follow(&mut stream, "until LENT", |m| m.state == S::Lent as i32).await;

        // Redis goes away: wake-ups from the sandbox's node cannot reach the replica, whose
        // watcher re-reads at the degraded interval instead of the (endless) safety poll.
        redis.stop();
        let item = item_of(&seen);
        kiosk.insert(bay_of(&item), drive(&item)).await;
        seen.extend(follow(&mut stream, "until CLOSED", |m| m.state == S::Closed as i32).await);
        assert_moves_along(
            &seen,
            &[S::Paid, S::Dispensing, S::Lent, S::Returned, S::Closed],
            &format!("{backend}: slower, nothing lost"),
        );

        kiosk.stop().await;
        replica.stop();
        replica.wait().await.unwrap();
        silence.abort();
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn a_watch_over_the_per_account_cap_is_refused_naming_it_and_a_closed_watch_frees_its_slot() {
    for backend in backends() {
        let (sandbox, channel, operator) =
            start_priced_with(&backend, &[common::ItemKind::Drive], |config| {
                config.orders.max_watches_per_user = 2;
            })
            .await;
        let mut kiosk = SimKiosk::healthy(
            sandbox.node().address,
            &operator,
            "K-1",
            vec![Some(drive("D-1")), None],
        )
        .await;
        let user = customer_with_deposit(&channel).await;
        let order = rent(&channel, &user, &kiosk, 1, "capped").await;

        let first = watch(&channel, &user.token, &order.order_id)
            .await
            .expect("first watch");
        let _second = watch(&channel, &user.token, &order.order_id)
            .await
            .expect("second watch");
        let refused = watch(&channel, &user.token, &order.order_id)
            .await
            .expect_err("a third watch is over the cap");
        assert_eq!(
            refused.code(),
            Code::ResourceExhausted,
            "{backend}: {refused:?}"
        );
        assert!(
            refused.message().contains("at most 2")
                && refused.message().contains("orders.max_watches_per_user"),
            "{backend}: names the limit: {}",
            refused.message()
        );
        // The cap is the account's: the operator still watches.
        watch(&channel, &operator, &order.order_id)
            .await
            .unwrap_or_else(|s| panic!("{backend}: the operator's watch: {s:?}"));

        // The client goes away: its slot comes free.
        drop(first);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let _third = loop {
            match watch(&channel, &user.token, &order.order_id).await {
                Ok(stream) => break stream,
                Err(status)
                    if status.code() == Code::ResourceExhausted
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(status) => panic!("{backend}: the closed watch's slot: {status:?}"),
            }
        };

        kiosk.stop().await;
        sandbox.stop().await;
    }
}

/// Opens `count` watches of `order_id` on `channel` (one HTTP/2 connection), each read up to
/// its first message.
async fn open_watches(
    channel: &Channel,
    token: &str,
    order_id: &str,
    count: usize,
) -> Result<Vec<tonic::Streaming<pb::WatchOrderResponse>>, tonic::Status> {
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        let mut stream = watch(channel, token, order_id).await?;
        let first = stream.message().await?.expect("the order as it is now");
        assert_eq!(first.state, S::Lent as i32, "{first:?}");
        streams.push(stream);
    }
    Ok(streams)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_watches_on_one_connection_each_see_their_order_change_and_free_their_slots() {
    const PER_USER: usize = 500;
    for backend in backends() {
        let (sandbox, channel, operator) =
            start_priced_with(&backend, &[common::ItemKind::Drive], |config| {
                config.orders.max_watches_per_user = u32::try_from(PER_USER).unwrap();
            })
            .await;
        let mut kiosk = SimKiosk::healthy(
            sandbox.node().address,
            &operator,
            "K-1",
            vec![Some(drive("D-1")), Some(drive("D-2"))],
        )
        .await;
        // Two renters, each with a lent drive; every watch below shares one connection.
        let one = connect(sandbox.node().address).await;
        let mut renters = Vec::new();
        for (n, available) in [(1, 2), (2, 1)] {
            let user = customer_with_deposit(&channel).await;
            let order = rent(&channel, &user, &kiosk, available, &format!("many-{n}")).await;
            let mut stream = watch(&channel, &user.token, &order.order_id)
                .await
                .expect("watch");
            let seen = follow(&mut stream, "until LENT", |m| m.state == S::Lent as i32).await;
            renters.push((user, order.order_id, item_of(&seen)));
        }

        // 1,000 open at once, then all cancelled by the client. (Phase times are printed for
        // the record, never asserted.)
        let started = std::time::Instant::now();
        let mut open = Vec::new();
        for (user, order_id, _) in &renters {
            open.push(
                open_watches(&one, &user.token, order_id, PER_USER)
                    .await
                    .unwrap_or_else(|s| panic!("{backend}: open {PER_USER}: {s:?}")),
            );
        }
        assert_eq!(open.iter().map(Vec::len).sum::<usize>(), 2 * PER_USER);
        eprintln!("{backend}: 1000 watches open in {:?}", started.elapsed());
        drop(open);
        let started = std::time::Instant::now();

        // Every slot comes free: each renter holds its whole allowance again (a leaked slot
        // would make this RESOURCE_EXHAUSTED forever).
        let mut open = Vec::new();
        for (user, order_id, _) in &renters {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            let streams = loop {
                // A refused try drops what it opened.
                match open_watches(&one, &user.token, order_id, PER_USER).await {
                    Ok(streams) => break streams,
                    Err(status)
                        if status.code() == Code::ResourceExhausted
                            && tokio::time::Instant::now() < deadline =>
                    {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(status) => panic!("{backend}: every cancelled watch's slot: {status:?}"),
                }
            };
            open.push(streams);
        }

        eprintln!(
            "{backend}: 1000 slots freed and taken again in {:?}",
            started.elapsed()
        );
        let started = std::time::Instant::now();

        // Both drives come back: each of the 1,000 watches sees its order change, to CLOSED,
        // and ends.
        for (_, _, item) in &renters {
            kiosk.insert(bay_of(item), drive(item)).await;
        }
        for streams in &mut open {
            for stream in streams.iter_mut() {
                let seen = follow(stream, "until CLOSED", |m| m.state == S::Closed as i32).await;
                assert!(
                    seen.iter()
                        .any(|m| m.state == S::Returned as i32 || m.state == S::Closed as i32),
                    "{backend}: {:?}",
                    states(&seen)
                );
                let end = tokio::time::timeout(Duration::from_secs(10), stream.message())
                    .await
                    .expect("the stream ends after CLOSED");
                assert!(matches!(end, Ok(None)), "{backend}: ends with OK: {end:?}");
            }
        }

        eprintln!(
            "{backend}: 1000 watches saw the return and ended in {:?}",
            started.elapsed()
        );

        // The server is healthy, on that connection too.
        let mut health = tonic_health::pb::health_client::HealthClient::new(one.clone());
        let serving = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "sneakernet.orders.v1.OrderService".into(),
            })
            .await
            .expect("health on the shared connection")
            .into_inner();
        assert_eq!(
            serving.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{backend}"
        );
        for (user, order_id, _) in &renters {
            let order =
                sneakernet_integration_tests::rentals::get_order(&one, &user.token, order_id)
                    .await
                    .expect("get order on the shared connection");
            assert_eq!(order.state, S::Closed as i32, "{backend}");
        }

        kiosk.stop().await;
        sandbox.stop().await;
    }
}
