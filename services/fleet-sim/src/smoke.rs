//! `fleet-sim smoke`: the harness end to end in seconds, so it never rots (CI runs it).
//!
//! Starts `sneakernet standalone --without-kiosks` in a temporary directory (its operator
//! from the bootstrap settings) unless `--gateway` names a running node, and a heartbeating
//! echo server (this binary's `echo-server`); holds `--kiosks` links to each for `--hold`,
//! with 20 commands a second (echo probes), sampling both processes; prints the two runs
//! side by side. Fails on any error, on a link that did not come up, on a command that did
//! not complete, and when the children do not start within their timeouts. The
//! children are killed when the run ends, however it ends.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::hold::{HoldArgs, measure};
use crate::report;
use crate::setup::OperatorArgs;

/// How long a child may take to say where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// `fleet-sim smoke`.
#[derive(Debug, clap::Args)]
pub struct SmokeArgs {
    /// The `sneakernet` binary to start (default: beside this one).
    #[arg(long)]
    sneakernet: Option<PathBuf>,
    /// A running node instead of starting one (then pass the operator flags too).
    #[arg(long)]
    gateway: Option<String>,
    /// As whom, with `--gateway`.
    #[command(flatten)]
    operator: OperatorArgs,
    /// Links per run.
    #[arg(long, default_value_t = 50)]
    kiosks: usize,
    /// How long each run holds its links.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
    hold: Duration,
    /// Write both reports as a JSON array to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Runs the smoke test.
pub async fn run(args: SmokeArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("temporary directory")?;
    let mut children = Vec::new();
    let result = smoke(&args, dir.path(), &mut children).await;
    for (child, drain) in &mut children {
        let _ = child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        // The child's output closed with it, which ends the drain.
        let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
    }
    result
}

async fn smoke(args: &SmokeArgs, dir: &Path, children: &mut Vec<Started>) -> anyhow::Result<()> {
    let (gateway, gateway_pid, operator) = match &args.gateway {
        Some(gateway) => (gateway.clone(), None, args.operator.clone()),
        None => {
            let binary = match &args.sneakernet {
                Some(binary) => binary.clone(),
                None => std::env::current_exe()
                    .context("where this binary is")?
                    .with_file_name("sneakernet"),
            };
            if !binary.exists() {
                return Err(crate::usage(format!(
                    "{} does not exist: build it (cargo build --bin sneakernet) or pass --sneakernet",
                    binary.display()
                )));
            }
            let password_file = dir.join("operator.password");
            let password = uuid::Uuid::new_v4().simple().to_string();
            tokio::fs::write(&password_file, &password).await?;
            let email = "fleet-sim-smoke@example.com";
            let mut command = Command::new(&binary);
            command
                .arg("standalone")
                .arg("--without-kiosks")
                .arg("--listen")
                .arg("127.0.0.1:0")
                .arg("--data-dir")
                .arg(dir.join("node"));
            for (key, _) in std::env::vars() {
                if key.starts_with("SNEAKERNET_") {
                    command.env_remove(key);
                }
            }
            command
                .env("SNEAKERNET_AUTH__BOOTSTRAP_OPERATOR_EMAIL", email)
                .env(
                    "SNEAKERNET_AUTH__BOOTSTRAP_OPERATOR_PASSWORD_FILE",
                    &password_file,
                )
                .env("SNEAKERNET_LOG__FILTER", "warn");
            let (child, address) = start(command, "sneakernet: serving").await?;
            let pid = child.0.id();
            children.push(child);
            let operator = OperatorArgs {
                operator_email: Some(email.into()),
                operator_password: Some(password),
                ..OperatorArgs::default()
            };
            (format!("http://{address}"), pid, operator)
        }
    };
    let mut echo = Command::new(std::env::current_exe().context("where this binary is")?);
    echo.args([
        "echo-server",
        "--listen",
        "127.0.0.1:0",
        "--heartbeat-interval",
        "15s",
        "--deadline",
        "5m",
    ]);
    let (echo_child, echo_address) = start(echo, "fleet-sim: echo serving").await?;
    let echo_pid = echo_child.0.id();
    children.push(echo_child);

    let base = HoldArgs {
        gateway: None,
        auth: None,
        orders: None,
        echo: None,
        operator: OperatorArgs::default(),
        kiosks: args.kiosks,
        hold: args.hold,
        prefix: format!("SMOKE{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        credentials: None,
        bays: 4,
        sources: None,
        connect_concurrency: 64,
        connect_timeout: Duration::from_secs(30),
        settle: Duration::from_secs(1),
        pid: None,
        metrics_url: None,
        label: None,
        json: None,
        deadline: Some(Duration::from_secs(90)),
        commands_per_sec: 20.0,
    };
    let echo_report = measure(&HoldArgs {
        echo: Some(format!("http://{echo_address}")),
        pid: echo_pid,
        label: Some("echo+heartbeats".into()),
        ..base.clone()
    })
    .await?;
    let gateway_report = measure(&HoldArgs {
        gateway: Some(gateway),
        operator,
        pid: gateway_pid,
        label: Some("gateway".into()),
        ..base
    })
    .await?;
    let reports = [echo_report, gateway_report];
    report::print_compare(&reports);
    if let Some(file) = &args.json {
        tokio::fs::write(file, serde_json::to_string_pretty(&reports)?)
            .await
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    for report in &reports {
        let errors: u64 = report.errors.values().map(|e| e.count).sum();
        if errors > 0
            || report.connect_all_secs.is_none()
            || report.links_min_during_hold < report.kiosks as u64
        {
            bail!(
                "{}: {errors} errors, {} of {} links up, at least {} during the hold",
                report.label,
                report.links_up,
                report.kiosks,
                report.links_min_during_hold
            );
        }
    }
    for report in &reports {
        if let Some(commands) = &report.commands_per_sec
            && (commands.sent == 0 || commands.completed < commands.sent)
        {
            bail!(
                "{}: {} of {} commands completed",
                report.label,
                commands.completed,
                commands.sent
            );
        }
    }
    eprintln!("fleet-sim: smoke passed");
    Ok(())
}

/// A child process (killed on drop) and the task draining its standard output.
pub(crate) type Started = (Child, tokio::task::JoinHandle<()>);

/// Starts `command` and waits for the stdout line starting with `announce`; returns the
/// child and the address the line ends with.
pub(crate) async fn start(
    mut command: Command,
    announce: &str,
) -> anyhow::Result<(Started, String)> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let program = format!("{:?}", command.as_std().get_program());
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {program}"))?;
    let stdout = child.stdout.take().context("child stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let address = tokio::time::timeout(START_TIMEOUT, async {
        while let Some(line) = lines.next_line().await? {
            if line.starts_with(announce)
                && let Some(address) = line.rsplit(' ').next()
            {
                return anyhow::Ok(address.to_owned());
            }
        }
        bail!("{program} exited before saying where it listens")
    })
    .await
    .with_context(|| {
        format!("{program} did not say where it listens within {START_TIMEOUT:?}")
    })??;
    // Keep draining its output so it never blocks on a full pipe.
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(((child, drain), address))
}
