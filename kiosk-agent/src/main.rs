//! `kiosk-agent`: see `kiosk-agent --help`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use sneakernet_kiosk_agent::config::AgentConfig;

/// The Sneakernet kiosk agent.
#[derive(Debug, Parser)]
#[command(name = "kiosk-agent", version, about)]
struct Cli {
    /// The agent's TOML configuration.
    #[arg(long, env = "KIOSK_AGENT_CONFIG")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check the configuration and the credential: log in once and report the token's expiry.
    Login,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = async {
        let config = AgentConfig::load(&cli.config)?;
        match cli.command {
            Command::Login => {
                let expires = sneakernet_kiosk_agent::login(&config).await?;
                println!(
                    "kiosk {} logged in; token valid until unix time {expires}",
                    config.kiosk_id
                );
            }
        }
        anyhow::Ok(())
    }
    .await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
