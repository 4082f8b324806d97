//! How the binary's operator commands (`audit`, `content ...`) find a node and log in: an
//! explicit email and password file, or the operator a standalone node created in its
//! data directory.

use std::path::PathBuf;

use anyhow::{Context, bail};
use sneakernet_proto::auth::v1 as auth;
use sneakernet_proto::auth::v1::auth_service_client::AuthServiceClient;
use tonic::transport::Channel;

use crate::cmd::connect::{ClientFlags, Target};
use crate::standalone::StandaloneState;

/// As whom an operator command calls (the flags every operator command shares; where it
/// calls is the global `--address`, where it logs in `--auth-address`, both with the TLS
/// flags).
#[derive(Clone, Debug, clap::Args)]
pub struct OperatorArgs {
    /// The operator's email (default: the standalone operator of --data-dir).
    #[arg(long)]
    pub email: Option<String>,
    /// File holding the operator's password (default: the standalone operator's).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// The standalone node's data directory (overrides `data_dir`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// An operator logged in at a node.
#[derive(Clone, Debug)]
pub struct OperatorSession {
    /// The channel to the node.
    pub channel: Channel,
    /// The operator's access token.
    pub token: String,
}

impl OperatorArgs {
    /// Logs in as the operator these flags name where `flags` say tokens come from
    /// (`--auth-address`, else `--address`), for calls to the node `flags` name; `config`
    /// supplies the defaults (`listen`, `data_dir`).
    pub async fn login(
        &self,
        config: &sneakernet_runtime::config::Config,
        flags: &ClientFlags,
    ) -> anyhow::Result<OperatorSession> {
        let target = Target::new(flags, config)?;
        let auth = match flags.auth_address {
            Some(_) => Target::auth(flags, config)?,
            None => target.clone(),
        };
        let data_dir = self.data_dir.clone().unwrap_or(config.data_dir.clone());
        let (email, password) = self.credentials(&data_dir).await?;
        let mut auth_client = AuthServiceClient::new(auth.channel.clone());
        let login = auth_client.login(auth::LoginRequest {
            email: email.clone(),
            password,
        });
        let token = auth
            .call(&format!("log in as {email}"), login)
            .await?
            .session
            .map(|session| session.access_token)
            .with_context(|| format!("log in as {email}: the answer carries no session"))?;
        Ok(OperatorSession {
            channel: target.channel,
            token,
        })
    }

    async fn credentials(&self, data_dir: &std::path::Path) -> anyhow::Result<(String, String)> {
        let state = StandaloneState::load(data_dir)?;
        let email = match (&self.email, &state) {
            (Some(email), _) => email.clone(),
            (None, Some(state)) => state.operator_email.clone(),
            (None, None) => bail!(
                "no operator given: pass --email and --password-file, or --data-dir of a standalone node (no {} in {})",
                crate::standalone::STATE_FILE,
                data_dir.display()
            ),
        };
        let password = match (&self.password_file, &state) {
            (Some(file), _) => crate::standalone::read_password(file).await?,
            (None, Some(state)) if state.operator_email.eq_ignore_ascii_case(&email) => {
                state.operator_password(data_dir).await?
            }
            (None, _) => bail!("no password for {email}: pass --password-file"),
        };
        Ok((email, password))
    }
}
