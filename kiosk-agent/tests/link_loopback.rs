//! The agent against a scripted fake gateway and fake auth on 127.0.0.1: login, Hello first,
//! commands acknowledged and answered, outbox replay after a reconnect, a resent command
//! answered from the journal, returns reported, graceful stop. (The real gateway is tested in
//! `integration-tests`.)

use std::pin::Pin;
use std::time::Duration;

use sneakernet_kiosk_agent::config::{
    AgentConfig, LinkConfig, SimBayConfig, SimFaults, SimItemConfig, SimItemKind, SimulationConfig,
};
use sneakernet_proto::auth::v1 as auth;
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::gateway::v1::open_request::Body as Up;
use sneakernet_proto::gateway::v1::open_response::Body as Down;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

struct FakeAuth;

#[tonic::async_trait]
impl auth::auth_service_server::AuthService for FakeAuth {
    async fn kiosk_login(
        &self,
        request: Request<auth::KioskLoginRequest>,
    ) -> Result<Response<auth::KioskLoginResponse>, Status> {
        let request = request.into_inner();
        if request.kiosk_id != "K-1" || request.secret != "s3cret" {
            return Err(Status::unauthenticated("bad credential"));
        }
        let expires = chrono::Utc::now() + chrono::Duration::hours(1);
        Ok(Response::new(auth::KioskLoginResponse {
            access_token: "tok-1".into(),
            access_token_expires_at: Some(prost_types::Timestamp {
                seconds: expires.timestamp(),
                nanos: 0,
            }),
        }))
    }
}

struct Conn {
    authorization: String,
    up: Streaming<pb::OpenRequest>,
    down: mpsc::Sender<Result<pb::OpenResponse, Status>>,
}

struct FakeGateway {
    conns: mpsc::Sender<Conn>,
}

type DownStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::OpenResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::kiosk_link_service_server::KioskLinkService for FakeGateway {
    async fn open(
        &self,
        request: Request<Streaming<pb::OpenRequest>>,
    ) -> Result<Response<DownStream>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let (down, down_rx) = mpsc::channel(16);
        self.conns
            .send(Conn {
                authorization,
                up: request.into_inner(),
                down,
            })
            .await
            .map_err(|_| Status::internal("test gone"))?;
        Ok(Response::new(Box::pin(ReceiverStream::new(down_rx))))
    }
}

const WAIT: Duration = Duration::from_secs(10);

/// The next up-message that is not a heartbeat.
async fn next_up(conn: &mut Conn) -> pb::OpenRequest {
    loop {
        let message = tokio::time::timeout(WAIT, conn.up.message())
            .await
            .expect("an up-message in time")
            .expect("stream ok")
            .expect("stream open");
        if !matches!(message.body, Some(Up::Heartbeat(_))) {
            return message;
        }
    }
}

async fn down(conn: &Conn, body: Down) {
    conn.down
        .send(Ok(pb::OpenResponse { body: Some(body) }))
        .await
        .expect("agent reads");
}

fn drive(id: &str) -> SimItemConfig {
    SimItemConfig {
        kind: SimItemKind::Drive,
        item_id: id.into(),
        capacity_bytes: Some(1000),
        content_package_id: Some("pkg".into()),
        write_protected: false,
        charge_percent: None,
    }
}

fn lend(id: &str, attempt: u32) -> Down {
    let deadline = chrono::Utc::now() + chrono::Duration::minutes(5);
    Down::Command(pb::Command {
        command_id: id.into(),
        deadline: Some(prost_types::Timestamp {
            seconds: deadline.timestamp(),
            nanos: 0,
        }),
        payload: Some(pb::CommandPayload {
            kind: Some(pb::command_payload::Kind::Lend(pb::LendCommand {
                target: Some(pb::lend_command::Target::Spec(common::ItemSpec {
                    item_type: Some(common::ItemType {
                        kind: common::ItemKind::Drive as i32,
                        capacity_bytes: 1000,
                        content_package_id: "pkg".into(),
                    }),
                    write_protect: true,
                })),
                order_id: "O-1".into(),
            })),
        }),
        attempt,
    })
}

#[tokio::test]
async fn lend_over_the_link_is_executed_once_and_replayed_until_receipted() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (conns_tx, mut conns) = mpsc::channel(4);
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(auth::auth_service_server::AuthServiceServer::new(FakeAuth))
            .add_service(pb::kiosk_link_service_server::KioskLinkServiceServer::new(
                FakeGateway { conns: conns_tx },
            ))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let dir = tempfile::tempdir().unwrap();
    let credential_file = dir.path().join("secret");
    std::fs::write(&credential_file, "s3cret\n").unwrap();
    let config = AgentConfig {
        kiosk_id: "K-1".into(),
        credential_file,
        auth_url: format!("http://{address}"),
        gateway_url: format!("http://{address}"),
        data_dir: dir.path().join("data"),
        link: LinkConfig {
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(100),
        },
        simulation: Some(SimulationConfig {
            bays: vec![
                SimBayConfig {
                    id: "A01".into(),
                    item: Some(drive("D-1")),
                },
                SimBayConfig {
                    id: "A02".into(),
                    item: Some(drive("D-2")),
                },
            ],
            faults: SimFaults::default(),
        }),
    };
    let agent = sneakernet_kiosk_agent::start(config).await.unwrap();

    // First link: Bearer token, Hello first with the full inventory.
    let mut conn = tokio::time::timeout(WAIT, conns.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(conn.authorization, "Bearer tok-1");
    let Some(Up::Hello(hello)) = next_up(&mut conn).await.body else {
        panic!("hello first")
    };
    assert_eq!(hello.inventory.unwrap().bays.len(), 2);
    assert_eq!(hello.last_finished_command_id, "");
    assert_eq!(hello.agent_version, env!("CARGO_PKG_VERSION"));
    let now = chrono::Utc::now();
    down(
        &conn,
        Down::Welcome(pb::Welcome {
            session_id: "S-1".into(),
            server_time: Some(prost_types::Timestamp {
                seconds: now.timestamp(),
                nanos: 0,
            }),
            heartbeat_interval: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            offline_after: Some(prost_types::Duration {
                seconds: 30,
                nanos: 0,
            }),
        }),
    )
    .await;

    // A lend: Ack, then the result, with a message id.
    down(&conn, lend("C-1", 1)).await;
    assert!(matches!(next_up(&mut conn).await.body, Some(Up::Ack(ref a)) if a.command_id == "C-1"));
    let result = next_up(&mut conn).await;
    let first_message_id = result.message_id.clone();
    assert!(!first_message_id.is_empty());
    let Some(Up::Result(r)) = result.body else {
        panic!("{result:?}")
    };
    assert!(
        matches!(r.outcome, Some(pb::command_result::Outcome::Lend(ref l)) if l.bay_id == "A01")
    );
    assert_eq!(agent.bays().eject_count("D-1"), 1);

    // No receipt; the gateway asks for a reconnect. The new link replays the unreceipted result.
    down(
        &conn,
        Down::Reconnect(pb::Reconnect {
            reason: pb::ReconnectReason::Shutdown as i32,
            message: "bye".into(),
            retry_after: None,
            gateway_address: String::new(),
        }),
    )
    .await;
    let mut conn = tokio::time::timeout(WAIT, conns.recv())
        .await
        .unwrap()
        .unwrap();
    let Some(Up::Hello(hello)) = next_up(&mut conn).await.body else {
        panic!("hello first")
    };
    assert_eq!(hello.last_finished_command_id, "C-1");
    let replayed = next_up(&mut conn).await;
    assert_eq!(replayed.message_id, first_message_id, "same id on replay");
    down(
        &conn,
        Down::Receipt(pb::Receipt {
            message_id: first_message_id.clone(),
            status: pb::ReceiptStatus::Accepted as i32,
            error: String::new(),
        }),
    )
    .await;

    // The gateway resends the command (its Ack was lost): answered from the journal.
    down(&conn, lend("C-1", 2)).await;
    assert!(matches!(next_up(&mut conn).await.body, Some(Up::Ack(ref a)) if a.command_id == "C-1"));
    let again = next_up(&mut conn).await;
    let Some(Up::Result(r2)) = &again.body else {
        panic!("{again:?}")
    };
    assert_eq!(r2, &r, "the stored result");
    assert_eq!(agent.bays().eject_count("D-1"), 1, "not executed twice");
    assert_eq!(agent.bays().eject_count("D-2"), 0);

    // A return is reported with a message id.
    agent.bays().insert("A01", drive("D-1")).await.unwrap();
    let returned = next_up(&mut conn).await;
    assert!(!returned.message_id.is_empty());
    assert!(matches!(
        returned.body,
        Some(Up::ItemReturned(ref i)) if i.bay_id == "A01" && i.item.as_ref().unwrap().item_id == "D-1"
    ));

    // A malformed down-message is skipped; the link survives.
    conn.down
        .send(Ok(pb::OpenResponse { body: None }))
        .await
        .unwrap();
    down(&conn, lend("C-2", 1)).await;
    assert!(matches!(next_up(&mut conn).await.body, Some(Up::Ack(ref a)) if a.command_id == "C-2"));

    tokio::time::timeout(WAIT, agent.stop())
        .await
        .expect("stops in time");
    server.abort();
}
