//! The link to the device gateway: one `KioskLinkService.Open` stream at a time, kept up for as
//! long as the agent runs.
//!
//! Guarantees:
//! - The kiosk logs in with its credential (KioskLogin), opens the stream with
//!   `authorization: Bearer <token>`, and sends Hello (agent version, full inventory, last
//!   finished command) before anything else; then it replays its whole outbox in `seq` order.
//!   The token is renewed (by reopening the link) before it expires, and after UNAUTHENTICATED.
//! - A command is journaled before it is acknowledged; it is executed by the executor's worker,
//!   never on the link's task; its result travels through the outbox.
//! - Every message carrying a result, an item return or an inventory change has a message id
//!   and stays in the durable outbox until a Receipt names it (REJECTED ones are logged and
//!   dropped: resending will not help). Acks and heartbeats are not durable: a lost Ack makes
//!   the gateway resend the command, which the journal answers.
//! - Heartbeats go out every Welcome.heartbeat_interval; a link silent for
//!   Welcome.offline_after is dropped. Reconnects wait an exponential backoff with full jitter,
//!   capped at `link.backoff_max`, reset once a link has lived more than ten seconds; a
//!   Reconnect message's retry_after is waited (plus jitter).
//! - A malformed down-message is logged and skipped. Nothing here panics on input.
//! - Memory is bounded: the up channel holds [`UP_CHANNEL`] messages; beyond that the session
//!   waits for the transport (h2 flow control pushes back on us). Acks and heartbeats queue up to
//!   [`MAX_PENDING`]; at that point the session stops reading down-messages until the queue
//!   drains, which in turn pushes back on the gateway. The outbox is read [`OUTBOX_BATCH`] rows at
//!   a time.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use sneakernet_proto::auth::v1::KioskLoginRequest;
use sneakernet_proto::auth::v1::auth_service_client::AuthServiceClient;
use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::gateway::v1::kiosk_link_service_client::KioskLinkServiceClient;
use sneakernet_proto::gateway::v1::open_request::Body as Up;
use sneakernet_proto::gateway::v1::open_response::Body as Down;
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{ClientTlsConfig, Endpoint};

use crate::bays::{Bays, Inserted};
use crate::clock::KioskClock;
use crate::config::AgentConfig;
use crate::executor::{ExecError, Executor};
use crate::journal::Journal;
use crate::wire;

/// Messages the session may have handed to the transport and not yet sent.
pub const UP_CHANNEL: usize = 16;
/// Acks and heartbeats waiting for the up channel; at this many, down-messages are not read.
pub const MAX_PENDING: usize = 256;
/// Outbox rows read per query.
pub const OUTBOX_BATCH: u64 = 32;
/// Largest message accepted from or sent to the gateway.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// A link that lived longer than this resets the backoff.
pub const STABLE_LINK: Duration = Duration::from_secs(10);
/// How often the bays are asked for inserted items.
pub const RETURN_POLL: Duration = Duration::from_millis(200);
/// Used until Welcome says otherwise.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);
const DEFAULT_OFFLINE_AFTER: Duration = Duration::from_secs(45);
/// Connecting, logging in and opening the stream each give up after this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Exponential backoff with full jitter: the n-th wait is uniform in `[0, min(max, initial *
/// 2^n)]`, so a fleet of kiosks reconnecting after a gateway restart spreads out instead of
/// arriving together.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `initial`, never above `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            attempt: 0,
        }
    }

    /// The upper bound of the next wait.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32 << self.attempt.min(31);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The next wait, drawn from `rng`; each call doubles the ceiling (up to the cap).
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.random_range(0..=nanos))
    }

    /// Back to the first step (after a link that was stable).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// An access token and when to renew it.
#[derive(Clone)]
struct AccessToken {
    token: String,
    renew_at: Instant,
}

/// How a session ended.
enum SessionEnd {
    /// The agent is stopping.
    Stopped,
    /// The token is about to expire: reconnect at once with a new one.
    Renew,
    /// The gateway asked us to come back after this long.
    Reconnect(Duration),
    /// The link broke or could not be opened.
    Lost {
        reason: String,
        unauthenticated: bool,
    },
}

fn lost(reason: impl Into<String>) -> SessionEnd {
    SessionEnd::Lost {
        reason: reason.into(),
        unauthenticated: false,
    }
}

fn lost_status(context: &str, status: &tonic::Status) -> SessionEnd {
    SessionEnd::Lost {
        reason: format!("{context}: {:?}: {}", status.code(), status.message()),
        unauthenticated: status.code() == tonic::Code::Unauthenticated,
    }
}

/// A gRPC endpoint for `url` with the agent's timeouts, keepalive and (for https) TLS.
pub fn endpoint(url: &str) -> Result<Endpoint, String> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| format!("bad url {url:?}: {e}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    if url.starts_with("https://") {
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().with_enabled_roots())
            .map_err(|e| format!("tls for {url:?}: {e}"))?;
    }
    Ok(endpoint)
}

/// Logs in with the kiosk's credential; returns the token and its expiry.
pub(crate) async fn kiosk_login(
    config: &AgentConfig,
) -> Result<(String, Option<DateTime<Utc>>), tonic::Status> {
    let secret = config
        .secret()
        .map_err(|e| tonic::Status::failed_precondition(e.to_string()))?;
    let channel = endpoint(&config.auth_url)
        .map_err(tonic::Status::invalid_argument)?
        .timeout(CONNECT_TIMEOUT)
        .connect()
        .await
        .map_err(|e| {
            tonic::Status::unavailable(format!(
                "cannot reach auth at {} (auth_url): {e}",
                config.auth_url
            ))
        })?;
    let response = AuthServiceClient::new(channel)
        .kiosk_login(KioskLoginRequest {
            kiosk_id: config.kiosk_id.clone(),
            secret,
        })
        .await?
        .into_inner();
    let expires_at = response
        .access_token_expires_at
        .as_ref()
        .and_then(wire::from_timestamp);
    Ok((response.access_token, expires_at))
}

/// Everything the link's tasks share.
pub(crate) struct Link<B: Bays> {
    pub config: Arc<AgentConfig>,
    pub journal: Journal,
    pub bays: Arc<B>,
    pub executor: Arc<Executor<B>>,
    pub clock: KioskClock,
    /// Notified when the outbox gained a message.
    pub outbox_ready: Arc<Notify>,
    /// Notified when a command was journaled for the worker.
    pub work_ready: Arc<Notify>,
    pub stop: CancellationToken,
}

impl<B: Bays> Link<B> {
    /// Keeps a link open until `stop`: log in, open, run a session, back off, again.
    pub(crate) async fn run(self: Arc<Self>) {
        let mut backoff = Backoff::new(
            self.config.link.backoff_initial,
            self.config.link.backoff_max,
        );
        let mut token: Option<AccessToken> = None;
        loop {
            let mut opened_at = None;
            let end = self.session(&mut token, &mut opened_at).await;
            if opened_at.is_some_and(|at: Instant| at.elapsed() > STABLE_LINK) {
                backoff.reset();
            }
            let jitter = backoff.next_delay(&mut rand::rng());
            let delay = match end {
                SessionEnd::Stopped => break,
                SessionEnd::Renew => {
                    tracing::info!("renewing the access token; reopening the link");
                    token = None;
                    backoff.reset();
                    Duration::ZERO
                }
                SessionEnd::Reconnect(after) => after.saturating_add(jitter),
                SessionEnd::Lost {
                    reason,
                    unauthenticated,
                } => {
                    if unauthenticated {
                        token = None;
                    }
                    tracing::warn!(%reason, retry_in_ms = jitter.as_millis() as u64, "link down");
                    jitter
                }
            };
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.stop.cancelled() => break,
            }
        }
        tracing::info!("link stopped");
    }

    async fn login(&self) -> Result<AccessToken, SessionEnd> {
        let (token, expires_at) = tokio::select! {
            result = kiosk_login(&self.config) => result.map_err(|s| lost_status("kiosk login", &s))?,
            () = self.stop.cancelled() => return Err(SessionEnd::Stopped),
        };
        let lifetime = expires_at
            .and_then(|at| (at - Utc::now()).to_std().ok())
            .unwrap_or(Duration::from_secs(300));
        // Renew a minute early, or at four fifths of a short lifetime.
        let margin = Duration::from_secs(60).min(lifetime / 5);
        Ok(AccessToken {
            token,
            renew_at: Instant::now() + lifetime.saturating_sub(margin),
        })
    }

    /// One link, from login to its end. `opened_at` is set once the stream is open.
    async fn session(
        &self,
        token: &mut Option<AccessToken>,
        opened_at: &mut Option<Instant>,
    ) -> SessionEnd {
        if self.stop.is_cancelled() {
            return SessionEnd::Stopped;
        }
        let access = match token.clone() {
            Some(access) if access.renew_at > Instant::now() => access,
            _ => match self.login().await {
                Ok(access) => {
                    *token = Some(access.clone());
                    access
                }
                Err(end) => return end,
            },
        };
        let channel = match endpoint(&self.config.gateway_url) {
            Ok(endpoint) => tokio::select! {
                connected = endpoint.connect() => match connected {
                    Ok(channel) => channel,
                    Err(e) => return lost(format!("cannot reach the gateway at {}: {e}", self.config.gateway_url)),
                },
                () = self.stop.cancelled() => return SessionEnd::Stopped,
            },
            Err(reason) => return lost(reason),
        };
        let (up, up_rx) = mpsc::channel::<pb::OpenRequest>(UP_CHANNEL);
        // Hello goes into the empty channel first, so it is the stream's first message.
        let hello = match self.hello().await {
            Ok(hello) => hello,
            Err(reason) => return lost(reason),
        };
        if up.try_send(hello).is_err() {
            return lost("cannot queue hello");
        }
        let mut request = tonic::Request::new(ReceiverStream::new(up_rx));
        match format!("Bearer {}", access.token).parse() {
            Ok(value) => {
                request.metadata_mut().insert("authorization", value);
            }
            Err(_) => {
                *token = None;
                return lost("the access token is not a valid header value");
            }
        }
        let mut client = KioskLinkServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let down = tokio::select! {
            opened = tokio::time::timeout(CONNECT_TIMEOUT, client.open(request)) => match opened {
                Ok(Ok(response)) => response.into_inner(),
                Ok(Err(status)) => return lost_status("open", &status),
                Err(_) => return lost("the gateway did not answer open in time"),
            },
            () = self.stop.cancelled() => return SessionEnd::Stopped,
        };
        *opened_at = Some(Instant::now());
        tracing::info!("link open");
        Session {
            link: self,
            pending: VecDeque::new(),
            outbox: VecDeque::new(),
            outbox_cursor: 0,
            outbox_dirty: true,
            heartbeat_every: DEFAULT_HEARTBEAT,
            offline_after: DEFAULT_OFFLINE_AFTER,
            last_heard: Instant::now(),
            renew_at: access.renew_at,
        }
        .run(up, down)
        .await
    }

    async fn hello(&self) -> Result<pb::OpenRequest, String> {
        let inventory = self
            .bays
            .inventory()
            .await
            .map_err(|e| format!("cannot take the inventory for hello: {e}"))?;
        let last_finished = self
            .journal
            .last_finished_command_id()
            .await
            .map_err(|e| format!("cannot read the journal for hello: {e}"))?;
        Ok(pb::OpenRequest {
            message_id: String::new(),
            body: Some(Up::Hello(pb::Hello {
                agent_version: env!("CARGO_PKG_VERSION").to_owned(),
                inventory: Some(wire::inventory(&inventory, self.clock.now())),
                last_finished_command_id: last_finished.unwrap_or_default(),
            })),
        })
    }

    /// Polls the bays for inserted items every [`RETURN_POLL`] and puts an `ItemReturned` for
    /// each into the outbox (whether or not the link is up). An item whose outbox write failed
    /// is retried on the next poll.
    pub(crate) async fn detect_returns(self: Arc<Self>) {
        let mut tick = tokio::time::interval(RETURN_POLL);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut unsent: VecDeque<Inserted> = VecDeque::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.stop.cancelled() => break,
            }
            match self.bays.take_inserted().await {
                Ok(items) => unsent.extend(items),
                Err(error) => tracing::warn!(%error, "cannot read inserted items"),
            }
            while let Some(inserted) = unsent.front() {
                let body = Up::ItemReturned(wire::item_returned(inserted));
                match self.journal.enqueue(body, self.clock.now()).await {
                    Ok(message_id) => {
                        tracing::info!(bay_id = %inserted.bay_id, item_id = %inserted.item.item_id, %message_id, "item returned");
                        unsent.pop_front();
                        self.outbox_ready.notify_one();
                    }
                    Err(error) => {
                        tracing::error!(%error, "cannot journal a returned item; retrying");
                        break;
                    }
                }
            }
        }
    }
}

/// One open stream's state, owned by the session task.
struct Session<'a, B: Bays> {
    link: &'a Link<B>,
    /// Acks and heartbeats (not durable), sent before outbox messages.
    pending: VecDeque<pb::OpenRequest>,
    /// Outbox messages read and not yet sent on this stream.
    outbox: VecDeque<pb::OpenRequest>,
    /// The last outbox seq read on this stream.
    outbox_cursor: i64,
    /// The outbox may hold messages after the cursor.
    outbox_dirty: bool,
    heartbeat_every: Duration,
    offline_after: Duration,
    last_heard: Instant,
    renew_at: Instant,
}

impl<B: Bays> Session<'_, B> {
    async fn run(
        mut self,
        up: mpsc::Sender<pb::OpenRequest>,
        mut down: tonic::Streaming<pb::OpenResponse>,
    ) -> SessionEnd {
        let mut heartbeat = new_heartbeat(self.heartbeat_every);
        loop {
            if self.outbox.is_empty() && self.outbox_dirty {
                match self
                    .link
                    .journal
                    .outbox_after(self.outbox_cursor, OUTBOX_BATCH)
                    .await
                {
                    Ok(batch) => {
                        self.outbox_dirty = batch.len() as u64 == OUTBOX_BATCH;
                        for message in batch {
                            self.outbox_cursor = message.seq;
                            self.outbox.push_back(message.request);
                        }
                    }
                    Err(error) => return lost(format!("cannot read the outbox: {error}")),
                }
            }
            let has_up = !self.pending.is_empty() || !self.outbox.is_empty();
            let can_read = self.pending.len() < MAX_PENDING;
            tokio::select! {
                () = self.link.stop.cancelled() => return SessionEnd::Stopped,
                permit = up.reserve(), if has_up => {
                    let Ok(permit) = permit else {
                        return lost("the gateway closed the up stream");
                    };
                    if let Some(message) = self.pending.pop_front().or_else(|| self.outbox.pop_front()) {
                        permit.send(message);
                    }
                }
                message = down.message(), if can_read => match message {
                    Ok(Some(message)) => {
                        self.last_heard = Instant::now();
                        if let Some(end) = self.on_message(message, &mut heartbeat).await {
                            return end;
                        }
                    }
                    Ok(None) => return lost("the gateway ended the link"),
                    Err(status) => return lost_status("link", &status),
                },
                () = self.link.outbox_ready.notified() => self.outbox_dirty = true,
                _ = heartbeat.tick() => {
                    if self.pending.len() < MAX_PENDING {
                        self.pending.push_back(pb::OpenRequest {
                            message_id: String::new(),
                            body: Some(Up::Heartbeat(pb::Heartbeat {
                                sent_at: Some(wire::timestamp(self.link.clock.now())),
                            })),
                        });
                    }
                }
                () = tokio::time::sleep_until(self.last_heard + self.offline_after) => {
                    return lost(format!("nothing heard for {:?}", self.offline_after));
                }
                () = tokio::time::sleep_until(self.renew_at) => return SessionEnd::Renew,
            }
        }
    }

    /// Handles one down-message; `Some` ends the session.
    async fn on_message(
        &mut self,
        message: pb::OpenResponse,
        heartbeat: &mut tokio::time::Interval,
    ) -> Option<SessionEnd> {
        match message.body {
            Some(Down::Welcome(welcome)) => {
                if let Some(server_time) =
                    welcome.server_time.as_ref().and_then(wire::from_timestamp)
                    && let Some(skew_ms) = self.link.clock.correct(server_time)
                    && skew_ms.abs() > 2000
                {
                    tracing::warn!(skew_ms, "kiosk clock differs from the gateway's; corrected");
                }
                let interval = welcome
                    .heartbeat_interval
                    .as_ref()
                    .and_then(wire::from_duration)
                    .filter(|d| {
                        (Duration::from_millis(100)..=Duration::from_secs(600)).contains(d)
                    });
                let offline = welcome
                    .offline_after
                    .as_ref()
                    .and_then(wire::from_duration)
                    .filter(|d| {
                        (Duration::from_millis(200)..=Duration::from_secs(3600)).contains(d)
                    });
                match (interval, offline) {
                    (Some(interval), Some(offline)) if offline > interval => {
                        self.heartbeat_every = interval;
                        self.offline_after = offline;
                        *heartbeat = new_heartbeat(interval);
                    }
                    _ => tracing::warn!(
                        "welcome has no usable heartbeat_interval/offline_after; keeping defaults"
                    ),
                }
                tracing::info!(session_id = %welcome.session_id, "link welcomed");
            }
            Some(Down::Command(command)) => {
                let command_id = command.command_id.clone();
                match self.link.executor.receive(&command).await {
                    Ok(arrival) => {
                        tracing::info!(command_id = %command_id, attempt = command.attempt, ?arrival, "command received");
                        self.pending.push_back(pb::OpenRequest {
                            message_id: String::new(),
                            body: Some(Up::Ack(pb::Ack { command_id })),
                        });
                        self.link.work_ready.notify_one();
                    }
                    Err(error @ ExecError::InvalidCommandId(_)) => {
                        tracing::warn!(%error, "malformed command skipped");
                    }
                    Err(error) => {
                        // Not acknowledged: the gateway resends it after the next reconnect.
                        tracing::error!(command_id = %command_id, %error, "cannot journal a command");
                    }
                }
            }
            Some(Down::Receipt(receipt)) => self.on_receipt(receipt).await,
            Some(Down::Heartbeat(_)) => {}
            Some(Down::Reconnect(reconnect)) => {
                let after = reconnect
                    .retry_after
                    .as_ref()
                    .and_then(wire::from_duration)
                    .unwrap_or(Duration::ZERO)
                    .min(Duration::from_secs(3600));
                tracing::info!(
                    reason = ?pb::ReconnectReason::try_from(reconnect.reason).unwrap_or_default(),
                    message = %reconnect.message,
                    retry_after_ms = after.as_millis() as u64,
                    "gateway asked to reconnect"
                );
                return Some(SessionEnd::Reconnect(after));
            }
            None => tracing::warn!("down-message without a body skipped"),
        }
        None
    }

    async fn on_receipt(&mut self, receipt: pb::Receipt) {
        if receipt.message_id.is_empty() {
            tracing::warn!("receipt without message_id skipped");
            return;
        }
        let message_id = receipt.message_id.as_str();
        match pb::ReceiptStatus::try_from(receipt.status) {
            Ok(pb::ReceiptStatus::Accepted | pb::ReceiptStatus::Duplicate) => {}
            Ok(pb::ReceiptStatus::Rejected) => {
                tracing::warn!(%message_id, error = %receipt.error, "gateway rejected a message; dropped");
            }
            _ => {
                tracing::warn!(%message_id, status = receipt.status, "receipt with unknown status skipped; message kept");
                return;
            }
        }
        match self.link.journal.remove_outbox(message_id).await {
            Ok(true) => {}
            Ok(false) => tracing::debug!(%message_id, "receipt for a message not in the outbox"),
            Err(error) => tracing::error!(%message_id, %error, "cannot drop a receipted message"),
        }
    }
}

fn new_heartbeat(every: Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval_at(Instant::now() + every, every);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_stays_within_its_ceiling_and_grows_to_the_cap() {
        let initial = Duration::from_millis(200);
        let cap = Duration::from_secs(30);
        let mut backoff = Backoff::new(initial, cap);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut ceilings = Vec::new();
        for _ in 0..40 {
            let ceiling = backoff.ceiling();
            let delay = backoff.next_delay(&mut rng);
            assert!(delay <= ceiling && ceiling <= cap, "{delay:?} {ceiling:?}");
            ceilings.push(ceiling);
        }
        assert_eq!(ceilings[0], initial);
        assert_eq!(ceilings[1], initial * 2);
        assert_eq!(ceilings[3], initial * 8);
        assert!(ceilings.windows(2).all(|w| w[0] <= w[1]), "never shrinks");
        assert_eq!(*ceilings.last().unwrap(), cap, "reaches the cap and stays");
        // Full jitter: waits spread over the whole range, not bunched near the top.
        let mut late = Backoff::new(initial, cap);
        for _ in 0..20 {
            late.next_delay(&mut rng);
        }
        let samples: Vec<_> = (0..200).map(|_| late.next_delay(&mut rng)).collect();
        assert!(samples.iter().any(|d| *d < cap / 4));
        assert!(samples.iter().any(|d| *d > cap * 3 / 4));
        backoff.reset();
        assert_eq!(backoff.ceiling(), initial);
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_tick_at_the_interval() {
        let start = Instant::now();
        let mut heartbeat = new_heartbeat(Duration::from_secs(5));
        heartbeat.tick().await;
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(5),
            "first beat after one interval"
        );
        heartbeat.tick().await;
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }
}
