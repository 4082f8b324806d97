//! The auth service: accounts with argon2id passwords, Ed25519-signed access tokens, rotating
//! refresh tokens with reuse detection, kiosk credentials.
//!
//! - [`api`]: the gRPC surface.
//! - [`credentials`]: checked inputs, password hashing, opaque secrets.
//! - [`tokens`]: signing keys and access tokens.
//! - [`store`]: queries; [`entity`] and [`migration`]: the tables.

pub mod api;
pub mod credentials;
pub mod entity;
pub mod error;
pub mod migration;
pub mod store;
pub mod tokens;

use std::path::Path;

use sneakernet_proto::auth::v1::auth_service_server::AuthServiceServer;
use sneakernet_runtime::config::{Config, ConfigError};
use sneakernet_runtime::rate_limit::KeyedLimiter;
use sneakernet_runtime::role::{RoleContext, ServiceRole, StartError};
use sneakernet_runtime::server::GrpcServices;
use sneakernet_runtime::{Role, Shutdown};

use crate::api::AuthApi;
use crate::credentials::{Email, Password};
use crate::error::AuthError;
use crate::store::Store;
use crate::tokens::TokenIssuer;

/// The service name used for its database (file `auth.db` or schema `<prefix>auth`).
pub const SERVICE: &str = "auth";

/// The auth role of the `sneakernet` binary.
#[derive(Debug)]
pub struct AuthRole;

impl ServiceRole for AuthRole {
    const NAME: &'static str = SERVICE;
    const ISSUES_TOKENS: bool = true;

    async fn start(ctx: &RoleContext, services: &mut GrpcServices) -> Result<(), StartError> {
        let api = build(ctx).await?;
        bootstrap_operator(&api, &ctx.config).await?;
        spawn_key_reload(&api, ctx);
        let limits = &ctx.config.rate_limit;
        services
            .add(AuthServiceServer::new(api))
            .public("/sneakernet.auth.v1.AuthService/Register")
            .public("/sneakernet.auth.v1.AuthService/Login")
            .public("/sneakernet.auth.v1.AuthService/Refresh")
            .public("/sneakernet.auth.v1.AuthService/GetSigningKeys")
            .public("/sneakernet.auth.v1.AuthService/KioskLogin")
            .public("/sneakernet.auth.v1.AuthService/DriveLogin")
            .public("/sneakernet.auth.v1.AuthService/ServiceLogin")
            .limit_per_address(
                "/sneakernet.auth.v1.AuthService/Login",
                KeyedLimiter::new(
                    "login attempts from this address",
                    limits.login_per_address,
                    limits.period,
                ),
            )
            .limit_per_address(
                "/sneakernet.auth.v1.AuthService/Register",
                KeyedLimiter::new(
                    "registrations from this address",
                    limits.register_per_address,
                    limits.period,
                ),
            );
        Ok(())
    }
}

/// Runs the auth service alone until `shutdown` triggers.
pub async fn serve(config: Config, shutdown: Shutdown) -> Result<(), StartError> {
    sneakernet_runtime::role::serve_role::<AuthRole>(config, shutdown).await
}

/// Opens the database, loads (or creates) the signing keys, installs them into the context's
/// verifier.
pub async fn build(ctx: &RoleContext) -> Result<AuthApi, StartError> {
    let db = sneakernet_runtime::db::open_and_migrate::<migration::Migrator>(&ctx.config, SERVICE)
        .await?;
    let store = Store::new(db);
    let keys = store
        .signing_keys_or_first(ctx.clock.now())
        .await
        .map_err(startup)?;
    let auth = &ctx.config.auth;
    let issuer = TokenIssuer::new(
        auth.audience.clone(),
        auth.issuer.clone(),
        auth.access_token_ttl,
        ctx.clock.clone(),
        keys,
        ctx.verifier.clone(),
    );
    Ok(AuthApi {
        store,
        issuer,
        clock: ctx.clock.clone(),
        refresh_ttl: auth.refresh_token_ttl,
        keys_cache: auth.keys_refresh_interval,
        login_per_account: KeyedLimiter::new(
            "login attempts for this account from this address",
            ctx.config.rate_limit.attempts_per_account,
            ctx.config.rate_limit.period,
        ),
        login_per_account_total: KeyedLimiter::new(
            "login attempts for this account",
            ctx.config
                .rate_limit
                .attempts_per_account
                .saturating_mul(api::ACCOUNT_CEILING),
            ctx.config.rate_limit.period,
        ),
        register_per_account: KeyedLimiter::new(
            "registration attempts for this email",
            ctx.config.rate_limit.attempts_per_account,
            ctx.config.rate_limit.period,
        ),
    })
}

/// Reloads the signing keys from the store every `auth.keys_refresh_interval`, so a rotation
/// made by another process (`sneakernet keys rotate`, another replica) is published and, at its
/// switch time, used for signing.
fn spawn_key_reload(api: &AuthApi, ctx: &RoleContext) {
    let store = api.store.clone();
    let issuer = api.issuer.clone();
    let interval = ctx.config.auth.keys_refresh_interval;
    let token = ctx.shutdown.token();
    ctx.shutdown.spawn(async move {
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            match store.signing_keys().await {
                Ok(keys) if !keys.is_empty() => issuer.replace_keys(keys),
                Ok(_) => {
                    tracing::error!("the signing_keys table is empty; keeping the keys in memory")
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot reload signing keys; keeping the keys in memory")
                }
            }
        }
    });
}

/// Rotates the token signing key in the auth database: the new key is published at once and
/// signs from `now + lead` on, when the current key retires. `lead` must cover every
/// verifier's refresh interval so none sees a token from a key it does not know yet.
pub async fn rotate_signing_key(
    config: &Config,
    lead: std::time::Duration,
) -> Result<(String, chrono::DateTime<chrono::Utc>), StartError> {
    let db =
        sneakernet_runtime::db::open_and_migrate::<migration::Migrator>(config, SERVICE).await?;
    let switch_at = chrono::Utc::now()
        + chrono::Duration::from_std(lead)
            .map_err(|e| StartError::Other(format!("rotation lead: {e}")))?;
    let key = Store::new(db)
        .rotate_signing_key(switch_at)
        .await
        .map_err(startup)?;
    Ok((key.kid, switch_at))
}

fn startup(error: AuthError) -> StartError {
    StartError::Other(format!("auth service cannot start: {error}"))
}

/// What creating an operator from the command line or the config did.
#[derive(Debug, PartialEq, Eq)]
pub enum OperatorCreated {
    /// A new operator with this id.
    Created(String),
    /// An account with that email exists already; nothing changed.
    Exists,
}

/// Creates an operator account directly in the auth database: the bootstrap path for the first
/// operator (`sneakernet operator create`), which no RPC can create.
pub async fn create_operator(
    config: &Config,
    email: &str,
    password: &str,
) -> Result<OperatorCreated, StartError> {
    let email = Email::parse("email", email)
        .map_err(|v| StartError::Other(format!("operator email: {}", v.description)))?;
    let password = Password::parse("password", password)
        .map_err(|v| StartError::Other(format!("operator password: {}", v.description)))?;
    let ctx = RoleContext::new(config.clone(), Shutdown::new());
    let api = build(&ctx).await?;
    match api
        .create_account(&email, password, Role::Operator, false)
        .await
    {
        Ok((account, _)) => Ok(OperatorCreated::Created(account.id)),
        Err(AuthError::EmailTaken) => Ok(OperatorCreated::Exists),
        Err(error) => Err(startup(error)),
    }
}

async fn bootstrap_operator(api: &AuthApi, config: &Config) -> Result<(), StartError> {
    let (Some(email), Some(file)) = (
        &config.auth.bootstrap_operator_email,
        &config.auth.bootstrap_operator_password_file,
    ) else {
        return Ok(());
    };
    let password = read_secret_file(file)?;
    let email = Email::parse("email", email).map_err(|v| {
        StartError::Config(ConfigError::Invalid {
            key: "auth.bootstrap_operator_email",
            env: "SNEAKERNET_AUTH__BOOTSTRAP_OPERATOR_EMAIL",
            reason: v.description,
        })
    })?;
    let password = Password::parse("password", &password).map_err(|v| {
        StartError::Config(ConfigError::Invalid {
            key: "auth.bootstrap_operator_password_file",
            env: "SNEAKERNET_AUTH__BOOTSTRAP_OPERATOR_PASSWORD_FILE",
            reason: format!("the password in {} {}", file.display(), v.description),
        })
    })?;
    match api
        .create_account(&email, password, Role::Operator, false)
        .await
    {
        Ok((account, _)) => {
            tracing::info!(user_id = %account.id, "bootstrap operator created");
            Ok(())
        }
        Err(AuthError::EmailTaken) => Ok(()),
        Err(error) => Err(startup(error)),
    }
}

/// Reads the bootstrap operator's password file (one trailing newline trimmed).
pub fn read_secret_file(file: &Path) -> Result<String, StartError> {
    sneakernet_runtime::role::read_secret(
        file,
        "auth.bootstrap_operator_password_file",
        "SNEAKERNET_AUTH__BOOTSTRAP_OPERATOR_PASSWORD_FILE",
    )
}

/// Issues (or re-issues) the credential of `service` directly in the auth database and returns
/// its secret: how a process that serves auth and orders together (standalone) gives its own
/// orders role an identity without an operator in the loop.
pub async fn issue_service_secret(config: &Config, service: &str) -> Result<String, StartError> {
    let name = sneakernet_runtime::ServiceName::parse(service)
        .map_err(|why| StartError::Other(format!("service {service:?}: {why}")))?;
    let db =
        sneakernet_runtime::db::open_and_migrate::<migration::Migrator>(config, SERVICE).await?;
    let secret = credentials::random_secret().map_err(|e| startup(AuthError::from(e)))?;
    Store::new(db)
        .put_service_credential(entity::service_credential::Model {
            service: name.as_str().to_owned(),
            secret_hash: credentials::secret_hash(&secret),
            issued_at: chrono::Utc::now(),
            issued_by: "bootstrap:same-process".to_owned(),
        })
        .await
        .map_err(startup)?;
    Ok(secret)
}
