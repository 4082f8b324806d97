//! An operator setting up and tending one kiosk: `kiosk add` (FleetService.RegisterKiosk),
//! `kiosk credential` (AuthService.IssueKioskCredential, printing what `kiosk.toml` needs),
//! `kiosk force-eject` and `kiosk inventory` (the gateway's operator commands, waiting for
//! the kiosk's result unless `--no-wait`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use sneakernet_proto::auth::v1 as auth;
use sneakernet_proto::auth::v1::auth_service_client::AuthServiceClient;
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::gateway::v1 as gw;
use sneakernet_proto::gateway::v1::device_command_service_client::DeviceCommandServiceClient;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_proto::orders::v1::fleet_service_client::FleetServiceClient;

use super::exit::Exit;
use super::output::{self, time};
use super::{Client, authed, exit};

/// How often a waiting `force-eject` or `inventory` asks the gateway about its command.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// How long past the command's own deadline (5 minutes) a wait goes on: the gateway marks it
/// EXPIRED at the deadline, so this only covers a gateway that never answers.
const WAIT_MARGIN: Duration = Duration::from_secs(30);

/// Where a new kiosk stands (`kiosk add`).
#[derive(Debug, clap::Args)]
pub struct Placement {
    /// The site it stands at (1 to 64 of A-Z, a-z, 0-9, "-", "_"); prices are set per site.
    #[arg(long)]
    pub site: String,
    /// The site's display name, as users see it.
    #[arg(long)]
    pub site_name: String,
    /// Degrees north, -90 to 90.
    #[arg(long, allow_negative_numbers = true)]
    pub lat: f64,
    /// Degrees east, -180 to 180.
    #[arg(long, allow_negative_numbers = true)]
    pub lon: f64,
    /// File holding the kiosk's QR secret (20 to 64 raw bytes); created with 32 random bytes,
    /// readable by you only, when it does not exist. The kiosk's screen needs the same bytes
    /// to show its rotating QR code.
    #[arg(long, value_name = "FILE")]
    pub qr_secret_file: PathBuf,
    /// Register it out of service (ScanKiosk refuses it until added again without this).
    #[arg(long)]
    pub out_of_service: bool,
}

/// `kiosk add`: registers (or updates) the kiosk's profile with its QR secret.
pub async fn add(client: &Client, kiosk_id: String, place: Placement) -> anyhow::Result<()> {
    let qr_secret = crate::standalone::qr_secret_in(&place.qr_secret_file)
        .await
        .with_context(|| format!("--qr-secret-file {}", place.qr_secret_file.display()))?;
    let (target, token) = client.logged_in().await?;
    let request = pb::RegisterKioskRequest {
        kiosk_id: kiosk_id.clone(),
        site_id: place.site,
        site_name: place.site_name,
        location: Some(common::Location {
            latitude: place.lat,
            longitude: place.lon,
        }),
        qr_secret,
        out_of_service: place.out_of_service,
    };
    let registered = target
        .call(
            &format!("add kiosk {kiosk_id}"),
            FleetServiceClient::new(target.channel.clone())
                .register_kiosk(authed(request, &token)?),
        )
        .await?;
    let kiosk = registered.kiosk.clone().unwrap_or_default();
    let mut value = output::json("sneakernet.orders.v1.RegisterKioskResponse", &registered)?;
    value["qrSecretFile"] = json!(place.qr_secret_file.display().to_string());
    client.output.print(value, || {
        let profile = kiosk.profile.clone().unwrap_or_default();
        vec![
            format!(
                "kiosk {} registered at site {} ({}){}",
                profile.kiosk_id,
                profile.site_id,
                profile.site_name,
                if profile.out_of_service {
                    ", out of service"
                } else {
                    ""
                }
            ),
            format!(
                "its QR secret is in {}: the kiosk's screen shows codes made from these bytes; copy the file to the kiosk (readable by its agent only) and name it in kiosk.toml, where `kiosk-agent qr` prints the code to show:",
                place.qr_secret_file.display()
            ),
            format!(
                "qr_secret_file = {:?}",
                place.qr_secret_file.display().to_string()
            ),
            format!("next: `sneakernet kiosk credential {kiosk_id}` for the kiosk agent's login"),
        ]
    });
    Ok(())
}

/// `kiosk credential`: issues the kiosk's login secret (an earlier one stops working) and
/// prints what the agent's `kiosk.toml` needs; with `credential_file`, writes the secret
/// there (owner-only) instead of printing it.
pub async fn credential(
    client: &Client,
    kiosk_id: String,
    credential_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let (target, token) = client.logged_in().await?;
    // Credentials are the auth service's; the kiosk's link goes to the gateway at --address.
    let auth_target = client.auth_target()?;
    let issued = auth_target
        .call(
            &format!("issue a credential for kiosk {kiosk_id}"),
            AuthServiceClient::new(auth_target.channel.clone()).issue_kiosk_credential(authed(
                auth::IssueKioskCredentialRequest {
                    kiosk_id: kiosk_id.clone(),
                },
                &token,
            )?),
        )
        .await?;
    if let Some(file) = &credential_file {
        write_secret(file, &issued.secret).await?;
    }
    let mut value = output::json("sneakernet.auth.v1.IssueKioskCredentialResponse", &issued)?;
    if let Some(file) = &credential_file {
        value["credentialFile"] = json!(file.display().to_string());
    }
    client.output.print(value, || {
        let mut lines = Vec::new();
        let file = match &credential_file {
            Some(file) => {
                lines.push(format!(
                    "credential for kiosk {} issued {}, secret written to {}",
                    issued.kiosk_id,
                    time(issued.issued_at.as_ref()),
                    file.display()
                ));
                file.display().to_string()
            }
            None => {
                lines.push(format!(
                    "credential for kiosk {} issued {}; its secret, shown this once: {}",
                    issued.kiosk_id,
                    time(issued.issued_at.as_ref()),
                    issued.secret
                ));
                lines.push(
                    "write the secret alone into a file only the agent can read, and name it as credential_file"
                        .into(),
                );
                "/etc/sneakernet/kiosk.secret".into()
            }
        };
        lines.push("kiosk.toml:".into());
        lines.extend(kiosk_toml(
            &issued.kiosk_id,
            &file,
            &auth_target.url,
            &target.url,
        ));
        lines
    });
    Ok(())
}

/// Where `kiosk credential` suggests the QR secret goes on the kiosk.
const QR_SECRET_ON_KIOSK: &str = "/etc/sneakernet/kiosk.qr";

/// The keys of `kiosk.toml` that name the kiosk, its login and where it logs in
/// (`auth_url`) and links (`gateway_url`).
fn kiosk_toml(
    kiosk_id: &str,
    credential_file: &str,
    auth_url: &str,
    gateway_url: &str,
) -> Vec<String> {
    let mut lines = vec![
        format!("kiosk_id = {kiosk_id:?}"),
        format!("credential_file = {credential_file:?}"),
        format!("auth_url = {auth_url:?}"),
        format!("gateway_url = {gateway_url:?}"),
    ];
    // Where the QR secret lies on the kiosk is the kiosk operator's choice; `kiosk add`
    // made the file and says so.
    lines.push(format!(
        "# qr_secret_file = {QR_SECRET_ON_KIOSK:?}  # the file `kiosk add --qr-secret-file` made, copied here; `kiosk-agent qr` shows its code"
    ));
    // The agent refuses plaintext beyond loopback unless told. That is the kiosk operator's
    // decision (its secret would cross its network unencrypted), so the line is printed
    // commented out, not switched on because this CLI happened to use --plaintext.
    let remote_plaintext = |url: &str| {
        url.starts_with("http://") && !sneakernet_kiosk_agent::config::is_loopback_url(url)
    };
    if remote_plaintext(auth_url) || remote_plaintext(gateway_url) {
        lines.push(
            "# allow_plaintext = true  # plaintext beyond loopback: only on a trusted network; use https"
                .into(),
        );
    }
    lines
}

/// Writes `secret` to `file`, owner-only, replacing it whole.
async fn write_secret(file: &Path, secret: &str) -> anyhow::Result<()> {
    crate::standalone::write_private(file, format!("{secret}\n").as_bytes())
        .await
        .with_context(|| {
            format!(
                "the credential was issued (and any earlier one revoked) but cannot be written to --credential-file {}; issue it again",
                file.display()
            )
        })
}

/// The idempotency key of `force-eject` and `inventory`. The gateway keeps one command per
/// operator, kiosk and key: a run with a key an earlier run printed is that same request (the
/// answer is the earlier command, followed to its end), so a retry after a timeout never
/// ejects twice.
#[derive(Debug, Default, clap::Args)]
pub struct CommandKey {
    /// Repeat exactly the request an earlier run printed this idempotency key for (after a
    /// timeout or Ctrl-C): the gateway answers with that run's command and sends nothing new.
    /// Refused when the key was used for another bay or command. Default: a new key, printed.
    #[arg(long = "key", visible_alias = "idempotency-key", value_name = "KEY")]
    pub given: Option<String>,
}

impl CommandKey {
    /// `--key`, or a new key for this run; an empty `--key` is a usage mistake (the gateway
    /// would take it for "no key" and make every run a new command).
    fn resolve(self) -> anyhow::Result<String> {
        match self.given {
            Some(key) if key.trim().is_empty() => Err(exit::usage(
                "--key must not be empty: omit it for a new request",
            )),
            given => Ok(super::idempotency_key(given)),
        }
    }
}

/// `kiosk force-eject`: opens one bay whatever it holds.
pub async fn force_eject(
    client: &Client,
    kiosk_id: String,
    bay_id: String,
    key: CommandKey,
    wait: bool,
) -> anyhow::Result<()> {
    let key = key.resolve()?;
    let (target, token) = client.logged_in().await?;
    let what = format!("force-eject bay {bay_id} of kiosk {kiosk_id}");
    let sent = target
        .call(
            &what,
            DeviceCommandServiceClient::new(target.channel.clone()).force_eject(authed(
                gw::ForceEjectRequest {
                    kiosk_id,
                    bay_id,
                    idempotency_key: key.clone(),
                },
                &token,
            )?),
        )
        .await
        .map_err(|error| with_retry_hint(error, &key))?
        .command
        .context("the answer carries no command")?;
    finish(client, &what, sent, wait).await
}

/// `kiosk inventory`: asks the kiosk to report every bay.
pub async fn inventory(
    client: &Client,
    kiosk_id: String,
    key: CommandKey,
    wait: bool,
) -> anyhow::Result<()> {
    let key = key.resolve()?;
    let (target, token) = client.logged_in().await?;
    let what = format!("request the inventory of kiosk {kiosk_id}");
    let sent = target
        .call(
            &what,
            DeviceCommandServiceClient::new(target.channel.clone()).request_inventory(authed(
                gw::RequestInventoryRequest {
                    kiosk_id,
                    idempotency_key: key.clone(),
                },
                &token,
            )?),
        )
        .await
        .map_err(|error| with_retry_hint(error, &key))?
        .command
        .context("the answer carries no command")?;
    finish(client, &what, sent, wait).await
}

/// `error` of a send whose outcome is unknown (no answer: the command may be logged) with
/// how to retry it safely; other refusals are certain and keep their message.
fn with_retry_hint(error: anyhow::Error, key: &str) -> anyhow::Error {
    let code = exit::code_of(&error);
    if code != exit::UNREACHABLE {
        return error;
    }
    Exit::new(
        code,
        format!(
            "{error:#}; the command may be logged: rerun with --key {key} to repeat exactly this request"
        ),
    )
    .into()
}

/// Prints the command once it ended (or at once without `wait`); a command that failed or
/// expired is an error naming why.
async fn finish(
    client: &Client,
    what: &str,
    sent: gw::CommandRecord,
    wait: bool,
) -> anyhow::Result<()> {
    let record = if wait {
        until_done(client, what, sent).await?
    } else {
        sent
    };
    let value = output::json("sneakernet.gateway.v1.CommandRecord", &record)?;
    let state = state_of(&record);
    if matches!(state, gw::CommandState::Failed | gw::CommandState::Expired) {
        if client.output.json {
            println!("{value}");
        }
        return Err(Exit::new(exit::FAILURE, format!("{what}: {}", outcome(&record))).into());
    }
    client.output.print(value, || {
        let mut lines = vec![format!(
            "command {}: {}",
            record.command_id,
            outcome(&record)
        )];
        if let Some(gw::command_result::Outcome::RequestInventory(result)) =
            record.result.as_ref().and_then(|r| r.outcome.as_ref())
        {
            let inventory = result.inventory.clone().unwrap_or_default();
            lines.extend(inventory.bays.iter().map(bay_line));
            lines.push(format!("taken {}", time(inventory.taken_at.as_ref())));
        }
        lines.push(format!(
            "idempotency key {} (--key {} repeats exactly this request)",
            record.idempotency_key, record.idempotency_key
        ));
        lines
    });
    Ok(())
}

/// Asks the gateway about `sent` until it ended (succeeded, failed, expired).
async fn until_done(
    client: &Client,
    what: &str,
    sent: gw::CommandRecord,
) -> anyhow::Result<gw::CommandRecord> {
    let deadline = sent
        .deadline
        .as_ref()
        .and_then(sneakernet_runtime::wire::from_timestamp)
        .and_then(|at| (at - chrono::Utc::now()).to_std().ok())
        .unwrap_or_default()
        + WAIT_MARGIN;
    let give_up = tokio::time::Instant::now() + deadline;
    let mut record = sent;
    loop {
        if is_done(state_of(&record)) {
            return Ok(record);
        }
        if tokio::time::Instant::now() >= give_up {
            return Err(Exit::new(
                exit::FAILURE,
                format!(
                    "{what}: command {} is still {} past its deadline; `sneakernet kiosk show` tells whether the kiosk is online, --key {} follows this command again",
                    record.command_id,
                    state_text(state_of(&record)),
                    record.idempotency_key
                ),
            )
            .into());
        }
        tokio::select! {
            () = tokio::time::sleep(POLL_EVERY) => {}
            _ = tokio::signal::ctrl_c() => {
                return Err(Exit::new(
                    exit::FAILURE,
                    format!(
                        "{what}: stopped waiting; command {} goes on (--key {} follows it again)",
                        record.command_id, record.idempotency_key
                    ),
                )
                .into());
            }
        }
        let command_id = record.command_id.clone();
        record = client
            .call_renewing("follow the command", false, |channel, token| {
                let request = authed(
                    gw::GetCommandRequest {
                        command_id: command_id.clone(),
                    },
                    token,
                )?;
                Ok(async move {
                    DeviceCommandServiceClient::new(channel)
                        .get_command(request)
                        .await
                })
            })
            .await?
            .command
            .context("the answer carries no command")?;
    }
}

fn state_of(record: &gw::CommandRecord) -> gw::CommandState {
    gw::CommandState::try_from(record.state).unwrap_or(gw::CommandState::Unspecified)
}

fn is_done(state: gw::CommandState) -> bool {
    matches!(
        state,
        gw::CommandState::Succeeded | gw::CommandState::Failed | gw::CommandState::Expired
    )
}

fn state_text(state: gw::CommandState) -> &'static str {
    state.as_str_name().trim_start_matches("COMMAND_STATE_")
}

/// `SUCCEEDED: bay A01 opened, item D-1 out`, `FAILED: BAY_JAMMED (...)`, `QUEUED`.
fn outcome(record: &gw::CommandRecord) -> String {
    use gw::command_result::Outcome;
    let state = state_text(state_of(record));
    match record.result.as_ref().and_then(|r| r.outcome.as_ref()) {
        Some(Outcome::ForceEject(eject)) => format!(
            "{state}: bay {} opened, {}",
            eject.bay_id,
            if eject.item_id.is_empty() {
                "it was empty".to_owned()
            } else {
                format!("item {} out", eject.item_id)
            }
        ),
        Some(Outcome::RequestInventory(result)) => format!(
            "{state}: {} bays reported",
            result.inventory.as_ref().map(|i| i.bays.len()).unwrap_or(0)
        ),
        Some(Outcome::Failure(failure)) => format!(
            "{state}: {} ({})",
            gw::FailureReason::try_from(failure.reason)
                .map(|r| r.as_str_name())
                .unwrap_or("UNKNOWN")
                .trim_start_matches("FAILURE_REASON_"),
            failure.message
        ),
        _ if state_of(record) == gw::CommandState::Expired => format!(
            "{state}: the kiosk did not take it before its deadline {}",
            time(record.deadline.as_ref())
        ),
        _ => format!(
            "{state} (deadline {}); the kiosk reports the result",
            time(record.deadline.as_ref())
        ),
    }
}

/// `A01 READY D-1 (1 TB drive, package p-1)`.
fn bay_line(bay: &gw::Bay) -> String {
    let state = gw::BayState::try_from(bay.state)
        .map(|s| s.as_str_name())
        .unwrap_or("UNKNOWN")
        .trim_start_matches("BAY_STATE_");
    let item = match &bay.item {
        None => String::new(),
        Some(item) => {
            let what = match item.attributes.as_ref().and_then(|a| a.kind.as_ref()) {
                Some(common::item_attributes::Kind::Drive(drive)) => {
                    let item_type = common::ItemType {
                        kind: common::ItemKind::Drive as i32,
                        capacity_bytes: drive.capacity_bytes,
                        content_package_id: drive.content_package_id.clone(),
                    };
                    output::item_type(Some(&item_type), "")
                }
                Some(common::item_attributes::Kind::PowerBank(bank)) => {
                    format!("power bank {}%", bank.charge_percent)
                }
                None => "unknown item".into(),
            };
            format!(" {} ({what})", item.item_id)
        }
    };
    let pinned = if bay.pinned_order_id.is_empty() {
        String::new()
    } else {
        format!(", pinned to order {}", bay.pinned_order_id)
    };
    format!("    {:<6} {state}{item}{pinned}", bay.bay_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unanswered_send_says_how_to_retry_it_and_a_refusal_does_not() {
        let unanswered: anyhow::Error = Exit::new(exit::UNREACHABLE, "no answer").into();
        let hinted = with_retry_hint(unanswered, "cli-1");
        assert_eq!(exit::code_of(&hinted), exit::UNREACHABLE);
        assert!(hinted.to_string().contains("--key cli-1"), "{hinted}");
        let refused: anyhow::Error = Exit::new(exit::FAILURE, "PermissionDenied").into();
        assert_eq!(
            with_retry_hint(refused, "cli-1").to_string(),
            "PermissionDenied"
        );
        assert_eq!(
            exit::code_of(
                &CommandKey {
                    given: Some(" ".into())
                }
                .resolve()
                .unwrap_err()
            ),
            exit::USAGE
        );
        assert!(CommandKey::default().resolve().unwrap().starts_with("cli-"));
    }

    #[test]
    fn the_kiosk_toml_lines_are_the_agents_own_keys() {
        use figment::providers::Format;
        let mut text = kiosk_toml(
            "K-1",
            "/etc/k \"1\".secret",
            "http://127.0.0.1:7000",
            "http://127.0.0.1:7000",
        )
        .join("\n");
        text.push_str("\ndata_dir = \"/var/lib/kiosk\"\n");
        let config: sneakernet_kiosk_agent::config::AgentConfig =
            figment::Figment::from(figment::providers::Toml::string(&text))
                .extract()
                .expect("the agent reads them");
        config.validate().expect("valid");
        assert_eq!(config.kiosk_id, "K-1");
        assert_eq!(config.credential_file, PathBuf::from("/etc/k \"1\".secret"));
        assert_eq!(config.gateway_url, "http://127.0.0.1:7000");
        assert!(!config.allow_plaintext);
        assert_eq!(
            config.qr_secret_file, None,
            "commented out: the path is the kiosk's"
        );
        let uncommented = text.replace("# qr_secret_file", "qr_secret_file");
        let config: sneakernet_kiosk_agent::config::AgentConfig =
            figment::Figment::from(figment::providers::Toml::string(&uncommented))
                .extract()
                .expect("the agent reads the QR secret line");
        assert_eq!(
            config.qr_secret_file,
            Some(PathBuf::from(QR_SECRET_ON_KIOSK))
        );

        let mut remote = kiosk_toml(
            "K-1",
            "/s",
            "https://auth.example:443",
            "http://kiosks.example:80",
        )
        .join("\n");
        remote.push_str("\ndata_dir = \"/var/lib/kiosk\"\n");
        let config: sneakernet_kiosk_agent::config::AgentConfig =
            figment::Figment::from(figment::providers::Toml::string(&remote))
                .extract()
                .expect("the agent reads them");
        let refused = config
            .validate()
            .expect_err("plaintext beyond loopback stays the kiosk operator's decision");
        assert!(refused.to_string().contains("allow_plaintext"), "{refused}");
        assert!(remote.contains("# allow_plaintext = true"), "{remote}");
        assert_eq!(config.auth_url, "https://auth.example:443");
        assert_eq!(config.gateway_url, "http://kiosks.example:80");
    }
}
