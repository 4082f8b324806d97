//! The command line: `serve`, `standalone`, `operator create`, `keys rotate`.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use sneakernet_runtime::Shutdown;
use sneakernet_runtime::config::Config;

use crate::node::{self, NodeRole};

/// Sneakernet: the backend of a network of kiosks lending pre-loaded hard drives.
#[derive(Debug, Parser)]
#[command(name = "sneakernet", version, about)]
pub struct Cli {
    /// TOML configuration file (keys as in the README); `SNEAKERNET_*` variables override it.
    #[arg(long, global = true, env = "SNEAKERNET_CONFIG_FILE")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve some roles, as one Deployment of a cluster does.
    Serve {
        /// Roles to serve, comma-separated: auth, orders, content, gateway.
        #[arg(long, value_delimiter = ',', required = true)]
        role: Vec<NodeRole>,
    },
    /// Serve every role on one port with embedded storage: the whole system on a laptop.
    Standalone {
        /// gRPC listen address (overrides `listen`).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Where the SQLite files and local state live (overrides `data_dir`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Manage operator accounts directly in the auth database.
    Operator {
        /// What to do with operators.
        #[command(subcommand)]
        action: OperatorAction,
    },
    /// Manage the keys that sign access tokens, directly in the auth database.
    Keys {
        /// What to do with the keys.
        #[command(subcommand)]
        action: KeysAction,
    },
}

/// Signing-key subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Add a new signing key, published at once, that takes over signing after --lead; the
    /// current key keeps verifying the tokens it signed until they expire.
    Rotate {
        /// How long before the new key signs (default: twice `auth.keys_refresh_interval`, so
        /// every auth replica and verifier has fetched it first). Humantime, e.g. `10m`.
        #[arg(long, value_parser = humantime::parse_duration)]
        lead: Option<std::time::Duration>,
    },
}

/// Operator subcommands.
#[derive(Debug, Subcommand)]
pub enum OperatorAction {
    /// Create an operator (the first one cannot be created over gRPC). The password is read
    /// from --password-file, or else from the first line of standard input.
    Create {
        /// The operator's email.
        #[arg(long)]
        email: String,
        /// File holding the password.
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
}

/// Runs the parsed command line to completion.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve { role } => {
            init_tracing(&config)?;
            serve(config, &role).await
        }
        Command::Standalone { listen, data_dir } => {
            if let Some(listen) = listen {
                config.listen = listen;
            }
            if let Some(dir) = data_dir {
                config.data_dir = dir;
            }
            init_tracing(&config)?;
            serve(config, &NodeRole::ALL).await
        }
        Command::Keys {
            action: KeysAction::Rotate { lead },
        } => {
            let lead = lead.unwrap_or(config.auth.keys_refresh_interval * 2);
            let (kid, switch_at) = sneakernet_auth::rotate_signing_key(&config, lead).await?;
            println!("new signing key {kid} published; it signs from {switch_at} on");
            Ok(())
        }
        Command::Operator {
            action:
                OperatorAction::Create {
                    email,
                    password_file,
                },
        } => {
            let password = match password_file {
                Some(file) => sneakernet_auth::read_secret_file(&file)?,
                None => {
                    let mut line = String::new();
                    std::io::stdin()
                        .lock()
                        .read_line(&mut line)
                        .context("cannot read the password from standard input")?;
                    let line = line.trim_end_matches(['\n', '\r']).to_owned();
                    if line.is_empty() {
                        bail!(
                            "no password given: pass --password-file or write it on standard input"
                        );
                    }
                    line
                }
            };
            match sneakernet_auth::create_operator(&config, &email, &password).await? {
                sneakernet_auth::OperatorCreated::Created(id) => {
                    println!("operator {email} created (id {id})")
                }
                sneakernet_auth::OperatorCreated::Exists => {
                    println!("an account with email {email} exists already; nothing changed")
                }
            }
            Ok(())
        }
    }
}

fn init_tracing(config: &Config) -> anyhow::Result<()> {
    sneakernet_runtime::telemetry::init_tracing(&config.log).map_err(anyhow::Error::msg)
}

async fn serve(config: Config, roles: &[NodeRole]) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();
    let data_dir = config.data_dir.clone();
    let embedded = config.database_url.is_none();
    let node = node::start(config, roles, shutdown, None).await?;
    let roles: Vec<String> = roles.iter().map(ToString::to_string).collect();
    println!(
        "sneakernet: serving {} on {}",
        roles.join(", "),
        node.address
    );
    if embedded {
        println!("sneakernet: embedded storage in {}", data_dir.display());
    }
    node.wait().await?;
    Ok(())
}
