//! `sneakernet demo`: a fresh standalone node with its simulated kiosks in a temporary data
//! directory, and the walk-up rental of seed flow 1 told step by step as a phone app lives it,
//! through gRPC only: register, scan (refused: no deposit), pay the deposit, scan (the offer),
//! rent, follow the order until the kiosk lent the item it chose, return the item at another
//! kiosk, follow the order until it closed with its charge, and audit the money as the
//! operator. Succeeds only when every step reached its state and the audit is clean; every
//! wait is bounded.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use rand::Rng;
use sneakernet_kiosk_agent::bays::{BayState, ItemFacts, ItemInfo};
use sneakernet_kiosk_agent::config::{SimItemConfig, SimItemKind};
use sneakernet_proto::auth::v1 as auth;
use sneakernet_proto::auth::v1::auth_service_client::AuthServiceClient;
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_proto::orders::v1::fleet_service_client::FleetServiceClient;
use sneakernet_proto::orders::v1::order_service_client::OrderServiceClient;
use sneakernet_runtime::Shutdown;
use sneakernet_runtime::config::Config;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use crate::client::{self, authed};
use crate::demo_content::DemoCatalog;
use crate::node::{self, NodeRole};
use crate::simulated_fleet;
use crate::standalone::{self, Fleet, SimulatedKiosk};

/// The sandbox payment provider's test card that approves every charge.
pub const TEST_CARD: &str = "4242424242424242";
/// How long the kiosks may take to come online with an inventory.
const ONLINE_WAIT: Duration = Duration::from_secs(60);
/// How long a kiosk may take to lend, and to report a return.
const ORDER_WAIT: Duration = Duration::from_secs(90);
/// How long a scan is retried while the kiosk is not ready to offer anything.
const SCAN_WAIT: Duration = Duration::from_secs(30);
/// The whole story, end to end.
const STORY_WAIT: Duration = Duration::from_secs(300);

/// Runs the demo with `config`'s logging and service settings, but on a fresh data directory,
/// embedded storage, plaintext and a free port on loopback, so it touches nothing of an
/// existing installation.
pub async fn run(mut config: Config) -> anyhow::Result<()> {
    let data_dir = tempfile::Builder::new()
        .prefix("sneakernet-demo-")
        .tempdir()
        .context("cannot create a temporary data directory")?;
    config.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    config.data_dir = data_dir.path().to_owned();
    config.database_url = None;
    config.redis_url = None;
    config.metrics_listen = None;
    config.tls = None;
    config.auth.url = None;
    config.auth.service_secret_file = None;
    config.auth.bootstrap_operator_email = None;
    config.auth.bootstrap_operator_password_file = None;
    config.orders.gateway_url = None;
    config.orders.content_url = None;

    println!("sneakernet demo: a walk-up rental, as the phone app lives it");
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();
    let node = node::start(config.clone(), &NodeRole::ALL, shutdown.clone(), None).await?;
    let address = client::loopback(node.address);
    println!(
        "  a fresh standalone node serves every role on {address}, data in {} (removed at the end)",
        data_dir.path().display()
    );
    let fleet = tokio::select! {
        fleet = standalone::start(&config, node.address) => fleet,
        () = shutdown.triggered() => Err(anyhow!("interrupted")),
    };
    let outcome = match fleet {
        Ok(fleet) => {
            let channel = client::channel(&format!("http://{address}"))?;
            let outcome = tokio::select! {
                outcome = client::within(STORY_WAIT, "the demo", story(&fleet, &channel)) => outcome,
                () = shutdown.triggered() => Err(anyhow!("interrupted")),
            };
            fleet.stop().await;
            outcome
        }
        Err(error) => Err(error.context("cannot start the simulated kiosks")),
    };
    node.stop();
    let stopped = node.wait().await;
    outcome?;
    stopped?;
    println!("demo complete: every step reached its state and the audit is clean");
    Ok(())
}

/// Prints the story's steps, each with the time since it began.
struct Narrator {
    started: Instant,
    step: u32,
}

impl Narrator {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            step: 0,
        }
    }

    fn step(&mut self, text: impl AsRef<str>) {
        self.step += 1;
        println!(
            "[{:>5.1}s] {:>2}. {}",
            self.started.elapsed().as_secs_f64(),
            self.step,
            text.as_ref()
        );
    }

    fn detail(&self, text: impl AsRef<str>) {
        println!("             {}", text.as_ref());
    }
}

async fn story(fleet: &Fleet, channel: &Channel) -> anyhow::Result<()> {
    if !fleet.registered_with_orders {
        bail!(
            "the orders service does not register kiosks yet (FleetService.RegisterKiosk is unimplemented): nothing can be rented"
        );
    }
    let [here, there, ..] = fleet.kiosks.as_slice() else {
        bail!("the demo needs two simulated kiosks");
    };
    let mut narrator = Narrator::new();
    let operator_password =
        standalone::read_password(&fleet.accounts.operator_password_file).await?;
    let operator = client::login(channel, &fleet.accounts.operator_email, &operator_password)
        .await
        .context("the operator cannot log in")?;

    let kiosks = wait_until_online(channel, &operator, fleet).await?;
    narrator.step(format!("The {} simulated kiosks are online:", kiosks.len()));
    for kiosk in &kiosks {
        narrator.detail(describe_kiosk(kiosk));
    }

    let email = format!(
        "walker-{}@sneakernet.example",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let password: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    let session = client::call(
        "register",
        AuthServiceClient::new(channel.clone()).register(auth::RegisterRequest {
            email: email.clone(),
            password,
        }),
    )
    .await?
    .session
    .context("register: the answer carries no session")?;
    let user = session.access_token;
    narrator.step(format!(
        "Registered {email} (user {}) and signed in.",
        session.user_id
    ));

    let mut orders = OrderServiceClient::new(channel.clone());
    let deposit = first_scan(&mut narrator, &mut orders, &user, here).await?;

    let paid = client::call(
        "pay the deposit",
        orders.pay_deposit(authed(
            pb::PayDepositRequest {
                amount: Some(deposit.clone()),
                payment_method: Some(card()),
                idempotency_key: format!("demo-deposit-{}", uuid::Uuid::new_v4()),
            },
            &user,
        )?),
    )
    .await?
    .deposit
    .context("pay the deposit: the answer carries no deposit")?;
    narrator.step(format!(
        "Paid the deposit: {} with test card 4242 4242 4242 4242 (deposit {}, {}).",
        money(&deposit),
        paid.deposit_id,
        enum_name(pb::DepositState::try_from(paid.state).map(|s| s.as_str_name()))
            .trim_start_matches("DEPOSIT_STATE_")
    ));

    let offer = scan_until_offered(&mut orders, &user, here).await?;
    narrator.step(format!(
        "Scanned {} ({}) again; the offer holds until {}:",
        here.site.kiosk_id,
        offer.site_name,
        time(offer.expires_at.as_ref())
    ));
    for line in &offer.lines {
        narrator.detail(describe_offer_line(line, Some(&fleet.catalog)));
    }

    let line = choose(&offer, &fleet.catalog.film_classics.package_id)?;
    let item_type = line
        .item_type
        .clone()
        .context("the chosen offer line has no item type")?;
    let write_protect = matches!(
        pb::WriteProtectOption::try_from(line.write_protect),
        Ok(pb::WriteProtectOption::Choosable | pb::WriteProtectOption::AlwaysOn)
    );
    let duration = line
        .prices
        .first()
        .context("the chosen offer line lists no rental length")?;
    // What the kiosk holds before it lends: the facts of whichever item it will choose.
    let before: HashMap<String, (String, ItemInfo)> = here
        .bays()
        .snapshot()
        .into_iter()
        .filter_map(|bay| {
            bay.item
                .map(|item| (item.item_id.clone(), (bay.bay_id.clone(), item)))
        })
        .collect();
    let order = client::call(
        "rent",
        orders.create_rental(authed(
            pb::CreateRentalRequest {
                kiosk_id: here.site.kiosk_id.to_owned(),
                offer_id: offer.offer_id.clone(),
                choice: Some(pb::ItemChoice {
                    spec: Some(common::ItemSpec {
                        item_type: Some(item_type.clone()),
                        write_protect,
                    }),
                    duration_days: duration.duration_days,
                }),
                payment_method: Some(card()),
                idempotency_key: format!("demo-rental-{}", uuid::Uuid::new_v4()),
            },
            &user,
        )?),
    )
    .await?
    .order
    .context("rent: the answer carries no order")?;
    narrator.step(format!(
        "Rented a {} for {}{}: order {}, charged {}.",
        describe_type(&item_type, &line.content_title, Some(&fleet.catalog)),
        days(duration.duration_days),
        if write_protect {
            ", write-protected"
        } else {
            ""
        },
        order.order_id,
        order
            .price
            .as_ref()
            .map(money)
            .unwrap_or_else(|| "nothing".into())
    ));

    narrator.step("Following the order (WatchOrder):");
    let mut watch = OrderWatch::open(&mut orders, &user, &order.order_id).await?;
    let lent = watch.until(&narrator, pb::OrderState::Lent).await?;
    let (bay, item) = before.get(&lent.item_id).with_context(|| {
        format!(
            "the kiosk reports lending {:?}, which was not in it",
            lent.item_id
        )
    })?;
    narrator.detail(format!(
        "the kiosk chose {} from its bay {}; due back {}",
        lent.item_id,
        bay,
        time(lent.due_at.as_ref())
    ));
    if here
        .bays()
        .snapshot()
        .iter()
        .any(|b| b.item.as_ref().is_some_and(|i| i.item_id == lent.item_id))
    {
        bail!(
            "order LENT but {} is still in {}",
            lent.item_id,
            here.site.kiosk_id
        );
    }

    let empty_bay = there
        .bays()
        .snapshot()
        .into_iter()
        .find(|b| b.state == BayState::Empty)
        .with_context(|| format!("{} has no empty bay for the return", there.site.kiosk_id))?;
    there
        .bays()
        .insert(&empty_bay.bay_id, returned(item, lent.write_protected))
        .await
        .with_context(|| {
            format!(
                "cannot insert {} into {}",
                lent.item_id, there.site.kiosk_id
            )
        })?;
    narrator.step(format!(
        "Returned {} at another kiosk: into bay {} of {} ({}).",
        lent.item_id, empty_bay.bay_id, there.site.kiosk_id, there.site.site_name
    ));
    let closed = watch.until(&narrator, pb::OrderState::Closed).await?;
    if closed.returned_kiosk_id != there.site.kiosk_id {
        bail!(
            "the order says the item came back to {:?}, not {}",
            closed.returned_kiosk_id,
            there.site.kiosk_id
        );
    }
    narrator.detail(format!(
        "charged {} in total ({}); refunded {}",
        closed
            .amount_charged
            .as_ref()
            .map(money)
            .unwrap_or_else(|| "nothing".into()),
        closed
            .movements
            .iter()
            .map(describe_movement)
            .collect::<Vec<_>>()
            .join(", "),
        closed
            .amount_refunded
            .as_ref()
            .map(money)
            .unwrap_or_else(|| "nothing".into()),
    ));

    let audit = crate::audit::audit(channel, &operator).await?;
    narrator.step("Audited the money as the operator (FleetService.Audit):");
    for line in crate::audit::report(&audit) {
        narrator.detail(line);
    }
    crate::audit::verdict(&audit)
}

fn card() -> pb::PaymentMethod {
    pb::PaymentMethod {
        method: Some(pb::payment_method::Method::CardToken(TEST_CARD.to_owned())),
    }
}

/// Waits until every simulated kiosk is online in the fleet view with an inventory.
async fn wait_until_online(
    channel: &Channel,
    operator: &str,
    fleet: &Fleet,
) -> anyhow::Result<Vec<pb::Kiosk>> {
    let wanted: Vec<&str> = fleet.kiosks.iter().map(|k| k.site.kiosk_id).collect();
    let mut client = FleetServiceClient::new(channel.clone());
    let deadline = Instant::now() + ONLINE_WAIT;
    loop {
        let listed = client::call(
            "list kiosks",
            client.list_kiosks(authed(
                pb::ListKiosksRequest {
                    page_size: 500,
                    ..Default::default()
                },
                operator,
            )?),
        )
        .await?;
        let ready: Vec<pb::Kiosk> = listed
            .kiosks
            .into_iter()
            .filter(|k| {
                k.online
                    && k.inventory.is_some()
                    && k.profile
                        .as_ref()
                        .is_some_and(|p| wanted.contains(&p.kiosk_id.as_str()))
            })
            .collect();
        if ready.len() == wanted.len() {
            return Ok(ready);
        }
        if Instant::now() >= deadline {
            bail!(
                "only {} of the {} simulated kiosks came online with an inventory within {}",
                ready.len(),
                wanted.len(),
                humantime::format_duration(ONLINE_WAIT)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Scans before paying the deposit: the refusal, and the deposit it asks for.
async fn first_scan(
    narrator: &mut Narrator,
    orders: &mut OrderServiceClient<Channel>,
    user: &str,
    kiosk: &SimulatedKiosk,
) -> anyhow::Result<common::Money> {
    let status = match scan(orders, user, kiosk).await? {
        Ok(_) => bail!("a fresh account was offered items without a deposit"),
        Err(status) => status,
    };
    let violations = client::precondition_violations(&status);
    if status.code() != tonic::Code::FailedPrecondition
        || !violations.iter().any(|v| v.r#type == "NO_DEPOSIT")
    {
        bail!(
            "scan without a deposit: expected NO_DEPOSIT, got {}",
            client::describe(&status)
        );
    }
    narrator.step(format!(
        "Scanned the QR code of {} ({}): refused.",
        kiosk.site.kiosk_id, kiosk.site.site_name
    ));
    for violation in &violations {
        narrator.detail(format!("{}: {}", violation.r#type, violation.description));
    }
    let info = status
        .get_details_error_info()
        .context("the NO_DEPOSIT refusal carries no ErrorInfo stating the deposit")?;
    let minor_units = info
        .metadata
        .get("deposit_minor_units")
        .and_then(|m| m.parse::<i64>().ok())
        .context("the NO_DEPOSIT ErrorInfo has no numeric deposit_minor_units")?;
    let currency = info
        .metadata
        .get("deposit_currency")
        .cloned()
        .context("the NO_DEPOSIT ErrorInfo has no deposit_currency")?;
    let deposit = common::Money {
        minor_units,
        currency,
    };
    narrator.detail(format!("the deposit asked: {}", money(&deposit)));
    Ok(deposit)
}

/// Scans, retrying while the kiosk is not yet known to be online or to hold anything.
async fn scan_until_offered(
    orders: &mut OrderServiceClient<Channel>,
    user: &str,
    kiosk: &SimulatedKiosk,
) -> anyhow::Result<pb::Offer> {
    let deadline = Instant::now() + SCAN_WAIT;
    loop {
        let status = match scan(orders, user, kiosk).await? {
            Ok(offer) => return Ok(offer),
            Err(status) => status,
        };
        let waiting = status.code() == tonic::Code::FailedPrecondition
            && client::precondition_violations(&status)
                .iter()
                .all(|v| v.r#type == "KIOSK_OFFLINE" || v.r#type == "NOTHING_AVAILABLE");
        if !waiting || Instant::now() >= deadline {
            bail!("scan after the deposit: {}", client::describe(&status));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One ScanKiosk with the code the kiosk's screen shows now.
async fn scan(
    orders: &mut OrderServiceClient<Channel>,
    user: &str,
    kiosk: &SimulatedKiosk,
) -> anyhow::Result<Result<pb::Offer, tonic::Status>> {
    let request = authed(
        pb::ScanKioskRequest {
            qr_payload: kiosk.qr_payload(chrono::Utc::now()),
        },
        user,
    )?;
    let answer = client::within(client::CALL_TIMEOUT, "scan", async {
        Ok(orders.scan_kiosk(request).await)
    })
    .await?;
    Ok(match answer {
        Ok(response) => response
            .into_inner()
            .offer
            .ok_or_else(|| tonic::Status::internal("the scan answer carries no offer")),
        Err(status) => Err(status),
    })
}

/// The line the demo rents from: a drive of film classics when there is one, else a drive
/// with content, else anything available.
/// The line the demo rents: a drive of `preferred_package` if available, else any content
/// drive, else anything available.
fn choose<'a>(offer: &'a pb::Offer, preferred_package: &str) -> anyhow::Result<&'a pb::OfferLine> {
    let available = || {
        offer
            .lines
            .iter()
            .filter(|l| l.available > 0 && !l.prices.is_empty())
    };
    let holds = |line: &pb::OfferLine, package: Option<&str>| {
        line.item_type.as_ref().is_some_and(|t| {
            t.kind == common::ItemKind::Drive as i32
                && match package {
                    Some(package) => t.content_package_id == package,
                    None => !t.content_package_id.is_empty(),
                }
        })
    };
    available()
        .find(|l| holds(l, Some(preferred_package)))
        .or_else(|| available().find(|l| holds(l, None)))
        .or_else(|| available().next())
        .context("the offer has nothing available to rent")
}

/// The returned item as the other kiosk's bay identifies it.
fn returned(item: &ItemInfo, write_protected: bool) -> SimItemConfig {
    match &item.facts {
        ItemFacts::Drive {
            capacity_bytes,
            content_package_id,
            write_protected: was_protected,
            remote_link,
        } => SimItemConfig {
            kind: SimItemKind::Drive,
            item_id: item.item_id.clone(),
            capacity_bytes: Some(*capacity_bytes),
            content_package_id: content_package_id.clone(),
            write_protected: write_protected || *was_protected,
            charge_percent: None,
            remote_link: *remote_link,
        },
        ItemFacts::PowerBank { charge_percent } => SimItemConfig {
            kind: SimItemKind::PowerBank,
            item_id: item.item_id.clone(),
            capacity_bytes: None,
            content_package_id: None,
            write_protected: false,
            charge_percent: Some(*charge_percent),
            remote_link: false,
        },
    }
}

/// One WatchOrder stream, read until the order reaches a wanted state.
struct OrderWatch {
    stream: tonic::Streaming<pb::WatchOrderResponse>,
    orders: OrderServiceClient<Channel>,
    user: String,
    order_id: String,
    last: Option<i32>,
}

impl OrderWatch {
    async fn open(
        orders: &mut OrderServiceClient<Channel>,
        user: &str,
        order_id: &str,
    ) -> anyhow::Result<Self> {
        let stream = client::call(
            "watch the order",
            orders.watch_order(authed(
                pb::WatchOrderRequest {
                    order_id: order_id.to_owned(),
                },
                user,
            )?),
        )
        .await?;
        Ok(Self {
            stream,
            orders: orders.clone(),
            user: user.to_owned(),
            order_id: order_id.to_owned(),
            last: None,
        })
    }

    /// Prints every change until the order is in `wanted`; an error when the stream ends
    /// first, the order ends elsewhere, or [`ORDER_WAIT`] passes (saying where GetOrder sees
    /// the order then).
    async fn until(
        &mut self,
        narrator: &Narrator,
        wanted: pb::OrderState,
    ) -> anyhow::Result<pb::Order> {
        let what = format!(
            "order {} to be {}",
            self.order_id,
            state_name(wanted as i32)
        );
        match tokio::time::timeout(ORDER_WAIT, self.follow(narrator, wanted, &what)).await {
            Ok(outcome) => outcome,
            Err(_) => {
                let now = match self.current().await {
                    Ok(order) => format!(
                        "GetOrder says it is {}: {:?}",
                        state_name(order.state),
                        order.state_reason
                    ),
                    Err(error) => format!("GetOrder failed too: {error:#}"),
                };
                bail!(
                    "waited {} for {what}; {now}",
                    humantime::format_duration(ORDER_WAIT)
                )
            }
        }
    }

    async fn follow(
        &mut self,
        narrator: &Narrator,
        wanted: pb::OrderState,
        what: &str,
    ) -> anyhow::Result<pb::Order> {
        loop {
            let change = self
                .stream
                .message()
                .await
                .map_err(|s| anyhow!("watch the order: {}", client::describe(&s)))?
                .with_context(|| format!("the watch ended before {what}"))?;
            let order = change.order.context("a watch message carries no order")?;
            if self.last != Some(change.state) {
                self.last = Some(change.state);
                narrator.detail(format!(
                    "{:<11} {}",
                    state_name(change.state),
                    if change.reason.is_empty() {
                        order.state_reason.as_str()
                    } else {
                        change.reason.as_str()
                    }
                ));
            }
            if change.state == wanted as i32 {
                return Ok(order);
            }
            if matches!(
                pb::OrderState::try_from(change.state),
                Ok(pb::OrderState::Failed
                    | pb::OrderState::Refunded
                    | pb::OrderState::Cancelled
                    | pb::OrderState::Expired
                    | pb::OrderState::Closed)
            ) {
                bail!(
                    "the order ended {} instead: {}",
                    state_name(change.state),
                    order.state_reason
                );
            }
        }
    }

    /// The order as GetOrder answers it now.
    async fn current(&mut self) -> anyhow::Result<pb::Order> {
        client::call(
            "get the order",
            self.orders.get_order(authed(
                pb::GetOrderRequest {
                    order_id: self.order_id.clone(),
                },
                &self.user,
            )?),
        )
        .await?
        .order
        .context("get the order: the answer carries no order")
    }
}

fn enum_name<E>(name: Result<&'static str, E>) -> &'static str {
    name.unwrap_or("UNKNOWN")
}

fn state_name(state: i32) -> &'static str {
    enum_name(pb::OrderState::try_from(state).map(|s| s.as_str_name()))
        .trim_start_matches("ORDER_STATE_")
}

/// `12.50 EUR`, in the currency's own minor-unit exponent.
fn money(amount: &common::Money) -> String {
    use sneakernet_orders::domain::money::{Currency, Money};
    match Currency::parse(&amount.currency) {
        Ok(currency) => Money::new(amount.minor_units, currency).to_string(),
        Err(_) => format!(
            "{} minor units of {:?}",
            amount.minor_units, amount.currency
        ),
    }
}

fn days(n: u32) -> String {
    if n == 1 {
        "1 day".into()
    } else {
        format!("{n} days")
    }
}

fn time(at: Option<&prost_types::Timestamp>) -> String {
    at.and_then(sneakernet_runtime::wire::from_timestamp)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "(unknown)".into())
}

/// `1 TB drive, Film classics`, `2 TB blank drive`, `power bank`.
fn describe_type(
    item_type: &common::ItemType,
    content_title: &str,
    catalog: Option<&DemoCatalog>,
) -> String {
    if item_type.kind != common::ItemKind::Drive as i32 {
        return "power bank".into();
    }
    let capacity = if item_type.capacity_bytes.is_multiple_of(simulated_fleet::TB) {
        format!("{} TB", item_type.capacity_bytes / simulated_fleet::TB)
    } else {
        format!("{} GB", item_type.capacity_bytes / 1_000_000_000)
    };
    if item_type.content_package_id.is_empty() {
        return format!("{capacity} blank drive");
    }
    let title = if content_title.is_empty() {
        catalog
            .and_then(|c| c.title(&item_type.content_package_id))
            .unwrap_or(&item_type.content_package_id)
    } else {
        content_title
    };
    format!("{capacity} drive, {title}")
}

fn describe_offer_line(line: &pb::OfferLine, catalog: Option<&DemoCatalog>) -> String {
    let kind = line
        .item_type
        .as_ref()
        .map(|t| describe_type(t, &line.content_title, catalog))
        .unwrap_or_else(|| "(no type)".into());
    let protection = match pb::WriteProtectOption::try_from(line.write_protect) {
        Ok(pb::WriteProtectOption::Choosable) => ", write protection on or off",
        Ok(pb::WriteProtectOption::AlwaysOn) => ", always write-protected",
        _ => "",
    };
    let price = |p: &pb::DurationPrice| {
        format!(
            "{} {}",
            days(p.duration_days),
            p.price.as_ref().map(money).unwrap_or_default()
        )
    };
    let prices = match line.prices.as_slice() {
        [] => "no price".to_owned(),
        [first, second, .., last] if line.prices.len() > 3 => {
            format!("{}, {} ... {}", price(first), price(second), price(last))
        }
        all => all.iter().map(price).collect::<Vec<_>>().join(", "),
    };
    format!("{kind}: {} available{protection}; {prices}", line.available)
}

fn describe_kiosk(kiosk: &pb::Kiosk) -> String {
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
    format!("{id:<15} {site:<22} {ready} items ready, {empty} empty bays")
}

fn describe_movement(movement: &pb::MoneyMovement) -> String {
    let kind = enum_name(pb::MoneyMovementKind::try_from(movement.kind).map(|k| k.as_str_name()))
        .trim_start_matches("MONEY_MOVEMENT_KIND_")
        .to_lowercase()
        .replace('_', " ");
    format!(
        "{kind} {}",
        movement.amount.as_ref().map(money).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo_content::test_catalog;

    const FILM: &str = "p-film";
    const NATURE: &str = "p-nature";

    fn eur(minor_units: i64) -> common::Money {
        common::Money {
            minor_units,
            currency: "EUR".into(),
        }
    }

    #[test]
    fn types_and_offer_lines_read_like_a_shop() {
        let film = common::ItemType {
            kind: common::ItemKind::Drive.into(),
            capacity_bytes: simulated_fleet::TB,
            content_package_id: FILM.into(),
        };
        assert_eq!(
            describe_type(&film, "", Some(&test_catalog())),
            "1 TB drive, Film classics"
        );
        assert_eq!(
            describe_type(
                &common::ItemType {
                    kind: common::ItemKind::Drive.into(),
                    capacity_bytes: 2 * simulated_fleet::TB,
                    content_package_id: String::new(),
                },
                "",
                None
            ),
            "2 TB blank drive"
        );
        let line = pb::OfferLine {
            item_type: Some(film),
            content_title: String::new(),
            available: 2,
            write_protect: pb::WriteProtectOption::Choosable.into(),
            prices: (1..=14)
                .map(|d| pb::DurationPrice {
                    duration_days: d,
                    price: Some(eur(400 + 150 * i64::from(d - 1))),
                })
                .collect(),
            pricing: None,
        };
        assert_eq!(
            describe_offer_line(&line, Some(&test_catalog())),
            "1 TB drive, Film classics: 2 available, write protection on or off; 1 day 4.00 EUR, 2 days 5.50 EUR ... 14 days 23.50 EUR"
        );
        assert_eq!(money(&eur(5000)), "50.00 EUR");
    }

    #[test]
    fn the_demo_rents_film_classics_when_offered() {
        let line = |package: &str, available: u32| pb::OfferLine {
            item_type: Some(common::ItemType {
                kind: common::ItemKind::Drive.into(),
                capacity_bytes: simulated_fleet::TB,
                content_package_id: package.into(),
            }),
            available,
            prices: vec![pb::DurationPrice {
                duration_days: 1,
                price: Some(eur(400)),
            }],
            ..Default::default()
        };
        let mut offer = pb::Offer {
            lines: vec![line("", 3), line(NATURE, 1), line(FILM, 2)],
            ..Default::default()
        };
        assert_eq!(
            choose(&offer, FILM)
                .unwrap()
                .item_type
                .as_ref()
                .unwrap()
                .content_package_id,
            FILM
        );
        offer.lines[2].available = 0;
        assert_eq!(
            choose(&offer, FILM)
                .unwrap()
                .item_type
                .as_ref()
                .unwrap()
                .content_package_id,
            NATURE
        );
        offer.lines.clear();
        assert!(choose(&offer, FILM).is_err());
    }
}
