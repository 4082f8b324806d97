//! `fleet-sim`: thousands of simulated kiosks in one process speaking the real link protocol
//! (KioskLogin, `KioskLinkService.Open`, Hello with an inventory, heartbeats, acks, results,
//! token renewal), to load-test a deployment and to measure the gateway against a bare gRPC
//! echo with the same HTTP/2 settings. See docs/fleet-sim.md.
//!
//! Guarantees: every run is bounded (each wait has a timeout, the whole run a deadline) and
//! stops by itself; progress goes to standard error, the results table to standard output,
//! JSON to a file on request; a wrong flag or URL is one line on standard error and exit
//! code 2; a run that saw any error exits 1.

mod baseline;
mod echo;
mod hold;
mod link;
mod plot;
mod probe;
mod rentals;
mod report;
mod setup;
mod smoke;
mod startup;

use clap::{Parser, Subcommand};

/// Exit code of a usage mistake (a flag, a URL).
const EXIT_USAGE: u8 = 2;
/// Exit code of a run that failed or saw errors.
const EXIT_FAILED: u8 = 1;

/// Simulated kiosks against a Sneakernet gateway, or against a bare echo baseline.
#[derive(Debug, Parser)]
#[command(name = "fleet-sim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Open N kiosk links, hold them for a while, measure, close them, report.
    Hold(hold::HoldArgs),
    /// Serve the bare echo baseline: `KioskLinkService.Open` answering Hello with Welcome and
    /// echoing, with the gateway's HTTP/2 settings; optionally heartbeating like the gateway.
    EchoServer(echo::EchoArgs),
    /// Print several `hold --json` reports side by side (ratios to the first).
    Compare(report::CompareArgs),
    /// A few seconds with ~50 kiosks against a `sneakernet standalone` it starts (or one
    /// given); exits non-zero on any error. For CI.
    Smoke(smoke::SmokeArgs),
    /// Walk-up rentals per second (users racing for drives at simulated kiosks) against a
    /// node it starts, beside pgbench -N (Postgres) or a bare write loop (SQLite).
    Rentals(rentals::RentalsArgs),
    /// Time from spawning `sneakernet standalone` (cold and warm) and each role alone to
    /// ready, judged from outside.
    Startup(startup::StartupArgs),
}

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            use clap::error::ErrorKind;
            if matches!(
                error.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                error.exit()
            }
            eprintln!(
                "fleet-sim: {} (see --help)",
                first_lines(&error.to_string())
            );
            return std::process::ExitCode::from(EXIT_USAGE);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLEET_SIM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("fleet-sim: cannot start the async runtime: {error}");
            return std::process::ExitCode::from(EXIT_FAILED);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Hold(args) => hold::run(args).await,
            Command::EchoServer(args) => echo::run(args).await,
            Command::Smoke(args) => smoke::run(args).await,
            Command::Compare(args) => report::compare(args).await,
            Command::Rentals(args) => rentals::run(args).await,
            Command::Startup(args) => startup::run(args).await,
        }
    });
    // Links still closing must not hold the exit up.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            let code = if error.downcast_ref::<Usage>().is_some() {
                EXIT_USAGE
            } else {
                EXIT_FAILED
            };
            eprintln!("fleet-sim: error: {error:#}");
            std::process::ExitCode::from(code)
        }
    }
}

/// A mistake in what the user gave (a flag's value, a URL, a file): exit code 2.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// An `anyhow::Error` that exits with the usage code.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(message.into()))
}

/// clap's message up to its first blank line, on one line.
fn first_lines(rendered: &str) -> String {
    rendered
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ")
}
