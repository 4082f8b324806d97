//! The `kiosk-agent` command line, as a library so tests can run the same program as a child
//! process with fault injection.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::bays::BayError;
use crate::config::{AgentConfig, SimItemConfig, SimItemKind};
use crate::simulated::{InboxInsert, check_insert, queue_insert};

/// The Sneakernet kiosk agent.
#[derive(Debug, Parser)]
#[command(name = "kiosk-agent", version, about)]
pub struct Cli {
    /// The agent's TOML configuration.
    #[arg(long, env = "KIOSK_AGENT_CONFIG")]
    pub config: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Item kinds on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Kind {
    Drive,
    PowerBank,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent until SIGINT or SIGTERM: keep the link to the gateway, execute commands.
    Run,
    /// Check the configuration and the credential: log in once and report the token's expiry.
    Login,
    /// Simulated bays: put an item into a bay of the running agent (as a user returning it).
    /// Without --kind, the item must be one that left this kiosk; it comes back as it left.
    /// Checked first by the agent's own rule against its state under `data_dir`: an item it
    /// would refuse (unknown without facts, in a bay already) or a bay that is occupied,
    /// faulty or unknown fails here, naming why, and nothing is queued.
    Insert {
        /// The bay (it must be empty).
        #[arg(long)]
        bay: String,
        /// The item's id.
        #[arg(long)]
        item: String,
        /// The item's kind, for an item this kiosk has not seen.
        #[arg(long, value_enum)]
        kind: Option<Kind>,
        /// Drives: nominal capacity in bytes.
        #[arg(long)]
        capacity_bytes: Option<u64>,
        /// Drives: the content package it holds.
        #[arg(long)]
        content_package_id: Option<String>,
        /// Drives: write protection on.
        #[arg(long)]
        write_protected: bool,
        /// Power banks: state of charge, 0 to 100.
        #[arg(long)]
        charge_percent: Option<u32>,
    },
}

/// Runs the parsed command line to completion.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = AgentConfig::load(&cli.config)?;
    match cli.command {
        Command::Run => {
            let agent = crate::start(config).await?;
            wait_for_signal().await?;
            tracing::info!("stopping");
            agent.stop().await;
        }
        Command::Login => {
            let expires = crate::login(&config).await?;
            println!(
                "kiosk {} logged in; token valid until unix time {expires}",
                config.kiosk_id
            );
        }
        Command::Insert {
            bay,
            item,
            kind,
            capacity_bytes,
            content_package_id,
            write_protected,
            charge_percent,
        } => {
            let facts = kind.map(|kind| SimItemConfig {
                kind: match kind {
                    Kind::Drive => SimItemKind::Drive,
                    Kind::PowerBank => SimItemKind::PowerBank,
                },
                item_id: item.clone(),
                capacity_bytes,
                content_package_id,
                write_protected,
                charge_percent,
                remote_link: false,
            });
            if let Some(facts) = &facts {
                facts.check("insert").map_err(|reason| {
                    // Name the command-line flag rather than the file key.
                    let reason = [
                        ("item_id", "item"),
                        ("capacity_bytes", "capacity-bytes"),
                        ("content_package_id", "content-package-id"),
                        ("write_protected", "write-protected"),
                        ("charge_percent", "charge-percent"),
                    ]
                    .iter()
                    .fold(reason, |text, (key, flag)| {
                        text.replace(&format!("`insert.{key}`"), &format!("`--{flag}`"))
                    });
                    anyhow::anyhow!("{reason}")
                })?;
            } else if capacity_bytes.is_some() || charge_percent.is_some() || write_protected {
                anyhow::bail!("item facts need --kind");
            }
            let simulation = config.simulation.as_ref().ok_or_else(|| {
                anyhow::anyhow!(
                    "kiosk {} has no simulated bays (no `[simulation]` in {}): insert puts items into simulated bays only",
                    config.kiosk_id,
                    cli.config.display()
                )
            })?;
            let without_facts = facts.is_none();
            let request = InboxInsert {
                bay_id: bay.clone(),
                item_id: item.clone(),
                item: facts,
            };
            // The agent's own rule, now, so a refusal is this command's error and exit code,
            // not a line in the agent's log after "queued".
            check_insert(&config.data_dir, simulation, &request).map_err(|refused| {
                let hint = if without_facts && matches!(refused, BayError::Unidentified(_)) {
                    " (an item lent at another kiosk needs --kind and its facts)"
                } else {
                    ""
                };
                anyhow::anyhow!(
                    "kiosk {} refuses item {item} into bay {bay}: {refused}{hint}",
                    config.kiosk_id
                )
            })?;
            let file = queue_insert(&config.data_dir, &request).map_err(|e| {
                anyhow::anyhow!(
                    "cannot write to the simulator inbox under {} (data_dir): {e}",
                    config.data_dir.display()
                )
            })?;
            println!(
                "queued: item {item} into bay {bay} ({}); the running agent picks it up",
                file.display()
            );
        }
    }
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}
