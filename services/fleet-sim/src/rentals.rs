//! `fleet-sim rentals` (issue 15, scenario 1): end-to-end walk-up rentals per second against
//! a node it starts, beside the database's own baseline measured in the same run.
//!
//! The run, each phase bounded:
//! 1. the baselines, one per user count of the sweep, before the node starts (so the node's
//!    pools never hold Postgres connections pgbench needs): `pgbench -N` on Postgres, the bare
//!    UPDATE/INSERT loop on SQLite ([`crate::baseline`]), with as many clients as users;
//! 2. `sneakernet standalone --without-kiosks` in a temporary directory, on SQLite or on the
//!    Postgres database `--database-url` names (a database of its own, so its
//!    `pg_stat_database` counts are the node's alone), with the rate limits raised (they would
//!    cap one user at 30 rentals a minute) and a network-wide drive price;
//! 3. per user count: `--kiosks` fresh kiosks (registered with a QR secret this process knows,
//!    credentials issued, fleet-sim's own link kiosks with `--bays` READY drives answering Lend
//!    with LendResult), N users (Register, PayDeposit), then for `--duration` every user in a
//!    loop: ScanKiosk at a random kiosk (the QR code computed as the kiosk shows it),
//!    CreateRental for an available line, WatchOrder until LENT. Users stop starting rentals
//!    at the end of the interval; rentals in flight finish and count.
//!
//! Measured per user count: rentals completed to LENT per second, CreateRental latency,
//! CreateRental start -> LENT and answer -> LENT (the event round trip through the gateway and
//! orders' watch), errors by RPC and code; on Postgres the commits per rental
//! (`pg_stat_database.xact_commit`, read-only statements included) and the backends seen
//! waiting on a lock (`pg_stat_activity`, sampled every 200 ms); the load average.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};
use sneakernet_proto::auth::v1 as auth;
use sneakernet_proto::auth::v1::auth_service_client::AuthServiceClient;
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_proto::orders::v1::fleet_service_client::FleetServiceClient;
use sneakernet_proto::orders::v1::order_service_client::OrderServiceClient;
use tokio::process::Command;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::baseline;
use crate::hold::endpoint;
use crate::link::{self, Fleet, Stats, WAIT};
use crate::report::Percentiles;
use crate::setup::{self, OperatorArgs};
use crate::usage;

/// The deposit the node is started with (and every user pays).
const DEPOSIT_MINOR_UNITS: i64 = 5000;
/// How long one rental may take from CreateRental to LENT before it counts as an error.
const LENT_WAIT: Duration = Duration::from_secs(30);
/// How often `pg_stat_activity` is sampled for lock waits.
const LOCK_SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// How long the node's background commits are counted before an interval.
const IDLE_WINDOW: Duration = Duration::from_secs(3);
/// Sign-ups in flight at once (each is an argon2 hash on the node).
const SIGN_UP_CONCURRENCY: usize = 8;

/// `fleet-sim rentals`.
#[derive(Debug, Clone, clap::Args)]
pub struct RentalsArgs {
    /// The `sneakernet` binary to start (default: beside this one).
    #[arg(long)]
    pub sneakernet: Option<PathBuf>,
    /// Run the node on this Postgres database (`postgres://...`; give it a database of its own:
    /// its statistics are read as the node's). Unset: the embedded SQLite.
    #[arg(long)]
    pub database_url: Option<String>,
    /// The database `pgbench -i` initialised, for the Postgres baseline (a URL on the same
    /// server). Required with --database-url unless --no-baseline.
    #[arg(long)]
    pub pgbench_url: Option<String>,
    /// Users renting at once; several comma-separated counts make a sweep (one measured
    /// interval per count, each with fresh kiosks).
    #[arg(long, value_delimiter = ',', default_value = "16")]
    pub users: Vec<usize>,
    /// Kiosks the users race at (per user count).
    #[arg(long, default_value_t = 4)]
    pub kiosks: usize,
    /// READY drives per kiosk (each rental takes one for good: size it above the rentals
    /// expected, or users run out and the interval ends early).
    #[arg(long, default_value_t = 250)]
    pub bays: usize,
    /// Accounts signed up (Register, PayDeposit) before each interval, 0 = users x 40, at least 600. The
    /// product lends one item per account at a time and these drives are never returned, so
    /// every rental takes a fresh account (a queue of people at the kiosks); when they run
    /// out the interval ends early (reported).
    #[arg(long, default_value_t = 0)]
    pub accounts: usize,
    /// How long users start rentals, per user count.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
    pub duration: Duration,
    /// Skip the baselines.
    #[arg(long)]
    pub no_baseline: bool,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw rentals/s and p99 latency against users as PNG files into this directory.
    #[arg(long)]
    pub plot_dir: Option<PathBuf>,
    /// Seconds, not minutes: users 2, kiosks 2, bays 20, 3 s, baseline 1 s. For CI.
    #[arg(long)]
    pub smoke: bool,
}

/// The whole run: one point per user count.
#[derive(Debug, Serialize, Deserialize)]
pub struct RentalsReport {
    /// `sqlite` or `postgres`.
    pub database: String,
    /// Kiosks per point.
    pub kiosks: usize,
    /// Drives per kiosk.
    pub bays: usize,
    /// Seconds users started rentals, per point.
    pub duration_secs: f64,
    /// `nproc`.
    pub cpus: usize,
    /// One per user count.
    pub points: Vec<RentalsPoint>,
}

/// One measured interval.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RentalsPoint {
    /// Users renting at once.
    pub users: usize,
    /// Rentals that reached LENT.
    pub rentals: u64,
    /// Accounts signed up for the interval (each rents once).
    pub accounts: usize,
    /// Seconds the sign-ups took (Register + PayDeposit, 8 at once; not in the interval).
    pub sign_up_secs: f64,
    /// The interval ended before its time: every account had rented or every drive was gone.
    pub ran_out: bool,
    /// From the first rental started to the last one finished, seconds.
    pub elapsed_secs: f64,
    /// Rentals to LENT per second.
    pub rentals_per_sec: f64,
    /// The baseline's transactions per second with as many clients (None: not measured).
    pub baseline_tps: Option<f64>,
    /// What the baseline was.
    pub baseline: String,
    /// rentals_per_sec / baseline_tps.
    pub ratio: Option<f64>,
    /// ScanKiosk latency, ms.
    pub scan_ms: Percentiles,
    /// CreateRental latency (call to answer), ms.
    pub create_ms: Percentiles,
    /// CreateRental call to the watch showing LENT, ms.
    pub create_to_lent_ms: Percentiles,
    /// CreateRental's answer to the watch showing LENT (the event round trip), ms.
    pub answer_to_lent_ms: Percentiles,
    /// Errors by RPC and code, with the first message of each.
    pub errors: BTreeMap<String, crate::report::ErrorCount>,
    /// Scans that found no drive left at the kiosk (not errors: the race was lost).
    pub sold_out: u64,
    /// Lend commands the simulated kiosks received.
    pub lends: u64,
    /// Postgres: commits in the node's database during the interval, per rental.
    pub commits_per_rental: Option<f64>,
    /// Postgres: commits per second with the kiosks linked and nobody renting (read over
    /// [`IDLE_WINDOW`] just before the interval): the node's background work.
    pub background_commits_per_sec: Option<f64>,
    /// Postgres: commits per rental less that background over the interval's length.
    pub commits_per_rental_net: Option<f64>,
    /// Postgres: rollbacks during the interval.
    pub rollbacks: Option<i64>,
    /// Postgres: backends waiting on a lock, the most seen in one sample and the mean.
    pub lock_waiters_max: Option<u64>,
    /// See `lock_waiters_max`.
    pub lock_waiters_mean: Option<f64>,
    /// Postgres: backends of the node active (not idle), mean over the samples.
    pub active_backends_mean: Option<f64>,
    /// The node's own time per gRPC method during the interval (its
    /// `grpc_request_duration_seconds`, outside calls and the roles' calls to each other):
    /// calls and mean ms, busiest first.
    pub server_methods: Vec<MethodTime>,
    /// The 1-minute load average at the start and at the end of the interval.
    pub load_before: f64,
    /// See `load_before`.
    pub load_after: f64,
}

/// One gRPC method's calls and mean server time in an interval.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct MethodTime {
    /// The method (`/package.Service/Method`).
    pub method: String,
    /// Calls finished in the interval.
    pub calls: u64,
    /// Mean server time per call, ms.
    pub mean_ms: f64,
    /// calls x mean, seconds: where the node's time went.
    pub total_secs: f64,
}

/// Runs the scenario; prints the table, writes the JSON (and the plots).
pub async fn run(mut args: RentalsArgs) -> anyhow::Result<()> {
    if args.smoke {
        args.users = vec![2];
        args.kiosks = 2;
        args.bays = 20;
        args.duration = Duration::from_secs(3);
        args.accounts = 12;
    }
    check(&args)?;
    let dir = tempfile::tempdir().context("temporary directory")?;
    let database = if args.database_url.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    let baseline_duration = if args.smoke {
        Duration::from_secs(1)
    } else {
        args.duration
    };
    let mut baselines = BTreeMap::new();
    if !args.no_baseline {
        for &users in &args.users {
            let tps = match &args.pgbench_url {
                Some(url) if args.database_url.is_some() => {
                    eprintln!("fleet-sim: baseline pgbench -N -c {users}");
                    baseline::pgbench(url, users, baseline_duration).await?
                }
                _ => {
                    eprintln!("fleet-sim: baseline SQLite UPDATE+INSERT loop, {users} clients");
                    baseline::sqlite_loop(&dir.path().join("baseline"), users, baseline_duration)
                        .await?
                }
            };
            eprintln!("fleet-sim: baseline {users} clients: {tps:.1} tps");
            baselines.insert(users, tps);
        }
    }
    let baseline_name = match database {
        "postgres" => "pgbench -N",
        _ => "SQLite UPDATE+INSERT loop (WAL, synchronous=FULL)",
    };

    let mut node = None;
    let work = async {
        let (address, password, metrics) = start_node(&args, dir.path(), &mut node).await?;
        let target = format!("http://{address}");
        let channel = endpoint(&target, "--gateway")?.connect_lazy();
        let operator = setup::operator_token(
            &OperatorArgs {
                operator_email: Some(OPERATOR_EMAIL.into()),
                operator_password: Some(password),
                ..OperatorArgs::default()
            },
            &channel,
        )
        .await?;
        price_drives(&channel, &operator).await?;
        let mut points = Vec::new();
        for (round, &users) in args.users.iter().enumerate() {
            let mut point =
                measure(&args, &target, &channel, &operator, &metrics, round, users).await?;
            point.baseline = baseline_name.into();
            point.baseline_tps = baselines.get(&users).copied();
            point.ratio = point
                .baseline_tps
                .filter(|tps| *tps > 0.0)
                .map(|tps| point.rentals_per_sec / tps);
            points.push(point);
        }
        anyhow::Ok(points)
    };
    // Ctrl-C or SIGTERM ends the run here, so the node below is stopped rather than left.
    let result = tokio::select! {
        result = work => result,
        signal = interrupted() => Err(anyhow::anyhow!("interrupted by {signal}")),
    };
    if let Some((mut child, drain)) = node {
        let _ = child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
    }
    let report = RentalsReport {
        database: database.into(),
        kiosks: args.kiosks,
        bays: args.bays,
        duration_secs: args.duration.as_secs_f64(),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        points: result?,
    };
    print(&report);
    if let Some(file) = &args.json {
        tokio::fs::write(file, serde_json::to_string_pretty(&report)?)
            .await
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    if let Some(dir) = &args.plot_dir {
        crate::plot::rentals(&report, dir)?;
    }
    let bad: Vec<String> = report
        .points
        .iter()
        .filter(|p| p.rentals == 0 || !p.errors.is_empty())
        .map(|p| {
            format!(
                "{} users: {} rentals, {} errors",
                p.users,
                p.rentals,
                p.errors.values().map(|e| e.count).sum::<u64>()
            )
        })
        .collect();
    if !bad.is_empty() {
        bail!("rentals failed: {}", bad.join("; "));
    }
    Ok(())
}

/// Resolves at the first SIGINT or SIGTERM, naming it (never, if neither can be listened for).
pub async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        _ => std::future::pending().await,
    }
}

fn check(args: &RentalsArgs) -> anyhow::Result<()> {
    if args.users.is_empty() || args.users.iter().any(|&u| u == 0 || u > 1000) {
        return Err(usage("--users: each count must be 1 to 1000"));
    }
    if args.kiosks == 0 || args.kiosks > 1000 {
        return Err(usage("--kiosks must be 1 to 1000"));
    }
    if args.bays == 0 || args.bays > 999 {
        return Err(usage("--bays must be 1 to 999"));
    }
    if args.accounts > 100_000 {
        return Err(usage("--accounts must be at most 100000"));
    }
    if args.duration < Duration::from_secs(1) || args.duration > Duration::from_secs(3600) {
        return Err(usage("--duration must be 1s to 1h"));
    }
    if let Some(url) = &args.database_url
        && !url.starts_with("postgres://")
        && !url.starts_with("postgresql://")
    {
        return Err(usage(format!(
            "--database-url {url:?} must be postgres://..."
        )));
    }
    if args.database_url.is_some() && args.pgbench_url.is_none() && !args.no_baseline {
        return Err(usage(
            "--database-url needs --pgbench-url (a database `pgbench -i` initialised) or --no-baseline",
        ));
    }
    if args.database_url.is_none() && args.pgbench_url.is_some() {
        return Err(usage(
            "--pgbench-url is for a Postgres run: add --database-url",
        ));
    }
    Ok(())
}

/// The bootstrap operator the node is started with.
const OPERATOR_EMAIL: &str = "fleet-sim-rentals@example.com";

/// Starts the node; returns its address and the operator's password.
async fn start_node(
    args: &RentalsArgs,
    dir: &Path,
    node: &mut Option<crate::smoke::Started>,
) -> anyhow::Result<(String, String, url::Url)> {
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
    let password_file = dir.join("operator.password");
    let password = uuid::Uuid::new_v4().simple().to_string();
    tokio::fs::write(&password_file, &password).await?;
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
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("cannot find a free port for the node's metrics")?
        .port();
    let metrics = url::Url::parse(&format!("http://127.0.0.1:{metrics_port}/metrics"))?;
    let unlimited = "1000000000";
    command
        .env("SNEAKERNET_AUTH__BOOTSTRAP_OPERATOR_EMAIL", OPERATOR_EMAIL)
        .env(
            "SNEAKERNET_AUTH__BOOTSTRAP_OPERATOR_PASSWORD_FILE",
            &password_file,
        )
        .env("SNEAKERNET_LOG__FILTER", "warn")
        .env(
            "SNEAKERNET_METRICS_LISTEN",
            format!("127.0.0.1:{metrics_port}"),
        )
        .env("SNEAKERNET_RATE_LIMIT__ORDERS_PER_ACCOUNT", unlimited)
        .env("SNEAKERNET_RATE_LIMIT__REGISTER_PER_ADDRESS", unlimited)
        .env("SNEAKERNET_RATE_LIMIT__LOGIN_PER_ADDRESS", unlimited)
        .env(
            "SNEAKERNET_ORDERS__DEPOSIT_MINOR_UNITS",
            DEPOSIT_MINOR_UNITS.to_string(),
        )
        .env("SNEAKERNET_ORDERS__DEPOSIT_CURRENCY", "EUR");
    if let Some(url) = &args.database_url {
        let prefix = format!("bench{}_", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        command
            .env("SNEAKERNET_DATABASE_URL", url)
            .env("SNEAKERNET_DATABASE_SCHEMA_PREFIX", prefix);
    }
    let (started, address) = crate::smoke::start(command, "sneakernet: serving").await?;
    *node = Some(started);
    Ok((address, password, metrics))
}

/// A network-wide price for every drive (an offer lists only priced types).
async fn price_drives(channel: &Channel, operator: &str) -> anyhow::Result<()> {
    let eur = |minor_units: i64| common::Money {
        minor_units,
        currency: "EUR".into(),
    };
    let day = prost_types::Duration {
        seconds: 24 * 3600,
        nanos: 0,
    };
    let request = pb::SetPricingRequest {
        site_id: String::new(),
        item_type: Some(common::ItemType {
            kind: common::ItemKind::Drive.into(),
            capacity_bytes: 0,
            content_package_id: String::new(),
        }),
        pricing: Some(pb::Pricing {
            base_price: Some(eur(400)),
            price_per_extra_day: Some(eur(150)),
            max_duration_days: 14,
            grace_period: Some(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
            late_fee_per_day: Some(eur(200)),
            late_fee_cap: Some(eur(2000)),
            lost_item_fee: Some(eur(6000)),
            lost_after_days: 14,
            pickup_window: Some(day),
        }),
    };
    let mut fleet = FleetServiceClient::new(channel.clone());
    call("SetPricing", fleet.set_pricing(authed(request, operator)?)).await?;
    Ok(())
}

/// One simulated kiosk as the users see it: its id and the secret its QR code is made from.
#[derive(Clone)]
struct Site {
    id: sneakernet_runtime::KioskId,
    qr_secret: Vec<u8>,
}

/// Timings and outcomes the users of one interval share.
#[derive(Default)]
struct Tally {
    scan: Vec<u64>,
    create: Vec<u64>,
    create_to_lent: Vec<u64>,
    answer_to_lent: Vec<u64>,
    rentals: u64,
    sold_out: u64,
    errors: BTreeMap<String, (u64, String)>,
    ran_out: bool,
    first_started: Option<Instant>,
    last_finished: Option<Instant>,
}

impl Tally {
    fn error(&mut self, kind: String, message: String) {
        self.errors.entry(kind).or_insert((0, message)).0 += 1;
    }
}

/// One user count: fresh kiosks, fresh users, `--duration` of renting.
async fn measure(
    args: &RentalsArgs,
    target: &str,
    channel: &Channel,
    operator: &str,
    metrics: &url::Url,
    round: usize,
    users: usize,
) -> anyhow::Result<RentalsPoint> {
    let prefix = format!(
        "R{round}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    eprintln!(
        "fleet-sim: {users} users: setting up {} kiosks with {} drives each",
        args.kiosks, args.bays
    );
    let mut sites = Vec::new();
    for n in 0..args.kiosks {
        let id = format!("{prefix}-{n:05}");
        let mut qr_secret = vec![0u8; 32];
        rand::rng().fill_bytes(&mut qr_secret);
        register_kiosk(channel, operator, &id, &qr_secret, n).await?;
        let id = sneakernet_runtime::KioskId::parse(&id)
            .map_err(|why| anyhow::anyhow!("kiosk id {id:?} {why}"))?;
        sites.push(Site { id, qr_secret });
    }
    let kiosks = setup::fleet(channel, None, operator, &prefix, args.kiosks, None).await?;
    let fleet = Arc::new(Fleet {
        endpoint: endpoint(target, "--gateway")?,
        sources: Vec::new(),
        auth: Some(channel.clone()),
        bays: args.bays,
        connecting: Semaphore::new(64),
        stats: Stats::default(),
        stop: CancellationToken::new(),
        probes: link::Probes::default(),
        probe_every: None,
    });
    let mut links = JoinSet::new();
    for (index, kiosk) in kiosks.into_iter().enumerate() {
        links.spawn(link::run(fleet.clone(), kiosk, index));
    }
    let result = rent(args, target, &fleet, &sites, metrics, users).await;
    fleet.stop.cancel();
    if tokio::time::timeout(Duration::from_secs(15), async {
        while links.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        links.abort_all();
    }
    let mut point = result?;
    point.lends = fleet.stats.commands.load(Ordering::Relaxed);
    for (kind, (count, first)) in fleet.stats.errors() {
        point.errors.insert(
            format!("kiosk link: {kind}"),
            crate::report::ErrorCount { count, first },
        );
    }
    Ok(point)
}

/// Waits for the links, signs the users up, lets them rent for `--duration`.
async fn rent(
    args: &RentalsArgs,
    target: &str,
    fleet: &Arc<Fleet>,
    sites: &[Site],
    metrics: &url::Url,
    users: usize,
) -> anyhow::Result<RentalsPoint> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while fleet.stats.up.load(Ordering::Relaxed) < sites.len() as u64 {
        if Instant::now() > deadline {
            bail!(
                "only {} of {} kiosk links came up within 60s: {:?}",
                fleet.stats.up.load(Ordering::Relaxed),
                sites.len(),
                fleet.stats.errors()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wanted = if args.accounts == 0 {
        (users * 40).max(600)
    } else {
        args.accounts.max(users)
    };
    eprintln!("fleet-sim: {users} users: kiosks up; signing {wanted} accounts up");
    let signing = Instant::now();
    let sign_up_channel = endpoint(target, "--gateway")?.connect_lazy();
    let signed: Vec<String> = futures::stream::iter(0..wanted)
        .map(|n| sign_up(sign_up_channel.clone(), n))
        .buffer_unordered(SIGN_UP_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let sign_up_secs = signing.elapsed().as_secs_f64();
    let pool = Arc::new(Mutex::new(signed));

    // The statistics are read over another database of the server (pgbench's when given), so
    // the readings themselves are not counted as the node's transactions.
    let pg = match &args.database_url {
        Some(url) => Some(PgStats {
            url: args.pgbench_url.clone().unwrap_or_else(|| url.clone()),
            database: database_name(url)?,
        }),
        None => None,
    };
    let background = match &pg {
        Some(pg) => {
            let (before, _) = xact_counts(pg).await?;
            let idle = Instant::now();
            tokio::time::sleep(IDLE_WINDOW).await;
            let (after, _) = xact_counts(pg).await?;
            Some((after - before) as f64 / idle.elapsed().as_secs_f64())
        }
        None => None,
    };
    let xact_before = match &pg {
        Some(pg) => Some(xact_counts(pg).await?),
        None => None,
    };
    let sampling = CancellationToken::new();
    let sampler = pg
        .clone()
        .map(|pg| tokio::spawn(sample_locks(pg, sampling.clone())));
    let series_before = crate::probe::scrape_series(metrics).await?;
    let load_before = load_average();
    eprintln!(
        "fleet-sim: {users} users renting for {}",
        humantime::format_duration(args.duration)
    );
    let tally = Arc::new(Mutex::new(Tally::default()));
    let sites: Arc<[Site]> = sites.into();
    let until = Instant::now() + args.duration;
    let mut renters = JoinSet::new();
    for _ in 0..users {
        // Each renter its own connection, as each phone has.
        let channel = endpoint(target, "--gateway")?.connect_lazy();
        renters.spawn(user_loop(
            channel,
            pool.clone(),
            sites.clone(),
            until,
            tally.clone(),
        ));
    }
    while renters.join_next().await.is_some() {}
    let load_after = load_average();
    let series_after = crate::probe::scrape_series(metrics).await?;
    sampling.cancel();
    let locks = match sampler {
        Some(task) => Some(task.await.context("the lock sampler panicked")?),
        None => None,
    };
    let xact_after = match &pg {
        Some(pg) => Some(xact_counts(pg).await?),
        None => None,
    };
    let tally = std::mem::take(&mut *tally.lock().unwrap_or_else(|e| e.into_inner()));
    let elapsed = match (tally.first_started, tally.last_finished) {
        (Some(first), Some(last)) => last.duration_since(first).as_secs_f64(),
        _ => 0.0,
    };
    let mut point = RentalsPoint {
        users,
        rentals: tally.rentals,
        accounts: wanted,
        sign_up_secs,
        ran_out: tally.ran_out,
        elapsed_secs: elapsed,
        rentals_per_sec: if elapsed > 0.0 {
            tally.rentals as f64 / elapsed
        } else {
            0.0
        },
        scan_ms: Percentiles::of(&tally.scan),
        create_ms: Percentiles::of(&tally.create),
        create_to_lent_ms: Percentiles::of(&tally.create_to_lent),
        answer_to_lent_ms: Percentiles::of(&tally.answer_to_lent),
        errors: crate::report::errors(BTreeMap::new()),
        sold_out: tally.sold_out,
        load_before,
        load_after,
        server_methods: method_times(&series_before, &series_after),
        ..RentalsPoint::default()
    };
    for (kind, (count, first)) in tally.errors {
        point
            .errors
            .insert(kind, crate::report::ErrorCount { count, first });
    }
    if let (Some((commits_before, rollbacks_before)), Some((commits_after, rollbacks_after))) =
        (xact_before, xact_after)
        && tally.rentals > 0
    {
        point.commits_per_rental =
            Some((commits_after - commits_before) as f64 / tally.rentals as f64);
        point.rollbacks = Some(rollbacks_after - rollbacks_before);
        point.background_commits_per_sec = background;
        point.commits_per_rental_net = background.map(|per_sec| {
            ((commits_after - commits_before) as f64 - per_sec * elapsed).max(0.0)
                / tally.rentals as f64
        });
    }
    if let Some(locks) = locks {
        point.lock_waiters_max = Some(locks.max);
        point.lock_waiters_mean = Some(locks.mean());
        point.active_backends_mean = Some(locks.active_mean());
    }
    Ok(point)
}

/// Per method: calls and server time between two scrapes of the node's metrics.
fn method_times(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> Vec<MethodTime> {
    const SUM: &str = "grpc_request_duration_seconds_sum{";
    const COUNT: &str = "grpc_request_duration_seconds_count{";
    let mut times: Vec<MethodTime> = after
        .iter()
        .filter_map(|(series, sum)| {
            let labels = series.strip_prefix(SUM)?;
            let count_series = format!("{COUNT}{labels}");
            let calls = after.get(&count_series).copied().unwrap_or(0.0)
                - before.get(&count_series).copied().unwrap_or(0.0);
            let secs = sum - before.get(series).copied().unwrap_or(0.0);
            let method = labels
                .split("method=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or(labels)
                .to_owned();
            (calls >= 1.0).then(|| MethodTime {
                method,
                calls: calls as u64,
                mean_ms: secs / calls * 1000.0,
                total_secs: secs,
            })
        })
        .collect();
    times.sort_by(|a, b| b.total_secs.total_cmp(&a.total_secs));
    times
}

/// Registers account `n` and pays its deposit; its access token.
async fn sign_up(channel: Channel, n: usize) -> anyhow::Result<String> {
    let email = format!(
        "rentals-{n}-{}@example.com",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let mut auth = AuthServiceClient::new(channel.clone());
    let session = call(
        "Register",
        auth.register(auth::RegisterRequest {
            email,
            password: uuid::Uuid::new_v4().simple().to_string(),
        }),
    )
    .await?
    .session
    .context("Register: no session in the answer")?;
    let token = session.access_token;
    let mut orders = OrderServiceClient::new(channel.clone());
    call(
        "PayDeposit",
        orders.pay_deposit(authed(
            pb::PayDepositRequest {
                amount: Some(common::Money {
                    minor_units: DEPOSIT_MINOR_UNITS,
                    currency: "EUR".into(),
                }),
                payment_method: Some(card()),
                idempotency_key: uuid::Uuid::new_v4().to_string(),
            },
            &token,
        )?),
    )
    .await?;
    Ok(token)
}

/// The sandbox provider's approving test card.
fn card() -> pb::PaymentMethod {
    pb::PaymentMethod {
        method: Some(pb::payment_method::Method::CardToken(
            "4242424242424242".into(),
        )),
    }
}

/// One renter until `until`, each rental as the next account of `pool`: scan a random kiosk,
/// rent what it offers, watch to LENT.
async fn user_loop(
    channel: Channel,
    pool: Arc<Mutex<Vec<String>>>,
    sites: Arc<[Site]>,
    until: Instant,
    tally: Arc<Mutex<Tally>>,
) {
    let mut orders = OrderServiceClient::new(channel);
    let record =
        |f: &mut dyn FnMut(&mut Tally)| f(&mut tally.lock().unwrap_or_else(|e| e.into_inner()));
    let mut sold_out_in_a_row = 0usize;
    let mut account: Option<String> = None;
    while Instant::now() < until {
        if sold_out_in_a_row >= sites.len() * 4 {
            record(&mut |t| t.ran_out = true);
            break;
        }
        let token = match &mut account {
            Some(token) => token.clone(),
            None => match pool.lock().unwrap_or_else(|e| e.into_inner()).pop() {
                Some(next) => account.insert(next).clone(),
                None => {
                    record(&mut |t| t.ran_out = true);
                    break;
                }
            },
        };
        let site = &sites[rand::rng().random_range(0..sites.len())];
        let started = Instant::now();
        record(&mut |t| {
            t.first_started.get_or_insert(started);
        });
        match rent_once(&mut orders, &token, site).await {
            Ok(Rented::Lent {
                scan,
                create,
                answer_to_lent,
            }) => {
                sold_out_in_a_row = 0;
                let finished = Instant::now();
                // This account holds its drive now; the next rental is someone else's.
                account = None;
                record(&mut |t| {
                    t.rentals += 1;
                    t.scan.push(micros(scan));
                    t.create.push(micros(create));
                    t.create_to_lent.push(micros(create + answer_to_lent));
                    t.answer_to_lent.push(micros(answer_to_lent));
                    t.last_finished = Some(finished);
                });
            }
            Ok(Rented::SoldOut) => {
                sold_out_in_a_row += 1;
                record(&mut |t| t.sold_out += 1);
            }
            Err(Failed(kind, message)) => {
                record(&mut |t| t.error(kind.clone(), message.clone()));
                // An error is not retried at once: a broken node would only be hammered.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// What one rental attempt came to.
enum Rented {
    Lent {
        scan: Duration,
        create: Duration,
        answer_to_lent: Duration,
    },
    SoldOut,
}

/// A failed rental: the kind (RPC and code) and the message.
struct Failed(String, String);

fn status(rpc: &str, status: &tonic::Status) -> Failed {
    Failed(
        format!("{rpc} {:?}", status.code()),
        status.message().to_owned(),
    )
}

async fn rent_once(
    orders: &mut OrderServiceClient<Channel>,
    token: &str,
    site: &Site,
) -> Result<Rented, Failed> {
    let bad = |rpc: &str, why: String| Failed(format!("{rpc} bad answer"), why);
    let timed_out = |rpc: &str| Failed(format!("{rpc} timeout"), format!("no answer in {WAIT:?}"));
    let qr = sneakernet_runtime::qr::payload(&site.id, &site.qr_secret, chrono::Utc::now());
    let started = Instant::now();
    let request = authed(pb::ScanKioskRequest { qr_payload: qr }, token)
        .map_err(|e| bad("ScanKiosk", e.to_string()))?;
    let offer = tokio::time::timeout(WAIT, orders.scan_kiosk(request))
        .await
        .map_err(|_| timed_out("ScanKiosk"))?
        .map_err(|s| status("ScanKiosk", &s))?
        .into_inner()
        .offer
        .ok_or_else(|| bad("ScanKiosk", "no offer".into()))?;
    let scan = started.elapsed();
    let Some(line) = offer.lines.iter().find(|line| {
        line.available > 0
            && line
                .item_type
                .as_ref()
                .is_some_and(|t| t.kind == common::ItemKind::Drive as i32)
    }) else {
        return Ok(Rented::SoldOut);
    };
    let duration_days = line.prices.first().map_or(1, |p| p.duration_days);
    let request = authed(
        pb::CreateRentalRequest {
            kiosk_id: offer.kiosk_id.clone(),
            offer_id: offer.offer_id.clone(),
            choice: Some(pb::ItemChoice {
                spec: Some(common::ItemSpec {
                    item_type: line.item_type.clone(),
                    write_protect: false,
                }),
                duration_days,
            }),
            payment_method: None,
            idempotency_key: uuid::Uuid::new_v4().to_string(),
        },
        token,
    )
    .map_err(|e| bad("CreateRental", e.to_string()))?;
    let created_at = Instant::now();
    let order = match tokio::time::timeout(WAIT, orders.create_rental(request)).await {
        Err(_) => return Err(timed_out("CreateRental")),
        // Another user took the last drive between the scan and the rental: the race lost.
        Ok(Err(s))
            if s.code() == tonic::Code::FailedPrecondition && s.message().contains("available") =>
        {
            return Ok(Rented::SoldOut);
        }
        Ok(Err(s)) => return Err(status("CreateRental", &s)),
        Ok(Ok(answer)) => answer
            .into_inner()
            .order
            .ok_or_else(|| bad("CreateRental", "no order".into()))?,
    };
    let answered = Instant::now();
    let create = answered - created_at;
    if order.state == pb::OrderState::Lent as i32 {
        return Ok(Rented::Lent {
            scan,
            create,
            answer_to_lent: Duration::ZERO,
        });
    }
    let request = authed(
        pb::WatchOrderRequest {
            order_id: order.order_id.clone(),
        },
        token,
    )
    .map_err(|e| bad("WatchOrder", e.to_string()))?;
    let watch = async {
        let mut stream = orders
            .watch_order(request)
            .await
            .map_err(|s| status("WatchOrder", &s))?
            .into_inner();
        loop {
            match stream.message().await {
                Ok(Some(change)) => match pb::OrderState::try_from(change.state) {
                    Ok(pb::OrderState::Lent) => return Ok(Instant::now()),
                    Ok(
                        state @ (pb::OrderState::Failed
                        | pb::OrderState::Refunded
                        | pb::OrderState::Cancelled),
                    ) => {
                        return Err(Failed(
                            format!("order {}", state.as_str_name()),
                            change.reason,
                        ));
                    }
                    _ => {}
                },
                Ok(None) => {
                    return Err(Failed(
                        "WatchOrder ended".into(),
                        "the stream ended before LENT".into(),
                    ));
                }
                Err(s) => return Err(status("WatchOrder", &s)),
            }
        }
    };
    let lent = tokio::time::timeout(LENT_WAIT, watch).await.map_err(|_| {
        Failed(
            "not LENT in time".into(),
            format!("order {} not LENT within {LENT_WAIT:?}", order.order_id),
        )
    })??;
    Ok(Rented::Lent {
        scan,
        create,
        answer_to_lent: lent - answered,
    })
}

/// RegisterKiosk with a QR secret this process keeps.
async fn register_kiosk(
    channel: &Channel,
    operator: &str,
    kiosk_id: &str,
    qr_secret: &[u8],
    n: usize,
) -> anyhow::Result<()> {
    let mut fleet = FleetServiceClient::new(channel.clone());
    let request = pb::RegisterKioskRequest {
        kiosk_id: kiosk_id.into(),
        site_id: format!("site-{kiosk_id}"),
        site_name: format!("fleet-sim rentals {kiosk_id}"),
        location: Some(common::Location {
            latitude: 52.40 + (n / 100) as f64 * 0.002,
            longitude: 13.20 + (n % 100) as f64 * 0.004,
        }),
        qr_secret: qr_secret.to_vec(),
        out_of_service: false,
    };
    call(
        "RegisterKiosk",
        fleet.register_kiosk(authed(request, operator)?),
    )
    .await?;
    Ok(())
}

/// `message` with the bearer token.
fn authed<T>(message: T, token: &str) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .context("the token is not ASCII")?,
    );
    Ok(request)
}

/// Awaits a setup call with the usual bound; the status named on failure.
async fn call<T>(
    rpc: &str,
    future: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(WAIT, future).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => bail!("{rpc}: {:?}: {}", status.code(), status.message()),
        Err(_) => bail!("{rpc}: no answer in {WAIT:?}"),
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The 1-minute load average (0 when /proc cannot tell).
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split(' ').next().and_then(|n| n.parse().ok()))
        .unwrap_or(0.0)
}

/// `psql URL -c query`, one line of `|`-separated values.
async fn psql(url: &str, query: &str) -> anyhow::Result<String> {
    let output = Command::new("psql")
        .args([url, "-qAtX", "-c", query])
        .kill_on_drop(true)
        .output()
        .await
        .context("cannot run psql (is it installed and on PATH?)")?;
    if !output.status.success() {
        bail!(
            "psql failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Where the node's database statistics are read: a connection URL and the node's database.
#[derive(Clone)]
struct PgStats {
    url: String,
    database: String,
}

/// The database a postgres:// URL names.
fn database_name(url: &str) -> anyhow::Result<String> {
    let parsed = url::Url::parse(url).map_err(|e| usage(format!("--database-url: {e}")))?;
    let name = parsed.path().trim_start_matches('/');
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(usage(format!(
            "--database-url {url:?} must name a database (letters, digits, _ and -)"
        )));
    }
    Ok(name.to_owned())
}

/// Commits and rollbacks of the node's database so far.
async fn xact_counts(pg: &PgStats) -> anyhow::Result<(i64, i64)> {
    // The statistics collector publishes at most every 500 ms by default; a fresh snapshot
    // is asked for so the counts are current.
    let line = psql(
        &pg.url,
        &format!(
            "select pg_stat_clear_snapshot(); select xact_commit, xact_rollback from pg_stat_database where datname = '{}'",
            pg.database
        ),
    )
    .await?;
    let last = line.lines().last().unwrap_or_default();
    let (commits, rollbacks) = last
        .split_once('|')
        .with_context(|| format!("unexpected pg_stat_database answer {last:?}"))?;
    Ok((
        commits.trim().parse().context("xact_commit")?,
        rollbacks.trim().parse().context("xact_rollback")?,
    ))
}

/// Lock waiters and active backends seen in each sample.
#[derive(Default)]
struct LockSamples {
    samples: u64,
    waiting_sum: u64,
    active_sum: u64,
    max: u64,
}

impl LockSamples {
    fn mean(&self) -> f64 {
        self.waiting_sum as f64 / self.samples.max(1) as f64
    }

    fn active_mean(&self) -> f64 {
        self.active_sum as f64 / self.samples.max(1) as f64
    }
}

/// Samples `pg_stat_activity` of the node's database until `stop`.
async fn sample_locks(pg: PgStats, stop: CancellationToken) -> LockSamples {
    let mut samples = LockSamples::default();
    let query = format!(
        "select count(*) filter (where wait_event_type = 'Lock'), count(*) filter (where state = 'active') \
         from pg_stat_activity where datname = '{}'",
        pg.database
    );
    while !stop.is_cancelled() {
        if let Ok(line) = psql(&pg.url, &query).await
            && let Some((waiting, active)) = line.split_once('|')
            && let (Ok(waiting), Ok(active)) = (waiting.parse::<u64>(), active.parse::<u64>())
        {
            samples.samples += 1;
            samples.waiting_sum += waiting;
            samples.active_sum += active;
            samples.max = samples.max.max(waiting);
        }
        tokio::select! {
            () = stop.cancelled() => {}
            () = tokio::time::sleep(LOCK_SAMPLE_EVERY) => {}
        }
    }
    samples
}

/// The report as a table on standard output.
pub fn print(report: &RentalsReport) {
    println!(
        "rentals on {} ({} kiosks x {} drives, {} s per point, {} CPUs)",
        report.database, report.kiosks, report.bays, report.duration_secs, report.cpus
    );
    let pct = |p: &Percentiles| format!("{:.1}/{:.1}/{:.1}", p.p50, p.p99, p.max);
    let opt = |v: Option<f64>, digits: usize| {
        v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
    };
    println!(
        "| users | rentals (accounts) | rentals/s | baseline tps | ratio | CreateRental p50/p99/max ms | create->LENT p50/p99/max ms | answer->LENT p50/p99 ms | scan p50/p99 ms | commits/rental (net of background) | lock waiters max/mean | load before/after | errors |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for p in &report.points {
        let errors = if p.errors.is_empty() {
            "0".to_owned()
        } else {
            p.errors
                .iter()
                .map(|(kind, e)| format!("{kind}: {} ({})", e.count, e.first))
                .collect::<Vec<_>>()
                .join("; ")
        };
        println!(
            "| {} | {} ({}{}) | {:.1} | {} | {} | {} | {} | {:.1}/{:.1} | {:.1}/{:.1} | {} | {} | {:.1}/{:.1} | {} |",
            p.users,
            p.rentals,
            p.accounts,
            if p.ran_out { ", ran out" } else { "" },
            p.rentals_per_sec,
            opt(p.baseline_tps, 1),
            opt(p.ratio, 3),
            pct(&p.create_ms),
            pct(&p.create_to_lent_ms),
            p.answer_to_lent_ms.p50,
            p.answer_to_lent_ms.p99,
            p.scan_ms.p50,
            p.scan_ms.p99,
            match (p.commits_per_rental, p.commits_per_rental_net) {
                (Some(all), Some(net)) => format!("{all:.1} ({net:.1})"),
                (all, _) => opt(all, 1),
            },
            match (p.lock_waiters_max, p.lock_waiters_mean) {
                (Some(max), Some(mean)) => format!("{max}/{mean:.2}"),
                _ => "-".into(),
            },
            p.load_before,
            p.load_after,
            errors
        );
    }
    for p in &report.points {
        let methods: Vec<String> = p
            .server_methods
            .iter()
            .take(8)
            .map(|m| format!("{} {}x{:.1}ms", short(&m.method), m.calls, m.mean_ms))
            .collect();
        println!(
            "{} users, node time by method (calls x mean): {}",
            p.users,
            methods.join(", ")
        );
    }
}

/// `/pkg.v1.Service/Method` -> `Service/Method`.
fn short(method: &str) -> &str {
    method
        .rsplit_once('.')
        .map_or(method, |(_, service_method)| service_method)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_times_are_the_difference_of_two_scrapes_busiest_first() {
        let series = |pairs: &[(&str, f64)]| -> BTreeMap<String, f64> {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
        };
        let create = r#"{method="/sneakernet.orders.v1.OrderService/CreateRental"}"#;
        let scan = r#"{method="/sneakernet.orders.v1.OrderService/ScanKiosk"}"#;
        let before = series(&[
            (&format!("grpc_request_duration_seconds_sum{create}"), 1.0),
            (
                &format!("grpc_request_duration_seconds_count{create}"),
                10.0,
            ),
        ]);
        let after = series(&[
            (&format!("grpc_request_duration_seconds_sum{create}"), 3.0),
            (
                &format!("grpc_request_duration_seconds_count{create}"),
                20.0,
            ),
            (&format!("grpc_request_duration_seconds_sum{scan}"), 0.5),
            (&format!("grpc_request_duration_seconds_count{scan}"), 5.0),
        ]);
        let times = method_times(&before, &after);
        assert_eq!(times.len(), 2);
        assert_eq!(
            times[0].method,
            "/sneakernet.orders.v1.OrderService/CreateRental"
        );
        assert_eq!(times[0].calls, 10);
        assert!((times[0].mean_ms - 200.0).abs() < 1e-9);
        assert_eq!(short(&times[1].method), "OrderService/ScanKiosk");
        assert!((times[1].mean_ms - 100.0).abs() < 1e-9);
    }

    #[test]
    fn the_database_is_read_from_the_url_and_a_url_without_one_is_refused() {
        assert_eq!(
            database_name("postgres://u:p@127.0.0.1:5432/bench_rentals").ok(),
            Some("bench_rentals".to_owned())
        );
        assert!(database_name("postgres://u:p@127.0.0.1:5432/").is_err());
        assert!(database_name("postgres://u:p@127.0.0.1:5432/a'b").is_err());
    }

    fn args(users: &[usize]) -> RentalsArgs {
        RentalsArgs {
            sneakernet: None,
            database_url: None,
            pgbench_url: None,
            users: users.to_vec(),
            kiosks: 4,
            bays: 10,
            accounts: 0,
            duration: Duration::from_secs(5),
            no_baseline: false,
            json: None,
            plot_dir: None,
            smoke: false,
        }
    }

    #[test]
    fn bad_flags_are_refused_naming_the_flag() {
        let refused = |args: RentalsArgs| {
            let error = check(&args).expect_err("refused");
            assert!(error.downcast_ref::<crate::Usage>().is_some());
            error.to_string()
        };
        assert!(check(&args(&[1, 4])).is_ok());
        assert!(refused(args(&[0])).contains("--users"));
        assert!(
            refused(RentalsArgs {
                bays: 0,
                ..args(&[1])
            })
            .contains("--bays")
        );
        assert!(
            refused(RentalsArgs {
                database_url: Some("mysql://x/y".into()),
                ..args(&[1])
            })
            .contains("--database-url")
        );
        assert!(
            refused(RentalsArgs {
                database_url: Some("postgres://x/y".into()),
                ..args(&[1])
            })
            .contains("--pgbench-url")
        );
    }
}
