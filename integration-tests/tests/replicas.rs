//! Several gateway replicas: a command accepted by one reaches a kiosk (or a drive's own
//! link) linked to another, over Redis; with Redis stopped it still arrives, through polling; a kiosk that moves to another
//! replica leaves no second session behind.

use std::time::Duration;

use sneakernet::{Node, NodeRole};
use sneakernet_integration_tests::fake_kiosk::{self, FakeKiosk};
use sneakernet_integration_tests::kiosk;
use sneakernet_integration_tests::{
    RedisServer, Sandbox, authed, backends, connect, eventually, fast_links,
};
use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::gateway::v1::device_command_service_client::DeviceCommandServiceClient;
use sneakernet_proto::gateway::v1::open_response::Body as Down;
use sneakernet_runtime::Shutdown;

/// A gateway-only replica sharing the sandbox's database and Redis.
async fn second_replica(sandbox: &Sandbox) -> Node {
    let mut config = sandbox.config.clone();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.auth.url = Some(format!("http://{}", sandbox.node().address));
    config.auth.keys_refresh_interval = Duration::from_millis(200);
    sneakernet::node::start(config, &[NodeRole::Gateway], Shutdown::new(), None)
        .await
        .expect("second gateway replica")
}

/// Opens K-1's link on `replica`, retrying while the replica has not fetched the signing keys
/// from auth yet (it verifies the kiosk's token locally).
async fn link_to(replica: &Node, token: &str) -> FakeKiosk {
    link_with(replica, token, fake_kiosk::hello(fake_kiosk::inventory(1))).await
}

/// Opens a device's link on `replica` with `hello`, retrying while the replica has not
/// fetched the signing keys yet.
async fn link_with(replica: &Node, token: &str, hello: pb::OpenRequest) -> FakeKiosk {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match FakeKiosk::connect_with(connect(replica.address).await, token, hello.clone()).await {
            Ok(kiosk) => return kiosk,
            Err(status)
                if status.code() == tonic::Code::Unauthenticated
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("cannot link to the replica: {status:?}"),
        }
    }
}

async fn send_wipe(sandbox: &Sandbox, token: &str, key: &str) -> String {
    let deadline = chrono::Utc::now() + chrono::Duration::minutes(5);
    DeviceCommandServiceClient::new(sandbox.channel().await)
        .send_command(authed(
            pb::SendCommandRequest {
                kiosk_id: "K-1".into(),
                payload: Some(pb::CommandPayload {
                    kind: Some(pb::command_payload::Kind::Wipe(pb::WipeCommand {
                        item_id: "D-1".into(),
                    })),
                }),
                idempotency_key: key.into(),
                deadline: Some(prost_types::Timestamp {
                    seconds: deadline.timestamp(),
                    nanos: 0,
                }),
                drive_id: String::new(),
            },
            token,
        ))
        .await
        .expect("send command")
        .into_inner()
        .command
        .expect("record")
        .command_id
}

/// Waits until Redis says which replica holds K-1's link.
async fn presence_recorded(url: &str) {
    presence_of(url, "K-1").await;
}

/// Waits until Redis says which replica holds the link of `device` (its stored form).
async fn presence_of(url: &str, device: &str) {
    let client = redis::Client::open(url).unwrap();
    let key = format!("sneakernet:presence:{device}");
    eventually(
        Duration::from_secs(10),
        "the device's presence in redis",
        || {
            let client = client.clone();
            let key = key.clone();
            async move {
                let Ok(mut redis) = client.get_multiplexed_async_connection().await else {
                    return false;
                };
                let holder: Option<String> = redis::AsyncCommands::get(&mut redis, &key)
                    .await
                    .unwrap_or(None);
                holder.is_some()
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_command_sent_to_one_replica_reaches_a_kiosk_on_another_through_redis() {
    for backend in backends() {
        let Some(redis) = RedisServer::start().await else {
            return;
        };
        let sandbox = Sandbox::start_with(&backend, |config| {
            fast_links(config);
            // So slow that only a Redis wake-up can deliver within the test's patience.
            config.gateway.command_poll_interval = Duration::from_secs(3600);
            config.redis_url = Some(redis.url.clone());
        })
        .await;
        let replica_b = second_replica(&sandbox).await;
        let operator = sandbox.operator().await;
        let token = sandbox.kiosk_token("K-1").await;

        let mut kiosk = link_to(&replica_b, &token).await;
        presence_recorded(&redis.url).await;
        let command_id = send_wipe(&sandbox, &operator.access_token, "via-redis").await;
        assert_eq!(
            kiosk.next_command().await.command_id,
            command_id,
            "{backend}: routed across replicas"
        );

        // The kiosk moves to replica A: B's half-open session notices and steps aside.
        let _moved = FakeKiosk::connect(sandbox.channel().await, &token, fake_kiosk::inventory(1))
            .await
            .unwrap();
        let reason = loop {
            match kiosk.next().await {
                Ok(Some(Down::Reconnect(reconnect))) => break reconnect.reason,
                Ok(Some(_)) => continue,
                other => panic!("{backend}: expected Reconnect, got {other:?}"),
            }
        };
        assert_eq!(reason, pb::ReconnectReason::Replaced as i32, "{backend}");

        replica_b.stop();
        replica_b.wait().await.unwrap();
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn a_command_for_a_drive_sent_to_one_replica_reaches_its_link_on_another() {
    for backend in backends() {
        let Some(redis) = RedisServer::start().await else {
            return;
        };
        let sandbox = Sandbox::start_with(&backend, |config| {
            fast_links(config);
            config.gateway.command_poll_interval = Duration::from_secs(3600);
            config.redis_url = Some(redis.url.clone());
        })
        .await;
        let replica_b = second_replica(&sandbox).await;
        let operator = sandbox.operator().await;
        let token = sandbox.drive_token("D-1").await;

        let mut drive = link_with(&replica_b, &token, fake_kiosk::drive_hello()).await;
        presence_of(&redis.url, "drive:D-1").await;
        let command_id = kiosk::send_write_protect(
            &sandbox.channel().await,
            &operator.access_token,
            "D-1",
            true,
            "drive-via-redis",
        )
        .await;
        assert_eq!(
            drive.next_command().await.command_id,
            command_id,
            "{backend}: routed across replicas by the drive's stored form"
        );

        replica_b.stop();
        replica_b.wait().await.unwrap();
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn with_redis_stopped_commands_still_arrive_through_polling() {
    for backend in backends() {
        let Some(mut redis) = RedisServer::start().await else {
            return;
        };
        let sandbox = Sandbox::start_with(&backend, |config| {
            fast_links(config);
            config.gateway.command_poll_interval = Duration::from_millis(300);
            config.redis_url = Some(redis.url.clone());
        })
        .await;
        let replica_b = second_replica(&sandbox).await;
        let operator = sandbox.operator().await;
        let token = sandbox.kiosk_token("K-1").await;
        let mut kiosk = link_to(&replica_b, &token).await;

        redis.stop();
        let command_id = send_wipe(&sandbox, &operator.access_token, "redis-down").await;
        assert_eq!(
            kiosk.next_command().await.command_id,
            command_id,
            "{backend}: slower, nothing lost"
        );

        replica_b.stop();
        replica_b.wait().await.unwrap();
        sandbox.stop().await;
    }
}
