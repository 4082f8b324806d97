//! The phone app's flows: `kiosks near`, `scan`, `rent`, `reserve`, `cancel`, `collect`,
//! `watch`, `orders`, `write-protect`.

use anyhow::{Context, bail};
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_proto::orders::v1::order_service_client::OrderServiceClient;

use super::output::{self, item_type, money, order_line, prices, state_name, time};
use super::{Client, authed, idempotency_key};

/// What kind of item, on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// A portable hard drive.
    Drive,
    /// A power bank.
    PowerBank,
}

impl Kind {
    fn proto(self) -> common::ItemKind {
        match self {
            Kind::Drive => common::ItemKind::Drive,
            Kind::PowerBank => common::ItemKind::PowerBank,
        }
    }
}

/// On or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    /// On.
    On,
    /// Off.
    Off,
}

/// The type flags `rent`, `reserve` and `kiosks near` share.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TypeFilter {
    /// The item's kind.
    #[arg(long, value_enum)]
    pub kind: Option<Kind>,
    /// A drive's capacity in bytes (as `kiosks near` and `scan` print it: 1 TB =
    /// 1000000000000).
    #[arg(long, value_name = "BYTES")]
    pub capacity: Option<u64>,
    /// The content package (its id, a UUID).
    #[arg(long, value_name = "ID")]
    pub package: Option<String>,
}

impl TypeFilter {
    fn matches(&self, t: Option<&common::ItemType>) -> bool {
        let Some(t) = t else { return false };
        self.kind.is_none_or(|k| t.kind == k.proto() as i32)
            && self.capacity.is_none_or(|c| t.capacity_bytes == c)
            && self
                .package
                .as_ref()
                .is_none_or(|p| &t.content_package_id == p)
    }

    fn any(&self) -> bool {
        self.kind.is_some() || self.capacity.is_some() || self.package.is_some()
    }
}

/// How to pay and the key that makes a retry safe.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Payment {
    /// The card token to pay with (default: the account's remembered one, from the deposit).
    #[arg(long)]
    pub card: Option<String>,
    /// The order's idempotency key (default: a new one, printed); pass the printed key again
    /// to retry without paying twice.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

impl Payment {
    fn method(&self) -> Option<pb::PaymentMethod> {
        self.card.clone().map(|card| pb::PaymentMethod {
            method: Some(pb::payment_method::Method::CardToken(card)),
        })
    }
}

/// `kiosks near LAT LON`: FindKiosks.
pub async fn near(
    client: &Client,
    latitude: f64,
    longitude: f64,
    radius: u32,
    filter: TypeFilter,
) -> anyhow::Result<()> {
    let (target, token) = client.logged_in().await?;
    let wanted = filter.any().then(|| common::ItemType {
        kind: filter.kind.unwrap_or(Kind::Drive).proto() as i32,
        capacity_bytes: filter.capacity.unwrap_or(0),
        content_package_id: filter.package.clone().unwrap_or_default(),
    });
    let found = target
        .call(
            "find kiosks",
            OrderServiceClient::new(target.channel.clone()).find_kiosks(authed(
                pb::FindKiosksRequest {
                    latitude,
                    longitude,
                    radius_meters: radius,
                    item_type: wanted,
                    max_results: 100,
                    page_token: String::new(),
                },
                &token,
            )?),
        )
        .await?;
    let value = output::json("sneakernet.orders.v1.FindKiosksResponse", &found)?;
    client.output.print(value, || {
        if found.kiosks.is_empty() {
            return vec![format!("no kiosk within {radius} m")];
        }
        let mut lines = Vec::new();
        for kiosk in &found.kiosks {
            lines.push(format!(
                "{} ({}) {} m away{}",
                kiosk.kiosk_id,
                kiosk.site_name,
                kiosk.distance_meters,
                if kiosk.online { "" } else { ", offline" }
            ));
            for line in &kiosk.availability {
                lines.push(format!(
                    "    {}: {} now, {} reservable; {}",
                    item_type(line.item_type.as_ref(), &line.content_title),
                    line.available_now,
                    line.reservable,
                    prices(&line.prices)
                ));
            }
        }
        lines
    });
    Ok(())
}

/// `scan QR`: ScanKiosk, printing the offer.
pub async fn scan(client: &Client, qr: &str) -> anyhow::Result<()> {
    let (_, token) = client.logged_in().await?;
    let offer = scan_offer(client, &token, qr).await?;
    let value = output::json("sneakernet.orders.v1.Offer", &offer)?;
    client.output.print(value, || {
        let mut lines = vec![format!(
            "{} ({}) offers until {}:",
            offer.kiosk_id,
            offer.site_name,
            time(offer.expires_at.as_ref())
        )];
        for line in &offer.lines {
            lines.push(format!("    {}", offer_line(line)));
        }
        for ready in &offer.ready_reservations {
            lines.push(format!(
                "    ready for pickup: {} (sneakernet collect {} --qr ...)",
                order_line(ready),
                ready.order_id
            ));
        }
        lines
    });
    Ok(())
}

fn offer_line(line: &pb::OfferLine) -> String {
    let protection = match pb::WriteProtectOption::try_from(line.write_protect) {
        Ok(pb::WriteProtectOption::Choosable) => ", write protection on or off",
        Ok(pb::WriteProtectOption::AlwaysOn) => ", always write-protected",
        _ => "",
    };
    format!(
        "{}: {} available{protection}; {}",
        item_type(line.item_type.as_ref(), &line.content_title),
        line.available,
        prices(&line.prices)
    )
}

async fn scan_offer(client: &Client, token: &str, qr: &str) -> anyhow::Result<pb::Offer> {
    let target = client.target()?;
    target
        .call(
            "scan",
            OrderServiceClient::new(target.channel.clone()).scan_kiosk(authed(
                pb::ScanKioskRequest {
                    qr_payload: qr.to_owned(),
                },
                token,
            )?),
        )
        .await?
        .offer
        .context("scan: the answer carries no offer")
}

/// `rent --qr QR`: scans, picks the offer line the filter names, and CreateRental.
pub async fn rent(
    client: &Client,
    qr: &str,
    filter: TypeFilter,
    days: Option<u32>,
    write_protect: Option<Switch>,
    payment: Payment,
) -> anyhow::Result<()> {
    let (target, token) = client.logged_in().await?;
    let offer = scan_offer(client, &token, qr).await?;
    let line = choose_line(&offer, &filter)?;
    let duration_days = match days {
        Some(days) if line.prices.iter().any(|p| p.duration_days == days) => days,
        Some(days) => bail!(
            "--days {days} is not offered for this type here; the offer lists {}",
            prices(&line.prices)
        ),
        None => line
            .prices
            .first()
            .map(|p| p.duration_days)
            .context("the offer line lists no rental length")?,
    };
    let option = pb::WriteProtectOption::try_from(line.write_protect)
        .unwrap_or(pb::WriteProtectOption::Unspecified);
    let write_protect = match (write_protect, option) {
        (Some(Switch::Off), pb::WriteProtectOption::AlwaysOn) => {
            bail!("--write-protect off: this type is always write-protected")
        }
        (Some(Switch::On), pb::WriteProtectOption::NotApplicable) => {
            bail!("--write-protect on: this type has no write protection")
        }
        (Some(choice), _) => choice == Switch::On,
        (None, pb::WriteProtectOption::AlwaysOn) => true,
        (None, _) => false,
    };
    let key = idempotency_key(payment.idempotency_key.clone());
    let created = target
        .call(
            "rent",
            OrderServiceClient::new(target.channel.clone()).create_rental(authed(
                pb::CreateRentalRequest {
                    kiosk_id: offer.kiosk_id.clone(),
                    offer_id: offer.offer_id.clone(),
                    choice: Some(pb::ItemChoice {
                        spec: Some(common::ItemSpec {
                            item_type: line.item_type.clone(),
                            write_protect,
                        }),
                        duration_days,
                    }),
                    payment_method: payment.method(),
                    idempotency_key: key.clone(),
                },
                &token,
            )?),
        )
        .await?;
    let order = created
        .order
        .clone()
        .context("rent: the answer carries no order")?;
    let mut value = output::json("sneakernet.orders.v1.CreateRentalResponse", &created)?;
    value["idempotencyKey"] = key.clone().into();
    client.output.print(value, || {
        vec![
            format!(
                "rented: order {} ({}), charged {}; idempotency key {key}",
                order.order_id,
                state_name(order.state),
                money(order.price.as_ref())
            ),
            format!("follow it: sneakernet watch {}", order.order_id),
        ]
    });
    Ok(())
}

/// The offer line `filter` names: the only match, or the first available one when the filter
/// leaves several (offer order).
fn choose_line<'a>(offer: &'a pb::Offer, filter: &TypeFilter) -> anyhow::Result<&'a pb::OfferLine> {
    let matching: Vec<&pb::OfferLine> = offer
        .lines
        .iter()
        .filter(|l| filter.matches(l.item_type.as_ref()))
        .collect();
    if let Some(line) = matching.iter().find(|l| l.available > 0) {
        return Ok(line);
    }
    let listed: Vec<String> = offer.lines.iter().map(offer_line).collect();
    if matching.is_empty() {
        bail!(
            "{} offers no type matching --kind/--capacity/--package; it offers: {}",
            offer.kiosk_id,
            if listed.is_empty() {
                "nothing".into()
            } else {
                listed.join("; ")
            }
        )
    }
    bail!(
        "{} has none of that type available now; it offers: {}",
        offer.kiosk_id,
        listed.join("; ")
    )
}

/// `reserve --kiosk K`: CreateReservation.
pub async fn reserve(
    client: &Client,
    kiosk: &str,
    capacity: u64,
    package: Option<String>,
    days: u32,
    write_protect: Option<Switch>,
    payment: Payment,
) -> anyhow::Result<()> {
    let (target, token) = client.logged_in().await?;
    let key = idempotency_key(payment.idempotency_key.clone());
    let created = target
        .call(
            "reserve",
            OrderServiceClient::new(target.channel.clone()).create_reservation(authed(
                pb::CreateReservationRequest {
                    kiosk_id: kiosk.to_owned(),
                    choice: Some(pb::ItemChoice {
                        spec: Some(common::ItemSpec {
                            item_type: Some(common::ItemType {
                                kind: common::ItemKind::Drive as i32,
                                capacity_bytes: capacity,
                                content_package_id: package.unwrap_or_default(),
                            }),
                            write_protect: write_protect == Some(Switch::On),
                        }),
                        duration_days: days,
                    }),
                    payment_method: payment.method(),
                    idempotency_key: key.clone(),
                },
                &token,
            )?),
        )
        .await?;
    let order = created
        .order
        .clone()
        .context("reserve: the answer carries no order")?;
    let mut value = output::json("sneakernet.orders.v1.CreateReservationResponse", &created)?;
    value["idempotencyKey"] = key.clone().into();
    client.output.print(value, || {
        vec![
            format!(
                "reserved: order {} ({}), charged {}; idempotency key {key}",
                order.order_id,
                state_name(order.state),
                money(order.price.as_ref())
            ),
            format!(
                "follow the kiosk preparing it: sneakernet watch {} --until READY_FOR_PICKUP",
                order.order_id
            ),
        ]
    });
    Ok(())
}

/// `cancel ORDER`: CancelReservation.
pub async fn cancel(client: &Client, order_id: &str) -> anyhow::Result<()> {
    let (target, token) = client.logged_in().await?;
    let answer = target
        .call(
            "cancel",
            OrderServiceClient::new(target.channel.clone()).cancel_reservation(authed(
                pb::CancelReservationRequest {
                    order_id: order_id.to_owned(),
                },
                &token,
            )?),
        )
        .await?;
    print_order(
        client,
        "sneakernet.orders.v1.CancelReservationResponse",
        &answer,
        answer.order.as_ref(),
        "cancelled",
    )
}

/// `collect ORDER --qr QR`: CollectReservation.
pub async fn collect(client: &Client, order_id: &str, qr: &str) -> anyhow::Result<()> {
    let (target, token) = client.logged_in().await?;
    let answer = target
        .call(
            "collect",
            OrderServiceClient::new(target.channel.clone()).collect_reservation(authed(
                pb::CollectReservationRequest {
                    order_id: order_id.to_owned(),
                    qr_payload: qr.to_owned(),
                },
                &token,
            )?),
        )
        .await?;
    print_order(
        client,
        "sneakernet.orders.v1.CollectReservationResponse",
        &answer,
        answer.order.as_ref(),
        "collecting",
    )
}

/// `write-protect ORDER on|off`: SetWriteProtect.
pub async fn write_protect(client: &Client, order_id: &str, on: Switch) -> anyhow::Result<()> {
    let (target, token) = client.logged_in().await?;
    let answer = target
        .call(
            "set write protection",
            OrderServiceClient::new(target.channel.clone()).set_write_protect(authed(
                pb::SetWriteProtectRequest {
                    order_id: order_id.to_owned(),
                    on: on == Switch::On,
                },
                &token,
            )?),
        )
        .await?;
    let applied = answer.applied;
    print_order(
        client,
        "sneakernet.orders.v1.SetWriteProtectResponse",
        &answer,
        answer.order.as_ref(),
        if applied {
            "write protection confirmed by the drive"
        } else {
            "write protection on its way to the drive (watch the order for the confirmation)"
        },
    )
}

fn print_order<M: prost::Message>(
    client: &Client,
    name: &str,
    answer: &M,
    order: Option<&pb::Order>,
    what: &str,
) -> anyhow::Result<()> {
    let order = order.cloned().context("the answer carries no order")?;
    let value = output::json(name, answer)?;
    client
        .output
        .print(value, || vec![format!("{what}: {}", order_line(&order))]);
    Ok(())
}

/// `orders`: ListOrders, every page.
pub async fn list(client: &Client, states: Vec<String>) -> anyhow::Result<()> {
    let (target, token) = client.logged_in().await?;
    let mut wanted = Vec::new();
    for state in states {
        let name = format!("ORDER_STATE_{}", state.to_ascii_uppercase());
        let state = pb::OrderState::from_str_name(&name)
            .with_context(|| format!("--state {state:?} is not an order state (e.g. LENT)"))
            .map_err(|e| super::exit::usage(format!("{e:#}")))?;
        wanted.push(state as i32);
    }
    let mut orders = OrderServiceClient::new(target.channel.clone());
    let mut page_token = String::new();
    let mut count = 0usize;
    loop {
        let page = target
            .call(
                "list orders",
                orders.list_orders(authed(
                    pb::ListOrdersRequest {
                        page_size: 100,
                        page_token: page_token.clone(),
                        states: wanted.clone(),
                        ..Default::default()
                    },
                    &token,
                )?),
            )
            .await?;
        for order in &page.orders {
            count += 1;
            let value = output::json("sneakernet.orders.v1.Order", order)?;
            client.output.print(value, || vec![order_line(order)]);
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    if count == 0 && !client.output.json {
        println!("no orders");
    }
    Ok(())
}

/// Opens WatchOrder for `order_id` (see [`Client::call_renewing`] for `renew`).
async fn open_watch(
    client: &Client,
    order_id: &str,
    renew: bool,
) -> anyhow::Result<tonic::Streaming<pb::WatchOrderResponse>> {
    client
        .call_renewing("watch the order", renew, |channel, token| {
            let request = authed(
                pb::WatchOrderRequest {
                    order_id: order_id.to_owned(),
                },
                token,
            )?;
            Ok(async move { OrderServiceClient::new(channel).watch_order(request).await })
        })
        .await
}

/// `watch ORDER`: WatchOrder, one line (or JSON object) per change, a bar while a kiosk
/// provisions; ends when the order reaches `until` (exit 0) or a terminal state (exit 0
/// without `until`, else 1 naming where it ended).
pub async fn watch(client: &Client, order_id: &str, until: Option<String>) -> anyhow::Result<()> {
    let until = match until {
        None => None,
        Some(name) => Some(
            pb::OrderState::from_str_name(&format!("ORDER_STATE_{}", name.to_ascii_uppercase()))
                .ok_or_else(|| {
                    super::exit::usage(format!(
                        "--until {name:?} is not an order state (e.g. LENT)"
                    ))
                })? as i32,
        ),
    };
    // A watch outlives its access token: the server ends it UNAUTHENTICATED at the token's
    // expiry, and the watch goes on with a renewed one, skipping the replayed history.
    let mut stream = open_watch(client, order_id, false).await?;
    let mut bar: Option<(i32, indicatif::ProgressBar)> = None;
    let mut last_state = None;
    // Renewed once per open: a stream the server ends even with a fresh token is an error.
    let mut renewed = false;
    // The first message after a reopen is the order as it is now, which was printed already
    // unless it changed meanwhile.
    let mut reopened = false;
    loop {
        let change = match stream.message().await {
            Ok(Some(change)) => change,
            Ok(None) => break,
            Err(status) if status.code() == tonic::Code::Unauthenticated && !renewed => {
                stream = open_watch(client, order_id, true).await?;
                renewed = true;
                reopened = true;
                continue;
            }
            Err(status) => return Err(client.target()?.refused("watch the order", &status)),
        };
        renewed = false;
        if std::mem::take(&mut reopened)
            && change.progress.is_none()
            && last_state == Some(change.state)
        {
            continue;
        }
        let order = change.order.clone().unwrap_or_default();
        if client.output.json {
            println!(
                "{}",
                output::json("sneakernet.orders.v1.WatchOrderResponse", &change)?
            );
        } else {
            if let Some(progress) = &change.progress {
                show_progress(&mut bar, progress);
            }
            if last_state != Some(change.state) {
                if let Some((_, bar)) = bar.take() {
                    bar.finish();
                }
                let reason = if change.reason.is_empty() {
                    order.state_reason.as_str()
                } else {
                    change.reason.as_str()
                };
                let item = if order.item_id.is_empty() {
                    String::new()
                } else {
                    format!(" [item {}]", order.item_id)
                };
                println!(
                    "{} {:<16} {reason}{item}",
                    time(change.time.as_ref()),
                    state_name(change.state)
                );
            }
        }
        last_state = Some(change.state);
        if until == Some(change.state) {
            return Ok(());
        }
        if until.is_some() && is_final(change.state) {
            bail!(
                "order {order_id} ended {} before {}: {}",
                state_name(change.state),
                state_name(until.unwrap_or_default()),
                order.state_reason
            );
        }
    }
    if let Some((_, bar)) = bar.take() {
        bar.finish();
    }
    match (until, last_state) {
        (Some(wanted), _) => bail!(
            "the watch of order {order_id} ended before it was {}",
            state_name(wanted)
        ),
        _ => Ok(()),
    }
}

/// A state the order never leaves, or one that leads only to a terminal state.
fn is_final(state: i32) -> bool {
    matches!(
        pb::OrderState::try_from(state),
        Ok(pb::OrderState::Closed
            | pb::OrderState::Refunded
            | pb::OrderState::Expired
            | pb::OrderState::Failed
            | pb::OrderState::Cancelled)
    )
}

fn show_progress(
    bar: &mut Option<(i32, indicatif::ProgressBar)>,
    progress: &pb::ProvisioningProgress,
) {
    if bar.as_ref().map(|(phase, _)| *phase) != Some(progress.phase) {
        if let Some((_, old)) = bar.take() {
            old.finish();
        }
        let phase = sneakernet_proto::gateway::v1::ProgressPhase::try_from(progress.phase)
            .map(|p| p.as_str_name())
            .unwrap_or("UNKNOWN")
            .trim_start_matches("PROGRESS_PHASE_")
            .to_lowercase();
        let new = indicatif::ProgressBar::new(progress.bytes_total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "    {prefix:<11} [{bar:30}] {bytes}/{total_bytes}",
        ) {
            new.set_style(style.progress_chars("=> "));
        }
        new.set_prefix(phase);
        *bar = Some((progress.phase, new));
    }
    if let Some((_, bar)) = bar {
        bar.set_length(progress.bytes_total.max(progress.bytes_done));
        bar.set_position(progress.bytes_done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(package: &str, available: u32) -> pb::OfferLine {
        pb::OfferLine {
            item_type: Some(common::ItemType {
                kind: common::ItemKind::Drive as i32,
                capacity_bytes: 1_000_000_000_000,
                content_package_id: package.into(),
            }),
            available,
            ..Default::default()
        }
    }

    #[test]
    fn rent_takes_the_first_available_line_the_filter_names() {
        let offer = pb::Offer {
            kiosk_id: "K-1".into(),
            lines: vec![line("", 0), line("p-1", 2), line("p-2", 1)],
            ..Default::default()
        };
        let any = TypeFilter::default();
        assert_eq!(
            choose_line(&offer, &any)
                .unwrap()
                .item_type
                .as_ref()
                .unwrap()
                .content_package_id,
            "p-1"
        );
        let p2 = TypeFilter {
            package: Some("p-2".into()),
            ..Default::default()
        };
        assert_eq!(
            choose_line(&offer, &p2)
                .unwrap()
                .item_type
                .as_ref()
                .unwrap()
                .content_package_id,
            "p-2"
        );
        let blank = TypeFilter {
            package: Some(String::new()),
            ..Default::default()
        };
        let refused = choose_line(&offer, &blank).unwrap_err().to_string();
        assert!(refused.contains("none of that type available"), "{refused}");
        let bank = TypeFilter {
            kind: Some(Kind::PowerBank),
            ..Default::default()
        };
        assert!(choose_line(&offer, &bank).is_err());
    }
}
