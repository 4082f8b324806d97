//! The client side of the binary: the phone app's and the operator's commands, one module per
//! group, the way `vault` and `consul` put client and server in one program.
//!
//! - [`account`]: `register`, `login`, `logout`, `deposit pay|refund`.
//! - [`rentals`]: `kiosks near`, `scan`, `rent`, `reserve`, `cancel`, `collect`, `watch`,
//!   `orders`, `write-protect`.
//! - [`fleet`]: the operator's `kiosk list|show`, `pricing set`, `events follow` (beside the
//!   older `audit` and `content`).
//! - [`kiosk`]: the operator's `kiosk add|credential|force-eject|inventory`.
//! - [`sim`]: standalone's simulated kiosks, `sim return` and `sim qr`.
//!
//! Shared: [`connect`] (address and TLS flags, bounded calls), [`profile`] (the kept login,
//! renewed when it expires), [`output`] (text or `--json`), [`exit`] (exit codes).
//!
//! Adding a command: its arguments in the group's enum below (or a new group module), a
//! function in the group's module taking `&Client` that calls through
//! [`connect::Target::call`] (so refusals get their exit code) and prints through
//! [`output::Output::print`] (so `--json` works), and a line in the README's "Command line".

pub mod account;
pub mod connect;
pub mod exit;
pub mod fleet;
pub mod kiosk;
pub mod output;
pub mod profile;
pub mod rentals;
pub mod sim;

use std::sync::OnceLock;

use sneakernet_runtime::config::Config;

use self::account::{Credentials, DepositAction};
use self::connect::{ClientFlags, Target};
use self::fleet::{KioskAction, PricingAction};
use self::output::Output;
use self::profile::Profile;
use self::rentals::{Payment, Switch, TypeFilter};
use self::sim::SimAction;

/// The client subcommands (flattened into the binary's command list).
#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// Create an account and log in; the login is kept for --address.
    Register {
        /// Email and password.
        #[command(flatten)]
        credentials: Credentials,
    },
    /// Log in; the login is kept for --address (readable by you only) and renewed by itself.
    Login {
        /// Email and password.
        #[command(flatten)]
        credentials: Credentials,
    },
    /// End the session at --address and forget it here.
    Logout,
    /// The account's deposit, the permission to rent.
    Deposit {
        /// Pay or refund.
        #[command(subcommand)]
        action: DepositAction,
    },
    /// Kiosks near a point (FindKiosks), nearest first, with what each can lend and reserve.
    Kiosks {
        /// What to look for.
        #[command(subcommand)]
        action: KiosksAction,
    },
    /// Scan a kiosk's QR code (its text, e.g. from `sim qr`): prints what you may rent there.
    Scan {
        /// The QR code's text.
        qr: String,
    },
    /// Rent at the kiosk whose QR code you scanned: the first available type the filter
    /// names, for the shortest length unless --days. Prints the order and its idempotency key.
    Rent {
        /// The QR code's text.
        #[arg(long)]
        qr: String,
        /// Which type.
        #[command(flatten)]
        filter: TypeFilter,
        /// Rental length in days (one the offer lists; default the shortest).
        #[arg(long)]
        days: Option<u32>,
        /// Write protection of a drive (default: off where it may be chosen).
        #[arg(long, value_enum)]
        write_protect: Option<Switch>,
        /// How to pay.
        #[command(flatten)]
        payment: Payment,
    },
    /// Reserve a drive at a kiosk (CreateReservation): the kiosk copies the package onto a
    /// drive of --capacity and keeps it for you.
    Reserve {
        /// The kiosk.
        #[arg(long)]
        kiosk: String,
        /// The drive's capacity in bytes (1 TB = 1000000000000).
        #[arg(long, value_name = "BYTES")]
        capacity: u64,
        /// The content package; none for a blank drive.
        #[arg(long, value_name = "ID")]
        package: Option<String>,
        /// Rental length in days.
        #[arg(long, default_value_t = 1)]
        days: u32,
        /// Write protection of the drive.
        #[arg(long, value_enum)]
        write_protect: Option<Switch>,
        /// How to pay.
        #[command(flatten)]
        payment: Payment,
    },
    /// Cancel a reservation before its drive leaves the kiosk; everything paid is refunded.
    Cancel {
        /// The order.
        order_id: String,
    },
    /// Collect a reservation at its kiosk: the kiosk hands out the drive it prepared.
    Collect {
        /// The order.
        order_id: String,
        /// The QR code's text at the kiosk now.
        #[arg(long)]
        qr: String,
    },
    /// Follow an order live (WatchOrder), one line per change, a bar while a kiosk prepares
    /// a drive. Ends when the order is done, or reaches --until.
    Watch {
        /// The order.
        order_id: String,
        /// Stop (exit 0) once the order is in this state, e.g. LENT, READY_FOR_PICKUP,
        /// CLOSED; exit 1 if it ends elsewhere first.
        #[arg(long, value_name = "STATE")]
        until: Option<String>,
    },
    /// Your orders, newest first (an operator's: everyone's).
    Orders {
        /// Only orders in these states, e.g. --state LENT.
        #[arg(long = "state", value_name = "STATE")]
        states: Vec<String>,
    },
    /// Turn a lent drive's write protection on or off (SetWriteProtect).
    WriteProtect {
        /// The order.
        order_id: String,
        /// On or off.
        #[arg(value_enum)]
        on: Switch,
    },
    /// Operators: kiosks of the fleet.
    Kiosk {
        /// List, show, add, issue a credential, force-eject a bay, request the inventory.
        #[command(subcommand)]
        action: KioskAction,
    },
    /// Operators: price rules.
    Pricing {
        /// Set a rule.
        #[command(subcommand)]
        action: PricingAction,
    },
    /// Operators: the kiosks' event log.
    Events {
        /// Follow it.
        #[command(subcommand)]
        action: EventsAction,
    },
    /// Standalone's simulated kiosks, as a person at a kiosk: return an item, show the QR
    /// code.
    Sim {
        /// What to do at the kiosk.
        #[command(subcommand)]
        action: SimAction,
    },
}

/// `kiosks` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum KiosksAction {
    /// Kiosks within --radius of LAT LON (degrees), nearest first.
    Near {
        /// Degrees north, -90 to 90.
        #[arg(allow_negative_numbers = true)]
        latitude: f64,
        /// Degrees east, -180 to 180.
        #[arg(allow_negative_numbers = true)]
        longitude: f64,
        /// Search radius in meters (1 to 50000).
        #[arg(long, default_value_t = 5000)]
        radius: u32,
        /// Only kiosks with this type.
        #[command(flatten)]
        filter: TypeFilter,
    },
}

/// `events` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum EventsAction {
    /// Print the kiosks' events from --after on, then follow live until Ctrl-C. Every line
    /// starts with the event's cursor: pass the last one as --after to resume without a gap
    /// or a repeat.
    Follow {
        /// Start after this cursor (0: the start of the log).
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Only these kiosks' events.
        #[arg(long = "kiosk", value_name = "KIOSK_ID")]
        kiosks: Vec<String>,
    },
}

/// What every client command gets: where to call, the kept login, how to print.
#[derive(Debug)]
pub struct Client {
    flags: ClientFlags,
    config: Config,
    /// Text or JSON.
    pub output: Output,
    target: OnceLock<Target>,
    auth_target: OnceLock<Target>,
}

impl Client {
    /// A client for `flags`, with `config`'s defaults (`listen`, `data_dir`).
    pub fn new(flags: ClientFlags, config: Config) -> Self {
        let output = Output { json: flags.json };
        Self {
            flags,
            config,
            output,
            target: OnceLock::new(),
            auth_target: OnceLock::new(),
        }
    }

    /// The node to call (the channel connects at the first call).
    pub fn target(&self) -> anyhow::Result<&Target> {
        if let Some(target) = self.target.get() {
            return Ok(target);
        }
        let target = Target::new(&self.flags, &self.config)?;
        Ok(self.target.get_or_init(|| target))
    }

    /// Where logins are made, renewed and ended (`--auth-address`, else the node of
    /// [`Client::target`], on the same channel); the kept login is this address's.
    pub fn auth_target(&self) -> anyhow::Result<&Target> {
        if self.flags.auth_address.is_none() {
            return self.target();
        }
        if let Some(target) = self.auth_target.get() {
            return Ok(target);
        }
        let target = Target::auth(&self.flags, &self.config)?;
        Ok(self.auth_target.get_or_init(|| target))
    }

    /// Where logins are kept.
    pub fn profile(&self) -> anyhow::Result<Profile> {
        Profile::new(&self.flags)
    }

    /// Calls `call` (made from the channel and a bearer token) with the kept access token, or
    /// with one renewed now when `renew` is set or the server answers UNAUTHENTICATED: the
    /// server's clock decides when a token expired, not this machine's. For streams, which
    /// the server ends at their token's expiry and which reopen with `renew` set.
    pub async fn call_renewing<T, Fut>(
        &self,
        what: &str,
        renew: bool,
        call: impl Fn(tonic::transport::Channel, &str) -> anyhow::Result<Fut>,
    ) -> anyhow::Result<T>
    where
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let target = self.target()?;
        let auth = self.auth_target()?;
        let mut renew = renew;
        loop {
            let profile = self.profile()?;
            let token = if renew {
                profile.renewed_token(auth).await?
            } else {
                profile.token(auth).await?
            };
            match target
                .call(what, call(target.channel.clone(), &token)?)
                .await
            {
                Err(error) if exit::code_of(&error) == exit::UNAUTHENTICATED && !renew => {
                    renew = true;
                }
                answer => return answer,
            }
        }
    }

    /// The node and a valid access token of the login kept for [`Client::auth_target`]
    /// (exit code 3 without one).
    pub async fn logged_in(&self) -> anyhow::Result<(&Target, String)> {
        let target = self.target()?;
        let token = self.profile()?.token(self.auth_target()?).await?;
        Ok((target, token))
    }
}

/// `message` with `token` as its bearer token.
pub fn authed<T>(message: T, token: &str) -> anyhow::Result<tonic::Request<T>> {
    crate::client::authed(message, token)
}

/// `given`, or a new idempotency key.
pub fn idempotency_key(given: Option<String>) -> String {
    given.unwrap_or_else(|| format!("cli-{}", uuid::Uuid::new_v4()))
}

/// Runs one client command.
pub async fn run(command: ClientCommand, flags: ClientFlags, config: Config) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    let client = Client::new(flags, config);
    match command {
        ClientCommand::Register { credentials } => {
            account::sign_in(&client, &credentials, true).await
        }
        ClientCommand::Login { credentials } => {
            account::sign_in(&client, &credentials, false).await
        }
        ClientCommand::Logout => account::logout(&client).await,
        ClientCommand::Deposit { action } => account::deposit(&client, action).await,
        ClientCommand::Kiosks {
            action:
                KiosksAction::Near {
                    latitude,
                    longitude,
                    radius,
                    filter,
                },
        } => rentals::near(&client, latitude, longitude, radius, filter).await,
        ClientCommand::Scan { qr } => rentals::scan(&client, &qr).await,
        ClientCommand::Rent {
            qr,
            filter,
            days,
            write_protect,
            payment,
        } => rentals::rent(&client, &qr, filter, days, write_protect, payment).await,
        ClientCommand::Reserve {
            kiosk,
            capacity,
            package,
            days,
            write_protect,
            payment,
        } => {
            rentals::reserve(
                &client,
                &kiosk,
                capacity,
                package,
                days,
                write_protect,
                payment,
            )
            .await
        }
        ClientCommand::Cancel { order_id } => rentals::cancel(&client, &order_id).await,
        ClientCommand::Collect { order_id, qr } => rentals::collect(&client, &order_id, &qr).await,
        ClientCommand::Watch { order_id, until } => rentals::watch(&client, &order_id, until).await,
        ClientCommand::Orders { states } => rentals::list(&client, states).await,
        ClientCommand::WriteProtect { order_id, on } => {
            rentals::write_protect(&client, &order_id, on).await
        }
        ClientCommand::Kiosk { action } => fleet::kiosk(&client, action).await,
        ClientCommand::Pricing { action } => fleet::pricing(&client, action).await,
        ClientCommand::Events {
            action: EventsAction::Follow { after, kiosks },
        } => fleet::follow(&client, after, kiosks).await,
        ClientCommand::Sim { action } => sim::run(action, &data_dir, client.output).await,
    }
}
