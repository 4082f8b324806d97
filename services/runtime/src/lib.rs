//! What every Sneakernet service shares, so each service crate holds only its own rules:
//!
//! - [`config`]: typed configuration from defaults, a TOML file and `SNEAKERNET_*` variables.
//! - [`telemetry`]: tracing, Prometheus metrics, per-method gRPC metrics.
//! - [`shutdown`]: the shutdown trigger and the tracker of tasks to drain.
//! - [`db`]: each service's database (SQLite file or Postgres schema) and its migrations.
//! - [`caller`]: access-token claims, local verification, the auth layer, [`caller::Caller`].
//! - [`keys`]: fetching the verifier's keys from a remote auth service.
//! - [`rate_limit`]: per-key budgets and the per-address layer.
//! - [`error`]: [`error::ApiError`], the one mapping to `tonic::Status` with rich details.
//! - [`server`]: the gRPC server stack with health, reflection, keepalive and TLS.
//! - [`service_token`]: a service's own token for calls on its own behalf.
//! - [`role`]: [`role::ServiceRole`], how a service plugs into the one binary.
//! - [`clock`]: injected time.
//! - [`qr`]: the kiosk QR payload and its rotating code.
//! - [`tls`]: the one process-wide TLS crypto provider.
//! - [`supervise`]: background tasks restarted when they fail, their state in health.
//! - [`wire`]: time conversions to and from protobuf well-known types.
//! - [`failpoint`]: fault-injection points for tests (inert in production builds).
//! - `testing` (feature `testing`, tests only): the database backends every test runs on.

pub mod caller;
pub mod clock;
pub mod config;
pub mod db;
pub mod error;
pub use sneakernet_failpoint as failpoint;
pub mod keys;
/// The kiosk QR payload; it lives with the contract so the kiosk agent shows the code
/// without linking this crate.
pub use sneakernet_proto::qr;
pub mod rate_limit;
pub mod redis_link;
pub mod role;
pub mod server;
pub mod service_token;
pub mod shutdown;
pub mod supervise;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tls;
pub mod wire;

pub use caller::{
    Caller, CallerExt, DeviceId, ItemId, KioskId, Role, ServiceName, TokenVerifier, UserId,
};
pub use config::Config;
pub use error::{ApiError, ErrorInfo, FieldViolation, PreconditionViolation};
pub use shutdown::Shutdown;
