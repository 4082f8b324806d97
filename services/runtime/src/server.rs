//! The gRPC server every role runs behind: one tower stack composed in one place (request id,
//! tracing, metrics, per-address rate limits, token verification), plus gRPC health and server
//! reflection (v1 and v1alpha) for exactly the services this process serves, HTTP/2 keepalive
//! for long-lived streams, optional TLS, and graceful shutdown.

use std::convert::Infallible;
use std::net::IpAddr;
use std::time::Duration;

use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::caller::{AuthLayer, TokenVerifier};
use crate::config::TlsConfig;
use crate::rate_limit::{AddressRateLimitLayer, ClientAddressLayer, KeyedLimiter};
use crate::shutdown::Shutdown;
use crate::supervise::TaskHealth;
use crate::telemetry::GrpcMetricsLayer;

/// HTTP/2 keepalive: tonic turns it off by default, which lets dead kiosk links linger.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// How long a keepalive ping may go unanswered before the connection is dropped.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 flow-control windows, chosen rather than left to defaults: what a peer may send
/// before the server reads is at most this per stream and per connection, which bounds the
/// memory 50,000 idle-but-misbehaving kiosk links can pin (50k × 256 KiB ≈ 12 GiB worst case,
/// against unbounded adaptive windows), while a chunk upload still gets a window of several
/// round trips of data.
pub const STREAM_WINDOW: u32 = 256 * 1024;
/// See [`STREAM_WINDOW`].
pub const CONNECTION_WINDOW: u32 = 256 * 1024;
/// Streams one HTTP/2 connection may hold open at once. tonic leaves it unset, which removes
/// hyper's default (200) and lets one client open streams without bound. A kiosk holds one;
/// a mobile backend multiplexes its users' calls and order watches on a few connections, so
/// the ceiling is generous; a peer over it waits for a free stream (the client's h2 queues
/// the request), it is not refused.
pub const MAX_CONCURRENT_STREAMS: u32 = 4096;
/// Streams a client may reset before the server has accepted them (the "rapid reset" flood,
/// CVE-2023-44487) before the connection is closed with GOAWAY: h2's own default, set here
/// because tonic would otherwise pass its unset value through.
pub const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// Streams the server may reset because of the client's errors (the "made you reset" flood,
/// CVE-2025-8671) before the connection is closed: hyper's default, which tonic's unset value
/// would turn into no limit at all.
pub const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// Services every server adds besides the roles' own.
const INFRASTRUCTURE_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// The services one process serves, with their names (for health and reflection) and any
/// per-address rate limits they ask for.
#[derive(Default)]
pub struct GrpcServices {
    routes: RoutesBuilder,
    names: Vec<&'static str>,
    address_limits: Vec<(String, KeyedLimiter<IpAddr>)>,
    trusted_proxies: Vec<ipnet::IpNet>,
    public: Vec<String>,
    task_health: TaskHealth,
}

impl std::fmt::Debug for GrpcServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcServices")
            .field("names", &self.names)
            .finish()
    }
}

impl GrpcServices {
    /// No services yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a generated tonic server; its name is reported SERVING by health and listed by
    /// reflection.
    pub fn add<S>(&mut self, service: S) -> &mut Self
    where
        S: tower::Service<http::Request<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.routes.add_service(service);
        self.names.push(S::NAME);
        self
    }

    /// Limits calls to `path` (`/package.Service/Method`) per client address.
    pub fn limit_per_address(
        &mut self,
        path: impl Into<String>,
        limiter: KeyedLimiter<IpAddr>,
    ) -> &mut Self {
        self.address_limits.push((path.into(), limiter));
        self
    }

    /// Believes `x-forwarded-for` from peers in `proxies` (`rate_limit.trusted_proxies`):
    /// budgets per address then count the client a proxy names, not the proxy.
    pub fn trust_forwarded_from(&mut self, proxies: Vec<ipnet::IpNet>) -> &mut Self {
        self.trusted_proxies = proxies;
        self
    }

    /// Declares `path` (`/package.Service/Method`) callable without a valid access token: a
    /// bad token on it is noted, not refused, and the handler decides.
    pub fn public(&mut self, path: impl Into<String>) -> &mut Self {
        self.public.push(path.into());
        self
    }

    /// Where the roles' supervised background tasks say they are down: health reports
    /// NOT_SERVING for the services a down task serves (see [`crate::supervise`]).
    pub fn task_health(&self) -> TaskHealth {
        self.task_health.clone()
    }

    /// The fully-qualified names of the services added so far.
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// TLS material could not be read or used.
    #[error("cannot use TLS certificate {cert} / key {key} (tls.cert, tls.key): {reason}")]
    Tls {
        /// The certificate path.
        cert: String,
        /// The key path.
        key: String,
        /// What went wrong.
        reason: String,
    },
    /// Reflection could not be built from the embedded descriptors (a build defect).
    #[error("cannot build gRPC reflection: {0}")]
    Reflection(String),
    /// The transport failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves `services` on `listener` until `shutdown` triggers, then reports NOT_SERVING,
/// stops accepting, and gives in-flight calls `grace` to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    mut services: GrpcServices,
    verifier: TokenVerifier,
    tls: Option<&TlsConfig>,
    grace: Duration,
    shutdown: Shutdown,
) -> Result<(), ServeError> {
    crate::tls::install_crypto_provider();
    let (health, health_service) = tonic_health::server::health_reporter();
    let names = std::mem::take(&mut services.names);
    let task_health = services.task_health.clone();
    // Health reports each service and the overall status (the empty name), which only a
    // node's readiness hold marks down.
    let statuses: Vec<&'static str> = names.iter().copied().chain([""]).collect();
    for name in &statuses {
        let status = if task_health.is_down(name) {
            ServingStatus::NotServing
        } else {
            ServingStatus::Serving
        };
        health.set_service_status(*name, status).await;
    }
    follow_task_health(&health, &task_health, &statuses, &shutdown);

    let mut reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(sneakernet_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name("grpc.health.v1.Health");
    let mut reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(sneakernet_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name("grpc.health.v1.Health");
    for name in &names {
        reflection = reflection.with_service_name(*name);
        reflection_alpha = reflection_alpha.with_service_name(*name);
    }
    let mut routes = services.routes;
    routes.add_service(health_service);
    routes.add_service(
        reflection
            .build_v1()
            .map_err(|e| ServeError::Reflection(e.to_string()))?,
    );
    routes.add_service(
        reflection_alpha
            .build_v1alpha()
            .map_err(|e| ServeError::Reflection(e.to_string()))?,
    );

    let stack = ServiceBuilder::new()
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(TraceLayer::new_for_grpc().make_span_with(|request: &http::Request<Body>| {
            let request_id = request
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("grpc", method = %request.uri().path(), request_id = %request_id)
        }).on_failure(log_failure))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(GrpcMetricsLayer::new(
            names.iter().copied().chain(INFRASTRUCTURE_SERVICES),
        ))
        .layer(ClientAddressLayer::new(services.trusted_proxies))
        .layer(AddressRateLimitLayer::new(services.address_limits))
        .layer(AuthLayer::new(
            verifier,
            services
                .public
                .into_iter()
                .chain(INFRASTRUCTURE_SERVICES.iter().map(|s| format!("/{s}/"))),
        ))
        .into_inner();

    let mut builder = Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        .http2_adaptive_window(Some(false))
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_ACCEPT_RESET_STREAMS))
        .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESET_STREAMS))
        .tcp_nodelay(true);
    if let Some(tls) = tls {
        builder = builder.tls_config(load_tls(tls).await?)?;
    }
    let local = listener.local_addr().ok();
    tracing::info!(address = ?local, services = ?names, tls = tls.is_some(), "gRPC listening");
    if let Some(address) = local.filter(|a| plaintext_beyond_loopback(*a, tls.is_some())) {
        tracing::warn!(
            %address,
            "serving plaintext grpc beyond loopback: passwords, kiosk secrets and tokens cross the network unencrypted; set tls.cert and tls.key, or listen on loopback behind a tls proxy"
        );
    }

    let health_on_shutdown = health.clone();
    let token = shutdown.token();
    let signal = async move {
        token.cancelled().await;
        // The overall status stays as it is: the chart's liveness probe asks it while the
        // node drains.
        for name in &names {
            health_on_shutdown
                .set_service_status(*name, ServingStatus::NotServing)
                .await;
        }
    };
    let server = builder
        .layer(stack)
        .add_routes(routes.routes())
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), signal);
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result?,
        () = async { shutdown.triggered().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(?grace, "in-flight calls did not finish within the shutdown grace period; closing them");
        }
    }
    Ok(())
}

/// Keeps health in step with the supervised tasks until shutdown (which sets NOT_SERVING
/// itself).
fn follow_task_health(
    health: &tonic_health::server::HealthReporter,
    task_health: &TaskHealth,
    names: &[&'static str],
    shutdown: &Shutdown,
) {
    let health = health.clone();
    let mut changes = task_health.subscribe();
    let names = names.to_vec();
    let stop = shutdown.clone();
    shutdown.spawn(async move {
        loop {
            tokio::select! {
                () = stop.triggered() => return,
                changed = changes.changed() => if changed.is_err() { return },
            }
            let down = changes.borrow_and_update().clone();
            if stop.is_triggered() {
                return;
            }
            for name in &names {
                let status = if down.iter().any(|(service, _)| service == name) {
                    ServingStatus::NotServing
                } else {
                    ServingStatus::Serving
                };
                health.set_service_status(*name, status).await;
            }
        }
    });
}

/// Whether a call that ended with `code` was refused because of what the client sent or may
/// do (the product working as specified), not because of something an operator must act on.
pub fn is_client_error(code: tonic::Code) -> bool {
    use tonic::Code as C;
    matches!(
        code,
        C::Cancelled
            | C::InvalidArgument
            | C::NotFound
            | C::AlreadyExists
            | C::PermissionDenied
            | C::ResourceExhausted
            | C::FailedPrecondition
            | C::Aborted
            | C::OutOfRange
            | C::Unauthenticated
    )
}

/// Logs a failed call (inside its `grpc` span): a client's refusal (NO_DEPOSIT, a bad field,
/// an expired token) at DEBUG, since an expected refusal at ERROR buried what matters; what
/// an operator must act on (INTERNAL, UNKNOWN, DATA_LOSS, UNAVAILABLE, DEADLINE_EXCEEDED,
/// UNIMPLEMENTED, a transport error) at ERROR.
fn log_failure(
    failure: tower_http::classify::GrpcFailureClass,
    latency: Duration,
    _span: &tracing::Span,
) {
    use tower_http::classify::GrpcFailureClass;
    match failure {
        GrpcFailureClass::Status(status) => log_status(
            tonic::Code::from_i32(status.code_raw()),
            status.message().unwrap_or_default(),
            latency,
        ),
        GrpcFailureClass::Error(error) => tracing::error!(%error, ?latency, "call failed"),
        other => tracing::error!(failure = %other, ?latency, "call failed"),
    }
}

/// [`log_failure`] for a call that ended with a status.
fn log_status(code: tonic::Code, message: &str, latency: Duration) {
    if is_client_error(code) {
        tracing::debug!(?code, message, ?latency, "call refused");
    } else {
        tracing::error!(?code, message, ?latency, "call failed");
    }
}

async fn load_tls(tls: &TlsConfig) -> Result<ServerTlsConfig, ServeError> {
    let error = |reason: String| ServeError::Tls {
        cert: tls.cert.display().to_string(),
        key: tls.key.display().to_string(),
        reason,
    };
    let cert = tokio::fs::read(&tls.cert)
        .await
        .map_err(|e| error(e.to_string()))?;
    let key = tokio::fs::read(&tls.key)
        .await
        .map_err(|e| error(e.to_string()))?;
    Ok(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
}

/// Whether a listener on `address` without TLS can be reached from other hosts: then every
/// password, secret and token it receives crosses the network in the clear.
pub fn plaintext_beyond_loopback(address: std::net::SocketAddr, tls: bool) -> bool {
    !tls && !address.ip().is_loopback()
}

#[cfg(test)]
mod plaintext_tests {
    use super::plaintext_beyond_loopback;

    #[test]
    fn only_a_plaintext_listener_beyond_loopback_is_warned_about() {
        let at = |a: &str| a.parse().unwrap();
        assert!(plaintext_beyond_loopback(at("0.0.0.0:50051"), false));
        assert!(plaintext_beyond_loopback(at("10.0.0.5:50051"), false));
        assert!(plaintext_beyond_loopback(at("[::]:50051"), false));
        assert!(!plaintext_beyond_loopback(at("127.0.0.1:50051"), false));
        assert!(!plaintext_beyond_loopback(at("[::1]:50051"), false));
        assert!(!plaintext_beyond_loopback(at("0.0.0.0:50051"), true));
    }
}

#[cfg(test)]
mod failure_log_tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tower_http::classify::GrpcFailureClass;

    use super::{is_client_error, log_failure, log_status};

    /// The lines `log` writes, at DEBUG and above.
    fn logged(log: impl FnOnce()) -> String {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || Writer(writer.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let bytes = buffer.lock().expect("buffer").clone();
        String::from_utf8(bytes).expect("utf-8")
    }

    struct Writer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Writer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn status(code: tonic::Code) -> String {
        logged(|| log_status(code, "why", Duration::from_millis(3)))
    }

    #[test]
    fn a_clients_refusal_is_debug_and_a_server_fault_is_error() {
        let refused = status(tonic::Code::FailedPrecondition);
        assert!(refused.contains("DEBUG"), "{refused}");
        assert!(refused.contains("FailedPrecondition"), "{refused}");
        for fault in [tonic::Code::Internal, tonic::Code::Unavailable] {
            let failed = status(fault);
            assert!(failed.contains("ERROR"), "{failed}");
        }
        let transport = logged(|| {
            log_failure(
                GrpcFailureClass::Error("connection reset".into()),
                Duration::from_millis(3),
                &tracing::Span::none(),
            )
        });
        assert!(transport.contains("ERROR") && transport.contains("connection reset"));
    }

    #[test]
    fn every_code_is_classed_once() {
        use tonic::Code as C;
        let client = [
            C::Cancelled,
            C::InvalidArgument,
            C::NotFound,
            C::AlreadyExists,
            C::PermissionDenied,
            C::ResourceExhausted,
            C::FailedPrecondition,
            C::Aborted,
            C::OutOfRange,
            C::Unauthenticated,
        ];
        let server = [
            C::Unknown,
            C::DeadlineExceeded,
            C::Unimplemented,
            C::Internal,
            C::Unavailable,
            C::DataLoss,
        ];
        assert!(client.iter().all(|c| is_client_error(*c)));
        assert!(server.iter().all(|c| !is_client_error(*c)));
        assert_eq!(client.len() + server.len(), 16, "every code but OK");
    }
}
