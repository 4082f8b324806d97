//! One simulated kiosk: one task, one TCP connection, one `KioskLinkService.Open` stream at a
//! time, speaking what the real agent speaks (kiosk-agent/src/link.rs) without its journal
//! on disk.
//!
//! Guarantees:
//! - The kiosk logs in (KioskLogin) unless it talks to the echo, opens the stream with its
//!   token, sends Hello with its inventory, waits for Welcome; then heartbeats every
//!   Welcome.heartbeat_interval (none when the Welcome names none), answers every command with
//!   an Ack and then a result carrying a message id, kept until a Receipt names it and
//!   replayed on a new link, and answers a repeated command from its in-memory journal.
//! - The token is renewed before it expires on the open stream: a new login, then RenewToken
//!   with the new token; the gateway's TokenRenewal answer counts the renewal (a refusal is an
//!   error), and the stream lives on as one session.
//! - Every wait is bounded ([`WAIT`]); a link silent for Welcome.offline_after is dropped and
//!   counted as an error. A broken link is reopened after a jittered backoff while the run
//!   lasts; every failure is counted by kind in [`Stats`].
//! - The task ends when `stop` is cancelled, dropping its stream and connection.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use sneakernet_proto::auth::v1 as auth;
use sneakernet_proto::auth::v1::auth_service_client::AuthServiceClient;
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::gateway::v1::kiosk_link_service_client::KioskLinkServiceClient;
use sneakernet_proto::gateway::v1::open_request::Body as Up;
use sneakernet_proto::gateway::v1::open_response::Body as Down;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

/// The longest any single step (connect, login, open, Welcome, a send) may take.
pub const WAIT: Duration = Duration::from_secs(20);
/// Messages queued towards the transport per link.
const UP_CHANNEL: usize = 16;
/// Results remembered per kiosk, to answer a resent command as the real journal would.
const JOURNAL: usize = 64;
/// The agent version every simulated kiosk says in Hello.
pub const AGENT_VERSION: &str = concat!("0.0.0-fleet-sim.", env!("CARGO_PKG_VERSION"));
/// Drive capacity of every simulated bay.
pub const DRIVE_CAPACITY: u64 = 1_000_000_000_000;

/// What all links of one run share.
pub struct Fleet {
    /// The gateway (or echo), with the client's HTTP/2 settings; each link connects its own.
    pub endpoint: Endpoint,
    /// Source addresses links bind to, in rotation (empty: the system's choice).
    pub sources: Vec<IpAddr>,
    /// Where kiosks log in; `None` against the echo (no token).
    pub auth: Option<Channel>,
    /// Bays per kiosk in Hello.
    pub bays: usize,
    /// At most this many links connect at once (first connections and reconnects).
    pub connecting: Semaphore,
    /// Counters of the run.
    pub stats: Stats,
    /// Cancelled when the run ends.
    pub stop: CancellationToken,
    /// Command and round-trip timings.
    pub probes: Probes,
    /// Against the echo: each link sends a probe (a message with an id, which the echo
    /// answers with a Receipt) this often, while `probes.on`.
    pub probe_every: Option<Duration>,
}

/// When each command (or echo probe) was sent, reached its kiosk, and had its result (or the
/// probe) receipted; keyed by command id (probe message id). Recorded only while `on`.
#[derive(Default)]
pub struct Probes {
    /// Set during the hold and a grace after it: timings are recorded.
    pub on: std::sync::atomic::AtomicBool,
    /// Set during the hold only: echo probes are sent.
    pub sending: std::sync::atomic::AtomicBool,
    /// Sent (the SendCommand call started; the probe went out).
    pub sent: Mutex<HashMap<String, Instant>>,
    /// Arrived at the kiosk (commands only).
    pub delivered: Mutex<HashMap<String, Instant>>,
    /// The result's (probe's) Receipt arrived.
    pub done: Mutex<HashMap<String, Instant>>,
}

impl Probes {
    /// Records `id` in `map` now, once.
    pub fn mark(&self, map: &Mutex<HashMap<String, Instant>>, id: &str) {
        if self.on.load(Ordering::Relaxed) {
            map.lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(id.to_owned())
                .or_insert_with(Instant::now);
        }
    }
}

/// One kiosk's identity.
#[derive(Clone, Debug)]
pub struct Kiosk {
    /// Its id (the token's subject).
    pub id: String,
    /// Its credential's secret; `None` against the echo.
    pub secret: Option<String>,
}

/// Counters every link adds to; read by the reporter.
#[derive(Default)]
pub struct Stats {
    /// Links welcomed and not yet ended.
    pub up: AtomicU64,
    /// Links welcomed, ever (first links and reconnects).
    pub welcomed: AtomicU64,
    /// Links that broke and were reopened.
    pub reconnects: AtomicU64,
    /// Token renewals that completed.
    pub renewals: AtomicU64,
    /// Heartbeats sent / received.
    pub heartbeats_sent: AtomicU64,
    /// See `heartbeats_sent`.
    pub heartbeats_received: AtomicU64,
    /// Commands received (including resends).
    pub commands: AtomicU64,
    /// Results sent (including replays).
    pub results_sent: AtomicU64,
    /// Receipts received.
    pub receipts: AtomicU64,
    /// Receipts that said REJECTED.
    pub rejected: AtomicU64,
    /// Errors by kind, with the first message of each kind.
    errors: Mutex<BTreeMap<&'static str, (u64, String)>>,
    /// Microseconds from a link's first attempt to its first Welcome, split in login and
    /// open (connect + stream + Welcome).
    latencies: Mutex<Latencies>,
}

/// Microsecond samples of the first connection of each link.
#[derive(Default, Clone)]
pub struct Latencies {
    /// KioskLogin.
    pub login: Vec<u64>,
    /// TCP + HTTP/2 connect, Open, Hello, Welcome.
    pub open: Vec<u64>,
}

impl Stats {
    /// Counts one error of `kind`.
    pub fn error(&self, kind: &'static str, message: impl std::fmt::Display) {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        let entry = errors
            .entry(kind)
            .or_insert_with(|| (0, message.to_string()));
        entry.0 += 1;
    }

    /// Errors so far: kind -> (count, first message).
    pub fn errors(&self) -> BTreeMap<&'static str, (u64, String)> {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Total errors so far.
    pub fn error_count(&self) -> u64 {
        self.errors().values().map(|(n, _)| n).sum()
    }

    /// The first-connection latencies so far.
    pub fn latencies(&self) -> Latencies {
        self.latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn record(&self, login: Option<Duration>, open: Duration) {
        let mut latencies = self.latencies.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(login) = login {
            latencies.login.push(micros(login));
        }
        latencies.open.push(micros(open));
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A failure of one step, with the kind it is counted under.
struct Failed(&'static str, String);

impl Failed {
    fn status(kind: &'static str, status: &tonic::Status) -> Self {
        Failed(kind, format!("{:?}: {}", status.code(), status.message()))
    }
}

/// An open stream.
struct Stream {
    up: mpsc::Sender<pb::OpenRequest>,
    down: tonic::Streaming<pb::OpenResponse>,
    heartbeat: Option<Duration>,
    offline_after: Duration,
}

/// A token and when to renew it.
struct Token {
    value: String,
    renew_at: Instant,
}

/// Runs kiosk number `index` until `fleet.stop`.
pub async fn run(fleet: std::sync::Arc<Fleet>, kiosk: Kiosk, index: usize) {
    let source = (!fleet.sources.is_empty()).then(|| fleet.sources[index % fleet.sources.len()]);
    let mut state = KioskState::new(&kiosk.id, fleet.bays);
    let mut first = true;
    let mut backoff_attempt = 0u32;
    while !fleet.stop.is_cancelled() {
        let opened = {
            let Ok(_permit) = fleet.connecting.acquire().await else {
                return;
            };
            tokio::select! {
                opened = open_link(&fleet, &kiosk, source, &state, first) => opened,
                () = fleet.stop.cancelled() => return,
            }
        };
        let (_channel, mut token, mut stream) = match opened {
            Ok(opened) => opened,
            Err(Failed(kind, message)) => {
                fleet.stats.error(kind, message);
                backoff(&fleet, &mut backoff_attempt).await;
                continue;
            }
        };
        if !first {
            fleet.stats.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        backoff_attempt = 0;
        fleet.stats.up.fetch_add(1, Ordering::Relaxed);
        // `_channel` lives until the link ends: it owns the connection.
        let ended = hold_link(&fleet, &kiosk, &mut token, &mut stream, &mut state).await;
        fleet.stats.up.fetch_sub(1, Ordering::Relaxed);
        match ended {
            Ok(()) => return,
            Err(Failed(kind, message)) => {
                if fleet.stop.is_cancelled() {
                    return;
                }
                fleet.stats.error(kind, message);
                backoff(&fleet, &mut backoff_attempt).await;
            }
        }
    }
}

/// Full-jitter exponential backoff from 500 ms up to 30 s, cut short by the stop.
async fn backoff(fleet: &Fleet, attempt: &mut u32) {
    let ceiling = Duration::from_millis(500)
        .saturating_mul(1 << (*attempt).min(6))
        .min(Duration::from_secs(30));
    *attempt = attempt.saturating_add(1);
    let wait = rand::rng().random_range(Duration::ZERO..=ceiling);
    tokio::select! {
        () = tokio::time::sleep(wait) => {}
        () = fleet.stop.cancelled() => {}
    }
}

/// Connects, logs in, opens the stream, says Hello, waits for Welcome, replays the outbox.
async fn open_link(
    fleet: &Fleet,
    kiosk: &Kiosk,
    source: Option<IpAddr>,
    state: &KioskState,
    first: bool,
) -> Result<(Channel, Option<Token>, Stream), Failed> {
    let started = Instant::now();
    let token = match &kiosk.secret {
        Some(secret) => Some(login(fleet, kiosk, secret).await?),
        None => None,
    };
    let logged_in = Instant::now();
    let channel =
        tokio::time::timeout(WAIT, fleet.endpoint.clone().local_address(source).connect())
            .await
            .map_err(|_| Failed("connect", "timed out".into()))?
            .map_err(|e| Failed("connect", error_chain(&e)))?;
    let stream = open_stream(&channel, token.as_ref(), state).await?;
    if first {
        let login = token.as_ref().map(|_| logged_in - started);
        fleet.stats.record(login, logged_in.elapsed());
    }
    fleet.stats.welcomed.fetch_add(1, Ordering::Relaxed);
    for message in &state.outbox {
        send(&stream.up, message.clone()).await?;
        fleet.stats.results_sent.fetch_add(1, Ordering::Relaxed);
    }
    Ok((channel, token, stream))
}

/// KioskLogin; the token is renewed a minute (at most a fifth of its life) before it expires.
async fn login(fleet: &Fleet, kiosk: &Kiosk, secret: &str) -> Result<Token, Failed> {
    let Some(auth) = &fleet.auth else {
        return Err(Failed("login", "no auth address".into()));
    };
    let mut client = AuthServiceClient::new(auth.clone());
    let call = client.kiosk_login(auth::KioskLoginRequest {
        kiosk_id: kiosk.id.clone(),
        secret: secret.to_owned(),
    });
    let response = tokio::time::timeout(WAIT, call)
        .await
        .map_err(|_| Failed("login", "timed out".into()))?
        .map_err(|s| Failed::status("login", &s))?
        .into_inner();
    let lifetime = response
        .access_token_expires_at
        .as_ref()
        .and_then(sneakernet_proto::wire::from_timestamp)
        .and_then(|at| (at - chrono::Utc::now()).to_std().ok())
        .unwrap_or(Duration::from_secs(60));
    let margin = (lifetime / 5).min(Duration::from_secs(60));
    Ok(Token {
        value: response.access_token,
        renew_at: Instant::now() + lifetime.saturating_sub(margin).max(Duration::from_secs(2)),
    })
}

/// Opens a stream on `channel`, sends Hello, waits for Welcome.
async fn open_stream(
    channel: &Channel,
    token: Option<&Token>,
    state: &KioskState,
) -> Result<Stream, Failed> {
    let (up, receiver) = mpsc::channel(UP_CHANNEL);
    up.try_send(state.hello())
        .map_err(|_| Failed("open", "fresh channel full".into()))?;
    let mut request = tonic::Request::new(ReceiverStream::new(receiver));
    if let Some(token) = token {
        let value = format!("Bearer {}", token.value)
            .parse()
            .map_err(|_| Failed("login", "the token is not ASCII".into()))?;
        request.metadata_mut().insert("authorization", value);
    }
    let mut down = tokio::time::timeout(
        WAIT,
        KioskLinkServiceClient::new(channel.clone()).open(request),
    )
    .await
    .map_err(|_| Failed("open", "timed out".into()))?
    .map_err(|s| Failed::status("open", &s))?
    .into_inner();
    let first = tokio::time::timeout(WAIT, down.message())
        .await
        .map_err(|_| Failed("welcome", "no Welcome in time".into()))?
        .map_err(|s| Failed::status("welcome", &s))?;
    match first.and_then(|m| m.body) {
        Some(Down::Welcome(welcome)) => {
            let heartbeat = welcome
                .heartbeat_interval
                .as_ref()
                .and_then(sneakernet_proto::wire::from_duration)
                .filter(|d| !d.is_zero());
            let offline_after = welcome
                .offline_after
                .as_ref()
                .and_then(sneakernet_proto::wire::from_duration)
                .filter(|d| !d.is_zero())
                .unwrap_or(Duration::from_secs(3600));
            Ok(Stream {
                up,
                down,
                heartbeat,
                offline_after,
            })
        }
        other => Err(Failed(
            "welcome",
            format!("expected Welcome, got {other:?}"),
        )),
    }
}

/// Sends one message, bounded.
async fn send(up: &mpsc::Sender<pb::OpenRequest>, message: pb::OpenRequest) -> Result<(), Failed> {
    match tokio::time::timeout(WAIT, up.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Failed("stream", "the stream closed".into())),
        Err(_) => Err(Failed("stream", "sending blocked for too long".into())),
    }
}

/// Keeps one welcomed link until the stop (`Ok`) or a failure.
async fn hold_link(
    fleet: &Fleet,
    kiosk: &Kiosk,
    token: &mut Option<Token>,
    stream: &mut Stream,
    state: &mut KioskState,
) -> Result<(), Failed> {
    let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    let mut next_heartbeat = stream
        .heartbeat
        .map_or(far, |every| Instant::now() + jitter(every));
    let mut heard = Instant::now();
    let mut next_probe = fleet
        .probe_every
        .map_or(far, |every| Instant::now() + jitter(every));
    loop {
        let renew_at = token.as_ref().map_or(far, |t| t.renew_at);
        tokio::select! {
            () = fleet.stop.cancelled() => return Ok(()),
            () = tokio::time::sleep_until(next_heartbeat) => {
                send(&stream.up, heartbeat()).await?;
                fleet.stats.heartbeats_sent.fetch_add(1, Ordering::Relaxed);
                next_heartbeat = stream.heartbeat.map_or(far, |every| Instant::now() + every);
            }
            () = tokio::time::sleep_until(renew_at) => {
                let Some(secret) = &kiosk.secret else { continue };
                let renewed = login(fleet, kiosk, secret).await?;
                let renew = pb::OpenRequest {
                    message_id: String::new(),
                    body: Some(Up::RenewToken(pb::RenewToken {
                        access_token: renewed.value.clone(),
                    })),
                };
                send(&stream.up, renew).await?;
                // Counted when the gateway's TokenRenewal arrives ([`handle`]).
                *token = Some(renewed);
            }
            () = tokio::time::sleep_until(next_probe) => {
                next_probe = fleet.probe_every.map_or(far, |every| Instant::now() + every);
                if fleet.probes.sending.load(Ordering::Relaxed) {
                    let id = format!("probe-{}", uuid::Uuid::new_v4());
                    fleet.probes.mark(&fleet.probes.sent, &id);
                    send(&stream.up, probe(id)).await?;
                }
            }
            () = tokio::time::sleep_until(heard + stream.offline_after) => {
                return Err(Failed("silent", format!("nothing heard for {:?}", stream.offline_after)));
            }
            message = stream.down.message() => {
                heard = Instant::now();
                match message {
                    Ok(Some(message)) => handle(fleet, stream, state, message).await?,
                    Ok(None) => return Err(Failed("ended", "the gateway ended the stream".into())),
                    Err(status) => return Err(Failed::status("ended", &status)),
                }
            }
        }
    }
}

/// Up to `every`, so a fleet's heartbeats do not all fall on the same instant.
fn jitter(every: Duration) -> Duration {
    rand::rng().random_range(Duration::ZERO..=every)
}

/// A message the echo answers with a Receipt: an empty partial inventory change.
fn probe(message_id: String) -> pb::OpenRequest {
    pb::OpenRequest {
        message_id,
        body: Some(Up::InventoryChanged(pb::InventoryChanged {
            change: Some(pb::inventory_changed::Change::Partial(pb::Inventory {
                bays: Vec::new(),
                taken_at: None,
            })),
        })),
    }
}

fn heartbeat() -> pb::OpenRequest {
    pb::OpenRequest {
        message_id: String::new(),
        body: Some(Up::Heartbeat(pb::Heartbeat {
            sent_at: Some(sneakernet_proto::wire::timestamp(chrono::Utc::now())),
        })),
    }
}

/// One down-message.
async fn handle(
    fleet: &Fleet,
    stream: &Stream,
    state: &mut KioskState,
    message: pb::OpenResponse,
) -> Result<(), Failed> {
    match message.body {
        Some(Down::Heartbeat(_)) => {
            fleet
                .stats
                .heartbeats_received
                .fetch_add(1, Ordering::Relaxed);
        }
        Some(Down::Command(command)) => {
            fleet.stats.commands.fetch_add(1, Ordering::Relaxed);
            fleet
                .probes
                .mark(&fleet.probes.delivered, &command.command_id);
            let ack = pb::OpenRequest {
                message_id: String::new(),
                body: Some(Up::Ack(pb::Ack {
                    command_id: command.command_id.clone(),
                })),
            };
            send(&stream.up, ack).await?;
            let result = state.execute(command);
            send(&stream.up, result).await?;
            fleet.stats.results_sent.fetch_add(1, Ordering::Relaxed);
        }
        Some(Down::Receipt(receipt)) => {
            fleet.stats.receipts.fetch_add(1, Ordering::Relaxed);
            if receipt.status == pb::ReceiptStatus::Rejected as i32 {
                fleet.stats.rejected.fetch_add(1, Ordering::Relaxed);
                fleet.stats.error("rejected", receipt.error);
            }
            if receipt.message_id.starts_with("probe-") {
                fleet.probes.mark(&fleet.probes.done, &receipt.message_id);
            }
            state.outbox.retain(|m| {
                if m.message_id != receipt.message_id {
                    return true;
                }
                if let Some(Up::Result(result)) = &m.body {
                    fleet.probes.mark(&fleet.probes.done, &result.command_id);
                }
                false
            });
        }
        Some(Down::Reconnect(reconnect)) => {
            return Err(Failed(
                "reconnect",
                format!(
                    "told to reconnect ({}): {}",
                    reconnect.reason, reconnect.message
                ),
            ));
        }
        Some(Down::TokenRenewal(answer)) => {
            if answer.error.is_empty() {
                fleet.stats.renewals.fetch_add(1, Ordering::Relaxed);
            } else {
                fleet.stats.error("renewal", answer.error);
            }
        }
        Some(Down::Welcome(_)) | None => {
            fleet
                .stats
                .error("unexpected", "a second Welcome or an empty message");
        }
    }
    Ok(())
}

/// What one simulated kiosk holds: its bays, the results it answered, its outbox.
struct KioskState {
    bays: Vec<pb::Bay>,
    journal: HashMap<String, pb::OpenRequest>,
    journal_order: VecDeque<String>,
    outbox: Vec<pb::OpenRequest>,
}

impl KioskState {
    fn new(kiosk_id: &str, bays: usize) -> Self {
        let bays = (1..=bays)
            .map(|n| pb::Bay {
                bay_id: format!("A{n:02}"),
                state: pb::BayState::Ready.into(),
                item: Some(drive(format!("{kiosk_id}-D{n:02}"), false)),
                pinned_order_id: String::new(),
            })
            .collect();
        Self {
            bays,
            journal: HashMap::new(),
            journal_order: VecDeque::new(),
            outbox: Vec::new(),
        }
    }

    fn inventory(&self) -> pb::Inventory {
        pb::Inventory {
            bays: self.bays.clone(),
            taken_at: Some(sneakernet_proto::wire::timestamp(chrono::Utc::now())),
        }
    }

    fn hello(&self) -> pb::OpenRequest {
        pb::OpenRequest {
            message_id: String::new(),
            body: Some(Up::Hello(pb::Hello {
                agent_version: AGENT_VERSION.into(),
                inventory: Some(self.inventory()),
                last_finished_command_id: self.journal_order.back().cloned().unwrap_or_default(),
            })),
        }
    }

    /// The result message of `command`: from the journal when seen before, else by doing it
    /// on the simulated bays. The message stays in the outbox until its Receipt.
    fn execute(&mut self, command: pb::Command) -> pb::OpenRequest {
        if let Some(done) = self.journal.get(&command.command_id) {
            return done.clone();
        }
        use pb::command_result::Outcome;
        let kind = command.payload.and_then(|p| p.kind);
        let outcome = match kind {
            Some(pb::command_payload::Kind::Lend(lend)) => self.lend(lend),
            Some(pb::command_payload::Kind::SetWriteProtect(set)) => {
                Outcome::SetWriteProtect(pb::SetWriteProtectResult {
                    item_id: set.item_id,
                    write_protected: set.on,
                })
            }
            Some(pb::command_payload::Kind::Wipe(wipe)) => Outcome::Wipe(pb::WipeResult {
                item_id: wipe.item_id,
            }),
            Some(pb::command_payload::Kind::RequestInventory(_)) => {
                Outcome::RequestInventory(pb::RequestInventoryResult {
                    inventory: Some(self.inventory()),
                })
            }
            Some(pb::command_payload::Kind::ForceEject(eject)) => {
                Outcome::ForceEject(pb::ForceEjectResult {
                    bay_id: eject.bay_id,
                    item_id: String::new(),
                })
            }
            _ => failure(
                pb::FailureReason::Unsupported,
                "fleet-sim does not simulate this command",
            ),
        };
        let message = pb::OpenRequest {
            message_id: uuid::Uuid::new_v4().to_string(),
            body: Some(Up::Result(pb::CommandResult {
                command_id: command.command_id.clone(),
                outcome: Some(outcome),
                finished_at: Some(sneakernet_proto::wire::timestamp(chrono::Utc::now())),
            })),
        };
        self.journal
            .insert(command.command_id.clone(), message.clone());
        self.journal_order.push_back(command.command_id);
        if self.journal_order.len() > JOURNAL
            && let Some(old) = self.journal_order.pop_front()
        {
            self.journal.remove(&old);
        }
        self.outbox.push(message.clone());
        message
    }

    /// Lends the first READY drive (by spec) or the named one.
    fn lend(&mut self, lend: pb::LendCommand) -> pb::command_result::Outcome {
        use pb::command_result::Outcome;
        let wanted = match &lend.target {
            Some(pb::lend_command::Target::ItemId(item)) => Some(item.clone()),
            _ => None,
        };
        let position = self.bays.iter().position(|bay| {
            let lendable = bay.state == pb::BayState::Ready as i32
                || (bay.state == pb::BayState::Pinned as i32 && wanted.is_some());
            lendable
                && wanted
                    .as_ref()
                    .is_none_or(|w| bay.item.as_ref().is_some_and(|item| &item.item_id == w))
        });
        let Some(position) = position else {
            return failure(pb::FailureReason::NoMatchingItem, "no READY drive left");
        };
        let bay = &mut self.bays[position];
        let write_protect = matches!(&lend.target, Some(pb::lend_command::Target::Spec(spec)) if spec.write_protect);
        let item_id = bay
            .item
            .as_ref()
            .map(|i| i.item_id.clone())
            .unwrap_or_default();
        bay.state = pb::BayState::Empty.into();
        bay.item = None;
        bay.pinned_order_id.clear();
        Outcome::Lend(pb::LendResult {
            item_id: item_id.clone(),
            bay_id: bay.bay_id.clone(),
            item: Some(drive(item_id, write_protect)),
        })
    }
}

fn failure(reason: pb::FailureReason, message: &str) -> pb::command_result::Outcome {
    pb::command_result::Outcome::Failure(pb::Failure {
        reason: reason.into(),
        message: message.into(),
        bay_id: String::new(),
        item_id: String::new(),
    })
}

/// A 1 TB drive with no content.
fn drive(item_id: String, write_protected: bool) -> common::Item {
    common::Item {
        item_id,
        kind: common::ItemKind::Drive.into(),
        attributes: Some(common::ItemAttributes {
            kind: Some(common::item_attributes::Kind::Drive(
                common::DriveAttributes {
                    capacity_bytes: DRIVE_CAPACITY,
                    content_package_id: String::new(),
                    write_protected,
                    remote_link: false,
                },
            )),
        }),
    }
}

/// An error with its sources, on one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(id: &str, kind: pb::command_payload::Kind) -> pb::Command {
        pb::Command {
            command_id: id.into(),
            deadline: None,
            payload: Some(pb::CommandPayload { kind: Some(kind) }),
            attempt: 1,
        }
    }

    fn outcome(message: &pb::OpenRequest) -> pb::command_result::Outcome {
        match &message.body {
            Some(Up::Result(result)) => result.outcome.clone().expect("outcome"),
            other => panic!("not a result: {other:?}"),
        }
    }

    fn lend_by_spec() -> pb::command_payload::Kind {
        pb::command_payload::Kind::Lend(pb::LendCommand {
            target: Some(pb::lend_command::Target::Spec(common::ItemSpec {
                item_type: None,
                write_protect: true,
            })),
            order_id: "o".into(),
        })
    }

    #[test]
    fn a_lend_empties_one_bay_and_a_resend_is_answered_from_the_journal() {
        let mut kiosk = KioskState::new("K", 2);
        let first = kiosk.execute(command("c1", lend_by_spec()));
        let again = kiosk.execute(command("c1", lend_by_spec()));
        assert_eq!(
            first, again,
            "a resent command gets the same result, same message id"
        );
        assert!(
            matches!(outcome(&first), pb::command_result::Outcome::Lend(l) if l.item_id == "K-D01")
        );
        kiosk.execute(command("c2", lend_by_spec()));
        let third = kiosk.execute(command("c3", lend_by_spec()));
        assert!(matches!(
            outcome(&third),
            pb::command_result::Outcome::Failure(f) if f.reason == pb::FailureReason::NoMatchingItem as i32
        ));
        assert_eq!(kiosk.outbox.len(), 3, "each result waits for its receipt");
    }

    #[test]
    fn the_journal_is_bounded() {
        let mut kiosk = KioskState::new("K", 1);
        for n in 0..(JOURNAL + 10) {
            kiosk.execute(command(
                &format!("c{n}"),
                pb::command_payload::Kind::RequestInventory(pb::RequestInventoryCommand {}),
            ));
        }
        assert_eq!(kiosk.journal.len(), JOURNAL);
        assert_eq!(kiosk.journal_order.len(), JOURNAL);
    }

    #[test]
    fn hello_passes_the_gateways_rules() {
        let kiosk = KioskState::new("SIM-00001", 8);
        let Some(Up::Hello(hello)) = kiosk.hello().body else {
            panic!("not a Hello")
        };
        sneakernet_proto::link_rules::check_hello(&hello).expect("a valid Hello");
    }
}
