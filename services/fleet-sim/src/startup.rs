//! `fleet-sim startup` (issue 15, scenario 3): how long `sneakernet` takes from being spawned
//! to ready, judged from outside so it does not rest on the binary's own claim.
//!
//! - **standalone**: ready = gRPC health SERVING for every service of the node (auth, orders,
//!   fleet, gateway, content) AND every simulated kiosk shown online by the operator API
//!   (FleetService.ListKiosks, logged in as the operator the node recorded in its data
//!   directory). Cold = a fresh data directory (first start: accounts, demo content, kiosks
//!   stocked); warm = the same directory started again after a clean stop (SIGTERM).
//! - **each role alone** (`serve --role R`): ready = health SERVING for its services. auth
//!   runs alone; gateway, content and orders get a running auth node as their peer (and
//!   orders a service credential issued by it, and the gateway and content nodes as peers),
//!   as a split deployment would. Cold = fresh data directory, warm = reused.
//!
//! The port is chosen here (bound to 0 and released) and passed with `--listen`/
//! `SNEAKERNET_LISTEN`; every probe polls every 5 ms. Each start is bounded by `--timeout`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sneakernet_proto::auth::v1 as auth;
use sneakernet_proto::auth::v1::auth_service_client::AuthServiceClient;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_proto::orders::v1::fleet_service_client::FleetServiceClient;
use tokio::process::{Child, Command};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::hold::endpoint;
use crate::report::Percentiles;
use crate::setup::{self, OperatorArgs};
use crate::usage;

/// How often readiness is probed.
const POLL: Duration = Duration::from_millis(5);
/// The simulated kiosks `standalone` runs (simulated_fleet::SITES).
const STANDALONE_KIOSKS: usize = 3;
/// The bootstrap operator of the auth node the roles use.
const OPERATOR_EMAIL: &str = "fleet-sim-startup@example.com";

/// `fleet-sim startup`.
#[derive(Debug, Clone, clap::Args)]
pub struct StartupArgs {
    /// The `sneakernet` binary (default: beside this one).
    #[arg(long)]
    pub sneakernet: Option<PathBuf>,
    /// Starts of each kind (cold and warm, standalone and every role).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Give up on one start after this.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "120s")]
    pub timeout: Duration,
    /// Leave the roles out (standalone only).
    #[arg(long)]
    pub standalone_only: bool,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// One run of each, for CI.
    #[arg(long)]
    pub smoke: bool,
}

/// Every kind of start measured.
#[derive(Debug, Serialize, Deserialize)]
pub struct StartupReport {
    /// One row per kind.
    pub rows: Vec<StartupRow>,
}

/// One kind of start, several runs.
#[derive(Debug, Serialize, Deserialize)]
pub struct StartupRow {
    /// `standalone` or a role.
    pub what: String,
    /// `cold` or `warm`.
    pub start: String,
    /// Milliseconds of each run.
    pub runs_ms: Vec<f64>,
    /// Median and maximum (p99 = max with few runs).
    pub ms: Percentiles,
    /// Standalone: spawn -> health SERVING (the rest is kiosks coming online), median ms.
    pub serving_ms: Option<f64>,
}

/// Runs the scenario; prints the table, writes the JSON.
pub async fn run(mut args: StartupArgs) -> anyhow::Result<()> {
    if args.smoke {
        args.runs = 1;
    }
    if args.runs == 0 || args.runs > 100 {
        return Err(usage("--runs must be 1 to 100"));
    }
    let binary = match &args.sneakernet {
        Some(binary) => binary.clone(),
        None => std::env::current_exe()
            .context("where this binary is")?
            .with_file_name("sneakernet"),
    };
    if !binary.exists() {
        return Err(usage(format!(
            "{} does not exist: build it (cargo build --bin sneakernet) or pass --sneakernet",
            binary.display()
        )));
    }
    let dir = tempfile::tempdir().context("temporary directory")?;
    let work = async {
        let mut rows = Vec::new();
        let (cold, warm) = standalone(&binary, dir.path(), &args).await?;
        rows.push(cold);
        rows.push(warm);
        if !args.standalone_only {
            rows.extend(roles(&binary, dir.path(), &args).await?);
        }
        anyhow::Ok(rows)
    };
    // Ctrl-C or SIGTERM drops the work, whose children are killed on drop.
    let rows = tokio::select! {
        rows = work => rows?,
        signal = crate::rentals::interrupted() => bail!("interrupted by {signal}"),
    };
    let report = StartupReport { rows };
    print(&report);
    if let Some(file) = &args.json {
        tokio::fs::write(file, serde_json::to_string_pretty(&report)?)
            .await
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    Ok(())
}

/// Cold then warm standalone starts, `args.runs` of each.
async fn standalone(
    binary: &Path,
    dir: &Path,
    args: &StartupArgs,
) -> anyhow::Result<(StartupRow, StartupRow)> {
    let services = [
        "sneakernet.auth.v1.AuthService",
        "sneakernet.orders.v1.OrderService",
        "sneakernet.orders.v1.FleetService",
        "sneakernet.gateway.v1.KioskLinkService",
        "sneakernet.content.v1.ContentService",
    ];
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for run in 0..args.runs {
        let data = dir.join(format!("standalone-{run}"));
        for (kind, runs) in [("cold", &mut cold), ("warm", &mut warm)] {
            let port = free_port()?;
            let mut command = Command::new(binary);
            command
                .arg("standalone")
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--data-dir")
                .arg(&data);
            clean_env(&mut command);
            let spawned = Instant::now();
            let mut child = spawn(command, &dir.join(format!("standalone-{run}-{kind}.log")))?;
            let timed = tokio::time::timeout(args.timeout, async {
                let channel =
                    endpoint(&format!("http://127.0.0.1:{port}"), "--listen")?.connect_lazy();
                serving(&channel, &services).await;
                let serving_at = spawned.elapsed();
                kiosks_online(&channel, &data).await?;
                anyhow::Ok((serving_at, spawned.elapsed()))
            })
            .await;
            stop(&mut child).await;
            let (serving_at, ready_at) = match timed {
                Ok(Ok(times)) => times,
                Ok(Err(error)) => return Err(error.context(format!("standalone {kind} start"))),
                Err(_) => bail!(
                    "standalone {kind} start: not ready within {:?} (log: {})",
                    args.timeout,
                    dir.join(format!("standalone-{run}-{kind}.log")).display()
                ),
            };
            eprintln!(
                "fleet-sim: standalone {kind} run {}: serving {:.0} ms, ready {:.0} ms",
                run + 1,
                ms(serving_at),
                ms(ready_at)
            );
            runs.push((ms(ready_at), ms(serving_at)));
        }
    }
    Ok((
        row("standalone", "cold", &cold),
        row("standalone", "warm", &warm),
    ))
}

/// Each role alone, cold and warm; gateway, content and orders beside a running auth node.
async fn roles(binary: &Path, dir: &Path, args: &StartupArgs) -> anyhow::Result<Vec<StartupRow>> {
    let password_file = dir.join("operator.password");
    tokio::fs::write(&password_file, uuid::Uuid::new_v4().simple().to_string()).await?;
    let mut rows = Vec::new();
    for (kind, fresh) in [("cold", true), ("warm", false)] {
        let mut runs = Vec::new();
        for run in 0..args.runs {
            let data = dir.join(format!("auth-{run}"));
            if fresh {
                let _ = std::fs::remove_dir_all(&data);
            }
            let (mut child, took, _) =
                start_role(binary, dir, &data, "auth", &password_file, &[], args).await?;
            stop(&mut child).await;
            runs.push((took, took));
        }
        rows.push(row("auth", kind, &runs));
    }
    // The peers the other roles need: auth (tokens, the service credential), then gateway and
    // content for orders.
    let peers = dir.join("peers");
    let (mut auth_node, _, auth_url) =
        start_role(binary, dir, &peers, "auth", &password_file, &[], args).await?;
    let result = async {
        let secret_file = dir.join("orders.secret");
        let secret = service_secret(&auth_url, &password_file).await?;
        tokio::fs::write(&secret_file, secret).await?;
        let auth_env = vec![("SNEAKERNET_AUTH__URL".to_owned(), auth_url.clone())];
        let (mut gateway, _, gateway_url) = start_role(
            binary,
            dir,
            &peers,
            "gateway",
            &password_file,
            &auth_env,
            args,
        )
        .await?;
        let (mut content, _, content_url) = start_role(
            binary,
            dir,
            &peers,
            "content",
            &password_file,
            &auth_env,
            args,
        )
        .await?;
        let mut orders_env = auth_env.clone();
        orders_env.extend([
            ("SNEAKERNET_ORDERS__GATEWAY_URL".to_owned(), gateway_url),
            ("SNEAKERNET_ORDERS__CONTENT_URL".to_owned(), content_url),
            (
                "SNEAKERNET_AUTH__SERVICE_SECRET_FILE".to_owned(),
                secret_file.display().to_string(),
            ),
        ]);
        let result = async {
            let mut rows = Vec::new();
            for (role, env) in [
                ("gateway", &auth_env),
                ("content", &auth_env),
                ("orders", &orders_env),
            ] {
                for (kind, fresh) in [("cold", true), ("warm", false)] {
                    let mut runs = Vec::new();
                    for run in 0..args.runs {
                        let data = dir.join(format!("{role}-{run}"));
                        if fresh {
                            let _ = std::fs::remove_dir_all(&data);
                        }
                        let (mut child, took, _) =
                            start_role(binary, dir, &data, role, &password_file, env, args).await?;
                        stop(&mut child).await;
                        runs.push((took, took));
                    }
                    rows.push(row(role, kind, &runs));
                }
            }
            anyhow::Ok(rows)
        }
        .await;
        stop(&mut gateway).await;
        stop(&mut content).await;
        result
    }
    .await;
    stop(&mut auth_node).await;
    rows.extend(result?);
    Ok(rows)
}

/// Starts `sneakernet serve --role ROLE` on `data` and waits for its health; the child, ms
/// from spawn to SERVING, and its URL.
async fn start_role(
    binary: &Path,
    dir: &Path,
    data: &Path,
    role: &str,
    password_file: &Path,
    env: &[(String, String)],
    args: &StartupArgs,
) -> anyhow::Result<(Child, f64, String)> {
    let services: &[&str] = match role {
        "auth" => &["sneakernet.auth.v1.AuthService"],
        "gateway" => &[
            "sneakernet.gateway.v1.KioskLinkService",
            "sneakernet.gateway.v1.DeviceCommandService",
        ],
        "content" => &["sneakernet.content.v1.ContentService"],
        _ => &[
            "sneakernet.orders.v1.OrderService",
            "sneakernet.orders.v1.FleetService",
        ],
    };
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let mut command = Command::new(binary);
    command.args(["serve", "--role", role]);
    clean_env(&mut command);
    command
        .env("SNEAKERNET_LISTEN", format!("127.0.0.1:{port}"))
        .env("SNEAKERNET_DATA_DIR", data)
        .env("SNEAKERNET_AUTH__BOOTSTRAP_OPERATOR_EMAIL", OPERATOR_EMAIL)
        .env(
            "SNEAKERNET_AUTH__BOOTSTRAP_OPERATOR_PASSWORD_FILE",
            password_file,
        );
    for (key, value) in env {
        command.env(key, value);
    }
    let log = dir.join(format!(
        "{role}-{}.log",
        data.file_name().and_then(|n| n.to_str()).unwrap_or("node")
    ));
    let spawned = Instant::now();
    let mut child = spawn(command, &log)?;
    let channel = endpoint(&url, "--listen")?.connect_lazy();
    if tokio::time::timeout(args.timeout, serving(&channel, services))
        .await
        .is_err()
    {
        stop(&mut child).await;
        bail!(
            "serve --role {role}: not SERVING within {:?} (log: {})",
            args.timeout,
            log.display()
        );
    }
    Ok((child, ms(spawned.elapsed()), url))
}

/// Issues the orders role's service credential as the auth node's bootstrap operator.
async fn service_secret(auth_url: &str, password_file: &Path) -> anyhow::Result<String> {
    let channel = endpoint(auth_url, "--auth")?.connect_lazy();
    let operator = setup::operator_token(
        &OperatorArgs {
            operator_email: Some(OPERATOR_EMAIL.into()),
            operator_password_file: Some(password_file.to_owned()),
            ..OperatorArgs::default()
        },
        &channel,
    )
    .await?;
    let mut request = tonic::Request::new(auth::IssueServiceCredentialRequest {
        service: "orders".into(),
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {operator}")
            .parse()
            .context("the operator token is not ASCII")?,
    );
    let answer = AuthServiceClient::new(channel)
        .issue_service_credential(request)
        .await
        .map_err(|s| anyhow::anyhow!("IssueServiceCredential: {:?}: {}", s.code(), s.message()))?;
    Ok(answer.into_inner().secret)
}

/// Polls the health service until every one of `services` is SERVING.
async fn serving(channel: &Channel, services: &[&str]) {
    let mut health = HealthClient::new(channel.clone());
    for service in services {
        loop {
            let asked = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: (*service).to_owned(),
                })
                .await;
            if let Ok(answer) = asked
                && answer.into_inner().status == ServingStatus::Serving as i32
            {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Polls until the operator API shows every simulated kiosk online (logging in as the
/// operator the node recorded in `data` once it wrote it).
async fn kiosks_online(channel: &Channel, data: &Path) -> anyhow::Result<()> {
    let operator = OperatorArgs {
        standalone_dir: Some(data.to_owned()),
        ..OperatorArgs::default()
    };
    let token = loop {
        match setup::operator_token(&operator, channel).await {
            Ok(token) => break token,
            Err(_) => tokio::time::sleep(POLL).await,
        }
    };
    let mut fleet = FleetServiceClient::new(channel.clone());
    loop {
        let mut request = tonic::Request::new(pb::ListKiosksRequest {
            page_size: 500,
            page_token: String::new(),
            site_id: String::new(),
            online_only: true,
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}")
                .parse()
                .context("the operator token is not ASCII")?,
        );
        if let Ok(answer) = fleet.list_kiosks(request).await
            && answer
                .into_inner()
                .kiosks
                .iter()
                .filter(|k| k.online)
                .count()
                >= STANDALONE_KIOSKS
        {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A port free now on 127.0.0.1.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind a free port")?;
    Ok(listener.local_addr()?.port())
}

/// No SNEAKERNET_ variable of the caller leaks into the node; logs at info with timestamps
/// (they are where the time went).
fn clean_env(command: &mut Command) {
    for (key, _) in std::env::vars() {
        if key.starts_with("SNEAKERNET_") {
            command.env_remove(key);
        }
    }
    command.env("SNEAKERNET_LOG__FILTER", "info");
}

/// Spawns `command` with its output in `log`.
fn spawn(mut command: Command, log: &Path) -> anyhow::Result<Child> {
    let out =
        std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let err = out.try_clone()?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .kill_on_drop(true);
    command
        .spawn()
        .with_context(|| format!("cannot start {:?}", command.as_std().get_program()))
}

/// Stops `child` cleanly (SIGTERM, so a warm start finds what a clean stop leaves), killing
/// it after 15 s.
async fn stop(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
    }
    if tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .is_err()
    {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A row of (ready, serving) ms pairs.
fn row(what: &str, start: &str, runs: &[(f64, f64)]) -> StartupRow {
    let micros = |pick: fn(&(f64, f64)) -> f64| -> Vec<u64> {
        runs.iter().map(|r| (pick(r) * 1000.0) as u64).collect()
    };
    StartupRow {
        what: what.into(),
        start: start.into(),
        runs_ms: runs.iter().map(|r| r.0).collect(),
        ms: Percentiles::of(&micros(|r| r.0)),
        serving_ms: (what == "standalone").then(|| Percentiles::of(&micros(|r| r.1)).p50),
    }
}

/// The report as a table.
pub fn print(report: &StartupReport) {
    println!(
        "| start | kind | runs | median ms | max ms | spawn->SERVING median ms | every run ms |"
    );
    println!("|---|---|---:|---:|---:|---:|---|");
    for row in &report.rows {
        println!(
            "| {} | {} | {} | {:.0} | {:.0} | {} | {} |",
            row.what,
            row.start,
            row.runs_ms.len(),
            row.ms.p50,
            row.ms.max,
            row.serving_ms
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.0}")),
            row.runs_ms
                .iter()
                .map(|v| format!("{v:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}
