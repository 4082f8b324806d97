//! Roles: each service crate is one [`ServiceRole`] that adds its gRPC services to a shared
//! server. The `sneakernet` binary starts any set of roles on one listener; each service's own
//! `serve(config, shutdown)` starts just itself through [`serve_role`].

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::caller::TokenVerifier;
use crate::clock::{SharedClock, SystemClock};
use crate::config::{Config, ConfigError};
use crate::db::DbOpenError;
use crate::server::{GrpcServices, ServeError};
use crate::shutdown::Shutdown;

/// What every role gets at startup.
#[derive(Clone, Debug)]
pub struct RoleContext {
    /// The process's configuration.
    pub config: Arc<Config>,
    /// Shutdown trigger and task tracker.
    pub shutdown: Shutdown,
    /// The verifier behind this process's auth layer. The auth role installs its keys here;
    /// otherwise they are fetched from `auth.url`.
    pub verifier: TokenVerifier,
    /// "Now", injectable for tests.
    pub clock: SharedClock,
}

impl RoleContext {
    /// A context with the system clock and an empty verifier.
    pub fn new(config: Config, shutdown: Shutdown) -> Self {
        Self::with_clock(config, shutdown, Arc::new(SystemClock))
    }

    /// A context with the given clock.
    pub fn with_clock(config: Config, shutdown: Shutdown, clock: SharedClock) -> Self {
        let verifier = TokenVerifier::new(
            &config.auth.audience,
            &config.auth.issuer,
            config.auth.clock_leeway,
        );
        Self {
            config: Arc::new(config),
            shutdown,
            verifier,
            clock,
        }
    }

    /// Keeps the verifier supplied from the remote auth service at `auth.url`.
    pub fn fetch_keys_from_auth(&self) -> Result<(), StartError> {
        let Some(url) = &self.config.auth.url else {
            return Err(StartError::Config(ConfigError::Invalid {
                key: "auth.url",
                env: "SNEAKERNET_AUTH__URL",
                reason: "must be set when this process does not serve the auth role (it is where \
                         access-token keys come from)"
                    .into(),
            }));
        };
        let endpoint = tonic::transport::Endpoint::from_shared(url.clone()).map_err(|e| {
            StartError::Config(ConfigError::Invalid {
                key: "auth.url",
                env: "SNEAKERNET_AUTH__URL",
                reason: e.to_string(),
            })
        })?;
        crate::keys::spawn_refresher(
            self.verifier.clone(),
            endpoint,
            self.config.auth.keys_refresh_interval,
            &self.shutdown,
        );
        Ok(())
    }
}

/// Why a role could not start. One line naming the cause.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Configuration is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Db(#[from] DbOpenError),
    /// The server could not start.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The listener could not be bound.
    #[error("cannot listen on {address} (listen): {reason}")]
    Listen {
        /// The address.
        address: String,
        /// Why.
        reason: String,
    },
    /// Anything else, already phrased for the operator.
    #[error("{0}")]
    Other(String),
}

/// One service of the system, as a role of the binary.
pub trait ServiceRole {
    /// The role's name, as given to `--role`.
    const NAME: &'static str;
    /// Whether this role issues access tokens (only auth): it then supplies the verifier's
    /// keys itself.
    const ISSUES_TOKENS: bool = false;

    /// Opens the role's database, starts its background tasks on `ctx.shutdown`, and adds its
    /// gRPC services to `services`.
    fn start(
        ctx: &RoleContext,
        services: &mut GrpcServices,
    ) -> impl Future<Output = Result<(), StartError>> + Send;
}

/// Binds `config.listen`, or fails naming the address.
pub async fn bind(config: &Config) -> Result<TcpListener, StartError> {
    TcpListener::bind(config.listen)
        .await
        .map_err(|e| StartError::Listen {
            address: config.listen.to_string(),
            reason: e.to_string(),
        })
}

/// Runs one role alone until `shutdown` triggers: what each service crate's `serve` calls.
pub async fn serve_role<R: ServiceRole>(
    config: Config,
    shutdown: Shutdown,
) -> Result<(), StartError> {
    let listener = bind(&config).await?;
    let ctx = RoleContext::new(config, shutdown.clone());
    let mut services = GrpcServices::new();
    R::start(&ctx, &mut services).await?;
    if !R::ISSUES_TOKENS {
        ctx.fetch_keys_from_auth()?;
    }
    crate::server::serve(
        listener,
        services,
        ctx.verifier.clone(),
        ctx.config.tls.as_ref(),
        ctx.config.shutdown_grace,
        shutdown,
    )
    .await?;
    Ok(())
}
