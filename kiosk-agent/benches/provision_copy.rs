//! Provisioning on the kiosk, cache → drive, against the copy tools it must keep up with
//! (docs/benchmarks.md, scenario 2). A program with its own timing, not criterion: one run
//! copies gigabytes, and the baselines are other processes.
//!
//! It generates a package (default 2 GiB; `--smoke`: 64 MiB) into the agent's chunk cache,
//! then times, in the same run and interleaved (a, b, c, a, b, c, ...):
//! - (a) `agent`: a real Provision command through the agent's own [`Executor`] on simulated
//!   bays: choose and erase the drive, find every chunk in the cache, copy each file while
//!   hashing it (every chunk checked against its hash as the cache reads it), fsync, read
//!   everything back and check every file's BLAKE3, write the manifest, pin the drive;
//! - (b) `cp_sync`: `cp -r` of the cache directory (the same bytes, same disk) and `sync`;
//! - (c) `cp_sync_b3sum`: the same, then `b3sum` of every copied file, one after the other.
//!
//! Before every run each source file's pages are dropped from the page cache
//! (`dd iflag=nocache count=0`, which is `posix_fadvise(DONTNEED)` and needs no root), so
//! every variant reads its source from the disk. What a run wrote stays cached: the agent's
//! read-back on simulated drives and `b3sum` both read the copy through the page cache.
//!
//! Prints a table (seconds, MiB/s, speed ratios against (b) and (c)) and writes JSON.
//! Without `--bench` (as `cargo test --benches` runs it) it uses smoke sizes, so the CI smoke
//! step exercises the whole harness in seconds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use clap::Parser;
use futures::stream::BoxStream;
use sneakernet_kiosk_agent::bays::Bays;
use sneakernet_kiosk_agent::cache::ChunkCache;
use sneakernet_kiosk_agent::clock::KioskClock;
use sneakernet_kiosk_agent::content_source::{
    ChunkHash, ContentSource, Manifest, Piece, SourceError,
};
use sneakernet_kiosk_agent::executor::{Content, Executor, Perform};
use sneakernet_kiosk_agent::journal::Journal;
use sneakernet_kiosk_agent::simulated::SimulatedBays;
use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::gateway::v1::command_result::Outcome;
use tokio::sync::{Notify, mpsc};

mod support;
use support::{MIB, Sinks};

const DRIVE: &str = "D-1";
const PACKAGE: &str = "bench-package";

/// Times the agent's cache → drive copy against `cp` + `sync` and `cp; sync; b3sum`.
#[derive(Debug, Parser)]
#[command(name = "provision_copy")]
struct Args {
    /// Package size in MiB (default 2048; 64 with --smoke or without --bench).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    size_mib: Option<u64>,
    /// Small sizes and one repetition: checks that the harness works, in seconds.
    #[arg(long)]
    smoke: bool,
    /// Timed repetitions of each variant (default 3; 1 in smoke mode).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    reps: Option<u32>,
    /// Where to write the results as JSON (default <target>/bench-results/provision_copy.json).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Directory for the package, the kiosk and the copies (a temporary directory under it).
    /// Default: the system's temporary directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Set by `cargo bench`: the full run. Without it the smoke sizes are used.
    #[arg(long)]
    bench: bool,
    /// A name filter as cargo passes it: the run is skipped unless "provision_copy" contains it.
    filter: Option<String>,
}

/// A content service that knows one manifest and serves no chunk: the package is in the
/// cache already, so a Provision that asks for a chunk is a failure of the benchmark.
struct OnePackage(Manifest);

impl ContentSource for OnePackage {
    async fn manifest(&self, package_id: &str) -> Result<Manifest, SourceError> {
        if package_id == self.0.package_id {
            Ok(self.0.clone())
        } else {
            Err(SourceError::Refused {
                code: tonic::Code::NotFound,
                message: format!("no package {package_id}"),
            })
        }
    }

    async fn chunks(
        &self,
        _: &str,
        _: Vec<ChunkHash>,
        _: u64,
    ) -> Result<BoxStream<'static, Result<Piece, SourceError>>, SourceError> {
        Err(SourceError::Refused {
            code: tonic::Code::FailedPrecondition,
            message: "the benchmark's package is cached in full; nothing may be downloaded".into(),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Agent,
    CpSync,
    CpSyncB3sum,
}

impl Variant {
    const ALL: [Variant; 3] = [Variant::Agent, Variant::CpSync, Variant::CpSyncB3sum];

    fn name(self) -> &'static str {
        match self {
            Variant::Agent => "agent",
            Variant::CpSync => "cp_sync",
            Variant::CpSyncB3sum => "cp_sync_b3sum",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Variant::Agent => "(a) agent: copy + hash-while-writing + read-back verify",
            Variant::CpSync => "(b) cp -r + sync",
            Variant::CpSyncB3sum => "(c) cp -r; sync; b3sum",
        }
    }
}

/// How (c) hashes the copy.
enum Hasher {
    /// The `b3sum` program at this path.
    B3sum(PathBuf),
    /// No `b3sum` here: the blake3 crate's hasher on every core, in this process.
    StandIn,
}

impl Hasher {
    fn find() -> Self {
        let candidates = std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .chain(std::env::var_os("CARGO_HOME").map(|h| PathBuf::from(h).join("bin")))
            .chain(std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin")));
        for dir in candidates {
            let b3sum = dir.join("b3sum");
            if b3sum.is_file() {
                return Hasher::B3sum(b3sum);
            }
        }
        Hasher::StandIn
    }

    fn describe(&self) -> String {
        match self {
            Hasher::B3sum(path) => {
                let version = Command::new(path)
                    .arg("--version")
                    .output()
                    .ok()
                    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                    .unwrap_or_default();
                format!("{version} ({})", path.display())
            }
            Hasher::StandIn => {
                "no b3sum found: stand-in is the blake3 crate's Hasher::update_rayon in this \
                 process (`cargo install b3sum` for the real tool)"
                    .to_owned()
            }
        }
    }

    fn hash_all(&self, files: &[PathBuf]) -> anyhow::Result<()> {
        match self {
            Hasher::B3sum(path) => {
                let output = Command::new(path)
                    .args(files)
                    .output()
                    .context("run b3sum")?;
                ensure!(
                    output.status.success(),
                    "b3sum failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            Hasher::StandIn => {
                for file in files {
                    let bytes =
                        std::fs::read(file).with_context(|| format!("read {}", file.display()))?;
                    std::hint::black_box(blake3::Hasher::new().update_rayon(&bytes).finalize());
                }
            }
        }
        Ok(())
    }
}

fn main() {
    if let Err(error) = run(Args::parse()) {
        eprintln!("provision_copy: {error:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    if args
        .filter
        .as_deref()
        .is_some_and(|f| !f.starts_with('-') && !"provision_copy".contains(f))
    {
        println!("provision_copy: skipped (the filter does not name it)");
        return Ok(());
    }
    let smoke = args.smoke || !args.bench;
    let size_mib = args.size_mib.unwrap_or(if smoke { 64 } else { 2048 });
    let reps = args.reps.unwrap_or(if smoke { 1 } else { 3 });
    let size = size_mib * MIB;
    let json_path = args.json.clone().unwrap_or_else(default_json_path);
    // A bad --json fails now, not after minutes of copying.
    if let Some(parent) = json_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| {
            format!(
                "--json {}: cannot create its directory",
                json_path.display()
            )
        })?;
    }
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base)
        .with_context(|| format!("--dir {}: cannot create it", base.display()))?;
    let work = tempfile::Builder::new()
        .prefix("provision-copy-")
        .tempdir_in(&base)
        .with_context(|| format!("--dir {}: cannot make a directory in it", base.display()))?;
    let free = free_bytes(work.path());
    // The cache, the drive and one copy at a time, plus room to spare.
    if let Some(free) = free {
        ensure!(
            free > size.saturating_mul(3).saturating_add(512 * MIB),
            "{} has {} MiB free; a {size_mib} MiB run needs about {} MiB (--dir elsewhere, or --size-mib less)",
            base.display(),
            free / MIB,
            size_mib * 3 + 512
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    let hasher = Hasher::find();
    println!(
        "provision_copy: {size_mib} MiB package, {reps} repetition(s) per variant{}",
        if smoke { " (smoke)" } else { "" }
    );
    println!("work directory: {}", work.path().display());
    println!("(c) hashes with: {}", hasher.describe());
    let results = runtime.block_on(measure(work.path(), size, reps, &hasher))?;
    let report = Report {
        size,
        reps,
        smoke,
        hasher: hasher.describe(),
        work_dir: work.path().to_owned(),
        results,
    };
    report.print();
    report.write_json(&json_path)?;
    println!("wrote {}", json_path.display());
    Ok(())
}

fn default_json_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("bench-results/provision_copy.json")
}

/// Bytes free on the file system holding `dir`, from `df` (None when it cannot tell).
fn free_bytes(dir: &Path) -> Option<u64> {
    let output = Command::new("df")
        .args(["-Pk", "--"])
        .arg(dir)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().nth(1)?;
    let kib: u64 = line.split_whitespace().nth(3)?.parse().ok()?;
    Some(kib * 1024)
}

/// The timings of one variant, in seconds, in run order.
struct Timings {
    variant: Variant,
    seconds: Vec<f64>,
}

impl Timings {
    fn median(&self) -> f64 {
        let mut sorted = self.seconds.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        if n == 0 {
            f64::NAN
        } else if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        }
    }
}

struct Results {
    generate_seconds: f64,
    timings: Vec<Timings>,
}

async fn measure(work: &Path, size: u64, reps: u32, hasher: &Hasher) -> anyhow::Result<Results> {
    let data_dir = work.join("kiosk");
    let cache_dir = data_dir.join("chunk-cache");
    let cache = ChunkCache::open(cache_dir.clone(), size.saturating_mul(2).max(64 * MIB))
        .await
        .context("open the chunk cache")?;
    let started = Instant::now();
    let manifest = support::generate(
        PACKAGE,
        size,
        256 * MIB,
        4,
        &Sinks {
            cache: Some(&cache),
            files_dir: None,
        },
    )
    .await
    .context("generate the package into the cache")?;
    let generate_seconds = started.elapsed().as_secs_f64();
    println!(
        "generated {} files, {} chunks into the cache in {generate_seconds:.1} s",
        manifest.files.len(),
        manifest.unique_chunks().len()
    );
    let capacity = size + manifest.to_json().len() as u64 + 64 * MIB;
    let bays = Arc::new(support::kiosk(&data_dir, &[DRIVE], capacity).await?);
    let journal = Journal::open(&data_dir).await.context("open the journal")?;
    let (progress, _dropped) = mpsc::channel(16);
    let executor = Executor::new(
        journal,
        Arc::clone(&bays),
        KioskClock::new(),
        Arc::new(Notify::new()),
    )
    .with_content(Content {
        source: Arc::new(OnePackage(manifest.clone())),
        cache,
        retries: 0,
        progress,
    });
    let sources = files_under(&cache_dir)?;
    let mut timings: Vec<Timings> = Variant::ALL
        .iter()
        .map(|&variant| Timings {
            variant,
            seconds: Vec::new(),
        })
        .collect();
    for rep in 0..reps {
        for timing in &mut timings {
            settle(&sources)?;
            let seconds = match timing.variant {
                Variant::Agent => provision_once(&executor, &bays, rep, capacity, size).await?,
                Variant::CpSync => copy_once(&cache_dir, &work.join("copy"), None)?,
                Variant::CpSyncB3sum => copy_once(&cache_dir, &work.join("copy"), Some(hasher))?,
            };
            println!(
                "  rep {} {:<14} {seconds:>7.2} s  {:>8.1} MiB/s",
                rep + 1,
                timing.variant.name(),
                mib_per_s(size, seconds)
            );
            timing.seconds.push(seconds);
        }
    }
    Ok(Results {
        generate_seconds,
        timings,
    })
}

/// Writes back whatever is dirty (so no run pays for the one before) and drops the source's
/// pages from the page cache (so every run reads the source from the disk).
fn settle(sources: &[PathBuf]) -> anyhow::Result<()> {
    run_ok(Command::new("sync"))?;
    for file in sources {
        let mut dd = Command::new("dd");
        dd.arg(format!("if={}", file.display()))
            .args(["iflag=nocache", "count=0", "status=none"]);
        run_ok(dd)?;
    }
    Ok(())
}

fn run_ok(mut command: Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}

fn files_under(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(files_under(&path)?);
        } else {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// One Provision of the cached package onto the blank drive, timed from the command to its
/// journaled result; the drive is then unpinned and wiped (not timed).
async fn provision_once<S: ContentSource>(
    executor: &Executor<SimulatedBays, S>,
    bays: &SimulatedBays,
    rep: u32,
    capacity: u64,
    size: u64,
) -> anyhow::Result<f64> {
    let order = format!("O-{rep}");
    let command = pb::Command {
        command_id: format!("C-bench-{rep}"),
        deadline: Some(sneakernet_proto::wire::timestamp(
            chrono::Utc::now() + chrono::Duration::hours(1),
        )),
        payload: Some(pb::CommandPayload {
            kind: Some(pb::command_payload::Kind::Provision(pb::ProvisionCommand {
                order_id: order.clone(),
                package_id: PACKAGE.into(),
                capacity_bytes: capacity,
                write_protect: false,
            })),
        }),
        attempt: 1,
    };
    let started = Instant::now();
    let result = executor
        .handle(&command)
        .await
        .context("the agent's executor")?;
    let seconds = started.elapsed().as_secs_f64();
    match &result.outcome {
        Some(Outcome::Provision(done)) => ensure!(
            done.bytes_written == size && done.bytes_downloaded == 0,
            "the provision wrote {} bytes and downloaded {}; expected {size} and 0",
            done.bytes_written,
            done.bytes_downloaded
        ),
        other => bail!("the provision did not succeed: {other:?}"),
    }
    bays.unpin(DRIVE, &order).await.context("unpin the drive")?;
    bays.wipe(DRIVE).await.context("wipe the drive")?;
    Ok(seconds)
}

/// `cp -r source dest; sync` and, with a hasher, the hash of every copied file; timed as a
/// whole. The copy is removed afterwards (not timed).
fn copy_once(source: &Path, dest: &Path, hasher: Option<&Hasher>) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut cp = Command::new("cp");
    cp.arg("-r").arg(source).arg(dest);
    run_ok(cp)?;
    run_ok(Command::new("sync"))?;
    if let Some(hasher) = hasher {
        hasher.hash_all(&files_under(dest)?)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    std::fs::remove_dir_all(dest).with_context(|| format!("remove {}", dest.display()))?;
    Ok(seconds)
}

fn mib_per_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / MIB as f64 / seconds
}

struct Report {
    size: u64,
    reps: u32,
    smoke: bool,
    hasher: String,
    work_dir: PathBuf,
    results: Results,
}

impl Report {
    fn median(&self, variant: Variant) -> f64 {
        self.results
            .timings
            .iter()
            .find(|t| t.variant == variant)
            .map_or(f64::NAN, Timings::median)
    }

    /// How many times faster (>1) or slower (<1) the agent is than `baseline`.
    fn agent_speed_vs(&self, baseline: Variant) -> f64 {
        self.median(baseline) / self.median(Variant::Agent)
    }

    fn print(&self) {
        println!();
        println!(
            "| variant | median s | MiB/s | speed vs (b) | speed vs (c) |\n|---|---:|---:|---:|---:|"
        );
        for timing in &self.results.timings {
            let median = timing.median();
            println!(
                "| {} | {median:.2} | {:.0} | {:.2}x | {:.2}x |",
                timing.variant.label(),
                mib_per_s(self.size, median),
                self.median(Variant::CpSync) / median,
                self.median(Variant::CpSyncB3sum) / median,
            );
        }
        let vs_b = self.agent_speed_vs(Variant::CpSync);
        let vs_c = self.agent_speed_vs(Variant::CpSyncB3sum);
        println!();
        println!(
            "target: agent >= 0.9x cp+sync: {vs_b:.2}x ({})",
            if vs_b >= 0.9 { "met" } else { "missed" }
        );
        println!(
            "target: agent faster than cp; sync; b3sum: {vs_c:.2}x ({})",
            if vs_c > 1.0 { "met" } else { "missed" }
        );
    }

    fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let variants: Vec<serde_json::Value> = self
            .results
            .timings
            .iter()
            .map(|t| {
                serde_json::json!({
                    "variant": t.variant.name(),
                    "label": t.variant.label(),
                    "seconds": t.seconds,
                    "median_seconds": t.median(),
                    "median_mib_per_s": mib_per_s(self.size, t.median()),
                })
            })
            .collect();
        let json = serde_json::json!({
            "benchmark": "provision_copy",
            "size_bytes": self.size,
            "repetitions": self.reps,
            "smoke": self.smoke,
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "work_dir": self.work_dir.display().to_string(),
            "page_cache": "source pages dropped before every run (dd iflag=nocache); the copy's pages stay cached, so read-back and b3sum read through the page cache",
            "hasher_c": self.hasher,
            "generate_seconds": self.results.generate_seconds,
            "variants": variants,
            "agent_speed_vs_cp_sync": self.agent_speed_vs(Variant::CpSync),
            "agent_speed_vs_cp_sync_b3sum": self.agent_speed_vs(Variant::CpSyncB3sum),
            "targets": {
                "agent_vs_cp_sync_at_least": 0.9,
                "agent_vs_cp_sync_b3sum_above": 1.0,
            },
        });
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| {
                format!("--json {}: cannot create its directory", path.display())
            })?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&json)? + "\n")
            .with_context(|| format!("--json {}: cannot write it", path.display()))?;
        Ok(())
    }
}
