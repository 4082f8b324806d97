//! Typed configuration: defaults, then an optional TOML file, then `SNEAKERNET_*` environment
//! variables (nested keys joined by `__`, e.g. `SNEAKERNET_AUTH__ACCESS_TOKEN_TTL=10m`).
//!
//! Every struct denies unknown fields, so a typo in a key (file or environment) stops startup
//! with an error naming the key instead of silently keeping a default. [`Config::validate`]
//! then checks what serde cannot (URLs, paths, ranges). The README's configuration table lists
//! every key; keep it in step with the doc comments here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The prefix of every environment variable the services read.
pub const ENV_PREFIX: &str = "SNEAKERNET_";

/// Everything a Sneakernet process needs to know at startup.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// gRPC listen address for every role this process serves.
    pub listen: SocketAddr,
    /// Directory for local state: SQLite files of the embedded default, generated secrets.
    pub data_dir: PathBuf,
    /// Database. Unset: one SQLite file per service under `data_dir`. `postgres://...`: one
    /// schema per service in that database.
    pub database_url: Option<String>,
    /// Prefix for the per-service Postgres schemas (`<prefix>auth`, `<prefix>orders`, ...), so
    /// several deployments or test runs can share one database. Lowercase letters, digits, `_`.
    pub database_schema_prefix: String,
    /// Maximum connections in each service's database pool.
    pub database_max_connections: u32,
    /// Redis for presence, routing and shared rate limits. Unset: in-process equivalents
    /// (single-replica deployments and standalone).
    pub redis_url: Option<String>,
    /// Prometheus `/metrics` listen address. Unset: no metrics endpoint.
    pub metrics_listen: Option<SocketAddr>,
    /// How long shutdown waits for in-flight requests and streams before closing them.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Logging.
    pub log: LogConfig,
    /// Tokens and sessions.
    pub auth: AuthConfig,
    /// Rate limits on login, registration and (later) order creation.
    pub rate_limit: RateLimitConfig,
    /// The device gateway's kiosk links.
    pub gateway: GatewayConfig,
    /// The orders service.
    pub orders: OrdersConfig,
    /// The content service: where package bytes live.
    pub content: ContentConfig,
    /// TLS for the gRPC listener. Unset: plaintext (put a TLS-terminating proxy in front).
    pub tls: Option<TlsConfig>,
}

/// How logs are written.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `pretty` for a terminal, `json` for a log collector.
    pub format: LogFormat,
    /// A `tracing` filter directive, e.g. `info` or `info,sneakernet_auth=debug`.
    /// `RUST_LOG`, when set, wins.
    pub filter: String,
}

/// Log output format.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, coloured when the output is a terminal.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Access tokens, refresh tokens and where verifiers get keys.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// gRPC address of the auth service, for processes that do not serve the auth role
    /// themselves: they fetch signing keys from it. Ignored when this process serves auth.
    pub url: Option<String>,
    /// The `aud` claim of access tokens; verifiers reject others.
    pub audience: String,
    /// The `iss` claim of access tokens; verifiers reject others.
    pub issuer: String,
    /// Lifetime of an access token.
    #[serde(with = "humantime_serde")]
    pub access_token_ttl: Duration,
    /// Lifetime of a refresh token (each use rotates it).
    #[serde(with = "humantime_serde")]
    pub refresh_token_ttl: Duration,
    /// How often a remote verifier refreshes the signing keys.
    #[serde(with = "humantime_serde")]
    pub keys_refresh_interval: Duration,
    /// Clock skew tolerated when checking `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub clock_leeway: Duration,
    /// Email of an operator to create at startup if no account has that email. The password
    /// comes from `bootstrap_operator_password_file`; both or neither must be set.
    pub bootstrap_operator_email: Option<String>,
    /// File holding the bootstrap operator's password (e.g. a mounted Kubernetes secret).
    pub bootstrap_operator_password_file: Option<PathBuf>,
    /// File holding the secret the orders or content role logs in with as a service
    /// (AuthService.IssueServiceCredential). Not needed when auth runs in the same process.
    pub service_secret_file: Option<PathBuf>,
}

/// Per-key request budgets. Each is a burst size refilled evenly over `period`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Login attempts allowed per account from one client address per `period` (per account
    /// and address, so someone guessing from elsewhere cannot lock the owner out);
    /// registration attempts per email have a budget of the same size of their own.
    pub attempts_per_account: u32,
    /// Login attempts allowed per client address per `period`.
    pub login_per_address: u32,
    /// Registrations allowed per client address per `period`.
    pub register_per_address: u32,
    /// Orders and deposits an account may create per `period` (CreateRental, PayDeposit;
    /// retries with the same idempotency key count too).
    pub orders_per_account: u32,
    /// The refill period of every budget above.
    #[serde(with = "humantime_serde")]
    pub period: Duration,
    /// Proxies (addresses or CIDR ranges, e.g. an ingress controller's pod network) whose
    /// `x-forwarded-for` is believed: a request arriving from one of them is budgeted by the
    /// client address the proxies name, not by the proxy's. Empty (the default): the header
    /// is ignored, so a client cannot pick its own address. A bare address means just it.
    #[serde(deserialize_with = "networks")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// The orders service: its peers, the deposit, and the timing of rentals and reservations.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OrdersConfig {
    /// gRPC address of the device gateway (commands, kiosk events), for a process serving
    /// orders without the gateway role. Ignored when this process serves the gateway.
    pub gateway_url: Option<String>,
    /// gRPC address of the content service (what a reservation's package is), for a process
    /// serving orders without the content role. Ignored when this process serves content.
    pub content_url: Option<String>,
    /// The deposit an account pays before renting, in minor units of `deposit_currency`.
    pub deposit_minor_units: i64,
    /// ISO 4217 code of the deposit.
    pub deposit_currency: String,
    /// File holding the 32-byte key (64 hex digits) that seals kiosks' QR secrets in the
    /// database. Every orders replica needs the same one. Unset: a key generated on first
    /// start in `data_dir/orders-secret.key` (fine for one process).
    pub secret_key_file: Option<PathBuf>,
    /// How long an offer from ScanKiosk is honoured by CreateRental.
    #[serde(with = "humantime_serde")]
    pub offer_ttl: Duration,
    /// How long a kiosk has to lend after the rental is paid; past it the order fails and is
    /// refunded.
    #[serde(with = "humantime_serde")]
    pub lend_deadline: Duration,
    /// How long a kiosk has to provision a paid reservation (download, copy, verify, pin);
    /// past it the reservation is cancelled and refunded.
    #[serde(with = "humantime_serde")]
    pub provision_deadline: Duration,
    /// How often orders looks for work left over: unsent commands, refunds and fees due,
    /// overdue lends, abandoned payment attempts.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// Longest wait for the payment provider's answer to one call (charge, refund, lookup);
    /// past it the outcome counts as unknown and is retried or resolved with the same key.
    /// At most 30 s, so a request's three charge tries end well inside the two minutes after
    /// which the settling worker takes its payment as abandoned.
    #[serde(with = "humantime_serde")]
    pub payment_timeout: Duration,
    /// Longest wait for the device gateway's answer to one call (SendCommand, GetCommand);
    /// past it the call fails and is retried by the settling worker.
    #[serde(with = "humantime_serde")]
    pub gateway_timeout: Duration,
    /// How often a WatchOrder re-reads its order with no wake-up (a safety net for a lost
    /// signal): changes wake watchers in this replica at once, and in other replicas through
    /// Redis (`redis_url`).
    #[serde(with = "humantime_serde")]
    pub watch_poll_interval: Duration,
    /// The same while wake-ups from other replicas may be lost (Redis configured but this
    /// replica not subscribed to it).
    #[serde(with = "humantime_serde")]
    pub watch_degraded_poll_interval: Duration,
    /// WatchOrder streams one account may hold open at once on one replica; one more is
    /// RESOURCE_EXHAUSTED.
    pub max_watches_per_user: u32,
}

impl Default for OrdersConfig {
    fn default() -> Self {
        Self {
            gateway_url: None,
            content_url: None,
            deposit_minor_units: 5000,
            deposit_currency: "EUR".into(),
            secret_key_file: None,
            offer_ttl: Duration::from_secs(300),
            lend_deadline: Duration::from_secs(120),
            provision_deadline: Duration::from_secs(3600),
            sweep_interval: Duration::from_secs(5),
            payment_timeout: Duration::from_secs(20),
            gateway_timeout: Duration::from_secs(10),
            watch_poll_interval: Duration::from_secs(30),
            watch_degraded_poll_interval: Duration::from_secs(1),
            max_watches_per_user: 32,
        }
    }
}

/// Where the content service keeps package bytes (chunks and partial uploads).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ContentConfig {
    /// `local`: files under `local_dir`; `s3`: an S3-compatible bucket.
    pub object_store: ObjectStoreKind,
    /// Directory of the `local` store. Unset: `<data_dir>/content/objects`.
    pub local_dir: Option<PathBuf>,
    /// S3 endpoint URL (`https://...`, or `http://...` with `s3_allow_http`). Unset: AWS itself
    /// (or `AWS_ENDPOINT` from the environment).
    pub s3_endpoint: Option<String>,
    /// S3 bucket; required when `object_store` is `s3`. It must exist: the service does not
    /// create buckets.
    pub s3_bucket: Option<String>,
    /// S3 region.
    pub s3_region: String,
    /// Allow a plain `http://` endpoint (test servers such as moto; never in production).
    pub s3_allow_http: bool,
    /// Address buckets as `https://<bucket>.<endpoint>` (virtual-hosted style) instead of
    /// `https://<endpoint>/<bucket>` (path style, which S3-compatible servers accept).
    pub s3_virtual_hosted_style: bool,
}

/// Which object store holds the content service's bytes.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ObjectStoreKind {
    /// Files in a local directory.
    Local,
    /// An S3-compatible bucket; credentials from the environment (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, or the instance's role).
    S3,
}

impl Default for ContentConfig {
    fn default() -> Self {
        Self {
            object_store: ObjectStoreKind::Local,
            local_dir: None,
            s3_endpoint: None,
            s3_bucket: None,
            s3_region: "us-east-1".to_owned(),
            s3_allow_http: false,
            s3_virtual_hosted_style: false,
        }
    }
}

impl ContentConfig {
    /// The `local` store's directory: `local_dir`, or `<data_dir>/content/objects`.
    pub fn local_dir(&self, data_dir: &Path) -> PathBuf {
        self.local_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("content").join("objects"))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.object_store != ObjectStoreKind::S3 {
            return Ok(());
        }
        if self.s3_bucket.as_deref().is_none_or(str::is_empty) {
            return Err(invalid(
                "content.s3_bucket",
                "SNEAKERNET_CONTENT__S3_BUCKET",
                "must be set when content.object_store is s3".into(),
            ));
        }
        if self.s3_region.is_empty() {
            return Err(invalid(
                "content.s3_region",
                "SNEAKERNET_CONTENT__S3_REGION",
                "must not be empty".into(),
            ));
        }
        if let Some(endpoint) = &self.s3_endpoint {
            let (key, env) = ("content.s3_endpoint", "SNEAKERNET_CONTENT__S3_ENDPOINT");
            let parsed = url::Url::parse(endpoint)
                .map_err(|e| invalid(key, env, format!("cannot parse {endpoint}: {e}")))?;
            match parsed.scheme() {
                "https" => {}
                "http" if self.s3_allow_http => {}
                "http" => {
                    return Err(invalid(
                        key,
                        env,
                        "is http://; set content.s3_allow_http to allow a plaintext endpoint"
                            .into(),
                    ));
                }
                other => {
                    return Err(invalid(
                        key,
                        env,
                        format!("scheme must be https:// or http://, got {other}://"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Kiosk link timing.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// How often the gateway and each kiosk send Heartbeat on a link.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Silence after which a link is closed and its kiosk marked offline.
    #[serde(with = "humantime_serde")]
    pub offline_after: Duration,
    /// How often each replica looks, in one query per 1,000 links, for undelivered commands of
    /// the links it holds while wake-ups from other replicas may be lost (Redis configured but
    /// this replica not subscribed); otherwise it looks every 30 s, a safety net.
    #[serde(with = "humantime_serde")]
    pub command_poll_interval: Duration,
    /// How often commands past their deadline are expired.
    #[serde(with = "humantime_serde")]
    pub expiry_sweep_interval: Duration,
    /// How often a replica writes, in one batch, that the links it holds are alive (their
    /// kiosks' `last_seen_at`, the lease other replicas read). Heartbeats are noted in memory
    /// only, so database writes per second do not grow with the number of links.
    #[serde(with = "humantime_serde")]
    pub liveness_flush_interval: Duration,
    /// How often each replica looks for kiosks shown online whose lease lapsed (last seen
    /// longer ago than `offline_after` + 2 × `liveness_flush_interval`, no live presence in
    /// Redis, not held here) and marks them offline with their event; also once at startup.
    #[serde(with = "humantime_serde")]
    pub reconcile_interval: Duration,
    /// How long events stay in the event log before the retention sweeper deletes them; at
    /// least 30 days, as DeviceEventService.Subscribe promises. A subscriber resuming from a
    /// cursor older than that gets OUT_OF_RANGE.
    #[serde(with = "humantime_serde")]
    pub event_retention: Duration,
    /// How often the retention sweeper deletes events past `event_retention` (in batches of a
    /// short transaction each).
    #[serde(with = "humantime_serde")]
    pub event_prune_interval: Duration,
    /// Link opens one device may make at once before its budget runs out (then one per
    /// `link_open_every`); an open over budget is refused RESOURCE_EXHAUSTED with when to
    /// retry, before any database write.
    pub link_open_burst: u32,
    /// How often one more link open is allowed per device once its burst is spent.
    #[serde(with = "humantime_serde")]
    pub link_open_every: Duration,
    /// Messages a device may send on its link at once before its budget runs out (then
    /// `link_messages_per_second`); over budget the gateway reads its link more slowly
    /// (backpressure): nothing is lost or refused.
    pub link_message_burst: u32,
    /// Messages per second a link's budget refills.
    pub link_messages_per_second: u32,
    /// Hellos this replica handles at once (each writes its device online and reads its
    /// commands); in effect at most `database_max_connections` - 1, so open links and the
    /// workers keep connections during a connect storm (not refused when larger: one file
    /// configures every role, and the migration job's small pool serves no links). A Hello that gets no turn within a second is
    /// answered Reconnect with a jittered `retry_after`.
    pub max_concurrent_hellos: u32,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(15),
            offline_after: Duration::from_secs(45),
            command_poll_interval: Duration::from_secs(2),
            expiry_sweep_interval: Duration::from_secs(1),
            liveness_flush_interval: Duration::from_secs(15),
            reconcile_interval: Duration::from_secs(15),
            event_retention: Duration::from_secs(30 * 24 * 3600),
            event_prune_interval: Duration::from_secs(600),
            link_open_burst: 5,
            link_open_every: Duration::from_secs(10),
            link_message_burst: 200,
            link_messages_per_second: 50,
            max_concurrent_hellos: 5,
        }
    }
}

/// Server TLS material, PEM encoded.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain file.
    pub cert: PathBuf,
    /// Private key file.
    pub key: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            data_dir: PathBuf::from("./sneakernet-data"),
            database_url: None,
            database_schema_prefix: String::new(),
            database_max_connections: 10,
            redis_url: None,
            metrics_listen: None,
            shutdown_grace: Duration::from_secs(10),
            log: LogConfig::default(),
            auth: AuthConfig::default(),
            rate_limit: RateLimitConfig::default(),
            gateway: GatewayConfig::default(),
            orders: OrdersConfig::default(),
            content: ContentConfig::default(),
            tls: None,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            filter: "info".to_owned(),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            url: None,
            audience: "sneakernet".to_owned(),
            issuer: "sneakernet-auth".to_owned(),
            access_token_ttl: Duration::from_secs(15 * 60),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
            keys_refresh_interval: Duration::from_secs(5 * 60),
            clock_leeway: Duration::from_secs(30),
            bootstrap_operator_email: None,
            bootstrap_operator_password_file: None,
            service_secret_file: None,
        }
    }
}

/// Reads a list of networks, each a CIDR range (`10.0.0.0/8`) or a bare address (`10.1.2.3`,
/// that address alone), naming the entry that is neither.
fn networks<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<ipnet::IpNet>, D::Error> {
    let raw = Vec::<String>::deserialize(deserializer)?;
    raw.iter()
        .map(|entry| {
            let entry = entry.trim();
            entry
                .parse::<ipnet::IpNet>()
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "{entry:?} is neither an IP address nor a CIDR range like 10.0.0.0/8"
                    ))
                })
        })
        .collect()
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            attempts_per_account: 10,
            login_per_address: 60,
            register_per_address: 30,
            orders_per_account: 30,
            period: Duration::from_secs(60),
            trusted_proxies: Vec::new(),
        }
    }
}

/// Why a configuration was refused. The message names the key (or file) that is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value could not be read: unknown key, wrong type, unreadable file.
    #[error("invalid configuration: {0}")]
    Load(String),
    /// A value was read but is not acceptable.
    #[error("invalid configuration: `{key}` ({env}): {reason}")]
    Invalid {
        /// The dotted key, as in the TOML file.
        key: &'static str,
        /// The environment variable that sets it.
        env: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// The database a service's pool should open, resolved from [`Config`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatabaseTarget {
    /// One SQLite file per service in this directory.
    Sqlite {
        /// Where the files live.
        dir: PathBuf,
    },
    /// One schema per service in this Postgres database.
    Postgres {
        /// The connection URL (may contain a password: never log it, see [`redact_url`]).
        url: String,
        /// Prepended to each service's schema name.
        schema_prefix: String,
    },
}

impl Config {
    /// Reads defaults, then `file` if given, then the `SNEAKERNET_*` environment, and checks the
    /// result with [`Config::validate`].
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        // SNEAKERNET_CONFIG_FILE names the file itself (read by the command line), not a key;
        // SNEAKERNET_ADDRESS and SNEAKERNET_PROFILE_DIR are the client commands' `--address`
        // and `--profile-dir`.
        Self::load_from(
            file,
            Env::prefixed(ENV_PREFIX).split("__").ignore(&[
                "config_file",
                "address",
                "profile_dir",
            ]),
        )
    }

    fn load_from(file: Option<&Path>, env: Env) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.is_file() {
                return Err(ConfigError::Load(format!(
                    "config file {} does not exist or is not a file",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        let config: Config = figment
            .merge(env)
            .extract()
            .map_err(|e| ConfigError::Load(one_line(&e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what the types alone cannot: URL schemes, names, non-zero budgets.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.database_target()?;
        if let Some(redis) = &self.redis_url {
            let parsed = url::Url::parse(redis).map_err(|e| {
                invalid(
                    "redis_url",
                    "SNEAKERNET_REDIS_URL",
                    format!("cannot parse {}: {e}", redact_url(redis)),
                )
            })?;
            if !matches!(parsed.scheme(), "redis" | "rediss") {
                return Err(invalid(
                    "redis_url",
                    "SNEAKERNET_REDIS_URL",
                    format!(
                        "scheme must be redis:// or rediss://, got {}://",
                        parsed.scheme()
                    ),
                ));
            }
        }
        for (key, env, url) in [
            (
                "orders.gateway_url",
                "SNEAKERNET_ORDERS__GATEWAY_URL",
                &self.orders.gateway_url,
            ),
            (
                "orders.content_url",
                "SNEAKERNET_ORDERS__CONTENT_URL",
                &self.orders.content_url,
            ),
        ] {
            if let Some(url) = url {
                let parsed = url::Url::parse(url)
                    .map_err(|e| invalid(key, env, format!("cannot parse {url}: {e}")))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(invalid(
                        key,
                        env,
                        format!(
                            "scheme must be http:// or https://, got {}://",
                            parsed.scheme()
                        ),
                    ));
                }
            }
        }
        if let Some(auth_url) = &self.auth.url {
            let parsed = url::Url::parse(auth_url).map_err(|e| {
                invalid(
                    "auth.url",
                    "SNEAKERNET_AUTH__URL",
                    format!("cannot parse {auth_url}: {e}"),
                )
            })?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(invalid(
                    "auth.url",
                    "SNEAKERNET_AUTH__URL",
                    format!(
                        "scheme must be http:// or https://, got {}://",
                        parsed.scheme()
                    ),
                ));
            }
        }
        if self.database_max_connections == 0 {
            return Err(invalid(
                "database_max_connections",
                "SNEAKERNET_DATABASE_MAX_CONNECTIONS",
                "must be at least 1".into(),
            ));
        }
        if self.auth.audience.is_empty() {
            return Err(invalid(
                "auth.audience",
                "SNEAKERNET_AUTH__AUDIENCE",
                "must not be empty".into(),
            ));
        }
        if self.auth.issuer.is_empty() {
            return Err(invalid(
                "auth.issuer",
                "SNEAKERNET_AUTH__ISSUER",
                "must not be empty".into(),
            ));
        }
        let auth = &self.auth;
        for (key, env, value, min, max) in [
            (
                "auth.access_token_ttl",
                "SNEAKERNET_AUTH__ACCESS_TOKEN_TTL",
                auth.access_token_ttl,
                Duration::from_secs(1),
                Duration::from_secs(24 * 3600),
            ),
            (
                "auth.refresh_token_ttl",
                "SNEAKERNET_AUTH__REFRESH_TOKEN_TTL",
                auth.refresh_token_ttl,
                Duration::from_secs(1),
                Duration::from_secs(366 * 24 * 3600),
            ),
            (
                "auth.keys_refresh_interval",
                "SNEAKERNET_AUTH__KEYS_REFRESH_INTERVAL",
                auth.keys_refresh_interval,
                Duration::from_millis(100),
                Duration::from_secs(3600),
            ),
            (
                "auth.clock_leeway",
                "SNEAKERNET_AUTH__CLOCK_LEEWAY",
                auth.clock_leeway,
                Duration::ZERO,
                Duration::from_secs(600),
            ),
            (
                "shutdown_grace",
                "SNEAKERNET_SHUTDOWN_GRACE",
                self.shutdown_grace,
                Duration::ZERO,
                Duration::from_secs(3600),
            ),
            (
                "gateway.heartbeat_interval",
                "SNEAKERNET_GATEWAY__HEARTBEAT_INTERVAL",
                self.gateway.heartbeat_interval,
                Duration::from_millis(50),
                Duration::from_secs(600),
            ),
            (
                "gateway.offline_after",
                "SNEAKERNET_GATEWAY__OFFLINE_AFTER",
                self.gateway.offline_after,
                Duration::from_millis(100),
                Duration::from_secs(3600),
            ),
            (
                "gateway.command_poll_interval",
                "SNEAKERNET_GATEWAY__COMMAND_POLL_INTERVAL",
                self.gateway.command_poll_interval,
                Duration::from_millis(10),
                Duration::from_secs(600),
            ),
            (
                "gateway.expiry_sweep_interval",
                "SNEAKERNET_GATEWAY__EXPIRY_SWEEP_INTERVAL",
                self.gateway.expiry_sweep_interval,
                Duration::from_millis(10),
                Duration::from_secs(600),
            ),
            (
                "gateway.liveness_flush_interval",
                "SNEAKERNET_GATEWAY__LIVENESS_FLUSH_INTERVAL",
                self.gateway.liveness_flush_interval,
                Duration::from_millis(10),
                Duration::from_secs(600),
            ),
            (
                "gateway.reconcile_interval",
                "SNEAKERNET_GATEWAY__RECONCILE_INTERVAL",
                self.gateway.reconcile_interval,
                Duration::from_millis(10),
                Duration::from_secs(3600),
            ),
            (
                "gateway.event_retention",
                "SNEAKERNET_GATEWAY__EVENT_RETENTION",
                self.gateway.event_retention,
                Duration::from_secs(30 * 24 * 3600),
                Duration::from_secs(3650 * 24 * 3600),
            ),
            (
                "gateway.event_prune_interval",
                "SNEAKERNET_GATEWAY__EVENT_PRUNE_INTERVAL",
                self.gateway.event_prune_interval,
                Duration::from_millis(10),
                Duration::from_secs(24 * 3600),
            ),
            (
                "gateway.link_open_every",
                "SNEAKERNET_GATEWAY__LINK_OPEN_EVERY",
                self.gateway.link_open_every,
                Duration::from_millis(1),
                Duration::from_secs(3600),
            ),
            (
                "orders.offer_ttl",
                "SNEAKERNET_ORDERS__OFFER_TTL",
                self.orders.offer_ttl,
                Duration::from_secs(1),
                Duration::from_secs(3600),
            ),
            (
                "orders.lend_deadline",
                "SNEAKERNET_ORDERS__LEND_DEADLINE",
                self.orders.lend_deadline,
                Duration::from_secs(1),
                Duration::from_secs(24 * 3600),
            ),
            (
                "orders.provision_deadline",
                "SNEAKERNET_ORDERS__PROVISION_DEADLINE",
                self.orders.provision_deadline,
                Duration::from_secs(1),
                Duration::from_secs(7 * 24 * 3600),
            ),
            (
                "orders.sweep_interval",
                "SNEAKERNET_ORDERS__SWEEP_INTERVAL",
                self.orders.sweep_interval,
                Duration::from_millis(10),
                Duration::from_secs(600),
            ),
            (
                "orders.payment_timeout",
                "SNEAKERNET_ORDERS__PAYMENT_TIMEOUT",
                self.orders.payment_timeout,
                Duration::from_millis(100),
                Duration::from_secs(30),
            ),
            (
                "orders.gateway_timeout",
                "SNEAKERNET_ORDERS__GATEWAY_TIMEOUT",
                self.orders.gateway_timeout,
                Duration::from_millis(100),
                Duration::from_secs(60),
            ),
            (
                "orders.watch_poll_interval",
                "SNEAKERNET_ORDERS__WATCH_POLL_INTERVAL",
                self.orders.watch_poll_interval,
                Duration::from_millis(100),
                Duration::from_secs(24 * 3600),
            ),
            (
                "orders.watch_degraded_poll_interval",
                "SNEAKERNET_ORDERS__WATCH_DEGRADED_POLL_INTERVAL",
                self.orders.watch_degraded_poll_interval,
                Duration::from_millis(100),
                Duration::from_secs(3600),
            ),
            (
                "rate_limit.period",
                "SNEAKERNET_RATE_LIMIT__PERIOD",
                self.rate_limit.period,
                Duration::from_millis(1),
                Duration::from_secs(24 * 3600),
            ),
        ] {
            if value < min || value > max {
                return Err(invalid(
                    key,
                    env,
                    format!(
                        "{} is outside {} ..= {}",
                        humantime::format_duration(value),
                        humantime::format_duration(min),
                        humantime::format_duration(max)
                    ),
                ));
            }
        }
        if self.orders.max_watches_per_user == 0 {
            return Err(invalid(
                "orders.max_watches_per_user",
                "SNEAKERNET_ORDERS__MAX_WATCHES_PER_USER",
                "must be at least 1".into(),
            ));
        }
        if self.orders.deposit_minor_units <= 0 {
            return Err(invalid(
                "orders.deposit_minor_units",
                "SNEAKERNET_ORDERS__DEPOSIT_MINOR_UNITS",
                "must be positive".into(),
            ));
        }
        let currency = &self.orders.deposit_currency;
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(invalid(
                "orders.deposit_currency",
                "SNEAKERNET_ORDERS__DEPOSIT_CURRENCY",
                format!("must be an ISO 4217 code like EUR, got {currency:?}"),
            ));
        }
        if self.gateway.offline_after <= self.gateway.heartbeat_interval {
            return Err(invalid(
                "gateway.offline_after",
                "SNEAKERNET_GATEWAY__OFFLINE_AFTER",
                "must be longer than gateway.heartbeat_interval (a few heartbeats may be lost)"
                    .into(),
            ));
        }
        if self.auth.refresh_token_ttl < self.auth.access_token_ttl {
            return Err(invalid(
                "auth.refresh_token_ttl",
                "SNEAKERNET_AUTH__REFRESH_TOKEN_TTL",
                "must not be shorter than auth.access_token_ttl".into(),
            ));
        }
        if self.auth.bootstrap_operator_email.is_some()
            != self.auth.bootstrap_operator_password_file.is_some()
        {
            return Err(invalid(
                "auth.bootstrap_operator_email",
                "SNEAKERNET_AUTH__BOOTSTRAP_OPERATOR_EMAIL",
                "set both it and auth.bootstrap_operator_password_file, or neither".into(),
            ));
        }
        let limits = &self.rate_limit;
        for (key, env, value) in [
            (
                "rate_limit.attempts_per_account",
                "SNEAKERNET_RATE_LIMIT__ATTEMPTS_PER_ACCOUNT",
                limits.attempts_per_account,
            ),
            (
                "rate_limit.login_per_address",
                "SNEAKERNET_RATE_LIMIT__LOGIN_PER_ADDRESS",
                limits.login_per_address,
            ),
            (
                "rate_limit.register_per_address",
                "SNEAKERNET_RATE_LIMIT__REGISTER_PER_ADDRESS",
                limits.register_per_address,
            ),
            (
                "rate_limit.orders_per_account",
                "SNEAKERNET_RATE_LIMIT__ORDERS_PER_ACCOUNT",
                limits.orders_per_account,
            ),
        ] {
            if value == 0 {
                return Err(invalid(key, env, "must be at least 1".into()));
            }
        }
        for (key, env, value, max) in [
            (
                "gateway.link_open_burst",
                "SNEAKERNET_GATEWAY__LINK_OPEN_BURST",
                self.gateway.link_open_burst,
                1000,
            ),
            (
                "gateway.link_message_burst",
                "SNEAKERNET_GATEWAY__LINK_MESSAGE_BURST",
                self.gateway.link_message_burst,
                1_000_000,
            ),
            (
                "gateway.link_messages_per_second",
                "SNEAKERNET_GATEWAY__LINK_MESSAGES_PER_SECOND",
                self.gateway.link_messages_per_second,
                1_000_000,
            ),
        ] {
            if !(1..=max).contains(&value) {
                return Err(invalid(key, env, format!("must be from 1 to {max}")));
            }
        }
        if !(1..=10_000).contains(&self.gateway.max_concurrent_hellos) {
            return Err(invalid(
                "gateway.max_concurrent_hellos",
                "SNEAKERNET_GATEWAY__MAX_CONCURRENT_HELLOS",
                "must be from 1 to 10000".into(),
            ));
        }
        self.content.validate()?;
        if let Some(tls) = &self.tls {
            for (key, env, path) in [
                ("tls.cert", "SNEAKERNET_TLS__CERT", &tls.cert),
                ("tls.key", "SNEAKERNET_TLS__KEY", &tls.key),
            ] {
                if !path.is_file() {
                    return Err(invalid(
                        key,
                        env,
                        format!("{} is not a readable file", path.display()),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Which database the services open.
    pub fn database_target(&self) -> Result<DatabaseTarget, ConfigError> {
        let prefix = &self.database_schema_prefix;
        if !prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(invalid(
                "database_schema_prefix",
                "SNEAKERNET_DATABASE_SCHEMA_PREFIX",
                format!("{prefix:?} may hold only lowercase letters, digits and `_`"),
            ));
        }
        let Some(raw) = &self.database_url else {
            return Ok(DatabaseTarget::Sqlite {
                dir: self.data_dir.clone(),
            });
        };
        let parsed = url::Url::parse(raw).map_err(|e| {
            invalid(
                "database_url",
                "SNEAKERNET_DATABASE_URL",
                format!("cannot parse {}: {e}", redact_url(raw)),
            )
        })?;
        match parsed.scheme() {
            "postgres" | "postgresql" => Ok(DatabaseTarget::Postgres {
                url: raw.clone(),
                schema_prefix: prefix.clone(),
            }),
            other => Err(invalid(
                "database_url",
                "SNEAKERNET_DATABASE_URL",
                format!(
                    "scheme must be postgres:// (leave it unset for the embedded SQLite default), got {other}://"
                ),
            )),
        }
    }
}

fn invalid(key: &'static str, env: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { key, env, reason }
}

/// Figment's errors can span lines (one per nested cause) and name env keys in upper case; a
/// startup error is one line naming the key as the README does (`auth.access_token_ttl`),
/// the environment variable that sets it, and where the bad value came from.
fn one_line(error: &figment::Error) -> String {
    error
        .clone()
        .into_iter()
        .map(|e| describe(&e))
        .collect::<Vec<_>>()
        .join("; ")
}

fn describe(error: &figment::Error) -> String {
    use figment::error::Kind;
    // The path already ends with the offending key, unknown ones included.
    let path: Vec<String> = error.path.iter().map(|p| p.to_lowercase()).collect();
    let what = match &error.kind {
        Kind::UnknownField(..) => "unknown key".to_owned(),
        other => other.to_string(),
    };
    let key = path.join(".");
    let env = format!("{ENV_PREFIX}{}", path.join("__").to_uppercase());
    let source = match error.metadata.as_ref().and_then(|m| m.source.as_ref()) {
        Some(figment::Source::File(file)) => format!(" in {}", file.display()),
        _ => String::new(),
    };
    if key.is_empty() {
        format!("{what}{source}")
    } else {
        format!("`{key}` ({env}){source}: {what}")
    }
}

/// A URL fit for logs and error messages: the password, if any, replaced by `***`.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        Ok(url) => url.to_string(),
        // The password may itself contain '@'; everything before the last one is credentials.
        Err(_) => match raw.rfind('@') {
            Some(at) => format!("<unparsable url>@{}", &raw[at + 1..]),
            None => raw.to_owned(),
        },
    }
}

#[cfg(test)]
// figment's Jail closures must return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Config {
        try_env(pairs).expect("config")
    }

    fn try_env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut result = None;
        figment::Jail::expect_with(|jail| {
            for (k, v) in pairs {
                jail.set_env(k, v);
            }
            result = Some(Config::load(None));
            Ok(())
        });
        result.expect("jail ran")
    }

    #[test]
    fn defaults_are_valid_and_embedded() {
        let config = env(&[]);
        assert_eq!(config, Config::default());
        assert_eq!(
            config.database_target().unwrap(),
            DatabaseTarget::Sqlite {
                dir: PathBuf::from("./sneakernet-data")
            }
        );
    }

    #[test]
    fn nested_environment_keys_override_defaults() {
        let config = env(&[
            ("SNEAKERNET_AUTH__ACCESS_TOKEN_TTL", "5m"),
            ("SNEAKERNET_LISTEN", "0.0.0.0:7000"),
            ("SNEAKERNET_LOG__FORMAT", "json"),
        ]);
        assert_eq!(config.auth.access_token_ttl, Duration::from_secs(300));
        assert_eq!(config.listen, "0.0.0.0:7000".parse().unwrap());
        assert_eq!(config.log.format, LogFormat::Json);
    }

    #[test]
    fn unknown_environment_key_is_named() {
        let err = try_env(&[("SNEAKERNET_LISTN", "1.2.3.4:5")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("listn"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn unknown_file_key_is_named() {
        let mut err = String::new();
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "s.toml",
                "listen = \"127.0.0.1:1\"\n[auth]\naudiance = \"x\"\n",
            )?;
            err = Config::load(Some(Path::new("s.toml")))
                .unwrap_err()
                .to_string();
            Ok(())
        });
        assert!(err.contains("audiance"), "{err}");
    }

    #[test]
    fn unparsable_database_url_is_named_without_its_password() {
        let err = try_env(&[("SNEAKERNET_DATABASE_URL", "postgres://u:hunter2@[bad")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("database_url"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn non_postgres_database_url_is_refused() {
        let err = try_env(&[("SNEAKERNET_DATABASE_URL", "mysql://localhost/x")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("database_url") && err.contains("mysql"),
            "{err}"
        );
    }

    #[test]
    fn the_config_file_variable_is_not_a_key() {
        let config = env(&[("SNEAKERNET_CONFIG_FILE", "/etc/sneakernet.toml")]);
        assert_eq!(config, Config::default());
    }

    #[test]
    fn event_retention_below_the_promised_30_days_is_refused_by_name() {
        let err = try_env(&[("SNEAKERNET_GATEWAY__EVENT_RETENTION", "29days")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("gateway.event_retention"), "{err}");
        let config = env(&[("SNEAKERNET_GATEWAY__EVENT_RETENTION", "90days")]);
        assert_eq!(
            config.gateway.event_retention,
            Duration::from_secs(90 * 24 * 3600)
        );
    }

    #[test]
    fn concurrent_hellos_out_of_range_are_refused_by_name_and_a_small_pool_is_accepted() {
        for hellos in ["0", "10001"] {
            let err = try_env(&[("SNEAKERNET_GATEWAY__MAX_CONCURRENT_HELLOS", hellos)])
                .unwrap_err()
                .to_string();
            assert!(err.contains("gateway.max_concurrent_hellos"), "{err}");
        }
        let config = env(&[("SNEAKERNET_GATEWAY__MAX_CONCURRENT_HELLOS", "9")]);
        assert_eq!(config.gateway.max_concurrent_hellos, 9);
        // A process with a pool of two (the migration job) accepts the default; the gateway
        // keeps its Hellos below whatever pool it has (`admission::hello_turns`).
        let config = env(&[("SNEAKERNET_DATABASE_MAX_CONNECTIONS", "2")]);
        assert_eq!(config.gateway.max_concurrent_hellos, 5);
    }

    #[test]
    fn out_of_range_durations_are_named() {
        let err = try_env(&[("SNEAKERNET_AUTH__ACCESS_TOKEN_TTL", "400years")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth.access_token_ttl"), "{err}");
    }

    #[test]
    fn missing_config_file_is_named() {
        let err = Config::load(Some(Path::new("/nonexistent/sneakernet.toml")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/sneakernet.toml"), "{err}");
    }

    #[test]
    fn s3_content_store_needs_a_bucket_and_an_allowed_endpoint() {
        let s3 = ("SNEAKERNET_CONTENT__OBJECT_STORE", "s3");
        let bucket = ("SNEAKERNET_CONTENT__S3_BUCKET", "packages");
        let endpoint = ("SNEAKERNET_CONTENT__S3_ENDPOINT", "http://127.0.0.1:5000");
        for (pairs, key) in [
            (vec![s3], "content.s3_bucket"),
            (vec![s3, bucket, endpoint], "content.s3_allow_http"),
        ] {
            let err = try_env(&pairs).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
        let config = env(&[
            s3,
            bucket,
            endpoint,
            ("SNEAKERNET_CONTENT__S3_ALLOW_HTTP", "true"),
        ]);
        assert_eq!(config.content.s3_bucket.as_deref(), Some("packages"));
    }

    #[test]
    fn local_content_store_defaults_under_the_data_dir() {
        let config = env(&[]);
        assert_eq!(
            config.content.local_dir(&config.data_dir),
            PathBuf::from("./sneakernet-data/content/objects")
        );
    }

    #[test]
    fn redaction_hides_passwords_only() {
        assert_eq!(
            redact_url("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        let unparsable = redact_url("postgres://u:p@ss@[bad");
        assert!(!unparsable.contains("ss@"), "{unparsable}");
    }
}
