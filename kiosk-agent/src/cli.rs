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
    /// Print the text the kiosk's QR code shows now, made from `qr_secret_file` (a new code
    /// every 30 seconds; orders takes it for about a minute): what the kiosk's screen draws
    /// and a phone's scan sends to ScanKiosk.
    Qr,
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
        Command::Qr => println!("{}", qr_text(&config, chrono::Utc::now())?),
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

/// The QR code's text at `at` for the kiosk `config` names, from its `qr_secret_file`.
pub fn qr_text(config: &AgentConfig, at: chrono::DateTime<chrono::Utc>) -> anyhow::Result<String> {
    let kiosk = sneakernet_proto::ids::KioskId::parse(&config.kiosk_id)
        .map_err(|why| anyhow::anyhow!("`kiosk_id` {:?} {why}", config.kiosk_id))?;
    let secret = config.qr_secret()?;
    Ok(sneakernet_proto::qr::payload(&kiosk, &secret, at))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(config: &std::path::Path, bay: &str, item: &str, kind: Option<Kind>) -> Cli {
        Cli {
            config: config.to_owned(),
            command: Command::Insert {
                bay: bay.into(),
                item: item.into(),
                kind,
                capacity_bytes: kind.map(|_| 1000),
                content_package_id: None,
                write_protected: false,
                charge_percent: None,
            },
        }
    }

    #[test]
    fn qr_shows_the_code_of_the_kiosks_secret_file_and_names_what_is_missing() {
        use figment::providers::Format;
        let dir = tempfile::tempdir().unwrap();
        let text = |qr: &str| {
            format!(
                "kiosk_id = \"K-1\"\ncredential_file = \"/s\"\nauth_url = \"http://127.0.0.1:1\"\ngateway_url = \"http://127.0.0.1:1\"\ndata_dir = \"/d\"\n{qr}"
            )
        };
        let config = |qr: &str| -> AgentConfig {
            figment::Figment::from(figment::providers::Toml::string(&text(qr)))
                .extract()
                .unwrap()
        };
        let at = chrono::Utc::now();
        let unset = qr_text(&config(""), at).unwrap_err();
        assert!(
            format!("{unset:#}").contains("`qr_secret_file` is not set"),
            "{unset:#}"
        );

        let file = dir.path().join("kiosk.qr");
        std::fs::write(&file, [7u8; 10]).unwrap();
        let line = format!("qr_secret_file = {:?}", file.to_str().unwrap());
        let short = qr_text(&config(&line), at).unwrap_err();
        assert!(format!("{short:#}").contains("holds 10 bytes"), "{short:#}");

        std::fs::write(&file, [7u8; 32]).unwrap();
        let shown = qr_text(&config(&line), at).unwrap();
        let parsed = sneakernet_proto::qr::parse(&shown).unwrap();
        assert_eq!(parsed.kiosk_id.as_str(), "K-1");
        assert!(sneakernet_proto::qr::verify(
            &[7u8; 32],
            parsed.code.as_deref().unwrap(),
            at
        ));
    }

    fn queued(data_dir: &std::path::Path) -> usize {
        std::fs::read_dir(data_dir.join(crate::simulated::INBOX_DIR))
            .map(|entries| entries.count())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn insert_fails_at_the_command_when_the_agent_would_refuse_it_and_queues_only_what_it_takes()
     {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let config = dir.path().join("kiosk.toml");
        std::fs::write(
            &config,
            format!(
                r#"
kiosk_id = "K-1"
credential_file = "{secret}"
auth_url = "http://127.0.0.1:1"
gateway_url = "http://127.0.0.1:1"
data_dir = "{data}"

[[simulation.bays]]
id = "A01"
item = {{ kind = "drive", item_id = "D-1", capacity_bytes = 1000 }}

[[simulation.bays]]
id = "A05"
"#,
                secret = dir.path().join("secret").display(),
                data = data_dir.display()
            ),
        )
        .unwrap();

        // An item lent at another kiosk, without its facts: refused with the reason.
        let refused = run(insert(&config, "A05", "D-X", None)).await.unwrap_err();
        let line = format!("{refused:#}");
        assert!(
            line.contains("refuses item D-X into bay A05") && line.contains("--kind"),
            "{line}"
        );
        // An occupied bay.
        let refused = run(insert(&config, "A01", "D-9", Some(Kind::Drive)))
            .await
            .unwrap_err();
        assert!(
            format!("{refused:#}").contains("bay A01 is not empty"),
            "{refused:#}"
        );
        assert_eq!(queued(&data_dir), 0, "nothing is queued for a refusal");

        // Taken: a new item with its facts into the free bay.
        run(insert(&config, "A05", "D-9", Some(Kind::Drive)))
            .await
            .expect("queued");
        assert_eq!(queued(&data_dir), 1);
    }
}
