//! The simulated fleet's accounts, made as an operator would make them: log in
//! (AuthService.Login, or a token given), register each kiosk (FleetService.RegisterKiosk,
//! when an orders address is given) and issue its credential (IssueKioskCredential), or
//! reuse the credentials a previous run saved.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use rand::RngCore;
use sneakernet_proto::auth::v1 as auth;
use sneakernet_proto::auth::v1::auth_service_client::AuthServiceClient;
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::orders::v1 as orders;
use sneakernet_proto::orders::v1::fleet_service_client::FleetServiceClient;
use tonic::transport::Channel;

use crate::link::{Kiosk, WAIT};
use crate::usage;

/// Operator calls in flight at once while setting the fleet up.
const SETUP_CONCURRENCY: usize = 16;

/// As whom the fleet is set up.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct OperatorArgs {
    /// The operator's email.
    #[arg(long)]
    pub operator_email: Option<String>,
    /// The operator's password (prefer the environment variable or --operator-password-file:
    /// a flag shows in `ps`).
    #[arg(long, env = "FLEET_SIM_OPERATOR_PASSWORD", hide_env_values = true)]
    pub operator_password: Option<String>,
    /// File holding the operator's password.
    #[arg(long)]
    pub operator_password_file: Option<PathBuf>,
    /// File holding an operator's access token (instead of logging in).
    #[arg(long)]
    pub operator_token_file: Option<PathBuf>,
    /// A `sneakernet standalone` data directory: log in as the operator it created.
    #[arg(long)]
    pub standalone_dir: Option<PathBuf>,
}

/// Logs in as the operator `args` name, at `auth`; returns the access token.
pub async fn operator_token(args: &OperatorArgs, auth: &Channel) -> anyhow::Result<String> {
    if let Some(file) = &args.operator_token_file {
        return read_secret(file).await;
    }
    let (email, password) = match (&args.operator_email, &args.standalone_dir) {
        (Some(email), _) => {
            let password = match (&args.operator_password, &args.operator_password_file) {
                (Some(password), _) => password.clone(),
                (None, Some(file)) => read_secret(file).await?,
                (None, None) => {
                    return Err(usage(
                        "--operator-email needs --operator-password-file or FLEET_SIM_OPERATOR_PASSWORD",
                    ));
                }
            };
            (email.clone(), password)
        }
        (None, Some(dir)) => standalone_operator(dir).await?,
        (None, None) => {
            return Err(usage(
                "no operator: pass --operator-email with --operator-password-file, --operator-token-file, or --standalone-dir",
            ));
        }
    };
    let mut client = AuthServiceClient::new(auth.clone());
    let call = client.login(auth::LoginRequest {
        email: email.clone(),
        password,
    });
    let response = tokio::time::timeout(WAIT, call)
        .await
        .with_context(|| format!("log in as {email}: no answer in {WAIT:?}"))?
        .map_err(|s| anyhow::anyhow!("log in as {email}: {:?}: {}", s.code(), s.message()))?;
    response
        .into_inner()
        .session
        .map(|s| s.access_token)
        .with_context(|| format!("log in as {email}: no session in the answer"))
}

/// The operator a standalone node recorded in `dir/standalone.toml`.
async fn standalone_operator(dir: &Path) -> anyhow::Result<(String, String)> {
    let file = dir.join("standalone.toml");
    let text = tokio::fs::read_to_string(&file)
        .await
        .map_err(|e| usage(format!("cannot read {}: {e}", file.display())))?;
    let value = |key: &str| -> anyhow::Result<String> {
        text.lines()
            .filter_map(|line| line.split_once('='))
            .find(|(k, _)| k.trim() == key)
            .and_then(|(_, v)| serde_json::from_str::<String>(v.trim()).ok())
            .with_context(|| format!("{}: no {key}", file.display()))
    };
    let email = value("operator_email")?;
    let password = read_secret(&dir.join(value("operator_password_file")?)).await?;
    Ok((email, password))
}

async fn read_secret(file: &Path) -> anyhow::Result<String> {
    let text = tokio::fs::read_to_string(file)
        .await
        .map_err(|e| usage(format!("cannot read {}: {e}", file.display())))?;
    let secret = text.trim().to_owned();
    if secret.is_empty() {
        return Err(usage(format!("{} is empty", file.display())));
    }
    Ok(secret)
}

/// Saved credentials: kiosk id -> secret.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Saved {
    kiosks: BTreeMap<String, String>,
}

/// Kiosks `<prefix>-00000` .. for `count`, with credentials from `saved` (a JSON file, reused
/// and extended) or freshly issued; each new kiosk is registered at `orders` when given.
pub async fn fleet(
    auth: &Channel,
    orders: Option<&Channel>,
    operator: &str,
    prefix: &str,
    count: usize,
    saved: Option<&Path>,
) -> anyhow::Result<Vec<Kiosk>> {
    let mut known = match saved {
        Some(file) if file.exists() => {
            let text = tokio::fs::read_to_string(file)
                .await
                .map_err(|e| usage(format!("cannot read {}: {e}", file.display())))?;
            serde_json::from_str::<Saved>(&text).map_err(|e| {
                usage(format!(
                    "{}: not a fleet-sim credentials file: {e}",
                    file.display()
                ))
            })?
        }
        _ => Saved::default(),
    };
    let ids: Vec<String> = (0..count).map(|i| format!("{prefix}-{i:05}")).collect();
    let missing: Vec<String> = ids
        .iter()
        .filter(|id| !known.kiosks.contains_key(*id))
        .cloned()
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "fleet-sim: setting up {} kiosks ({} reused){}",
            missing.len(),
            count - missing.len(),
            if orders.is_some() {
                ", registering them"
            } else {
                ""
            }
        );
        let started = Instant::now();
        let operator: Arc<str> = operator.into();
        let mut made = futures::stream::iter(missing.into_iter().enumerate())
            .map(|(n, id)| {
                let auth = auth.clone();
                let orders = orders.cloned();
                let operator = operator.clone();
                async move {
                    if let Some(orders) = orders {
                        register(&orders, &operator, &id, n).await?;
                    }
                    let secret = issue(&auth, &operator, &id).await?;
                    anyhow::Ok((id, secret))
                }
            })
            .buffer_unordered(SETUP_CONCURRENCY);
        let mut done = 0usize;
        let mut last = Instant::now();
        while let Some(made) = made.next().await {
            let (id, secret) = made?;
            known.kiosks.insert(id, secret);
            done += 1;
            if last.elapsed() > Duration::from_secs(2) {
                eprintln!("fleet-sim: set up {done} kiosks");
                last = Instant::now();
            }
        }
        eprintln!(
            "fleet-sim: set up {done} kiosks in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        if let Some(file) = saved {
            save(file, &known).await?;
        }
    }
    Ok(ids
        .into_iter()
        .map(|id| {
            let secret = known.kiosks.get(&id).cloned();
            Kiosk { id, secret }
        })
        .collect())
}

/// Writes the credentials, readable by the owner only.
async fn save(file: &Path, saved: &Saved) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let text = serde_json::to_string_pretty(saved)?;
    let file = file.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&file)
            .with_context(|| format!("cannot write {}", file.display()))?;
        out.write_all(text.as_bytes())
            .with_context(|| format!("cannot write {}", file.display()))
    })
    .await?
}

fn authed<T>(message: T, token: &str) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .context("the operator token is not ASCII")?,
    );
    Ok(request)
}

async fn issue(auth: &Channel, operator: &str, kiosk_id: &str) -> anyhow::Result<String> {
    let mut client = AuthServiceClient::new(auth.clone());
    let call = client.issue_kiosk_credential(authed(
        auth::IssueKioskCredentialRequest {
            kiosk_id: kiosk_id.into(),
        },
        operator,
    )?);
    match tokio::time::timeout(WAIT, call).await {
        Ok(Ok(response)) => Ok(response.into_inner().secret),
        Ok(Err(status)) => bail!(
            "IssueKioskCredential {kiosk_id}: {:?}: {}",
            status.code(),
            status.message()
        ),
        Err(_) => bail!("IssueKioskCredential {kiosk_id}: no answer in {WAIT:?}"),
    }
}

/// RegisterKiosk at a site of its own, on a grid around Berlin.
async fn register(
    orders: &Channel,
    operator: &str,
    kiosk_id: &str,
    n: usize,
) -> anyhow::Result<()> {
    let mut qr_secret = vec![0u8; 32];
    rand::rng().fill_bytes(&mut qr_secret);
    let (row, column) = ((n / 100) as f64, (n % 100) as f64);
    let mut client = FleetServiceClient::new(orders.clone());
    let call = client.register_kiosk(authed(
        orders::RegisterKioskRequest {
            kiosk_id: kiosk_id.into(),
            site_id: format!("site-{kiosk_id}"),
            site_name: format!("fleet-sim site {kiosk_id}"),
            location: Some(common::Location {
                latitude: 52.40 + row * 0.002,
                longitude: 13.20 + column * 0.004,
            }),
            qr_secret,
            out_of_service: false,
        },
        operator,
    )?);
    match tokio::time::timeout(WAIT, call).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) => bail!(
            "RegisterKiosk {kiosk_id}: {:?}: {}",
            status.code(),
            status.message()
        ),
        Err(_) => bail!("RegisterKiosk {kiosk_id}: no answer in {WAIT:?}"),
    }
}
