//! The command line: `serve`, `migrate`, `standalone`, `demo`, `audit`, `content upload|list`, `qr`,
//! `operator create`, `keys rotate`, and the client commands of [`crate::cmd`] (`login`,
//! `rent`, `watch`, `sim return`, ...). Exit codes: [`exit_code`].

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use sneakernet_runtime::Shutdown;
use sneakernet_runtime::config::Config;

use crate::cmd::ClientCommand;
use crate::cmd::connect::ClientFlags;
use crate::content::ContentAction;
use crate::node::{self, NodeRole};
use crate::operator::OperatorArgs;
use crate::standalone::{self, Fleet};

/// Sneakernet: the backend of a network of kiosks lending pre-loaded hard drives.
#[derive(Debug, Parser)]
#[command(name = "sneakernet", version, about)]
pub struct Cli {
    /// TOML configuration file (keys as in the README); `SNEAKERNET_*` variables override it.
    #[arg(long, global = true, env = "SNEAKERNET_CONFIG_FILE")]
    pub config: Option<PathBuf>,
    /// Where client commands call, how they print, where the login is kept.
    #[command(flatten)]
    pub client: ClientFlags,
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
    /// Apply the database migrations of some roles (default: all) and exit, e.g. as a
    /// deployment's pre-upgrade job. `serve` migrates too, so this is never required; it lets
    /// a migration fail once, loudly, before any new replica starts.
    Migrate {
        /// Roles whose databases to migrate, comma-separated: auth, orders, content, gateway.
        /// Default: every role.
        #[arg(long, value_delimiter = ',')]
        role: Vec<NodeRole>,
    },
    /// Serve every role on one port with embedded storage, plus three simulated kiosks: the
    /// whole system on a laptop. The first start creates an operator and a demo user and says
    /// where their passwords are.
    Standalone {
        /// gRPC listen address (overrides `listen`).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Where the SQLite files and local state live (overrides `data_dir`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Serve without the simulated kiosks (and without creating the standalone accounts).
        #[arg(long)]
        without_kiosks: bool,
    },
    /// Run a fresh standalone node in a temporary directory and tell a walk-up rental step by
    /// step: register, deposit, scan, rent, lend, return at another kiosk, close, audit.
    /// Exits 0 only when every step reached its state and the audit is clean.
    Demo,
    /// Audit the money of a running node (FleetService.Audit) as an operator; exits non-zero
    /// when the ledger does not balance or anything is wrong.
    Audit {
        /// Where and as whom.
        #[command(flatten)]
        operator: OperatorArgs,
    },
    /// Content packages, as an operator: upload a directory as a package, list packages.
    Content {
        /// What to do with content.
        #[command(subcommand)]
        action: ContentAction,
    },
    /// Print the text a simulated kiosk's QR code shows now (valid for about a minute), for
    /// OrderService.ScanKiosk by hand. The older name of `sim qr`.
    Qr {
        /// The simulated kiosk, e.g. K-BER-HBF.
        kiosk_id: String,
        /// The standalone node's data directory (overrides `data_dir`).
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
    /// The client commands: the phone app's and the operator's.
    #[command(flatten)]
    Client(ClientCommand),
}

/// The parsed command line. A mistake in it is one line on standard error (clap's message
/// without its usage block) and exit code 2; `--help` and `--version` print as usual.
pub fn parse() -> Cli {
    match Cli::try_parse() {
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
            eprintln!("{} (see --help)", usage_line(&error.to_string()));
            std::process::exit(i32::from(crate::cmd::exit::USAGE))
        }
    }
}

/// clap's message up to its first blank line, on one line.
fn usage_line(rendered: &str) -> String {
    let parts: Vec<&str> = rendered
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect();
    let line = parts.join(" ");
    if line.starts_with("error:") {
        line
    } else {
        format!("error: {line}")
    }
}

/// The exit code for a failed command (README, "Command line"): 1 a failure or refusal,
/// 2 a usage mistake, 3 not logged in or the login expired, 4 the node cannot be reached.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    crate::cmd::exit::code_of(error)
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
            if config.database_url.is_none() {
                usable_data_dir(&config.data_dir, "data_dir")?;
            }
            init_tracing(&config)?;
            serve(config, &role).await
        }
        Command::Migrate { role } => {
            if config.database_url.is_none() {
                usable_data_dir(&config.data_dir, "data_dir")?;
            }
            init_tracing(&config)?;
            migrate(&config, &role).await
        }
        Command::Standalone {
            listen,
            data_dir,
            without_kiosks,
        } => {
            if let Some(listen) = listen {
                config.listen = listen;
            }
            if let Some(dir) = data_dir {
                config.data_dir = dir;
            }
            usable_data_dir(&config.data_dir, "--data-dir or data_dir")?;
            standalone_peers_unset(&config)?;
            init_tracing(&config)?;
            run_standalone(config, !without_kiosks).await
        }
        Command::Demo => {
            // The story is the output; only warnings and errors are logged beside it, not the
            // expected refusals (no deposit) the request tracer reports as failed calls.
            config.log.filter = "warn,tower_http=off".into();
            init_tracing(&config)?;
            crate::demo::run(config).await
        }
        Command::Audit { operator } => {
            crate::audit::run(&operator.login(&config, &cli.client).await?).await
        }
        Command::Content { action } => crate::content::run(action, &config, &cli.client).await,
        Command::Qr { kiosk_id, data_dir } => {
            let data_dir = data_dir.unwrap_or(config.data_dir);
            println!("{}", crate::cmd::sim::qr_text(&data_dir, &kiosk_id).await?);
            Ok(())
        }
        Command::Client(command) => crate::cmd::run(command, cli.client, config).await,
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

/// Makes `dir` (the data directory, set by `key`) if it is missing and proves it writable,
/// so a wrong one is one line naming it before anything starts (SQLite's own error says
/// only "unable to open database file").
fn usable_data_dir(dir: &std::path::Path, key: &str) -> anyhow::Result<()> {
    let shown = dir.display();
    if dir.exists() && !dir.is_dir() {
        bail!("data directory {shown} ({key}) is not a directory");
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create data directory {shown} ({key}): {e}"))?;
    let probe = dir.join(format!(".sneakernet-write-test-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            // The probe proved what it had to; a leftover is harmless and named as such.
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => bail!("data directory {shown} ({key}) is not writable: {e}"),
    }
}

fn init_tracing(config: &Config) -> anyhow::Result<()> {
    sneakernet_runtime::telemetry::init_tracing(&config.log).map_err(anyhow::Error::msg)
}

async fn serve(config: Config, roles: &[NodeRole]) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();
    let node = node::start(config.clone(), roles, shutdown, None).await?;
    announce(&config, roles, node.address);
    node.wait().await?;
    Ok(())
}

/// Migrates `roles` (every role when empty) in start order, stopping at the first failure.
pub async fn migrate(config: &Config, roles: &[NodeRole]) -> anyhow::Result<()> {
    let mut roles = if roles.is_empty() {
        NodeRole::ALL.to_vec()
    } else {
        roles.to_vec()
    };
    roles.sort();
    roles.dedup();
    let target = match &config.database_url {
        Some(url) => sneakernet_runtime::config::redact_url(url),
        None => format!("SQLite files in {}", config.data_dir.display()),
    };
    for role in roles {
        role.migrate(config).await?;
        println!("sneakernet: {role} database migrated ({target})");
    }
    Ok(())
}

/// The lines that say a node serves (tests read the first one for the address).
fn announce(config: &Config, roles: &[NodeRole], address: SocketAddr) {
    let roles: Vec<String> = roles.iter().map(ToString::to_string).collect();
    println!("sneakernet: serving {} on {}", roles.join(", "), address);
    if config.database_url.is_none() {
        println!(
            "sneakernet: embedded storage in {}",
            config.data_dir.display()
        );
    }
}

/// Standalone serves every role itself, and a configured peer address is used even where the
/// role is local (`runtime::role`): one set in the environment or a shared file would send
/// this node's own calls elsewhere while its simulated kiosks link here. Refused, by name.
fn standalone_peers_unset(config: &Config) -> anyhow::Result<()> {
    for (key, env, set) in [
        (
            "auth.url",
            "SNEAKERNET_AUTH__URL",
            config.auth.url.is_some(),
        ),
        (
            "orders.gateway_url",
            "SNEAKERNET_ORDERS__GATEWAY_URL",
            config.orders.gateway_url.is_some(),
        ),
        (
            "orders.content_url",
            "SNEAKERNET_ORDERS__CONTENT_URL",
            config.orders.content_url.is_some(),
        ),
    ] {
        if set {
            anyhow::bail!(
                "standalone serves every role itself: unset {key} ({env}), which would send this node's own calls to another address"
            );
        }
    }
    Ok(())
}

/// Every role, then (unless told otherwise) the simulated fleet, until a signal; the kiosks
/// stop before the node drains. Health says NOT_SERVING until the fleet's kiosks are online
/// (its accounts exist before them), then one line says the node is ready.
async fn run_standalone(config: Config, with_kiosks: bool) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();
    let held = node::StartOptions {
        held_until_ready: true,
    };
    let node =
        node::start_with(config.clone(), &NodeRole::ALL, shutdown.clone(), None, held).await?;
    announce(&config, &NodeRole::ALL, node.address);
    let fleet = if !with_kiosks {
        None
    } else if config.tls.is_some() {
        println!(
            "sneakernet: no simulated kiosks: the listener serves TLS, which their in-process agents do not trust"
        );
        None
    } else {
        // Setting the fleet up is bounded by its calls' timeouts; a signal cuts it short.
        let started = tokio::select! {
            fleet = standalone::start(&config, node.address) => Some(fleet),
            () = shutdown.triggered() => None,
        };
        match started {
            Some(Ok(fleet)) => Some(fleet),
            Some(Err(error)) => {
                node.stop();
                // The setup's error is what a person needs; the node's own stop is logged.
                if let Err(stop) = node.wait().await {
                    tracing::warn!(error = %stop, "node stopped with an error");
                }
                return Err(error.context("cannot start the simulated kiosks"));
            }
            None => None,
        }
    };
    if let Some(fleet) = &fleet {
        print_fleet(fleet, node.address);
    }
    let online = tokio::select! {
        online = fleet_online(fleet.as_ref(), node.address) => Some(online),
        () = shutdown.triggered() => None,
    };
    match online {
        Some(Ok(kiosks)) => {
            node.ready();
            let address = crate::client::loopback(node.address);
            match kiosks {
                Some(count) => {
                    println!("sneakernet: ready on {address}: {count} simulated kiosks online")
                }
                None => println!("sneakernet: ready on {address}"),
            }
        }
        Some(Err(error)) => {
            if let Some(fleet) = fleet {
                fleet.stop().await;
            }
            node.stop();
            if let Err(stop) = node.wait().await {
                tracing::warn!(error = %stop, "node stopped with an error");
            }
            return Err(error.context("the simulated kiosks did not come online"));
        }
        None => {}
    }
    shutdown.triggered().await;
    if let Some(fleet) = fleet {
        fleet.stop().await;
    }
    node.wait().await?;
    Ok(())
}

/// How long the simulated kiosks may take to come online before standalone says it still
/// waits (health stays NOT_SERVING meanwhile).
const FLEET_ONLINE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// Waits until every kiosk of `fleet` is online (as its operator sees the fleet); the number
/// of kiosks, or `None` without a fleet (or one whose kiosks orders cannot register). Says
/// once, on standard output, when they take longer than [`FLEET_ONLINE_PATIENCE`].
async fn fleet_online(fleet: Option<&Fleet>, address: SocketAddr) -> anyhow::Result<Option<usize>> {
    let Some(fleet) = fleet.filter(|f| f.registered_with_orders) else {
        return Ok(None);
    };
    let url = format!("http://{}", crate::client::loopback(address));
    let channel = crate::client::channel(&url)?;
    let password = standalone::read_password(&fleet.accounts.operator_password_file).await?;
    let mut said = false;
    loop {
        // Each round logs in afresh: a long wait outlives an access token.
        let token = crate::client::login(&channel, &fleet.accounts.operator_email, &password)
            .await
            .context("the standalone operator cannot log in")?;
        match fleet
            .until_online(&channel, &token, FLEET_ONLINE_PATIENCE)
            .await
        {
            Ok(kiosks) => return Ok(Some(kiosks.len())),
            Err(error) if !said => {
                println!(
                    "sneakernet: not ready yet: {error:#}; health says NOT_SERVING until they are"
                );
                said = true;
            }
            Err(_) => {}
        }
    }
}

/// How a person logs in and finds the kiosks.
fn print_fleet(fleet: &Fleet, address: SocketAddr) {
    let address = crate::client::loopback(address);
    let accounts = &fleet.accounts;
    let created = if fleet.first_start {
        " (created now)"
    } else {
        ""
    };
    println!(
        "sneakernet: operator {}{created}, password in {}",
        accounts.operator_email,
        accounts.operator_password_file.display()
    );
    println!(
        "sneakernet: demo user {}{created}, password in {}",
        accounts.demo_user_email,
        accounts.demo_user_password_file.display()
    );
    println!(
        "sneakernet: log in: grpcurl -plaintext -d \"{{\\\"email\\\":\\\"{}\\\",\\\"password\\\":\\\"$(cat '{}')\\\"}}\" {address} sneakernet.auth.v1.AuthService/Login",
        accounts.demo_user_email,
        accounts.demo_user_password_file.display()
    );
    let kiosks: Vec<String> = fleet
        .kiosks
        .iter()
        .map(|k| format!("{} ({})", k.site.kiosk_id, k.site.site_name))
        .collect();
    println!(
        "sneakernet: simulated kiosks {}; `sneakernet sim qr <kiosk id>` prints a kiosk's QR code text now",
        kiosks.join(", ")
    );
    if !fleet.registered_with_orders {
        println!(
            "sneakernet: the orders service does not register kiosks yet, so they offer nothing"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usage_mistake_is_one_line_naming_it() {
        let error = Cli::try_parse_from(["sneakernet", "rent"]).unwrap_err();
        let line = usage_line(&error.to_string());
        assert!(line.starts_with("error: "), "{line}");
        assert!(line.contains("--qr"), "{line}");
        assert!(!line.contains('\n'), "{line}");
        let error = Cli::try_parse_from(["sneakernet", "orders", "--bogus"]).unwrap_err();
        assert!(usage_line(&error.to_string()).contains("--bogus"));
    }
}
