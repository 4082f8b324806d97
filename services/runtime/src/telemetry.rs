//! Logs, metrics and request ids.
//!
//! Logs: `tracing`, pretty or JSON per `log.format`. Metrics: the `metrics` facade with a
//! Prometheus recorder, rendered at `/metrics` on `metrics_listen`, with one counter and one
//! histogram per gRPC method ([`GrpcMetricsLayer`]). Request ids: `x-request-id` taken from the
//! caller or generated, echoed in the response and recorded on the request's span.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use prost::Message;
use tonic::body::Body;
use tower::{Layer, Service};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogConfig, LogFormat};
use crate::shutdown::Shutdown;

/// Installs the global tracing subscriber. `RUST_LOG` overrides `log.filter`. Calling it twice
/// (tests, or standalone after serve) keeps the first subscriber.
pub fn init_tracing(config: &LogConfig) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => {
            EnvFilter::try_new(&env).map_err(|e| format!("invalid RUST_LOG {env:?}: {e}"))?
        }
        _ => EnvFilter::try_new(&config.filter).map_err(|e| {
            format!(
                "invalid configuration: `log.filter` (SNEAKERNET_LOG__FILTER) {:?}: {e}",
                config.filter
            )
        })?,
    };
    let registry = tracing_subscriber::registry().with(filter);
    let result = match config.format {
        LogFormat::Pretty => registry
            .with(tracing_subscriber::fmt::layer().with_target(true))
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            )
            .try_init(),
    };
    // An already-installed subscriber is fine: the process logs somewhere already.
    let _ = result;
    Ok(())
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Only fails if another recorder was installed first; then ours just renders nothing.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Serves `GET /metrics` on `addr` until shutdown. Returns the bound address (port 0 allowed).
pub async fn serve_metrics(addr: SocketAddr, shutdown: &Shutdown) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {addr} (metrics_listen): {e}"),
        )
    })?;
    let bound = listener.local_addr()?;
    let handle = prometheus();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || std::future::ready(handle.render())),
    );
    let token = shutdown.token();
    shutdown.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "metrics endpoint failed");
        }
    });
    tracing::info!(%bound, "metrics endpoint listening");
    Ok(bound)
}

/// Tower layer counting gRPC requests (`grpc_requests_total{method,code}`) and timing them
/// (`grpc_request_duration_seconds{method}`). The code is read from the response headers,
/// where tonic puts it for every unary error; a stream that fails after its first message
/// counts as the code of its headers ("0"). Only the methods the served services declare in
/// their descriptor sets get their own label; every other path, whatever the network sends
/// (unauthenticated requests included), is labelled `unknown`, so the series stay bounded.
#[derive(Clone, Debug, Default)]
pub struct GrpcMetricsLayer {
    methods: Arc<HashSet<String>>,
}

impl GrpcMetricsLayer {
    /// A layer labelling the methods of `services` (fully-qualified service names).
    pub fn new(services: impl IntoIterator<Item = impl Into<String>>) -> Self {
        let services: Vec<String> = services.into_iter().map(Into::into).collect();
        Self {
            methods: Arc::new(served_methods(&services)),
        }
    }
}

/// The descriptor sets of every service a server here may serve: ours, health, reflection.
const DESCRIPTOR_SETS: [&[u8]; 4] = [
    sneakernet_proto::FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
];

/// The paths (`/package.Service/Method`) of the methods of `services`, as their descriptors
/// declare them.
fn served_methods(services: &[String]) -> HashSet<String> {
    let mut methods = HashSet::new();
    for encoded in DESCRIPTOR_SETS {
        let Ok(set) = prost_types::FileDescriptorSet::decode(encoded) else {
            // Embedded at build time, so this is a build defect; its methods count as unknown.
            tracing::error!(
                "an embedded descriptor set does not decode; its methods are labelled unknown"
            );
            continue;
        };
        for file in set.file {
            for service in &file.service {
                let name = match file.package() {
                    "" => service.name().to_owned(),
                    package => format!("{package}.{}", service.name()),
                };
                if services.contains(&name) {
                    methods.extend(
                        service
                            .method
                            .iter()
                            .map(|method| format!("/{name}/{}", method.name())),
                    );
                }
            }
        }
    }
    methods
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        prometheus();
        GrpcMetrics {
            inner,
            methods: self.methods.clone(),
        }
    }
}

/// The service [`GrpcMetricsLayer`] produces.
#[derive(Clone, Debug)]
pub struct GrpcMetrics<S> {
    inner: S,
    methods: Arc<HashSet<String>>,
}

/// The `method` label of a request for `path`: the path itself for a served method, `unknown`
/// for anything else.
fn method_label(methods: &HashSet<String>, path: &str) -> String {
    if methods.contains(path) {
        path.to_owned()
    } else {
        "unknown".to_owned()
    }
}

impl<S> Service<http::Request<Body>> for GrpcMetrics<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let method = method_label(&self.methods, request.uri().path());
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let started = Instant::now();
            let response = inner.call(request).await;
            let code = match &response {
                Ok(r) => r
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("0")
                    .to_owned(),
                Err(_) => "transport".to_owned(),
            };
            metrics::counter!("grpc_requests_total", "method" => method.clone(), "code" => code)
                .increment(1);
            metrics::histogram!("grpc_request_duration_seconds", "method" => method)
                .record(started.elapsed().as_secs_f64());
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_served_methods_get_their_own_label() {
        let methods = served_methods(&[
            "sneakernet.auth.v1.AuthService".to_owned(),
            "grpc.health.v1.Health".to_owned(),
            "grpc.reflection.v1.ServerReflection".to_owned(),
        ]);
        for served in [
            "/sneakernet.auth.v1.AuthService/Login",
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        ] {
            assert_eq!(method_label(&methods, served), served);
        }
        for junk in [
            "/x.Y/Z",
            "/",
            "",
            "/sneakernet.auth.v1.AuthService/",
            "/sneakernet.auth.v1.AuthService/a/b",
            "/sneakernet.auth.v1.AuthService/NoSuchMethod",
            "/sneakernet.auth.v1.AuthService/Login/",
            "/sneakernet.orders.v1.OrderService/CreateRental",
        ] {
            assert_eq!(method_label(&methods, junk), "unknown", "{junk}");
        }
    }

    #[test]
    fn a_flood_of_random_paths_shares_one_label() {
        let methods = served_methods(&["sneakernet.auth.v1.AuthService".to_owned()]);
        let mut labels = std::collections::BTreeSet::new();
        for _ in 0..1000 {
            let random = uuid::Uuid::new_v4().simple().to_string();
            for path in [
                format!("/sneakernet.auth.v1.AuthService/{random}"),
                format!("/sneakernet.auth.v1.AuthService/Login{random}"),
                format!("/{random}.Service/Login"),
                format!("/{random}"),
            ] {
                labels.insert(method_label(&methods, &path));
            }
        }
        assert_eq!(
            labels.into_iter().collect::<Vec<_>>(),
            ["unknown"],
            "methods nobody serves share one label"
        );
    }
}
