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
    /// The address this process serves gRPC on, once bound: roles reach the other roles of
    /// the same process through it.
    pub local_address: Option<std::net::SocketAddr>,
    /// The roles this process serves (`auth`, `orders`, ...).
    pub local_roles: Vec<&'static str>,
    /// The secret this process's orders/content role logs in with as a service: read from
    /// `auth.service_secret_file`, or issued at startup when auth runs in the same process.
    pub service_secret: Option<String>,
}

impl RoleContext {
    /// A context with the system clock and an empty verifier.
    pub fn new(config: Config, shutdown: Shutdown) -> Self {
        Self::with_clock(config, shutdown, Arc::new(SystemClock))
    }

    /// A context with the given clock.
    pub fn with_clock(config: Config, shutdown: Shutdown, clock: SharedClock) -> Self {
        let verifier = TokenVerifier::with_clock(
            &config.auth.audience,
            &config.auth.issuer,
            config.auth.clock_leeway,
            clock.clone(),
        );
        verifier.set_max_lifetime(config.auth.access_token_ttl);
        Self {
            config: Arc::new(config),
            shutdown,
            verifier,
            clock,
            local_address: None,
            local_roles: Vec::new(),
            service_secret: None,
        }
    }

    /// Where another role is served: the configured URL when one is set (an operator who
    /// names an address means it, even where this process serves the role too: a load
    /// balancer, a proxy), else this process's own address if it serves `role`, else an
    /// error naming the configuration key to set.
    pub fn peer_url(
        &self,
        role: &str,
        configured: Option<&String>,
        key: &'static str,
        env: &'static str,
    ) -> Result<String, StartError> {
        if let Some(url) = configured {
            return Ok(url.clone());
        }
        if self.local_roles.contains(&role)
            && let Some(address) = self.local_address
        {
            return Ok(format!("http://{address}"));
        }
        Err(StartError::Config(ConfigError::Invalid {
            key,
            env,
            reason: format!("must be set when this process does not serve the {role} role"),
        }))
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
    crate::tls::install_crypto_provider();
    let listener = bind(&config).await?;
    let mut ctx = RoleContext::new(config, shutdown.clone());
    ctx.local_address = listener.local_addr().ok();
    ctx.local_roles = vec![R::NAME];
    if let Some(file) = &ctx.config.auth.service_secret_file {
        ctx.service_secret = Some(read_secret(
            file,
            "auth.service_secret_file",
            "SNEAKERNET_AUTH__SERVICE_SECRET_FILE",
        )?);
    }
    let mut services = GrpcServices::new();
    services.trust_forwarded_from(ctx.config.rate_limit.trusted_proxies.clone());
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

/// Reads a secret from a file named by configuration key `key`, trimming one trailing newline
/// (as `echo` and Kubernetes secrets leave it).
pub fn read_secret(
    file: &std::path::Path,
    key: &'static str,
    env: &'static str,
) -> Result<String, StartError> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        StartError::Config(ConfigError::Invalid {
            key,
            env,
            reason: format!("cannot read {}: {e}", file.display()),
        })
    })?;
    let secret = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if secret.is_empty() {
        return Err(StartError::Config(ConfigError::Invalid {
            key,
            env,
            reason: format!("{} is empty", file.display()),
        }));
    }
    Ok(secret.to_owned())
}
