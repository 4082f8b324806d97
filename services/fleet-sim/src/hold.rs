//! `fleet-sim hold`: N links opened, held idle for a while, measured, closed.
//!
//! The run, each phase bounded: set the fleet up (operator calls), open every link (at most
//! `--connect-concurrency` at once) until all are welcomed or `--connect-timeout`, let it
//! settle, then hold for `--hold` while sampling the server's process (`--pid`) and this
//! one from /proc, and the server's Prometheus counters (`--metrics-url`); then stop every
//! link and report. The whole run is cut at `--deadline`.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::{ClientTlsConfig, Endpoint};

use crate::link::{self, Fleet, Kiosk, Stats};
use crate::probe;
use crate::report::{self, HoldReport, Percentiles, ProcessCost};
use crate::setup::{self, OperatorArgs};
use crate::usage;

/// The most links one process may hold: a per-process file limit of 20,000 leaves room for
/// the runtime's own descriptors.
pub const MAX_KIOSKS: usize = 19_000;

/// `fleet-sim hold`.
#[derive(Debug, Clone, clap::Args)]
pub struct HoldArgs {
    /// The gateway's address (http:// or https://).
    #[arg(long, conflicts_with = "echo", required_unless_present = "echo")]
    pub gateway: Option<String>,
    /// The auth service's address (default: the gateway's).
    #[arg(long)]
    pub auth: Option<String>,
    /// The orders service's address: register each new kiosk there (FleetService.RegisterKiosk)
    /// as an operator would. Unset: kiosks get only their credentials.
    #[arg(long)]
    pub orders: Option<String>,
    /// A `fleet-sim echo-server`'s address instead of a gateway: no login, no setup.
    #[arg(long)]
    pub echo: Option<String>,
    /// As whom the fleet is set up.
    #[command(flatten)]
    pub operator: OperatorArgs,
    /// How many kiosks (links).
    #[arg(long, default_value_t = 100)]
    pub kiosks: usize,
    /// How long to hold every link once all are up (after `--settle`).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub hold: Duration,
    /// Kiosk ids are `<prefix>-00000`, `<prefix>-00001`, ...
    #[arg(long, default_value = "SIM")]
    pub prefix: String,
    /// Keep the kiosks' credentials in this JSON file (0600) and reuse them next time.
    #[arg(long)]
    pub credentials: Option<PathBuf>,
    /// Bays (drives) per kiosk, in Hello.
    #[arg(long, default_value_t = 8)]
    pub bays: usize,
    /// Bind links to 127.0.0.2 .. 127.0.0.<N+1> in turn (loopback targets only) so source
    /// ports do not run out. Default: 4 for a loopback target, else 0 (the system's choice).
    #[arg(long)]
    pub sources: Option<u8>,
    /// Links connecting (and logging in) at once.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Give up waiting for every link to be welcomed after this.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "180s")]
    pub connect_timeout: Duration,
    /// Wait this long after the last link is up before measuring.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub settle: Duration,
    /// The server's process id: its memory and CPU are sampled from /proc.
    #[arg(long)]
    pub pid: Option<u32>,
    /// The server's Prometheus page (http://host:port/metrics): counters are reported per
    /// second of the hold.
    #[arg(long)]
    pub metrics_url: Option<String>,
    /// A name for this run in the report (default: gateway or echo).
    #[arg(long)]
    pub label: Option<String>,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// During the hold, send this many commands a second (RequestInventory, as the operator,
    /// round robin over the kiosks) and time send -> delivered and send -> result receipted.
    /// Against the echo: each link sends probes at its share of this rate, timed send ->
    /// Receipt (the stream's round trip).
    #[arg(long, default_value_t = 0.0)]
    pub commands_per_sec: f64,
    /// Cut the whole run at this (default: setup + connect + settle + hold + 2 minutes).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub deadline: Option<Duration>,
}

/// Runs `hold`, prints the table, writes the JSON; an error when any link failed.
pub async fn run(args: HoldArgs) -> anyhow::Result<()> {
    let report = measure(&args).await?;
    report::print_hold(&report);
    if let Some(file) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        tokio::fs::write(file, text)
            .await
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    let errors: u64 = report.errors.values().map(|e| e.count).sum();
    if errors > 0 || report.connect_all_secs.is_none() {
        anyhow::bail!(
            "{errors} errors, {} of {} links up after connecting",
            report.links_up,
            report.kiosks
        );
    }
    Ok(())
}

/// Checks the flags, runs the whole hold under its deadline, returns the report.
pub async fn measure(args: &HoldArgs) -> anyhow::Result<HoldReport> {
    if args.kiosks == 0 || args.kiosks > MAX_KIOSKS {
        return Err(usage(format!(
            "--kiosks must be 1 to {MAX_KIOSKS} (one process holds at most that many links); got {}",
            args.kiosks
        )));
    }
    // 0 (none) or at least one command a minute: a rate near zero has no interval to wait.
    if !(args.commands_per_sec == 0.0 || (1.0 / 60.0..=100_000.0).contains(&args.commands_per_sec))
    {
        return Err(usage(
            "--commands-per-sec must be 0, or from 0.017 (one a minute) to 100000",
        ));
    }
    if args.connect_concurrency == 0 {
        return Err(usage("--connect-concurrency must be at least 1"));
    }
    if args.bays == 0 || args.bays > 1024 {
        return Err(usage("--bays must be 1 to 1024"));
    }
    if args.prefix.is_empty()
        || args.prefix.len() > 40
        || !args
            .prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(usage(
            "--prefix must be 1 to 40 characters of A-Z, a-z, 0-9, '-', '_'",
        ));
    }
    // Each link is one socket; the runtime, the auth channels and the log need a few more.
    let needed = args.kiosks as u64 + 64;
    if let Some(limit) = probe::open_files_limit()
        && limit < needed
    {
        return Err(usage(format!(
            "{} links need about {needed} open files, the limit is {limit}: raise it (ulimit -n {needed})",
            args.kiosks
        )));
    }
    if let Some(pid) = args.pid {
        probe::sample(&pid.to_string()).map_err(|e| usage(format!("--pid {pid}: {e:#}")))?;
    }
    let metrics_url = match &args.metrics_url {
        Some(url) => Some(
            url::Url::parse(url)
                .ok()
                .filter(|u| u.scheme() == "http" && u.host_str().is_some())
                .ok_or_else(|| usage(format!("--metrics-url {url:?} is not an http:// URL")))?,
        ),
        None => None,
    };
    let (target, label) = match (&args.gateway, &args.echo) {
        (Some(gateway), None) => (gateway.clone(), "gateway"),
        (None, Some(echo)) => (echo.clone(), "echo"),
        _ => return Err(usage("pass exactly one of --gateway and --echo")),
    };
    let target_endpoint = endpoint(
        &target,
        if label == "echo" {
            "--echo"
        } else {
            "--gateway"
        },
    )?;
    let sources = source_addresses(&target_endpoint, args.sources)?;
    let setup_budget = Duration::from_secs(30) + Duration::from_millis(20) * args.kiosks as u32;
    let deadline = args.deadline.unwrap_or(
        setup_budget + args.connect_timeout + args.settle + args.hold + Duration::from_secs(120),
    );
    let label = args.label.clone().unwrap_or_else(|| label.to_owned());
    match tokio::time::timeout(
        deadline,
        hold(args, target, target_endpoint, sources, label, metrics_url),
    )
    .await
    {
        Ok(report) => report,
        Err(_) => anyhow::bail!("the run passed its deadline ({deadline:?}) and was cut"),
    }
}

async fn hold(
    args: &HoldArgs,
    target: String,
    target_endpoint: Endpoint,
    sources: Vec<IpAddr>,
    label: String,
    metrics_url: Option<url::Url>,
) -> anyhow::Result<HoldReport> {
    let echo = args.echo.is_some();
    let mut operator_token = None;
    let (auth, kiosks) = if echo {
        let kiosks = (0..args.kiosks)
            .map(|i| Kiosk {
                id: format!("{}-{i:05}", args.prefix),
                secret: None,
            })
            .collect();
        (None, kiosks)
    } else {
        let auth_url = args.auth.clone().unwrap_or_else(|| target.clone());
        let auth = endpoint(&auth_url, "--auth")?.connect_lazy();
        let orders = match &args.orders {
            Some(url) => Some(endpoint(url, "--orders")?.connect_lazy()),
            None => None,
        };
        let operator = setup::operator_token(&args.operator, &auth).await?;
        operator_token = Some(operator.clone());
        let kiosks = setup::fleet(
            &auth,
            orders.as_ref(),
            &operator,
            &args.prefix,
            args.kiosks,
            args.credentials.as_deref(),
        )
        .await?;
        (Some(auth), kiosks)
    };

    let pid = args.pid.map(|p| p.to_string());
    let server_before = pid.as_deref().map(probe::sample).transpose()?;
    let sim_before = probe::sample("self")?;
    let fleet = Arc::new(Fleet {
        endpoint: target_endpoint,
        sources: sources.clone(),
        auth,
        bays: args.bays,
        connecting: Semaphore::new(args.connect_concurrency),
        stats: Stats::default(),
        stop: CancellationToken::new(),
        probes: link::Probes::default(),
        probe_every: (echo && args.commands_per_sec > 0.0)
            .then(|| Duration::from_secs_f64(args.kiosks as f64 / args.commands_per_sec)),
    });
    let commander = match (&operator_token, args.commands_per_sec > 0.0) {
        (Some(token), true) => Some(Commander {
            channel: fleet.endpoint.clone().connect_lazy(),
            token: token.clone(),
            kiosks: kiosks.iter().map(|k| k.id.clone()).collect(),
            rate: args.commands_per_sec,
        }),
        _ => None,
    };
    eprintln!(
        "fleet-sim: {label}: opening {} links to {target} from {} source addresses",
        args.kiosks,
        sources.len().max(1)
    );
    let started = Instant::now();
    let mut links = JoinSet::new();
    for (index, kiosk) in kiosks.into_iter().enumerate() {
        links.spawn(link::run(fleet.clone(), kiosk, index));
    }
    let result = held(
        args,
        &fleet,
        started,
        pid.as_deref(),
        metrics_url.as_ref(),
        commander,
    )
    .await;
    fleet.stop.cancel();
    // Every link ends at the stop; one stuck in a send is cut after a grace.
    let closing = async { while links.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(15), closing)
        .await
        .is_err()
    {
        eprintln!("fleet-sim: some links did not close in 15s; aborting them");
        links.abort_all();
        while links.join_next().await.is_some() {}
    }
    let phases = result?;
    let stats = &fleet.stats;
    let latencies = stats.latencies();
    let server = match (server_before, phases.server_start, phases.server_end) {
        (Some(before), Some(start), Some(end)) => Some(ProcessCost::new(
            before,
            start,
            end,
            phases.links_at_start,
            phases.hold_secs,
        )),
        _ => None,
    };
    let sim = ProcessCost::new(
        sim_before,
        phases.sim_start,
        phases.sim_end,
        phases.links_at_start,
        phases.hold_secs,
    );
    Ok(HoldReport {
        label,
        target,
        kiosks: args.kiosks,
        sources: sources.len(),
        links_up: phases.links_at_start,
        links_min_during_hold: phases.min_up,
        connect_all_secs: phases.connect_all.map(|d| d.as_secs_f64()),
        login_ms: Percentiles::of(&latencies.login),
        open_ms: Percentiles::of(&latencies.open),
        hold_secs: phases.hold_secs,
        server,
        sim,
        heartbeats_sent: stats.heartbeats_sent.load(Ordering::Relaxed),
        heartbeats_received: stats.heartbeats_received.load(Ordering::Relaxed),
        renewals: stats.renewals.load(Ordering::Relaxed),
        reconnects: stats.reconnects.load(Ordering::Relaxed),
        commands: stats.commands.load(Ordering::Relaxed),
        errors: report::errors(stats.errors()),
        server_metrics_per_sec: phases.metrics,
        commands_per_sec: (args.commands_per_sec > 0.0).then(|| {
            report::commands(
                args.commands_per_sec,
                &fleet.probes,
                &phases.rpc_micros,
                phases.skipped,
            )
        }),
    })
}

/// What the phases after spawning measured.
struct Phases {
    connect_all: Option<Duration>,
    links_at_start: u64,
    min_up: u64,
    hold_secs: f64,
    server_start: Option<probe::Sample>,
    server_end: Option<probe::Sample>,
    sim_start: probe::Sample,
    sim_end: probe::Sample,
    metrics: std::collections::BTreeMap<String, f64>,
    rpc_micros: Vec<u64>,
    skipped: u64,
}

/// How long after the hold outstanding commands (probes) may still complete.
const COMMAND_GRACE: Duration = Duration::from_secs(5);
/// SendCommand calls in flight at most; a tick finding none free is skipped and counted.
const COMMANDS_IN_FLIGHT: usize = 512;

/// What sends commands during the hold.
struct Commander {
    channel: tonic::transport::Channel,
    token: String,
    kiosks: Vec<String>,
    rate: f64,
}

impl Commander {
    /// Sends RequestInventory at `rate` round robin until `stop`; returns each call's latency
    /// (microseconds) and the ticks skipped because too many calls were in flight.
    async fn run(self, fleet: Arc<Fleet>, stop: CancellationToken) -> (Vec<u64>, u64) {
        use sneakernet_proto::gateway::v1 as pb;
        use sneakernet_proto::gateway::v1::device_command_service_client::DeviceCommandServiceClient;
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / self.rate));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let in_flight = Arc::new(Semaphore::new(COMMANDS_IN_FLIGHT));
        let mut calls = JoinSet::new();
        let mut skipped = 0u64;
        let mut latencies = Vec::new();
        let Ok(bearer) =
            format!("Bearer {}", self.token).parse::<tonic::metadata::MetadataValue<_>>()
        else {
            fleet
                .stats
                .error("send_command", "the operator token is not ASCII");
            return (latencies, skipped);
        };
        for kiosk in self.kiosks.iter().cycle() {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = ticker.tick() => {}
            }
            while let Some(Ok(Some(micros))) = calls.try_join_next() {
                latencies.push(micros);
            }
            let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                skipped += 1;
                continue;
            };
            let mut request = tonic::Request::new(pb::RequestInventoryRequest {
                kiosk_id: kiosk.clone(),
                idempotency_key: String::new(),
            });
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
            let mut client = DeviceCommandServiceClient::new(self.channel.clone());
            let fleet = fleet.clone();
            calls.spawn(async move {
                let _permit = permit;
                let sent = tokio::time::Instant::now();
                let answer =
                    tokio::time::timeout(link::WAIT, client.request_inventory(request)).await;
                match answer {
                    Ok(Ok(response)) => {
                        let id = response
                            .into_inner()
                            .command
                            .map(|c| c.command_id)
                            .unwrap_or_default();
                        fleet
                            .probes
                            .sent
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(id, sent);
                        Some(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX))
                    }
                    Ok(Err(status)) => {
                        fleet.stats.error(
                            "send_command",
                            format!("{:?}: {}", status.code(), status.message()),
                        );
                        None
                    }
                    Err(_) => {
                        fleet.stats.error("send_command", "no answer in time");
                        None
                    }
                }
            });
        }
        while let Some(done) = calls.join_next().await {
            if let Ok(Some(micros)) = done {
                latencies.push(micros);
            }
        }
        (latencies, skipped)
    }
}

/// Waits for the links, settles, holds, sampling; progress on stderr.
async fn held(
    args: &HoldArgs,
    fleet: &Arc<Fleet>,
    started: Instant,
    pid: Option<&str>,
    metrics_url: Option<&url::Url>,
    commander: Option<Commander>,
) -> anyhow::Result<Phases> {
    let stats = &fleet.stats;
    let want = args.kiosks as u64;
    let mut connect_all = None;
    let mut last_progress = Instant::now();
    while started.elapsed() < args.connect_timeout {
        let up = stats.up.load(Ordering::Relaxed);
        if up >= want {
            connect_all = Some(started.elapsed());
            break;
        }
        if last_progress.elapsed() >= Duration::from_secs(2) {
            eprintln!(
                "fleet-sim: {up}/{want} links up after {:.1}s, {} errors",
                started.elapsed().as_secs_f64(),
                stats.error_count()
            );
            last_progress = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match connect_all {
        Some(took) => eprintln!(
            "fleet-sim: all {want} links up in {:.2}s; settling {:?}",
            took.as_secs_f64(),
            args.settle
        ),
        None => eprintln!(
            "fleet-sim: only {}/{want} links up after {:?}; holding what is up",
            stats.up.load(Ordering::Relaxed),
            args.connect_timeout
        ),
    }
    tokio::time::sleep(args.settle).await;

    let links_at_start = stats.up.load(Ordering::Relaxed);
    let server_start = pid.map(probe::sample).transpose()?;
    let sim_start = probe::sample("self")?;
    let metrics_start = match metrics_url {
        Some(url) => Some(probe::scrape(url).await?),
        None => None,
    };
    let hold_started = Instant::now();
    fleet.probes.on.store(true, Ordering::Relaxed);
    fleet.probes.sending.store(true, Ordering::Relaxed);
    let commands_stop = CancellationToken::new();
    let commands = async {
        match commander {
            Some(commander) => commander.run(fleet.clone(), commands_stop.clone()).await,
            None => (Vec::new(), 0),
        }
    };
    let hold_loop = async {
        let mut min_up = links_at_start;
        let mut last_progress = Instant::now();
        while hold_started.elapsed() < args.hold {
            tokio::time::sleep(Duration::from_millis(250).min(args.hold)).await;
            min_up = min_up.min(stats.up.load(Ordering::Relaxed));
            if last_progress.elapsed() >= Duration::from_secs(10) {
                eprintln!(
                    "fleet-sim: holding {} links, {:.0}s of {:?} done, {} errors",
                    stats.up.load(Ordering::Relaxed),
                    hold_started.elapsed().as_secs_f64(),
                    args.hold,
                    stats.error_count()
                );
                last_progress = Instant::now();
            }
        }
        let hold_secs = hold_started.elapsed().as_secs_f64();
        let server_end = pid.map(probe::sample).transpose();
        let sim_end = probe::sample("self");
        commands_stop.cancel();
        fleet.probes.sending.store(false, Ordering::Relaxed);
        (min_up, hold_secs, server_end, sim_end)
    };
    let ((rpc_micros, skipped), (min_up, hold_secs, server_end, sim_end)) =
        tokio::join!(commands, hold_loop);
    let (server_end, sim_end) = (server_end?, sim_end?);
    // Commands (probes) still on their way get a grace to complete.
    let grace = Instant::now();
    while grace.elapsed() < COMMAND_GRACE {
        let sent = fleet.probes.sent.lock().map(|m| m.len()).unwrap_or(0);
        let done = fleet.probes.done.lock().map(|m| m.len()).unwrap_or(0);
        if done >= sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fleet.probes.on.store(false, Ordering::Relaxed);
    let mut metrics = std::collections::BTreeMap::new();
    if let (Some(url), Some(start)) = (metrics_url, metrics_start) {
        let end = probe::scrape(url).await?;
        for (name, value) in end {
            let delta = value - start.get(&name).copied().unwrap_or(0.0);
            if delta != 0.0 && name.ends_with("_total") {
                metrics.insert(name, delta / hold_secs);
            }
        }
    }
    eprintln!("fleet-sim: hold done; closing the links");
    Ok(Phases {
        connect_all,
        links_at_start,
        min_up,
        hold_secs,
        server_start,
        server_end,
        sim_start,
        sim_end,
        metrics,
        rpc_micros,
        skipped,
    })
}

/// The client endpoint every link uses: the kiosk agent's timeouts and HTTP/2 keepalive
/// (kiosk-agent/src/link.rs `endpoint`), TLS for https. `flag` names the flag in errors.
pub fn endpoint(url: &str, flag: &str) -> anyhow::Result<Endpoint> {
    let parsed =
        url::Url::parse(url).map_err(|e| usage(format!("{flag} {url:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(usage(format!(
            "{flag} {url:?} must be http://host:port or https://host:port"
        )));
    }
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| usage(format!("{flag} {url:?}: {e}")))?
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .tcp_nodelay(true);
    if parsed.scheme() == "https" {
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().with_enabled_roots())
            .map_err(|e| usage(format!("{flag} {url:?}: TLS: {e}")))?;
    }
    Ok(endpoint)
}

/// 127.0.0.2 .. 127.0.0.<n+1> for a loopback target (default n = 4), else none.
fn source_addresses(target: &Endpoint, asked: Option<u8>) -> anyhow::Result<Vec<IpAddr>> {
    let host = target.uri().host().unwrap_or_default();
    // Only an IPv4 literal: "localhost" may resolve to ::1, which 127.0.0.2 cannot reach.
    let loopback = host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback());
    let n = match asked {
        Some(n) if n > 0 && !loopback => {
            return Err(usage(format!(
                "--sources needs a 127.x.x.x target (binding 127.0.0.2.. cannot reach {host})"
            )));
        }
        Some(n) => n,
        None if loopback => 4,
        None => 0,
    };
    if n > 253 {
        return Err(usage("--sources must be at most 253"));
    }
    Ok((0..n)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i)))
        .collect())
}
