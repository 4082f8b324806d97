//! Walk-up rentals as a phone and an operator make them, through gRPC only: register a kiosk
//! with its QR secret and run a real kiosk agent with simulated bays behind it, set prices, pay
//! a deposit, scan the kiosk's QR code, rent, and follow the order.

use std::net::SocketAddr;
use std::time::Duration;

use sneakernet_kiosk_agent::AgentHandle;
use sneakernet_kiosk_agent::config::{
    AgentConfig, SimBayConfig, SimFaults, SimItemConfig, SimItemKind,
};
use sneakernet_proto::auth::v1 as auth;
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_proto::orders::v1::fleet_service_client::FleetServiceClient;
use sneakernet_proto::orders::v1::order_service_client::OrderServiceClient;
use sneakernet_runtime::KioskId;
use tonic::transport::Channel;
use tonic::{Status, Streaming};
use tonic_types::StatusExt;

use crate::{
    Backend, PASSWORD, Sandbox, authed, connect, eventually, fast_links, issue_kiosk_secret,
};

/// A sandbox for rentals: fast kiosk links, room for many registrations from one address, a
/// quick settling worker, and the test pricing as the network-wide rule for each of `kinds`.
/// Returns it with a channel and an operator's token.
pub async fn start_priced(
    backend: &Backend,
    kinds: &[common::ItemKind],
) -> (Sandbox, Channel, String) {
    start_priced_with(backend, kinds, |_| {}).await
}

/// [`start_priced`], with the configuration changed by `adjust` after the rentals settings.
pub async fn start_priced_with(
    backend: &Backend,
    kinds: &[common::ItemKind],
    adjust: impl FnOnce(&mut sneakernet_runtime::Config),
) -> (Sandbox, Channel, String) {
    let sandbox = Sandbox::start_with(backend, |config| {
        fast_links(config);
        config.rate_limit.register_per_address = 1000;
        config.orders.sweep_interval = Duration::from_millis(200);
        adjust(config);
    })
    .await;
    let channel = sandbox.channel().await;
    let operator = sandbox.operator().await.access_token;
    for &kind in kinds {
        let rule = set_default_pricing(&channel, &operator, kind)
            .await
            .unwrap_or_else(|s| panic!("{backend}: set pricing for {kind:?}: {s:?}"));
        assert!(rule.site_id.is_empty(), "{backend}: {rule:?}");
        assert_eq!(rule.pricing, Some(pricing()), "{backend}");
    }
    (sandbox, channel, operator)
}

/// Sandbox test card: approves.
pub const CARD_OK: &str = "4242424242424242";
/// Sandbox test card: declines.
pub const CARD_DECLINED: &str = "4000000000000002";
/// Sandbox test card: charges, then answers as if the provider timed out.
pub const CARD_CHARGES_THEN_TIMES_OUT: &str = "4000000000000119";

/// The deposit orders asks by default (`[orders] deposit_minor_units`, `deposit_currency`).
pub const DEPOSIT_MINOR_UNITS: i64 = 5000;
/// Currency of every amount in these tests.
pub const CURRENCY: &str = "EUR";
/// Base price of the test pricing (covers the first day).
pub const BASE_PRICE: i64 = 500;
/// Price of each extra day in the test pricing.
pub const PRICE_PER_EXTRA_DAY: i64 = 200;
/// Longest rental the test pricing allows.
pub const MAX_DURATION_DAYS: u32 = 7;

/// Capacity of every simulated drive here (1 TB).
pub const CAPACITY: u64 = 1_000_000_000_000;
/// The content package on every simulated drive here (a content package id is a UUID).
pub const PACKAGE: &str = "6f1c2a3e-8b4d-4c5e-9f60-7a8b9c0d1e2f";

/// How long a test waits for the system to act (an event to arrive, a lend to finish).
pub const WAIT: Duration = Duration::from_secs(60);

/// `minor` units of [`CURRENCY`].
pub fn eur(minor: i64) -> common::Money {
    common::Money {
        minor_units: minor,
        currency: CURRENCY.into(),
    }
}

/// What a rental of `days` days costs under [`pricing`].
pub fn price_for(days: u32) -> common::Money {
    eur(BASE_PRICE + PRICE_PER_EXTRA_DAY * i64::from(days - 1))
}

/// The price terms every test sets as the network default.
pub fn pricing() -> pb::Pricing {
    pb::Pricing {
        base_price: Some(eur(BASE_PRICE)),
        price_per_extra_day: Some(eur(PRICE_PER_EXTRA_DAY)),
        max_duration_days: MAX_DURATION_DAYS,
        grace_period: Some(prost_types::Duration {
            seconds: 3600,
            nanos: 0,
        }),
        late_fee_per_day: Some(eur(300)),
        late_fee_cap: Some(eur(1500)),
        lost_item_fee: Some(eur(8000)),
        lost_after_days: 14,
        pickup_window: Some(prost_types::Duration {
            seconds: 24 * 3600,
            nanos: 0,
        }),
    }
}

/// The type of every simulated drive here.
pub fn drive_type() -> common::ItemType {
    common::ItemType {
        kind: common::ItemKind::Drive.into(),
        capacity_bytes: CAPACITY,
        content_package_id: PACKAGE.into(),
    }
}

/// The power bank type.
pub fn power_bank_type() -> common::ItemType {
    common::ItemType {
        kind: common::ItemKind::PowerBank.into(),
        capacity_bytes: 0,
        content_package_id: String::new(),
    }
}

/// A drive of [`drive_type`] with id `item_id`.
pub fn drive(item_id: &str) -> SimItemConfig {
    drive_of(item_id, CAPACITY, Some(PACKAGE))
}

/// A writable drive with id `item_id` of `capacity_bytes`, holding `package` (`None`: blank).
pub fn drive_of(item_id: &str, capacity_bytes: u64, package: Option<&str>) -> SimItemConfig {
    SimItemConfig {
        kind: SimItemKind::Drive,
        item_id: item_id.into(),
        capacity_bytes: Some(capacity_bytes),
        content_package_id: package.map(str::to_owned),
        write_protected: false,
        charge_percent: None,
        remote_link: false,
    }
}

/// A fully charged power bank with id `item_id`.
pub fn power_bank(item_id: &str) -> SimItemConfig {
    SimItemConfig {
        kind: SimItemKind::PowerBank,
        item_id: item_id.into(),
        capacity_bytes: None,
        content_package_id: None,
        write_protected: false,
        charge_percent: Some(100),
        remote_link: false,
    }
}

/// Bays `A1..` holding `items` in order (`None`: an empty bay).
pub fn bays(items: Vec<Option<SimItemConfig>>) -> Vec<SimBayConfig> {
    items
        .into_iter()
        .enumerate()
        .map(|(n, item)| SimBayConfig {
            id: format!("A{}", n + 1),
            item,
        })
        .collect()
}

/// 32 random bytes: a kiosk's QR secret.
pub fn new_qr_secret() -> Vec<u8> {
    let mut secret = uuid::Uuid::new_v4().as_bytes().to_vec();
    secret.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    secret
}

/// The QR payload kiosk `kiosk_id` shows now.
pub fn qr_payload(kiosk_id: &str, secret: &[u8]) -> String {
    qr_payload_at(kiosk_id, secret, chrono::Utc::now())
}

/// The QR payload kiosk `kiosk_id` showed (or will show) at `at`.
pub fn qr_payload_at(kiosk_id: &str, secret: &[u8], at: chrono::DateTime<chrono::Utc>) -> String {
    let id = KioskId::parse(kiosk_id).expect("a valid kiosk id");
    sneakernet_runtime::qr::payload(&id, secret, at)
}

/// An OrderService client.
pub fn orders(channel: &Channel) -> OrderServiceClient<Channel> {
    OrderServiceClient::new(channel.clone())
}

/// A FleetService client.
pub fn fleet(channel: &Channel) -> FleetServiceClient<Channel> {
    FleetServiceClient::new(channel.clone())
}

/// Logs in an operator created through the bootstrap path (works against a child process
/// too: the operator is written straight into the auth database of `config`).
pub async fn operator_token(
    channel: &Channel,
    config: &sneakernet_runtime::config::Config,
) -> String {
    crate::operator_session(channel, config).await.access_token
}

/// Where test kiosks stand unless a test says otherwise (Berlin Hauptbahnhof).
pub const STATION: common::Location = common::Location {
    latitude: 52.5251,
    longitude: 13.3694,
};

/// FleetService.RegisterKiosk: kiosk `kiosk_id` at a test site at [`STATION`] with
/// `qr_secret`.
pub async fn register_kiosk(
    channel: &Channel,
    operator: &str,
    kiosk_id: &str,
    qr_secret: &[u8],
) -> Result<pb::Kiosk, Status> {
    register_kiosk_at(channel, operator, kiosk_id, qr_secret, STATION).await
}

/// FleetService.RegisterKiosk: kiosk `kiosk_id` at its own test site at `location`.
pub async fn register_kiosk_at(
    channel: &Channel,
    operator: &str,
    kiosk_id: &str,
    qr_secret: &[u8],
    location: common::Location,
) -> Result<pb::Kiosk, Status> {
    fleet(channel)
        .register_kiosk(authed(
            pb::RegisterKioskRequest {
                kiosk_id: kiosk_id.into(),
                site_id: format!("site-{kiosk_id}"),
                site_name: format!("Central Station, kiosk {kiosk_id}"),
                location: Some(location),
                qr_secret: qr_secret.to_vec(),
                out_of_service: false,
            },
            operator,
        ))
        .await
        .map(|r| r.into_inner().kiosk.expect("kiosk"))
}

/// FleetService.SetPricing: [`pricing`] as the network-wide default for `kind`.
pub async fn set_default_pricing(
    channel: &Channel,
    operator: &str,
    kind: common::ItemKind,
) -> Result<pb::PricingRule, Status> {
    fleet(channel)
        .set_pricing(authed(
            pb::SetPricingRequest {
                site_id: String::new(),
                item_type: Some(common::ItemType {
                    kind: kind.into(),
                    capacity_bytes: 0,
                    content_package_id: String::new(),
                }),
                pricing: Some(pricing()),
            },
            operator,
        ))
        .await
        .map(|r| r.into_inner().rule.expect("rule"))
}

/// FleetService.Audit.
pub async fn audit(channel: &Channel, operator: &str) -> Result<pb::AuditResponse, Status> {
    fleet(channel)
        .audit(authed(pb::AuditRequest {}, operator))
        .await
        .map(|r| r.into_inner())
}

/// Asserts the audit finds nothing wrong; returns it.
pub async fn assert_audit_clean(
    channel: &Channel,
    operator: &str,
    context: &str,
) -> pb::AuditResponse {
    let audit = audit(channel, operator)
        .await
        .unwrap_or_else(|s| panic!("{context}: audit: {s:?}"));
    assert!(
        audit.ledger_balanced,
        "{context}: ledger unbalanced: {audit:?}"
    );
    assert!(
        audit.violations.is_empty(),
        "{context}: audit violations: {:?}",
        audit.violations
    );
    audit
}

/// A kiosk registered with FleetService (with its QR secret) and the real kiosk agent driving
/// simulated bays behind it, in this process.
pub struct SimKiosk {
    /// The kiosk's id.
    pub id: String,
    /// The key of its rotating QR code.
    pub qr_secret: Vec<u8>,
    /// The agent's configuration (its `data_dir` holds the simulated bays).
    pub config: AgentConfig,
    agent: Option<AgentHandle>,
    _dir: tempfile::TempDir,
}

impl SimKiosk {
    /// [`SimKiosk::start`] with these items in bays A1, A2, ... and no faults.
    pub async fn healthy(
        address: SocketAddr,
        operator: &str,
        id: &str,
        items: Vec<Option<SimItemConfig>>,
    ) -> Self {
        Self::start(address, operator, id, bays(items), SimFaults::default()).await
    }

    /// Registers kiosk `id` at [`STATION`] (a fresh 32-byte QR secret), issues its
    /// credential, and starts an agent at `address` with `bays` and `faults`. Does not wait
    /// for it to be online.
    pub async fn start(
        address: SocketAddr,
        operator: &str,
        id: &str,
        bays: Vec<SimBayConfig>,
        faults: SimFaults,
    ) -> Self {
        Self::start_with(address, operator, id, STATION, bays, faults, |_| {}).await
    }

    /// [`SimKiosk::start`] with the kiosk registered at `location`.
    pub async fn start_at(
        address: SocketAddr,
        operator: &str,
        id: &str,
        location: common::Location,
        bays: Vec<SimBayConfig>,
        faults: SimFaults,
    ) -> Self {
        Self::start_with(address, operator, id, location, bays, faults, |_| {}).await
    }

    /// [`SimKiosk::start_at`], with the agent's configuration changed by `adjust` first (where
    /// it fetches content, for instance).
    pub async fn start_with(
        address: SocketAddr,
        operator: &str,
        id: &str,
        location: common::Location,
        bays: Vec<SimBayConfig>,
        faults: SimFaults,
        adjust: impl FnOnce(&mut AgentConfig),
    ) -> Self {
        let channel = connect(address).await;
        let qr_secret = new_qr_secret();
        register_kiosk_at(&channel, operator, id, &qr_secret, location)
            .await
            .unwrap_or_else(|s| panic!("register kiosk {id}: {s:?}"));
        let secret = issue_kiosk_secret(channel, operator, id).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config =
            crate::kiosk::simulated_agent_config(dir.path(), id, &secret, address, bays, faults);
        adjust(&mut config);
        let agent = sneakernet_kiosk_agent::start(config.clone())
            .await
            .unwrap_or_else(|e| panic!("agent {id}: {e:#}"));
        Self {
            id: id.into(),
            qr_secret,
            config,
            agent: Some(agent),
            _dir: dir,
        }
    }

    /// The QR payload its screen shows now.
    pub fn qr(&self) -> String {
        qr_payload(&self.id, &self.qr_secret)
    }

    /// The running agent.
    pub fn agent(&self) -> &AgentHandle {
        self.agent.as_ref().expect("agent running")
    }

    /// How many times `item_id` left this kiosk.
    pub fn eject_count(&self, item_id: &str) -> u32 {
        self.agent().bays().eject_count(item_id)
    }

    /// A user puts `item` into the empty bay `bay_id`.
    pub async fn insert(&self, bay_id: &str, item: SimItemConfig) {
        self.agent()
            .bays()
            .insert(bay_id, item)
            .await
            .unwrap_or_else(|e| panic!("insert into {} {bay_id}: {e}", self.id));
    }

    /// Starts the agent again after [`SimKiosk::stop`], with the same bays and journal (the
    /// kiosk comes back online).
    pub async fn restart(&mut self) {
        assert!(self.agent.is_none(), "{}: agent still running", self.id);
        let agent = sneakernet_kiosk_agent::start(self.config.clone())
            .await
            .unwrap_or_else(|e| panic!("agent {}: {e:#}", self.id));
        self.agent = Some(agent);
    }

    /// Stops the agent (the kiosk goes offline).
    pub async fn stop(&mut self) {
        if let Some(agent) = self.agent.take() {
            agent.stop().await;
        }
    }
}

/// A user account with an access token.
#[derive(Clone, Debug)]
pub struct Customer {
    /// The account's id.
    pub user_id: String,
    /// Its access token.
    pub token: String,
    /// Its email, to log in again (every password here is [`PASSWORD`]).
    pub email: String,
}

impl Customer {
    /// Logs in again for a fresh access token: after the sandbox's clock moved past the old
    /// one's expiry (tokens are judged by the clock that issued them).
    pub async fn log_in_again(&mut self, channel: &Channel) {
        let session = sneakernet_proto::auth::v1::auth_service_client::AuthServiceClient::new(
            channel.clone(),
        )
        .login(auth::LoginRequest {
            email: self.email.clone(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap_or_else(|s| panic!("log in {}: {s:?}", self.email))
        .into_inner()
        .session
        .expect("session");
        self.token = session.access_token;
    }
}

/// Registers a fresh user.
pub async fn register_user(channel: &Channel) -> Customer {
    let email = format!("user-{}@example.com", uuid::Uuid::new_v4().simple());
    let session =
        sneakernet_proto::auth::v1::auth_service_client::AuthServiceClient::new(channel.clone())
            .register(auth::RegisterRequest {
                email: email.clone(),
                password: PASSWORD.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("register {email}: {s:?}"))
            .into_inner()
            .session
            .expect("session");
    Customer {
        user_id: session.user_id,
        token: session.access_token,
        email,
    }
}

/// OrderService.PayDeposit of `amount` with `card`.
pub async fn pay_deposit(
    channel: &Channel,
    token: &str,
    amount: common::Money,
    card: &str,
    idempotency_key: &str,
) -> Result<pb::Deposit, Status> {
    orders(channel)
        .pay_deposit(authed(
            pb::PayDepositRequest {
                amount: Some(amount),
                payment_method: Some(card_method(card)),
                idempotency_key: idempotency_key.into(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().deposit.expect("deposit"))
}

/// Registers a fresh user and pays the default deposit with [`CARD_OK`].
pub async fn customer_with_deposit(channel: &Channel) -> Customer {
    let customer = register_user(channel).await;
    let deposit = pay_deposit(
        channel,
        &customer.token,
        eur(DEPOSIT_MINOR_UNITS),
        CARD_OK,
        &format!("deposit-{}", customer.user_id),
    )
    .await
    .unwrap_or_else(|s| panic!("pay deposit: {s:?}"));
    assert_eq!(deposit.state, pb::DepositState::Held as i32, "{deposit:?}");
    customer
}

/// A card payment method.
pub fn card_method(card: &str) -> pb::PaymentMethod {
    pb::PaymentMethod {
        method: Some(pb::payment_method::Method::CardToken(card.into())),
    }
}

/// OrderService.ScanKiosk with `payload`.
pub async fn scan(channel: &Channel, token: &str, payload: &str) -> Result<pb::Offer, Status> {
    orders(channel)
        .scan_kiosk(authed(
            pb::ScanKioskRequest {
                qr_payload: payload.into(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().offer.expect("offer"))
}

/// The offer's line for `item_type`, if any.
pub fn line<'a>(offer: &'a pb::Offer, item_type: &common::ItemType) -> Option<&'a pb::OfferLine> {
    offer
        .lines
        .iter()
        .find(|l| l.item_type.as_ref() == Some(item_type))
}

/// Scans `kiosk` until its offer shows `available` units of `item_type` (the kiosk's
/// inventory reaches orders through the gateway's events); returns that offer.
pub async fn scan_until_available(
    channel: &Channel,
    token: &str,
    kiosk: &SimKiosk,
    item_type: &common::ItemType,
    available: u32,
) -> pb::Offer {
    let mut last = None;
    let found = tokio::time::timeout(WAIT, async {
        loop {
            match scan(channel, token, &kiosk.qr()).await {
                Ok(offer) if line(&offer, item_type).is_some_and(|l| l.available == available) => {
                    return offer;
                }
                other => last = Some(other),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| {
        panic!(
            "{}: no offer of {available} {item_type:?} within {WAIT:?}; last scan: {last:?}",
            kiosk.id
        )
    })
}

/// The write protection to ask for on `line`: on where it may be chosen or is required.
pub fn write_protect_for(line: &pb::OfferLine) -> bool {
    line.write_protect == pb::WriteProtectOption::Choosable as i32
        || line.write_protect == pb::WriteProtectOption::AlwaysOn as i32
}

/// A CreateRental request for `item_type` from `offer`, `days` long.
pub fn rental_request(
    offer: &pb::Offer,
    item_type: &common::ItemType,
    days: u32,
    card: Option<&str>,
    idempotency_key: &str,
) -> pb::CreateRentalRequest {
    let write_protect = line(offer, item_type).is_some_and(write_protect_for);
    pb::CreateRentalRequest {
        kiosk_id: offer.kiosk_id.clone(),
        offer_id: offer.offer_id.clone(),
        choice: Some(pb::ItemChoice {
            spec: Some(common::ItemSpec {
                item_type: Some(item_type.clone()),
                write_protect,
            }),
            duration_days: days,
        }),
        payment_method: card.map(card_method),
        idempotency_key: idempotency_key.into(),
    }
}

/// OrderService.CreateRental.
pub async fn create_rental(
    channel: &Channel,
    token: &str,
    request: pb::CreateRentalRequest,
) -> Result<pb::Order, Status> {
    orders(channel)
        .create_rental(authed(request, token))
        .await
        .map(|r| r.into_inner().order.expect("order"))
}

/// OrderService.GetOrder.
pub async fn get_order(
    channel: &Channel,
    token: &str,
    order_id: &str,
) -> Result<pb::Order, Status> {
    orders(channel)
        .get_order(authed(
            pb::GetOrderRequest {
                order_id: order_id.into(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().order.expect("order"))
}

/// Every order of the caller (all pages), newest first.
pub async fn list_orders(channel: &Channel, token: &str) -> Result<Vec<pb::Order>, Status> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = orders(channel)
            .list_orders(authed(
                pb::ListOrdersRequest {
                    page_size: 100,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
                token,
            ))
            .await?
            .into_inner();
        all.extend(page.orders);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        page_token = page.next_page_token;
    }
}

/// Polls GetOrder until the order is in one of `states`; returns it.
pub async fn wait_for_state(
    channel: &Channel,
    token: &str,
    order_id: &str,
    states: &[pb::OrderState],
) -> pb::Order {
    let wanted: Vec<i32> = states.iter().map(|s| *s as i32).collect();
    // The order as read when it was first seen in a wanted state: reading it once more after
    // could meet a fault the test injects (a terminated database connection) and fail a test
    // whose order is fine.
    let seen = std::sync::Mutex::new(None);
    eventually(
        WAIT,
        &format!("order {order_id} to reach {states:?}"),
        || async {
            match get_order(channel, token, order_id).await {
                Ok(order) if wanted.contains(&order.state) => {
                    *seen.lock().expect("not poisoned") = Some(order);
                    true
                }
                _ => false,
            }
        },
    )
    .await;
    seen.into_inner()
        .expect("not poisoned")
        .expect("seen in a wanted state")
}

/// Opens OrderService.WatchOrder.
pub async fn watch(
    channel: &Channel,
    token: &str,
    order_id: &str,
) -> Result<Streaming<pb::WatchOrderResponse>, Status> {
    orders(channel)
        .watch_order(authed(
            pb::WatchOrderRequest {
                order_id: order_id.into(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner())
}

/// Reads `stream` until a message satisfies `stop` (returned last) or the stream ends cleanly;
/// fails after [`WAIT`] or on an error status, naming what was seen.
pub async fn follow(
    stream: &mut Streaming<pb::WatchOrderResponse>,
    what: &str,
    stop: impl Fn(&pb::WatchOrderResponse) -> bool,
) -> Vec<pb::WatchOrderResponse> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let next = tokio::time::timeout_at(deadline, stream.message()).await;
        let message = match next {
            Err(_) => panic!("{what}: timed out; states seen: {:?}", states(&seen)),
            Ok(Err(status)) => panic!(
                "{what}: stream failed {status:?}; seen: {:?}",
                states(&seen)
            ),
            Ok(Ok(None)) => return seen,
            Ok(Ok(Some(message))) => message,
        };
        assert_eq!(
            message.order.as_ref().map(|o| o.state),
            Some(message.state),
            "{what}: a watch message's state is its order's"
        );
        let done = stop(&message);
        seen.push(message);
        if done {
            return seen;
        }
    }
}

/// The states of `messages`, as names.
pub fn states(messages: &[pb::WatchOrderResponse]) -> Vec<String> {
    messages.iter().map(|m| state_name(m.state)).collect()
}

/// A state's name.
pub fn state_name(state: i32) -> String {
    pb::OrderState::try_from(state)
        .map(|s| s.as_str_name().to_owned())
        .unwrap_or_else(|_| format!("unknown state {state}"))
}

/// Asserts that `seen` (consecutive repeats collapsed) is a subsequence of `path` that ends
/// with `path`'s last state: changes only ever move forward along the documented path.
pub fn assert_moves_along(seen: &[pb::WatchOrderResponse], path: &[pb::OrderState], context: &str) {
    let mut collapsed: Vec<i32> = seen.iter().map(|m| m.state).collect();
    collapsed.dedup();
    let mut position = 0;
    for state in &collapsed {
        match path[position..].iter().position(|p| *p as i32 == *state) {
            Some(offset) => position += offset + 1,
            None => panic!(
                "{context}: states {:?} do not follow {:?}",
                states(seen),
                path.iter().map(|s| s.as_str_name()).collect::<Vec<_>>()
            ),
        }
    }
    assert_eq!(
        collapsed.last().copied(),
        path.last().map(|s| *s as i32),
        "{context}: states {:?} do not end at {:?}",
        states(seen),
        path.last()
    );
}

/// The precondition violations of a refusal, as (type, subject).
pub fn violations(status: &Status) -> Vec<(String, String)> {
    status
        .get_details_precondition_failure()
        .map(|f| {
            f.violations
                .into_iter()
                .map(|v| (v.r#type, v.subject))
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts `result` is FAILED_PRECONDITION listing a violation of `violation_type`; returns
/// the status.
pub fn assert_refused<T: std::fmt::Debug>(
    result: Result<T, Status>,
    violation_type: &str,
    context: &str,
) -> Status {
    let status = match result {
        Ok(value) => panic!("{context}: expected {violation_type}, got {value:?}"),
        Err(status) => status,
    };
    assert_eq!(
        status.code(),
        tonic::Code::FailedPrecondition,
        "{context}: expected {violation_type}: {status:?}"
    );
    assert!(
        violations(&status).iter().any(|(t, _)| t == violation_type),
        "{context}: expected a {violation_type} violation: {:?} ({status:?})",
        violations(&status)
    );
    status
}

/// The subject of the first violation of `violation_type`.
pub fn subject_of(status: &Status, violation_type: &str) -> Option<String> {
    violations(status)
        .into_iter()
        .find(|(t, _)| t == violation_type)
        .map(|(_, s)| s)
}

/// The fields a BadRequest detail names.
pub fn bad_fields(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|f| f.field).collect())
        .unwrap_or_default()
}

/// Movements of `order` of `kind`.
pub fn movements(order: &pb::Order, kind: pb::MoneyMovementKind) -> Vec<&pb::MoneyMovement> {
    order
        .movements
        .iter()
        .filter(|m| m.kind == kind as i32)
        .collect()
}
