//! The agent against a scripted fake gateway and fake auth on 127.0.0.1: login, Hello first,
//! commands acknowledged and answered, outbox replay after a reconnect, a resent command
//! answered from the journal, returns reported, graceful stop; token renewal that opens the
//! new link before letting the old one go; a prompt re-login after UNAUTHENTICATED; a Provision
//! against a fake content service, its Progress reaching the gateway before its result. (The
//! real gateway is tested in `integration-tests`.)

use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sneakernet_kiosk_agent::config::{
    AgentConfig, LinkConfig, SimBayConfig, SimFaults, SimItemConfig, SimItemKind, SimulationConfig,
};
use sneakernet_proto::auth::v1 as auth;
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::content::v1 as content;
use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::gateway::v1::open_request::Body as Up;
use sneakernet_proto::gateway::v1::open_response::Body as Down;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// Issues "tok-1", "tok-2", ...; the first lives `first_lifetime`, the others an hour.
struct FakeAuth {
    issued: AtomicU32,
    first_lifetime: chrono::Duration,
}

impl FakeAuth {
    fn new(first_lifetime: chrono::Duration) -> Self {
        Self {
            issued: AtomicU32::new(0),
            first_lifetime,
        }
    }
}

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
        let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        let lifetime = if n == 1 {
            self.first_lifetime
        } else {
            chrono::Duration::hours(1)
        };
        let expires = chrono::Utc::now() + lifetime;
        Ok(Response::new(auth::KioskLoginResponse {
            access_token: format!("tok-{n}"),
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
        // The agent never sends what the real gateway would refuse.
        if let Err(refusal) =
            sneakernet_proto::link_rules::check_message(&message, chrono::Utc::now())
        {
            panic!("the agent sent a message the gateway refuses ({refusal}): {message:?}");
        }
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
        remote_link: false,
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
            .add_service(auth::auth_service_server::AuthServiceServer::new(
                FakeAuth::new(chrono::Duration::hours(1)),
            ))
            .add_service(pb::kiosk_link_service_server::KioskLinkServiceServer::new(
                FakeGateway { conns: conns_tx },
            ))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let dir = tempfile::tempdir().unwrap();
    let credential_file = dir.path().join("secret");
    std::fs::write(&credential_file, "s3cret\n").unwrap();
    let config = AgentConfig {
        content: Default::default(),
        kiosk_id: "K-1".into(),
        credential_file,
        auth_url: format!("http://{address}"),
        gateway_url: format!("http://{address}"),
        data_dir: dir.path().join("data"),
        allow_plaintext: false,
        qr_secret_file: None,
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

/// A fake auth and gateway (and content service, when given) on 127.0.0.1; new links arrive
/// on the receiver.
async fn serve(
    first_lifetime: chrono::Duration,
    content: Option<FakeContent>,
) -> (
    std::net::SocketAddr,
    mpsc::Receiver<Conn>,
    tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (conns_tx, conns) = mpsc::channel(4);
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(auth::auth_service_server::AuthServiceServer::new(
                FakeAuth::new(first_lifetime),
            ))
            .add_service(pb::kiosk_link_service_server::KioskLinkServiceServer::new(
                FakeGateway { conns: conns_tx },
            ))
            .add_optional_service(
                content.map(content::content_service_server::ContentServiceServer::new),
            )
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (address, conns, server)
}

fn config_for(
    dir: &std::path::Path,
    address: std::net::SocketAddr,
    link: LinkConfig,
) -> AgentConfig {
    let credential_file = dir.join("secret");
    std::fs::write(&credential_file, "s3cret\n").unwrap();
    AgentConfig {
        content: Default::default(),
        kiosk_id: "K-1".into(),
        credential_file,
        auth_url: format!("http://{address}"),
        gateway_url: format!("http://{address}"),
        data_dir: dir.join("data"),
        allow_plaintext: false,
        qr_secret_file: None,
        link,
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
    }
}

async fn welcome(conn: &Conn, session_id: &str) {
    let now = chrono::Utc::now();
    down(
        conn,
        Down::Welcome(pb::Welcome {
            session_id: session_id.into(),
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
}

/// True when the agent keeps `conn`'s up-stream open for `window` (heartbeats are fine).
async fn stays_open(conn: &mut Conn, window: Duration) -> bool {
    let until = tokio::time::Instant::now() + window;
    loop {
        match tokio::time::timeout_at(until, conn.up.message()).await {
            Err(_) => return true,
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None) | Err(_)) => return false,
        }
    }
}

/// Waits until the agent ends `conn`'s up-stream.
async fn ends(conn: &mut Conn) {
    loop {
        match tokio::time::timeout(WAIT, conn.up.message())
            .await
            .expect("the old link is let go in time")
        {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return,
        }
    }
}

/// Token renewal: the agent opens the new link (with the new token) while the old one is still
/// open, and lets the old one go only once the new one is welcomed; the gateway's REPLACED on
/// the old link (before or after that Welcome) starts no reconnect; the new link replays the
/// outbox under the same ids, and nothing runs twice.
async fn renewal(replaced_before_welcome: bool) {
    let (address, mut conns, server) = serve(chrono::Duration::seconds(5), None).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = sneakernet_kiosk_agent::start(config_for(
        dir.path(),
        address,
        LinkConfig {
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(100),
        },
    ))
    .await
    .unwrap();

    let mut old = tokio::time::timeout(WAIT, conns.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(old.authorization, "Bearer tok-1");
    assert!(matches!(next_up(&mut old).await.body, Some(Up::Hello(_))));
    welcome(&old, "S-1").await;
    down(&old, lend("C-1", 1)).await;
    assert!(matches!(next_up(&mut old).await.body, Some(Up::Ack(_))));
    let result = next_up(&mut old).await;
    assert!(matches!(result.body, Some(Up::Result(_))));
    // Not receipted: it stays in the outbox.

    // About a second before tok-1 expires, the agent offers tok-2 on the open link; this
    // gateway predates RenewToken and never answers...
    let Some(Up::RenewToken(renew)) = next_up(&mut old).await.body else {
        panic!("the renewal is tried on the open link first")
    };
    assert_eq!(renew.access_token, "tok-2");
    // ...so a second link opens with tok-2...
    let mut new = tokio::time::timeout(WAIT, conns.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(new.authorization, "Bearer tok-2");
    let Some(Up::Hello(hello)) = next_up(&mut new).await.body else {
        panic!("hello first on the new link")
    };
    assert_eq!(hello.last_finished_command_id, "C-1");
    // ...while the old one is still open: no offline moment in between.
    assert!(
        stays_open(&mut old, Duration::from_millis(500)).await,
        "the old link must stay open until the new one is welcomed"
    );

    let replaced = Down::Reconnect(pb::Reconnect {
        reason: pb::ReconnectReason::Replaced as i32,
        message: "a newer link of this kiosk replaced this one".into(),
        // A kiosk that took this as "someone else has my credential" would wait a minute.
        retry_after: Some(prost_types::Duration {
            seconds: 60,
            nanos: 0,
        }),
        gateway_address: String::new(),
    });
    if replaced_before_welcome {
        down(&old, replaced.clone()).await;
        // Let the agent read it while its new link still waits for Welcome.
        tokio::time::sleep(Duration::from_millis(300)).await;
        welcome(&new, "S-2").await;
    } else {
        welcome(&new, "S-2").await;
        down(&old, replaced).await;
    }
    ends(&mut old).await;

    // The new link replays the unreceipted result under its id.
    let replayed = next_up(&mut new).await;
    assert_eq!(
        replayed.message_id, result.message_id,
        "same id on the new link"
    );
    assert_eq!(replayed.body, result.body);
    // The link works, and a resent command is not executed again.
    down(&new, lend("C-1", 2)).await;
    assert!(matches!(next_up(&mut new).await.body, Some(Up::Ack(ref a)) if a.command_id == "C-1"));
    down(&new, lend("C-2", 1)).await;
    assert!(matches!(next_up(&mut new).await.body, Some(Up::Ack(ref a)) if a.command_id == "C-2"));
    assert!(
        matches!(next_up(&mut new).await.body, Some(Up::Result(ref r)) if r.command_id == "C-2")
    );
    assert_eq!(agent.bays().eject_count("D-1"), 1);
    assert_eq!(agent.bays().eject_count("D-2"), 1);
    // No reconnect loop: no third link.
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), conns.recv())
            .await
            .is_err(),
        "no further link after the handover"
    );
    assert!(stays_open(&mut new, Duration::from_millis(200)).await);

    tokio::time::timeout(WAIT, agent.stop())
        .await
        .expect("stops in time");
    server.abort();
}

/// Token renewal on the open link: the agent sends RenewToken with its new token, and once the
/// gateway answers TokenRenewal the link simply lives on: no second link, no new Hello.
#[tokio::test]
async fn a_renewal_answered_on_the_open_link_opens_no_new_link() {
    let (address, mut conns, server) = serve(chrono::Duration::seconds(5), None).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = sneakernet_kiosk_agent::start(config_for(
        dir.path(),
        address,
        LinkConfig {
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(100),
        },
    ))
    .await
    .unwrap();
    let mut link = tokio::time::timeout(WAIT, conns.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(link.authorization, "Bearer tok-1");
    assert!(matches!(next_up(&mut link).await.body, Some(Up::Hello(_))));
    welcome(&link, "S-1").await;

    let Some(Up::RenewToken(renew)) = next_up(&mut link).await.body else {
        panic!("the renewal goes on the open link")
    };
    assert_eq!(renew.access_token, "tok-2");
    let expires = chrono::Utc::now() + chrono::Duration::hours(1);
    down(
        &link,
        Down::TokenRenewal(pb::TokenRenewal {
            expires_at: Some(prost_types::Timestamp {
                seconds: expires.timestamp(),
                nanos: 0,
            }),
            error: String::new(),
        }),
    )
    .await;
    // Past tok-1's expiry and any fallback wait: still the one link, still working.
    assert!(
        tokio::time::timeout(Duration::from_secs(3), conns.recv())
            .await
            .is_err(),
        "no second link after an answered renewal"
    );
    down(&link, lend("C-1", 1)).await;
    assert!(matches!(next_up(&mut link).await.body, Some(Up::Ack(ref a)) if a.command_id == "C-1"));

    tokio::time::timeout(WAIT, agent.stop())
        .await
        .expect("stops in time");
    server.abort();
}

#[tokio::test]
async fn renewal_opens_the_new_link_first_replaced_before_welcome() {
    renewal(true).await;
}

#[tokio::test]
async fn renewal_opens_the_new_link_first_replaced_after_welcome() {
    renewal(false).await;
}

#[tokio::test]
async fn a_link_ended_unauthenticated_logs_in_again_and_reconnects_promptly() {
    let (address, mut conns, server) = serve(chrono::Duration::hours(1), None).await;
    let dir = tempfile::tempdir().unwrap();
    // A backoff this long would make the test time out.
    let agent = sneakernet_kiosk_agent::start(config_for(
        dir.path(),
        address,
        LinkConfig {
            backoff_initial: Duration::from_secs(30),
            backoff_max: Duration::from_secs(60),
        },
    ))
    .await
    .unwrap();
    let mut first = tokio::time::timeout(WAIT, conns.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.authorization, "Bearer tok-1");
    assert!(matches!(next_up(&mut first).await.body, Some(Up::Hello(_))));
    welcome(&first, "S-1").await;
    // The token expired: the gateway ends the link.
    first
        .down
        .send(Err(Status::unauthenticated("the access token expired")))
        .await
        .unwrap();
    let mut second = tokio::time::timeout(Duration::from_secs(3), conns.recv())
        .await
        .expect("reconnected promptly, not after a backoff")
        .unwrap();
    assert_eq!(second.authorization, "Bearer tok-2", "logged in again");
    assert!(matches!(
        next_up(&mut second).await.body,
        Some(Up::Hello(_))
    ));
    tokio::time::timeout(WAIT, agent.stop())
        .await
        .expect("stops in time");
    server.abort();
}

/// The content service, as far as a kiosk uses it: one READY package, served in 256 KiB
/// pieces.
struct FakeContent {
    manifest: content::Manifest,
    chunks: std::collections::HashMap<Vec<u8>, Vec<u8>>,
}

/// What DownloadChunks answers with.
type ChunkStream = Pin<
    Box<dyn tokio_stream::Stream<Item = Result<content::DownloadChunksResponse, Status>> + Send>,
>;

#[tonic::async_trait]
impl content::content_service_server::ContentService for FakeContent {
    async fn get_manifest(
        &self,
        request: Request<content::GetManifestRequest>,
    ) -> Result<Response<content::GetManifestResponse>, Status> {
        if request.into_inner().package_id != "P1" {
            return Err(Status::not_found("no such package"));
        }
        Ok(Response::new(content::GetManifestResponse {
            manifest: Some(self.manifest.clone()),
        }))
    }

    async fn download_chunks(
        &self,
        request: Request<content::DownloadChunksRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let request = request.into_inner();
        let mut pieces = Vec::new();
        for (i, hash) in request.chunk_hashes.iter().enumerate() {
            let bytes = self
                .chunks
                .get(hash)
                .ok_or_else(|| Status::not_found("no such chunk"))?;
            let mut at = if i == 0 {
                request.first_chunk_offset as usize
            } else {
                0
            };
            while at < bytes.len() {
                let end = (at + (256 << 10)).min(bytes.len());
                pieces.push(Ok(content::DownloadChunksResponse {
                    hash: hash.clone(),
                    offset: at as u64,
                    data: bytes[at..end].to_vec(),
                    last: end == bytes.len(),
                }));
                at = end;
            }
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(pieces))))
    }
}

/// A package of one 2.5 MiB file in 1 MiB chunks: its manifest and its chunks by hash.
fn package() -> FakeContent {
    const MIB: usize = 1 << 20;
    let bytes: Vec<u8> = (0..5 * MIB / 2).map(|i| (i * 31 % 251) as u8).collect();
    let chunks: std::collections::HashMap<Vec<u8>, Vec<u8>> = bytes
        .chunks(MIB)
        .map(|c| (blake3::hash(c).as_bytes().to_vec(), c.to_vec()))
        .collect();
    let package = content::Package {
        package_id: "P1".into(),
        title: "Film".into(),
        state: content::PackageState::Ready as i32,
        total_size_bytes: bytes.len() as u64,
        file_count: 1,
        chunk_size_bytes: MIB as u32,
        ..content::Package::default()
    };
    FakeContent {
        manifest: content::Manifest {
            package: Some(package),
            chunk_size_bytes: MIB as u32,
            files: vec![content::ManifestFile {
                path: "film/main.bin".into(),
                size_bytes: bytes.len() as u64,
                blake3: blake3::hash(&bytes).as_bytes().to_vec(),
                chunk_hashes: bytes
                    .chunks(MIB)
                    .map(|c| blake3::hash(c).as_bytes().to_vec())
                    .collect(),
            }],
        },
        chunks,
    }
}

#[tokio::test]
async fn a_provision_over_the_link_reports_progress_then_its_result() {
    let (address, mut conns, server) = serve(chrono::Duration::hours(1), Some(package())).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(dir.path(), address, LinkConfig::default());
    if let Some(simulation) = config.simulation.as_mut() {
        simulation.bays.push(SimBayConfig {
            id: "A03".into(),
            item: Some(SimItemConfig {
                capacity_bytes: Some(8 << 20),
                content_package_id: None,
                ..drive("D-3")
            }),
        });
    }
    let agent = sneakernet_kiosk_agent::start(config).await.unwrap();
    let mut conn = tokio::time::timeout(WAIT, conns.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(next_up(&mut conn).await.body, Some(Up::Hello(_))));
    welcome(&conn, "S-1").await;
    let deadline = chrono::Utc::now() + chrono::Duration::minutes(5);
    down(
        &conn,
        Down::Command(pb::Command {
            command_id: "C-prov".into(),
            deadline: Some(prost_types::Timestamp {
                seconds: deadline.timestamp(),
                nanos: 0,
            }),
            payload: Some(pb::CommandPayload {
                kind: Some(pb::command_payload::Kind::Provision(pb::ProvisionCommand {
                    order_id: "O-9".into(),
                    package_id: "P1".into(),
                    capacity_bytes: 8 << 20,
                    write_protect: true,
                })),
            }),
            attempt: 1,
        }),
    )
    .await;

    let mut phases = Vec::new();
    let result = loop {
        match next_up(&mut conn).await.body {
            Some(Up::Progress(progress)) => {
                assert_eq!(progress.command_id, "C-prov");
                if phases.last() != Some(&progress.phase) {
                    phases.push(progress.phase);
                }
            }
            Some(Up::Result(result)) => break result,
            _ => {}
        }
    };
    let Some(pb::command_result::Outcome::Provision(done)) = result.outcome else {
        panic!("{result:?}");
    };
    assert_eq!(done.item_id, "D-3");
    assert_eq!(done.bytes_written, 5 << 19);
    assert_eq!(done.bytes_downloaded, 5 << 19);
    assert_eq!(
        phases,
        [
            pb::ProgressPhase::Downloading as i32,
            pb::ProgressPhase::Copying as i32,
            pb::ProgressPhase::Verifying as i32,
            pb::ProgressPhase::Configuring as i32,
        ]
    );
    assert_eq!(agent.cache_stats().inserted, 3, "three chunks fetched once");
    let written = std::fs::read(agent.bays().drive_dir("D-3").join("film/main.bin")).unwrap();
    assert_eq!(written.len(), 5 << 19);
    agent.stop().await;
    server.abort();
}
