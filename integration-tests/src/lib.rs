//! The harness every whole-system test uses: start real nodes (in-process on port 0, or the
//! binary as a child process that can be killed), talk to them only through gRPC, and run the
//! same test on every database backend.
//!
//! Backends: SQLite always; Postgres when `DATABASE_URL` is set (each sandbox gets its own
//! schemas, so tests run in parallel). Without `DATABASE_URL` the Postgres run is skipped with
//! a loud message, and with `TEST_REQUIRE_SERVICES=1` (CI sets it) the skip is a failure.

pub mod content;
pub mod fake_kiosk;
pub mod hand_kiosk;
pub mod kiosk;
pub mod nearby;
pub mod proxy;
pub mod raw_rpc;
pub mod rentals;
pub mod reservations;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use sneakernet::{Node, NodeRole};
use sneakernet_proto::auth::v1 as auth;
use sneakernet_proto::auth::v1::auth_service_client::AuthServiceClient;
use sneakernet_runtime::Shutdown;
use sneakernet_runtime::clock::OffsetClock;
use sneakernet_runtime::config::Config;
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic::transport::Channel;

pub use sneakernet_runtime::testing::{
    Backend, REQUIRE_SERVICES_VAR, backends, skip_or_fail, unique_schema_prefix,
};

/// A TCP port free on 127.0.0.1 now, for a child process that must keep its address across a
/// restart (another process may take it in between; tests accept that small race).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

/// The Redis URL, if this run has one (`REDIS_URL`); a loud skip (or a failure under
/// `TEST_REQUIRE_SERVICES=1`) otherwise.
pub fn redis_url() -> Option<String> {
    match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            skip_or_fail("Redis", "REDIS_URL");
            None
        }
    }
}

/// A configuration for a test node on `backend`: port 0, its own data dir, its own schemas.
pub fn test_config(backend: &Backend, data_dir: &Path) -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().expect("loopback address"),
        data_dir: data_dir.to_owned(),
        shutdown_grace: Duration::from_secs(5),
        ..Config::default()
    };
    // Tests reconnect one kiosk many times on purpose (cuts, replacements, restarts): the
    // per-device open budget is tested where it is configured (tests/link_budgets.rs).
    config.gateway.link_open_burst = 1000;
    backend.configure(&mut config);
    config
}

/// A whole system in this process: every role on one ephemeral port, with an adjustable clock.
pub struct Sandbox {
    /// The backend it runs on.
    pub backend: Backend,
    /// Its configuration (with the real listen address filled in after start).
    pub config: Config,
    /// The node's clock; move it to issue tokens "in the past" or "in the future".
    pub clock: OffsetClock,
    node: Option<Node>,
    _data_dir: tempfile::TempDir,
}

impl Sandbox {
    /// Starts every role with the test defaults.
    pub async fn start(backend: &Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts every role after `adjust` has changed the configuration.
    pub async fn start_with(backend: &Backend, adjust: impl FnOnce(&mut Config)) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(backend, data_dir.path());
        adjust(&mut config);
        let clock = OffsetClock::new();
        let node = sneakernet::node::start(
            config.clone(),
            &NodeRole::ALL,
            Shutdown::new(),
            Some(std::sync::Arc::new(clock.clone())),
        )
        .await
        .unwrap_or_else(|e| panic!("sandbox on {backend} failed to start: {e}"));
        config.listen = node.address;
        eprintln!("sandbox on {backend} listening on {}", node.address);
        Self {
            backend: backend.clone(),
            config,
            clock,
            node: Some(node),
            _data_dir: data_dir,
        }
    }

    /// The node (for its metrics address and verifier).
    pub fn node(&self) -> &Node {
        self.node.as_ref().expect("sandbox is running")
    }

    /// A channel to the node.
    pub async fn channel(&self) -> Channel {
        connect(self.node().address).await
    }

    /// An AuthService client.
    pub async fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel().await)
    }

    /// Registers `email` with a valid password and returns the session.
    pub async fn register(&self, email: &str) -> auth::Session {
        self.auth()
            .await
            .register(auth::RegisterRequest {
                email: email.into(),
                password: PASSWORD.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("register {email}: {s:?}"))
            .into_inner()
            .session
            .expect("session")
    }

    /// Creates an operator through the bootstrap path and logs in as it.
    pub async fn operator(&self) -> auth::Session {
        operator_session(&self.channel().await, &self.config).await
    }

    /// The current signing key (kid and private seed), read from the auth store: lets tests
    /// forge tokens that differ from real ones in exactly one claim.
    pub async fn signing_key(&self) -> (String, [u8; 32]) {
        use sea_orm::EntityTrait;
        let (db, _) = sneakernet_runtime::db::open(&self.config, sneakernet_auth::SERVICE)
            .await
            .expect("auth db");
        let rows = sneakernet_auth::entity::signing_key::Entity::find()
            .all(&db)
            .await
            .expect("keys");
        let row = rows
            .iter()
            .find(|r| r.retired_at.is_none())
            .expect("an active key");
        let key = sneakernet_auth::tokens::KeyMaterial::from_row(row).expect("key");
        (key.kid, key.seed)
    }

    /// An access token for kiosk `kiosk_id`: an operator issues its credential, the kiosk
    /// logs in with it.
    pub async fn kiosk_token(&self, kiosk_id: &str) -> String {
        let secret = self.kiosk_secret(kiosk_id).await;
        self.auth()
            .await
            .kiosk_login(auth::KioskLoginRequest {
                kiosk_id: kiosk_id.into(),
                secret,
            })
            .await
            .expect("kiosk login")
            .into_inner()
            .access_token
    }

    /// An access token for service `service` (`orders`, `content`): `operator` issues its
    /// credential, the service logs in with it.
    pub async fn service_token(&self, operator: &str, service: &str) -> String {
        let mut auth = self.auth().await;
        let secret = auth
            .issue_service_credential(authed(
                auth::IssueServiceCredentialRequest {
                    service: service.into(),
                },
                operator,
            ))
            .await
            .unwrap_or_else(|s| panic!("issue a {service} credential: {s:?}"))
            .into_inner()
            .secret;
        auth.service_login(auth::ServiceLoginRequest {
            service: service.into(),
            secret,
        })
        .await
        .unwrap_or_else(|s| panic!("{service} login: {s:?}"))
        .into_inner()
        .access_token
    }

    /// The secret of a fresh credential for drive `item_id`'s remote link module, issued by a
    /// new operator.
    pub async fn drive_secret(&self, item_id: &str) -> String {
        let operator = self.operator().await;
        issue_drive_secret(self.channel().await, &operator.access_token, item_id).await
    }

    /// An access token for drive `item_id`'s module: an operator issues its credential, the
    /// module logs in with it (DriveLogin).
    pub async fn drive_token(&self, item_id: &str) -> String {
        let secret = self.drive_secret(item_id).await;
        self.auth()
            .await
            .drive_login(auth::DriveLoginRequest {
                item_id: item_id.into(),
                secret,
            })
            .await
            .expect("drive login")
            .into_inner()
            .access_token
    }

    /// The secret of a fresh credential for kiosk `kiosk_id`, issued by a new operator.
    pub async fn kiosk_secret(&self, kiosk_id: &str) -> String {
        let operator = self.operator().await;
        issue_kiosk_secret(self.channel().await, &operator.access_token, kiosk_id).await
    }

    /// Stops the node and starts a new one on the same data (same directory or schemas), as a
    /// process restart would.
    pub async fn restart(mut self) -> Self {
        if let Some(node) = self.node.take() {
            node.stop();
            node.wait().await.expect("node stopped cleanly");
        }
        let mut config = self.config.clone();
        config.listen = "127.0.0.1:0".parse().expect("loopback address");
        let node = sneakernet::node::start(
            config.clone(),
            &NodeRole::ALL,
            Shutdown::new(),
            Some(std::sync::Arc::new(self.clock.clone())),
        )
        .await
        .unwrap_or_else(|e| panic!("sandbox on {} failed to restart: {e}", self.backend));
        config.listen = node.address;
        self.config = config;
        self.node = Some(node);
        self
    }

    /// Stops the node and waits for it; drops the Postgres schemas it created.
    pub async fn stop(mut self) {
        if let Some(node) = self.node.take() {
            node.stop();
            node.wait().await.expect("node stopped cleanly");
        }
        drop_schemas(&self.config).await;
    }
}

/// Drops every schema with the config's prefix (Postgres only).
pub async fn drop_schemas(config: &Config) {
    use sea_orm::{ConnectionTrait, Database};
    let (Some(url), prefix) = (&config.database_url, &config.database_schema_prefix) else {
        return;
    };
    if prefix.is_empty() {
        return;
    }
    let Ok(db) = Database::connect(url.as_str()).await else {
        return;
    };
    for service in ["auth", "orders", "content", "gateway"] {
        let _ = db
            .execute_unprepared(&format!(
                "DROP SCHEMA IF EXISTS \"{prefix}{service}\" CASCADE"
            ))
            .await;
    }
}

/// A redis-server of the test's own on a free loopback port, so the test can stop it.
pub struct RedisServer {
    process: std::process::Child,
    /// Its URL.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one, or returns `None` (after a loud skip, or a failure under
    /// `TEST_REQUIRE_SERVICES=1`) when this machine has no `redis-server`.
    pub async fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let dir = tempfile::tempdir().ok()?;
        let spawned = std::process::Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(process) = spawned else {
            skip_or_fail("Redis", "a redis-server binary on PATH");
            return None;
        };
        let server = Self {
            process,
            url: format!("redis://127.0.0.1:{port}"),
            _dir: dir,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not start on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Some(server)
    }

    /// Kills it (as an outage would).
    pub fn stop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Link timing for tests: fast heartbeats and timeouts so liveness is observable in seconds.
/// `offline_after` is 15 heartbeats: on a loaded CI machine a link's task can stall for over
/// a second, and a link cut by that is a flaky test, not a finding.
pub fn fast_links(config: &mut Config) {
    config.gateway.heartbeat_interval = Duration::from_millis(200);
    config.gateway.offline_after = Duration::from_secs(3);
    config.gateway.command_poll_interval = Duration::from_millis(100);
    config.gateway.expiry_sweep_interval = Duration::from_millis(100);
    config.gateway.liveness_flush_interval = Duration::from_millis(300);
    config.gateway.reconcile_interval = Duration::from_millis(300);
}

/// Creates an operator through the bootstrap path (written straight into the auth database
/// of `config`, so it works against a child process too) and logs in as it.
pub async fn operator_session(channel: &Channel, config: &Config) -> auth::Session {
    let email = format!("op-{}@example.com", uuid::Uuid::new_v4().simple());
    let created = sneakernet_auth::create_operator(config, &email, PASSWORD)
        .await
        .expect("create operator");
    assert!(matches!(
        created,
        sneakernet_auth::OperatorCreated::Created(_)
    ));
    AuthServiceClient::new(channel.clone())
        .login(auth::LoginRequest {
            email,
            password: PASSWORD.into(),
        })
        .await
        .expect("operator login")
        .into_inner()
        .session
        .expect("session")
}

/// Issues a credential for `kiosk_id` with an operator's token; returns its secret.
pub async fn issue_kiosk_secret(channel: Channel, operator_token: &str, kiosk_id: &str) -> String {
    AuthServiceClient::new(channel)
        .issue_kiosk_credential(authed(
            auth::IssueKioskCredentialRequest {
                kiosk_id: kiosk_id.into(),
            },
            operator_token,
        ))
        .await
        .expect("issue kiosk credential")
        .into_inner()
        .secret
}

/// Issues a credential for drive `item_id`'s module with an operator's token; returns its
/// secret.
pub async fn issue_drive_secret(channel: Channel, operator_token: &str, item_id: &str) -> String {
    AuthServiceClient::new(channel)
        .issue_drive_credential(authed(
            auth::IssueDriveCredentialRequest {
                item_id: item_id.into(),
            },
            operator_token,
        ))
        .await
        .expect("issue drive credential")
        .into_inner()
        .secret
}

/// `main` of the programs tests run as child processes: arms `FAILPOINTS`, runs `program` on
/// a multi-threaded runtime, and turns an error into one `error: ...` line and the exit code
/// `sneakernet` documents for it (1 unless the error carries another).
pub fn child_main<F>(program: F) -> std::process::ExitCode
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let _scenario = fail::FailScenario::setup();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(program) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", format!("{error:#}").replace('\n', "; "));
            std::process::ExitCode::from(sneakernet::cli::exit_code(&error))
        }
    }
}

/// A password every test account uses.
pub const PASSWORD: &str = "correct horse battery staple";

/// Connects to a node, retrying briefly while it starts.
pub async fn connect(address: std::net::SocketAddr) -> Channel {
    let endpoint = Channel::from_shared(format!("http://{address}")).expect("endpoint");
    let mut last = None;
    for _ in 0..50 {
        match endpoint.connect().await {
            Ok(channel) => return channel,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot connect to {address}: {last:?}");
}

/// A request carrying `token` as its bearer token.
pub fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    request
}

/// The `sneakernet` binary built with failpoints, for child-process tests. A macro because
/// cargo tells only test targets (not this library) where the binary is.
#[macro_export]
macro_rules! binary {
    () => {
        std::path::Path::new(env!("CARGO_BIN_EXE_sneakernet-under-test"))
    };
}

/// A `sneakernet standalone` child process.
pub struct Child {
    /// The process.
    pub process: tokio::process::Child,
    /// The address it printed.
    pub address: std::net::SocketAddr,
}

impl Child {
    /// Starts `sneakernet standalone` with `env` (plus `config`'s database settings) and waits
    /// for the line announcing its address.
    pub async fn standalone(
        binary: &Path,
        config: &Config,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::standalone_at(binary, config, "127.0.0.1:0", env).await
    }

    /// Like [`Child::standalone`], listening on `listen` (a restart keeps its address).
    pub async fn standalone_at(
        binary: &Path,
        config: &Config,
        listen: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut args = vec!["standalone", "--listen", listen, "--data-dir"];
        let data_dir = config.data_dir.to_string_lossy();
        args.push(&data_dir);
        Self::spawn(binary, config, &args, env).await
    }

    /// `sneakernet standalone --without-kiosks` (no simulated fleet, no standalone accounts)
    /// on a free port.
    pub async fn standalone_without_kiosks(
        binary: &Path,
        config: &Config,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let data_dir = config.data_dir.to_string_lossy();
        let args = [
            "standalone",
            "--without-kiosks",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &data_dir,
        ];
        Self::spawn(binary, config, &args, env).await
    }

    /// `sneakernet serve --role <roles>` on a free port, with `config`'s data dir and
    /// database, e.g. one more gateway replica (give it `SNEAKERNET_AUTH__URL`).
    pub async fn serve(
        binary: &Path,
        config: &Config,
        roles: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let data_dir = config.data_dir.to_string_lossy().into_owned();
        let mut all = vec![
            ("SNEAKERNET_LISTEN", "127.0.0.1:0"),
            ("SNEAKERNET_DATA_DIR", data_dir.as_str()),
        ];
        all.extend_from_slice(env);
        Self::spawn(binary, config, &["serve", "--role", roles], &all).await
    }

    async fn spawn(
        binary: &Path,
        config: &Config,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut command = tokio::process::Command::new(binary);
        command
            .args(args)
            .env("SNEAKERNET_LOG__FILTER", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(url) = &config.database_url {
            command.env("SNEAKERNET_DATABASE_URL", url);
            command.env(
                "SNEAKERNET_DATABASE_SCHEMA_PREFIX",
                &config.database_schema_prefix,
            );
        }
        for (k, v) in env {
            command.env(k, v);
        }
        let mut process = command.spawn().context("spawn sneakernet")?;
        let stdout = process.stdout.take().context("stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let address = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.strip_prefix("sneakernet: serving ")
                    && let Some((_, address)) = rest.rsplit_once(" on ")
                {
                    return Ok::<_, anyhow::Error>(address.parse()?);
                }
            }
            bail!("sneakernet exited before announcing its address")
        })
        .await
        .context("sneakernet did not announce its address within 60s")??;
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self { process, address })
    }

    /// Kills the process with SIGKILL (no shutdown path runs) and reaps it.
    pub async fn kill(mut self) {
        self.process.kill().await.expect("kill child");
    }
}

/// Runs the binary with `args` and `env` to completion; returns (exit code, stderr).
pub async fn run_binary(
    binary: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Option<i32>, String) {
    let mut command = tokio::process::Command::new(binary);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("binary finished within 60s")
        .expect("binary ran");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Polls `condition` every 20 ms until it holds, failing after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
