//! The harness of the content service's tests: the content role alone, in-process on port 0,
//! with an in-process token signer standing in for the auth service, on SQLite and (when
//! `DATABASE_URL` is set) Postgres.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sneakernet_content::ContentRole;
use sneakernet_content::domain::ContentHash;
use sneakernet_proto::content::v1 as pb;
use sneakernet_proto::content::v1::content_service_client::ContentServiceClient;
use sneakernet_runtime::Role;
use sneakernet_runtime::Shutdown;
use sneakernet_runtime::caller::{Claims, PublicKey};
use sneakernet_runtime::clock::OffsetClock;
use sneakernet_runtime::config::Config;
use sneakernet_runtime::role::{RoleContext, ServiceRole};
use sneakernet_runtime::server::GrpcServices;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use sneakernet_runtime::testing::Backend;

/// The signing key every test token is signed with.
const SEED: [u8; 32] = [42; 32];
const KID: &str = "content-test";

/// A running content service.
pub struct Server {
    /// Its configuration (data dir, schemas, object store).
    pub config: Config,
    /// Its clock: move it to let upload claims lapse.
    pub clock: OffsetClock,
    address: std::net::SocketAddr,
    shutdown: Shutdown,
    _data_dir: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts the content role on `backend` with a fresh data dir (and fresh schemas).
    pub async fn start(backend: &Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts it after `adjust` changed the configuration.
    pub async fn start_with(backend: &Backend, adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config {
            listen: "127.0.0.1:0".parse().expect("address"),
            data_dir: dir.path().to_owned(),
            shutdown_grace: Duration::from_secs(2),
            ..Config::default()
        };
        backend.configure(&mut config);
        adjust(&mut config);
        let mut server = Self::run(config).await;
        server._data_dir = Some(dir);
        server
    }

    async fn run(config: Config) -> Self {
        let shutdown = Shutdown::new();
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let clock = OffsetClock::new();
        let mut ctx = RoleContext::with_clock(
            config.clone(),
            shutdown.clone(),
            std::sync::Arc::new(clock.clone()),
        );
        ctx.local_address = Some(address);
        ctx.local_roles = vec![sneakernet_content::SERVICE];
        let mut services = GrpcServices::new();
        ContentRole::start(&ctx, &mut services)
            .await
            .unwrap_or_else(|e| panic!("content role failed to start: {e}"));
        let signing = SigningKey::from_bytes(&SEED);
        ctx.verifier.install_keys(&[PublicKey {
            kid: KID.into(),
            ed25519: signing.verifying_key().to_bytes(),
            retired_at: None,
        }]);
        let stop = shutdown.clone();
        let verifier = ctx.verifier.clone();
        let grace = config.shutdown_grace;
        tokio::spawn(async move {
            if let Err(error) =
                sneakernet_runtime::server::serve(listener, services, verifier, None, grace, stop)
                    .await
            {
                eprintln!("content server failed: {error}");
            }
        });
        Self {
            config,
            clock,
            address,
            shutdown,
            _data_dir: None,
        }
    }

    /// Another replica of this server: its own process state, the same database and object
    /// store. Drop it before this one.
    pub async fn replica(&self) -> Self {
        let mut config = self.config.clone();
        config.listen = "127.0.0.1:0".parse().expect("address");
        Self::run(config).await
    }

    /// Stops this server and starts another on the same data dir and database: what a process
    /// restart keeps, the new one has.
    pub async fn restart(mut self) -> Self {
        self.shutdown.trigger();
        self.shutdown.wait(Duration::from_secs(5)).await;
        let data_dir = self._data_dir.take();
        let mut config = self.config.clone();
        config.listen = "127.0.0.1:0".parse().expect("address");
        let mut next = Self::run(config).await;
        next._data_dir = data_dir;
        next
    }

    /// A client of the service.
    pub async fn client(&self) -> ContentServiceClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.address))
            .expect("url")
            .connect()
            .await
            .expect("connect");
        ContentServiceClient::new(channel)
    }

    /// Where the local object store keeps a chunk: `<local_dir>/chunks/<hex[0..2]>/<hex>`.
    pub fn chunk_file(&self, hash: ContentHash) -> PathBuf {
        self.config
            .content
            .local_dir(&self.config.data_dir)
            .join(sneakernet_content::objects::chunk_key(hash))
    }

    /// The local object store's directory.
    pub fn objects_dir(&self) -> PathBuf {
        self.config.content.local_dir(&self.config.data_dir)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// A valid access token for a caller of `role` (a fixed subject per role).
pub fn token(role: Role) -> String {
    let sub = match role {
        Role::Kiosk => "K-TEST-1".to_owned(),
        Role::Service => "orders".to_owned(),
        Role::Drive => "D-TEST-1".to_owned(),
        Role::User => "00000000-0000-4000-8000-000000000001".to_owned(),
        Role::Operator => "00000000-0000-4000-8000-000000000002".to_owned(),
    };
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        sub,
        role,
        aud: "sneakernet".into(),
        iss: "sneakernet-auth".into(),
        exp: now + 3600,
        nbf: now - 10,
        iat: now,
        jti: uuid::Uuid::new_v4().to_string(),
    };
    let der = SigningKey::from_bytes(&SEED).to_pkcs8_der().expect("pkcs8");
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(KID.into());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(der.as_bytes())).expect("sign")
}

/// `message` with `token` as its bearer (none when `None`).
pub fn as_caller<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
    }
    request
}

/// `message` as an operator.
pub fn op<T>(message: T) -> Request<T> {
    as_caller(message, Some(&token(Role::Operator)))
}

/// `message` as a kiosk.
pub fn kiosk<T>(message: T) -> Request<T> {
    as_caller(message, Some(&token(Role::Kiosk)))
}

/// `n` bytes no other call of this function with another `seed` repeats.
pub fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state & 0xff) as u8
        })
        .collect()
}

/// A file declaration for `content`.
pub fn declare(path: &str, content: &[u8]) -> pb::FileDeclaration {
    pb::FileDeclaration {
        path: path.into(),
        size_bytes: content.len() as u64,
        blake3: ContentHash::of(content).to_wire(),
    }
}

/// The chunk hashes of `content` cut at `chunk_size`.
pub fn chunk_hashes(content: &[u8], chunk_size: usize) -> Vec<Vec<u8>> {
    content
        .chunks(chunk_size)
        .map(|chunk| ContentHash::of(chunk).to_wire())
        .collect()
}

/// Declares a package of `files` as an operator; returns it.
pub async fn create(
    client: &mut ContentServiceClient<Channel>,
    title: &str,
    files: &[(&str, &[u8])],
) -> pb::Package {
    client
        .create_package(op(pb::CreatePackageRequest {
            title: title.into(),
            description: format!("{title}, for tests"),
            files: files.iter().map(|(p, c)| declare(p, c)).collect(),
            idempotency_key: uuid::Uuid::new_v4().to_string(),
        }))
        .await
        .unwrap_or_else(|s| panic!("create {title}: {s:?}"))
        .into_inner()
        .package
        .expect("package")
}

/// The header of an upload of `content` as `path` of `package` from `offset`.
pub fn header(package: &str, path: &str, content: &[u8], offset: u64) -> pb::UploadFileRequest {
    pb::UploadFileRequest {
        part: Some(pb::upload_file_request::Part::Header(pb::UploadHeader {
            package_id: package.into(),
            path: path.into(),
            size_bytes: content.len() as u64,
            blake3: ContentHash::of(content).to_wire(),
            offset,
        })),
    }
}

/// A data message.
pub fn data(bytes: &[u8]) -> pb::UploadFileRequest {
    pb::UploadFileRequest {
        part: Some(pb::upload_file_request::Part::Data(bytes.to_vec())),
    }
}

/// One upload stream of `messages` as an operator, closed after the last.
pub async fn upload_messages(
    client: &mut ContentServiceClient<Channel>,
    messages: Vec<pb::UploadFileRequest>,
) -> Result<pb::UploadFileResponse, Status> {
    client
        .upload_file(op(tokio_stream::iter(messages)))
        .await
        .map(tonic::Response::into_inner)
}

/// Uploads `content[from..to]` of `path` in 1 MiB messages, in one stream closed after it.
pub async fn upload_range(
    client: &mut ContentServiceClient<Channel>,
    package: &str,
    path: &str,
    content: &[u8],
    from: usize,
    to: usize,
) -> Result<pb::UploadFileResponse, Status> {
    let mut messages = vec![header(package, path, content, from as u64)];
    messages.extend(content[from..to].chunks(1024 * 1024).map(data));
    upload_messages(client, messages).await
}

/// An upload stream the test feeds by hand; dropping it breaks the stream.
pub struct OpenUpload {
    /// Sends the next message.
    pub tx: mpsc::Sender<pb::UploadFileRequest>,
    /// The call's answer.
    pub answer: tokio::task::JoinHandle<Result<pb::UploadFileResponse, Status>>,
}

/// Opens an upload stream as an operator; the caller sends the messages.
pub async fn open_upload(client: &ContentServiceClient<Channel>) -> OpenUpload {
    let (tx, rx) = mpsc::channel(4);
    let mut client = client.clone();
    let answer = tokio::spawn(async move {
        client
            .upload_file(op(ReceiverStream::new(rx)))
            .await
            .map(tonic::Response::into_inner)
    });
    OpenUpload { tx, answer }
}

/// The bytes of each file stored, by path.
pub async fn status(
    client: &mut ContentServiceClient<Channel>,
    package: &str,
) -> pb::GetUploadStatusResponse {
    client
        .get_upload_status(op(pb::GetUploadStatusRequest {
            package_id: package.into(),
        }))
        .await
        .expect("status")
        .into_inner()
}

/// Bytes stored of `path`.
pub async fn stored(client: &mut ContentServiceClient<Channel>, package: &str, path: &str) -> u64 {
    status(client, package)
        .await
        .files
        .iter()
        .find(|f| f.path == path)
        .map(|f| f.bytes_received)
        .expect("file in status")
}

/// Uploads the rest of `path` from what the server says it has, the way a client resumes: an
/// earlier broken stream may still hold the file for a moment (ABORTED), so retry that.
pub async fn resume(
    client: &mut ContentServiceClient<Channel>,
    package: &str,
    path: &str,
    content: &[u8],
) -> pb::UploadFileResponse {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let from = stored(client, package, path).await as usize;
        match upload_range(client, package, path, content, from, content.len()).await {
            Err(status)
                if status.code() == Code::Aborted && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other.unwrap_or_else(|s| panic!("resume {path}: {s:?}")),
        }
    }
}

/// Every piece DownloadChunks streams for `hashes` (or the status it ended with).
pub async fn download(
    client: &mut ContentServiceClient<Channel>,
    request: Request<pb::DownloadChunksRequest>,
) -> (Vec<pb::DownloadChunksResponse>, Option<Status>) {
    let mut stream = match client.download_chunks(request).await {
        Ok(stream) => stream.into_inner(),
        Err(status) => return (Vec::new(), Some(status)),
    };
    let mut pieces = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(piece)) => pieces.push(piece),
            Ok(None) => return (pieces, None),
            Err(status) => return (pieces, Some(status)),
        }
    }
}

/// A DownloadChunks request.
pub fn chunks_request(
    package: &str,
    hashes: Vec<Vec<u8>>,
    offset: u64,
) -> pb::DownloadChunksRequest {
    pb::DownloadChunksRequest {
        package_id: package.into(),
        chunk_hashes: hashes,
        first_chunk_offset: offset,
    }
}

/// Asserts `result` failed with `code`, and returns its message.
pub fn expect_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> String {
    match result {
        Err(status) if status.code() == code => status.message().to_owned(),
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

/// Asserts a download ended with `code` (rather than completing), and returns its message.
pub fn ended_with(end: Option<Status>, code: Code) -> String {
    expect_code(end.map_or(Ok(()), Err), code)
}

/// Overwrites one byte of a file (a corrupted stored chunk).
pub fn corrupt(path: &Path) {
    let mut bytes = std::fs::read(path).expect("stored chunk");
    bytes[0] ^= 0xff;
    std::fs::write(path, bytes).expect("corrupt chunk");
}
