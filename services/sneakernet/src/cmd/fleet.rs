//! Operator commands on the logged-in operator's session: `kiosk list|show` (and the
//! dispatch of [`super::kiosk`]'s `kiosk add|credential|force-eject|inventory`), `pricing
//! set`, `events follow`.

use std::time::Duration;

use anyhow::Context;
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::gateway::v1 as gw;
use sneakernet_proto::gateway::v1::device_event_service_client::DeviceEventServiceClient;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_proto::orders::v1::fleet_service_client::FleetServiceClient;

use super::output::{self, money, time};
use super::rentals::Kind;
use super::{Client, authed};

/// Kiosk subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum KioskAction {
    /// Every kiosk (FleetService.ListKiosks).
    List {
        /// Only kiosks of this site.
        #[arg(long)]
        site: Option<String>,
        /// Only kiosks connected now.
        #[arg(long)]
        online: bool,
    },
    /// One kiosk with its inventory (FleetService.GetKiosk).
    Show {
        /// The kiosk's id.
        kiosk_id: String,
    },
    /// Register a kiosk, or update where it stands and its QR secret
    /// (FleetService.RegisterKiosk); then `kiosk credential` for its agent's login.
    Add {
        /// The kiosk's id (1 to 64 of A-Z, a-z, 0-9, "-", "_"), as its QR code names it.
        kiosk_id: String,
        /// Where it stands and its QR secret.
        #[command(flatten)]
        placement: super::kiosk::Placement,
    },
    /// Issue the kiosk agent's login credential (AuthService.IssueKioskCredential at
    /// --auth-address; an earlier one stops working) and print the `kiosk.toml` keys that use
    /// it (`auth_url` from --auth-address, `gateway_url` from --address).
    Credential {
        /// The kiosk's id.
        kiosk_id: String,
        /// Write the secret to this file (readable by you only) instead of printing it.
        #[arg(long, value_name = "FILE")]
        credential_file: Option<std::path::PathBuf>,
    },
    /// Open one bay whatever it holds (DeviceCommandService.ForceEject): maintenance, a stuck
    /// item. Waits for the kiosk's result (at most the command's 5-minute deadline).
    ForceEject {
        /// The kiosk's id.
        kiosk_id: String,
        /// The bay to open, e.g. A03.
        #[arg(long)]
        bay: String,
        /// Return once the command is logged, without waiting for the kiosk.
        #[arg(long)]
        no_wait: bool,
        /// The request's idempotency key.
        #[command(flatten)]
        key: super::kiosk::CommandKey,
    },
    /// Ask the kiosk to report every bay (DeviceCommandService.RequestInventory) and print
    /// its answer (at most the command's 5-minute deadline).
    Inventory {
        /// The kiosk's id.
        kiosk_id: String,
        /// Return once the command is logged, without waiting for the kiosk.
        #[arg(long)]
        no_wait: bool,
        /// The request's idempotency key.
        #[command(flatten)]
        key: super::kiosk::CommandKey,
    },
}

/// Pricing subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum PricingAction {
    /// Set the price rule of a site (or the network-wide default) for a type pattern
    /// (FleetService.SetPricing). Amounts in minor units (cents) of --currency.
    Set {
        /// The site (default: the network-wide rule).
        #[arg(long)]
        site: Option<String>,
        /// The item kind the rule is for.
        #[arg(long, value_enum)]
        kind: Kind,
        /// Only drives of this capacity in bytes.
        #[arg(long, value_name = "BYTES")]
        capacity: Option<u64>,
        /// Only drives holding this content package.
        #[arg(long, value_name = "ID")]
        package: Option<String>,
        /// The currency of every amount, e.g. EUR.
        #[arg(long)]
        currency: String,
        /// Price of one use, covering the first day.
        #[arg(long, value_name = "MINOR")]
        base: i64,
        /// Price of each day beyond the first.
        #[arg(long, value_name = "MINOR", default_value_t = 0)]
        per_extra_day: i64,
        /// Longest rental, in days.
        #[arg(long, default_value_t = 7)]
        max_days: u32,
        /// Time after the due time a return costs nothing extra (humantime, e.g. 1h).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
        grace: Duration,
        /// Late fee per started day.
        #[arg(long, value_name = "MINOR", default_value_t = 0)]
        late_fee_per_day: i64,
        /// The most late fees one order accrues (0: no cap).
        #[arg(long, value_name = "MINOR", default_value_t = 0)]
        late_fee_cap: i64,
        /// Fee once the item counts as lost.
        #[arg(long, value_name = "MINOR", default_value_t = 0)]
        lost_item_fee: i64,
        /// Days after the due time the item counts as lost.
        #[arg(long, default_value_t = 30)]
        lost_after_days: u32,
        /// How long a reserved drive waits for pickup (humantime, e.g. 1day).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1day")]
        pickup_window: Duration,
    },
}

/// `kiosk list|show|add|credential|force-eject|inventory`.
pub async fn kiosk(client: &Client, action: KioskAction) -> anyhow::Result<()> {
    use super::kiosk;
    match action {
        KioskAction::List { site, online } => list(client, site, online).await,
        KioskAction::Show { kiosk_id } => show(client, kiosk_id).await,
        KioskAction::Add {
            kiosk_id,
            placement,
        } => kiosk::add(client, kiosk_id, placement).await,
        KioskAction::Credential {
            kiosk_id,
            credential_file,
        } => kiosk::credential(client, kiosk_id, credential_file).await,
        KioskAction::ForceEject {
            kiosk_id,
            bay,
            no_wait,
            key,
        } => kiosk::force_eject(client, kiosk_id, bay, key, !no_wait).await,
        KioskAction::Inventory {
            kiosk_id,
            no_wait,
            key,
        } => kiosk::inventory(client, kiosk_id, key, !no_wait).await,
    }
}

/// `kiosk list`.
async fn list(client: &Client, site: Option<String>, online: bool) -> anyhow::Result<()> {
    let (target, token) = client.logged_in().await?;
    let mut fleet = FleetServiceClient::new(target.channel.clone());
    let mut page_token = String::new();
    loop {
        let page = target
            .call(
                "list kiosks",
                fleet.list_kiosks(authed(
                    pb::ListKiosksRequest {
                        page_size: 500,
                        page_token: page_token.clone(),
                        site_id: site.clone().unwrap_or_default(),
                        online_only: online,
                    },
                    &token,
                )?),
            )
            .await?;
        for kiosk in &page.kiosks {
            let value = output::json("sneakernet.orders.v1.Kiosk", kiosk)?;
            client.output.print(value, || vec![kiosk_line(kiosk)]);
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    Ok(())
}

/// `kiosk show`.
async fn show(client: &Client, kiosk_id: String) -> anyhow::Result<()> {
    let (target, token) = client.logged_in().await?;
    let mut fleet = FleetServiceClient::new(target.channel.clone());
    let kiosk = target
        .call(
            &format!("show kiosk {kiosk_id}"),
            fleet.get_kiosk(authed(pb::GetKioskRequest { kiosk_id }, &token)?),
        )
        .await?
        .kiosk
        .context("the answer carries no kiosk")?;
    let value = output::json("sneakernet.orders.v1.Kiosk", &kiosk)?;
    client.output.print(value, || {
        let mut lines = vec![kiosk_line(&kiosk)];
        if let Some(p) = &kiosk.profile {
            let (lat, lon) = p
                .location
                .as_ref()
                .map(|l| (l.latitude, l.longitude))
                .unwrap_or_default();
            lines.push(format!(
                "    site {} at {lat}, {lon}; agent {}; last seen {}",
                p.site_id,
                if kiosk.agent_version.is_empty() {
                    "-"
                } else {
                    &kiosk.agent_version
                },
                time(kiosk.last_seen_at.as_ref())
            ));
        }
        if let Some(inventory) = &kiosk.inventory {
            for line in &inventory.lines {
                lines.push(format!(
                    "    {}: {} ready, {} pinned, {} busy, {} quarantined",
                    output::item_type(line.item_type.as_ref(), ""),
                    line.ready,
                    line.pinned,
                    line.busy,
                    line.quarantined
                ));
            }
            lines.push(format!(
                "    {} empty bays, {} faulty; reported {}",
                inventory.empty_bays,
                inventory.faulty_bays,
                time(inventory.reported_at.as_ref())
            ));
        }
        lines
    });
    Ok(())
}

fn kiosk_line(kiosk: &pb::Kiosk) -> String {
    let (id, site) = kiosk
        .profile
        .as_ref()
        .map(|p| (p.kiosk_id.as_str(), p.site_name.as_str()))
        .unwrap_or_default();
    let (ready, empty) = kiosk
        .inventory
        .as_ref()
        .map(|i| (i.lines.iter().map(|l| l.ready).sum::<u32>(), i.empty_bays))
        .unwrap_or_default();
    let out = kiosk.profile.as_ref().is_some_and(|p| p.out_of_service);
    format!(
        "{id:<15} {site:<24} {}{} {ready} ready, {empty} empty bays",
        if kiosk.online { "online " } else { "offline" },
        if out { " out of service" } else { "" }
    )
}

/// `pricing set`.
pub async fn pricing(client: &Client, action: PricingAction) -> anyhow::Result<()> {
    let PricingAction::Set {
        site,
        kind,
        capacity,
        package,
        currency,
        base,
        per_extra_day,
        max_days,
        grace,
        late_fee_per_day,
        late_fee_cap,
        lost_item_fee,
        lost_after_days,
        pickup_window,
    } = action;
    let (target, token) = client.logged_in().await?;
    let amount = |minor_units: i64| {
        Some(common::Money {
            minor_units,
            currency: currency.clone(),
        })
    };
    let duration = |d: Duration| {
        Some(prost_types::Duration {
            seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: 0,
        })
    };
    let request = pb::SetPricingRequest {
        site_id: site.unwrap_or_default(),
        item_type: Some(common::ItemType {
            kind: match kind {
                Kind::Drive => common::ItemKind::Drive,
                Kind::PowerBank => common::ItemKind::PowerBank,
            } as i32,
            capacity_bytes: capacity.unwrap_or(0),
            content_package_id: package.unwrap_or_default(),
        }),
        pricing: Some(pb::Pricing {
            base_price: amount(base),
            price_per_extra_day: amount(per_extra_day),
            max_duration_days: max_days,
            grace_period: duration(grace),
            late_fee_per_day: amount(late_fee_per_day),
            late_fee_cap: amount(late_fee_cap),
            lost_item_fee: amount(lost_item_fee),
            lost_after_days,
            pickup_window: duration(pickup_window),
        }),
    };
    let set = target
        .call(
            "set pricing",
            FleetServiceClient::new(target.channel.clone()).set_pricing(authed(request, &token)?),
        )
        .await?;
    let rule = set.rule.clone().unwrap_or_default();
    let value = output::json("sneakernet.orders.v1.SetPricingResponse", &set)?;
    client.output.print(value, || {
        vec![format!(
            "price rule set for {} on {}: {} for the first day",
            if rule.site_id.is_empty() {
                "every site"
            } else {
                &rule.site_id
            },
            output::item_type(rule.item_type.as_ref(), ""),
            money(rule.pricing.as_ref().and_then(|p| p.base_price.as_ref()))
        )]
    });
    Ok(())
}

/// `events follow`: DeviceEventService.Subscribe from `after` on, one line (or JSON object)
/// per event, until interrupted; each line carries the cursor to resume from with --after.
pub async fn follow(client: &Client, after: u64, kiosks: Vec<String>) -> anyhow::Result<()> {
    // The subscription outlives its access token: the server ends it UNAUTHENTICATED at the
    // token's expiry, and it resumes from the last cursor with a renewed token.
    let mut after = after;
    let mut stream = open_follow(client, after, &kiosks, false).await?;
    // Renewed once per open: a stream the server ends even with a fresh token is an error.
    let mut renewed = false;
    loop {
        let message = tokio::select! {
            message = stream.message() => message,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let entry = match message {
            Ok(Some(message)) => message.entry,
            Ok(None) => return Ok(()),
            Err(status) if status.code() == tonic::Code::Unauthenticated && !renewed => {
                stream = open_follow(client, after, &kiosks, true).await?;
                renewed = true;
                continue;
            }
            Err(status) => return Err(client.target()?.refused("follow events", &status)),
        };
        renewed = false;
        match entry {
            Some(gw::subscribe_response::Entry::Event(event)) => {
                after = after.max(event.cursor);
                let value = output::json("sneakernet.gateway.v1.Event", &event)?;
                client.output.print(value, || vec![event_line(&event)]);
            }
            // Scripts store it as a resume point; people need not see it.
            Some(gw::subscribe_response::Entry::Checkpoint(checkpoint)) => {
                after = after.max(checkpoint.cursor);
                if client.output.json {
                    let value = output::json("sneakernet.gateway.v1.Checkpoint", &checkpoint)?;
                    println!("{}", serde_json::json!({ "checkpoint": value }));
                }
            }
            None => {}
        }
    }
}

/// Opens Subscribe from `after` for `kiosks` (see [`Client::call_renewing`] for `renew`).
async fn open_follow(
    client: &Client,
    after: u64,
    kiosks: &[String],
    renew: bool,
) -> anyhow::Result<tonic::Streaming<gw::SubscribeResponse>> {
    client
        .call_renewing("follow events", renew, |channel, token| {
            let request = authed(
                gw::SubscribeRequest {
                    after_cursor: after,
                    kiosk_ids: kiosks.to_vec(),
                    ..Default::default()
                },
                token,
            )?;
            Ok(async move {
                DeviceEventServiceClient::new(channel)
                    .subscribe(request)
                    .await
            })
        })
        .await
}

fn event_line(event: &gw::Event) -> String {
    use gw::event::Kind as E;
    let what = match &event.kind {
        Some(E::CommandStateChanged(c)) => {
            let command = c.command.clone().unwrap_or_default();
            format!(
                "command {} {}",
                command.command_id,
                gw::CommandState::try_from(command.state)
                    .map(|s| s.as_str_name())
                    .unwrap_or("UNKNOWN")
                    .trim_start_matches("COMMAND_STATE_")
            )
        }
        Some(E::ItemReturned(r)) => format!(
            "item {} returned into bay {}",
            r.item.as_ref().map(|i| i.item_id.as_str()).unwrap_or("?"),
            r.bay_id
        ),
        Some(E::InventoryChanged(_)) => "inventory changed".into(),
        Some(E::KioskOnline(_)) => "online".into(),
        Some(E::KioskOffline(_)) => "offline".into(),
        None => "(an event this client does not know)".into(),
    };
    let device = if event.kiosk_id.is_empty() {
        format!("drive {}", event.drive_id)
    } else {
        event.kiosk_id.clone()
    };
    format!(
        "{:>8} {} {device}: {what}",
        event.cursor,
        time(event.occurred_at.as_ref())
    )
}
