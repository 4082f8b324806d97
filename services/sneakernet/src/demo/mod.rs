//! `sneakernet demo`: a fresh standalone node with its simulated kiosks in a temporary data
//! directory, and the product's flows told step by step as a phone app lives them, through
//! gRPC only: register, scan (refused: no deposit), pay the deposit; then each flow in its own
//! module ([`walk_up`]: seed flow 1, [`reservation`]: seed flow 2); then the operator audits
//! the money. Succeeds only when
//! every step reached its state and the audit is clean; every wait is bounded.

mod describe;
mod reservation;
mod walk_up;
mod watch;

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use rand::Rng;
use sneakernet_proto::auth::v1 as auth;
use sneakernet_proto::auth::v1::auth_service_client::AuthServiceClient;
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_proto::orders::v1::order_service_client::OrderServiceClient;
use sneakernet_runtime::Shutdown;
use sneakernet_runtime::config::Config;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use self::describe::{describe_kiosk, enum_name, money};
use crate::client::{self, authed};
use crate::node::{self, NodeRole};
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

    println!("sneakernet demo: a walk-up rental and a reservation, as the phone app lives them");
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
pub(super) struct Narrator {
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

    pub(super) fn step(&mut self, text: impl AsRef<str>) {
        self.step += 1;
        println!(
            "[{:>5.1}s] {:>2}. {}",
            self.started.elapsed().as_secs_f64(),
            self.step,
            text.as_ref()
        );
    }

    pub(super) fn detail(&self, text: impl AsRef<str>) {
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

    let kiosks = fleet.until_online(channel, &operator, ONLINE_WAIT).await?;
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

    walk_up::tell(&mut narrator, &mut orders, &user, fleet, here, there).await?;
    reservation::tell(&mut narrator, &mut orders, &user, fleet).await?;

    let audit = crate::audit::audit(channel, &operator).await?;
    narrator.step("Audited the money as the operator (FleetService.Audit):");
    for line in crate::audit::report(&audit) {
        narrator.detail(line);
    }
    crate::audit::verdict(&audit)
}

pub(super) fn card() -> pb::PaymentMethod {
    pb::PaymentMethod {
        method: Some(pb::payment_method::Method::CardToken(TEST_CARD.to_owned())),
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

/// One ScanKiosk with the code the kiosk's screen shows now.
pub(super) async fn scan(
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

/// `minor_units` cents of euro (tests).
#[cfg(test)]
fn eur(minor_units: i64) -> sneakernet_proto::common::v1::Money {
    sneakernet_proto::common::v1::Money {
        minor_units,
        currency: "EUR".into(),
    }
}
