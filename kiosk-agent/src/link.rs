//! The link to the device gateway: one `KioskLinkService.Open` stream at a time, kept up for as
//! long as the agent runs.
//!
//! Two kinds of device hold such a link: a kiosk, and a drive's own remote link module
//! ([`crate::drive`]). What differs is only who logs in and what Hello says ([`Speaker`]) and
//! what is done with a command ([`Perform`]); everything below holds for both.
//!
//! Guarantees:
//! - The kiosk logs in with its credential (KioskLogin), opens the stream with
//!   `authorization: Bearer <token>`, and sends Hello (agent version, full inventory, last
//!   finished command) before anything else; then it replays its whole outbox in `seq` order.
//! - The token is renewed before it expires on the open link: the agent logs in again and
//!   sends RenewToken with the new token; the gateway answers TokenRenewal and the link lives
//!   on, one session (no new Hello, no inventory written, nothing replayed). A refused renewal
//!   is tried again after [`RENEW_RETRY`].
//! - Only when the gateway does not answer RenewToken within [`RENEW_ANSWER_WAIT`] (a gateway
//!   that predates it ignores it), the token is renewed the old way, still without the kiosk
//!   ever looking offline: the agent opens a second link with the new token while the first
//!   keeps working, waits for that
//!   link's Welcome (the gateway has then made it the kiosk's session and tells the old one
//!   Reconnect REPLACED), and only then lets the old link go (after its REPLACED, or
//!   [`RETIRE_GRACE`]). Nothing on the old link is acted on once the new one took over: a
//!   command sent there and not acknowledged is resent on the new link, where the journal
//!   answers it; the new link replays the whole outbox. A failed renewal is retried every
//!   [`RENEW_RETRY`] while the old link lives.
//! - A link the gateway ends with UNAUTHENTICATED (the token expired, or a stored token was
//!   refused) makes the agent log in again and reconnect at once, with at most
//!   [`RELOGIN_JITTER`] of jitter instead of the backoff; once in a row only, so a revoked
//!   credential backs off like any other failure.
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
//! - Returns are durable end to end ([`report_returns`]): an inserted item's `ItemReturned` is
//!   committed to the outbox under the bay's insertion id before the bay forgets the item.
//! - Memory is bounded: the up channel holds [`UP_CHANNEL`] messages; beyond that the session
//!   waits for the transport (h2 flow control pushes back on us). Acks and heartbeats queue up to
//!   [`MAX_PENDING`]; at that point the session stops reading down-messages until the queue
//!   drains, which in turn pushes back on the gateway. The outbox is read [`OUTBOX_BATCH`] rows at
//!   a time.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
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

use crate::bays::{Bays, Drives, within};
use crate::clock::KioskClock;
use crate::config::{AgentConfig, LinkConfig};
use crate::executor::{ExecError, INVENTORY_TIMEOUT, Perform};
use crate::journal::Journal;
use crate::returns;
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
/// After the token renewal's new link is welcomed, the old link is kept open until the gateway
/// says REPLACED on it (so it never looks like a disconnect), but no longer than this.
pub const RETIRE_GRACE: Duration = Duration::from_secs(10);
/// A token renewal that failed is tried again after this, while the old link lives.
pub const RENEW_RETRY: Duration = Duration::from_secs(5);
/// How long the gateway has to answer RenewToken (at most half the token's remaining life)
/// before the agent renews by opening a new link instead.
pub const RENEW_ANSWER_WAIT: Duration = Duration::from_secs(10);
/// The most a reconnect after UNAUTHENTICATED waits (uniform jitter), instead of the backoff.
pub const RELOGIN_JITTER: Duration = Duration::from_millis(500);
/// A token is used at least this long before it is renewed, however short its lifetime, so a
/// gateway that hands out nearly-expired tokens cannot make the link churn.
const MIN_TOKEN_USE: Duration = Duration::from_secs(2);

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
    /// When it expires (by the issuer's word, on this process's timer).
    expires_at: Instant,
}

/// A token renewal on the open link ([`Session`]), step by step.
enum InBandRenewal<'a> {
    /// Nothing under way.
    Idle,
    /// Logging in for the new token.
    LoggingIn(Pin<Box<dyn Future<Output = Result<AccessToken, String>> + Send + 'a>>),
    /// RenewToken sent with `access`; waiting for TokenRenewal until `until`.
    Awaiting { access: AccessToken, until: Instant },
}

/// A link whose stream is open (Hello queued first) and that no session runs yet.
struct Opened {
    up: mpsc::Sender<pb::OpenRequest>,
    down: tonic::Streaming<pb::OpenResponse>,
    access: AccessToken,
    /// Its Welcome, when already read (a renewal waits for it before the old link goes).
    welcome: Option<pb::Welcome>,
}

/// An old link being let go: owns its stream until the gateway closes it or
/// [`RETIRE_GRACE`] passes, reading and ignoring whatever still arrives on it.
type Retiring = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A token renewal in flight: a new link being opened while the old one keeps working.
type Renewal<'a> = Pin<Box<dyn Future<Output = Result<Opened, String>> + Send + 'a>>;

/// How a session ended.
enum SessionEnd {
    /// The agent is stopping.
    Stopped,
    /// The token was renewed: continue on this new, welcomed link at once; the old link (if
    /// still open) retires beside it.
    Handover(Box<Opened>, Option<Retiring>),
    /// The gateway asked us to come back after this long.
    Reconnect(Duration),
    /// The gateway refused a token that had been accepted or was stored (it expired): log in
    /// again and reconnect at once.
    Expired(String),
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

/// A session end as one line, for a renewal that failed.
fn describe(end: &SessionEnd) -> String {
    match end {
        SessionEnd::Stopped => "stopping".to_owned(),
        SessionEnd::Handover(..) => "handed over".to_owned(),
        SessionEnd::Reconnect(after) => format!("asked to reconnect after {after:?}"),
        SessionEnd::Expired(reason) | SessionEnd::Lost { reason, .. } => reason.clone(),
    }
}

/// Awaits the future in `slot`; never completes when the slot is empty (a disabled branch).
async fn in_slot<F: Future + Unpin>(slot: &mut Option<F>) -> F::Output {
    match slot {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

/// How long before a token of `lifetime` expires it is renewed: a minute early, or at four
/// fifths of a short lifetime.
fn renewal_margin(lifetime: Duration) -> Duration {
    Duration::from_secs(60).min(lifetime / 5)
}

/// Awaits the login of an in-band renewal; never completes in any other step.
async fn in_login(step: &mut InBandRenewal<'_>) -> Result<AccessToken, String> {
    match step {
        InBandRenewal::LoggingIn(login) => login.await,
        _ => std::future::pending().await,
    }
}

/// Lets an old link go gracefully: keeps its up-stream open (so the gateway does not see a
/// disconnect) until the gateway's Reconnect or end of stream, at most [`RETIRE_GRACE`].
/// Commands arriving meanwhile are not acknowledged here: the gateway resends them on the new
/// link, where the journal answers them, so nothing runs twice.
fn retire(
    up: mpsc::Sender<pb::OpenRequest>,
    mut down: tonic::Streaming<pb::OpenResponse>,
) -> Retiring {
    Box::pin(async move {
        let _up = up;
        let until = Instant::now() + RETIRE_GRACE;
        loop {
            match tokio::time::timeout_at(until, down.message()).await {
                Ok(Ok(Some(pb::OpenResponse {
                    body: Some(Down::Reconnect(reconnect)),
                }))) => {
                    tracing::debug!(
                        reason = ?pb::ReconnectReason::try_from(reconnect.reason).unwrap_or_default(),
                        "old link closed by the gateway after the renewal"
                    );
                    break;
                }
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None) | Err(_)) => break,
                Err(_) => {
                    tracing::debug!("old link not closed by the gateway in time; dropped");
                    break;
                }
            }
        }
    })
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

/// What differs between the devices that hold a link: how the device logs in and what its
/// Hello says. The stream, outbox replay, heartbeats, token renewal and reconnects are
/// [`Link`]'s, the same for every device.
pub(crate) trait Speaker: Send + Sync + 'static {
    /// Logs in with the device's credential: an access token and when it expires.
    fn login(
        &self,
    ) -> impl Future<Output = Result<(String, Option<DateTime<Utc>>), tonic::Status>> + Send;

    /// The Hello that opens every link of this device.
    fn hello(&self) -> impl Future<Output = Result<pb::Hello, String>> + Send;
}

/// A kiosk on the link: logs in with KioskLogin, says Hello with its whole inventory.
pub(crate) struct KioskSpeaker<B: Bays> {
    pub config: Arc<AgentConfig>,
    pub bays: Arc<B>,
    pub journal: Journal,
    pub clock: KioskClock,
}

impl<B: Bays> Speaker for KioskSpeaker<B> {
    async fn login(&self) -> Result<(String, Option<DateTime<Utc>>), tonic::Status> {
        kiosk_login(&self.config).await
    }

    async fn hello(&self) -> Result<pb::Hello, String> {
        let inventory = within(INVENTORY_TIMEOUT, "inventory", self.bays.inventory())
            .await
            .map_err(|e| format!("cannot take the inventory for hello: {e}"))?;
        let last_finished = last_finished(&self.journal).await?;
        Ok(pb::Hello {
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            inventory: Some(wire::inventory(&inventory, self.clock.now())),
            last_finished_command_id: last_finished,
        })
    }
}

/// The last command `journal` finished, for Hello ("" when none).
pub(crate) async fn last_finished(journal: &Journal) -> Result<String, String> {
    Ok(journal
        .last_finished_command_id()
        .await
        .map_err(|e| format!("cannot read the journal for hello: {e}"))?
        .unwrap_or_default())
}

/// Everything the link's tasks share.
pub(crate) struct Link<D: Speaker, E: Perform> {
    /// Who is on this end of the link.
    pub device: D,
    /// gRPC address of the device gateway.
    pub gateway_url: String,
    /// How the link reconnects.
    pub settings: LinkConfig,
    pub journal: Journal,
    pub executor: Arc<E>,
    pub clock: KioskClock,
    /// Notified when the outbox gained a message.
    pub outbox_ready: Arc<Notify>,
    /// Notified when a command was journaled for the worker.
    pub work_ready: Arc<Notify>,
    /// Progress of long commands, taken by the session that is up ([`ProgressFeed`]).
    pub progress: std::sync::Mutex<Option<mpsc::Receiver<pb::Progress>>>,
    pub stop: CancellationToken,
}

impl<D: Speaker, E: Perform> Link<D, E> {
    /// Keeps a link open until `stop`: log in, open, run a session, back off, again.
    pub(crate) async fn run(self: Arc<Self>) {
        let mut backoff = Backoff::new(self.settings.backoff_initial, self.settings.backoff_max);
        let mut token: Option<AccessToken> = None;
        let mut handed_over: Option<(Box<Opened>, Option<Retiring>)> = None;
        // One prompt re-login after UNAUTHENTICATED, then backoff until a link is stable.
        let mut relogin_promptly = true;
        loop {
            let mut opened_at = None;
            let end = match handed_over.take() {
                Some((opened, retiring)) => {
                    opened_at = Some(Instant::now());
                    self.run_session(*opened, retiring).await
                }
                None => self.session(&mut token, &mut opened_at).await,
            };
            if opened_at.is_some_and(|at: Instant| at.elapsed() > STABLE_LINK) {
                backoff.reset();
                relogin_promptly = true;
            }
            let delay = match end {
                SessionEnd::Stopped => break,
                SessionEnd::Handover(opened, retiring) => {
                    tracing::info!("access token renewed; continuing on the new link");
                    token = Some(opened.access.clone());
                    handed_over = Some((opened, retiring));
                    continue;
                }
                SessionEnd::Reconnect(after) => {
                    after.saturating_add(backoff.next_delay(&mut rand::rng()))
                }
                SessionEnd::Expired(reason) if relogin_promptly => {
                    token = None;
                    relogin_promptly = false;
                    let ceiling = RELOGIN_JITTER.min(self.settings.backoff_initial);
                    let delay = Backoff::new(ceiling, ceiling).next_delay(&mut rand::rng());
                    tracing::info!(%reason, retry_in_ms = delay.as_millis() as u64, "token refused; logging in again");
                    delay
                }
                SessionEnd::Expired(reason) => {
                    token = None;
                    let delay = backoff.next_delay(&mut rand::rng());
                    tracing::warn!(%reason, retry_in_ms = delay.as_millis() as u64, "token refused again; backing off");
                    delay
                }
                SessionEnd::Lost {
                    reason,
                    unauthenticated,
                } => {
                    if unauthenticated {
                        token = None;
                    }
                    let delay = backoff.next_delay(&mut rand::rng());
                    tracing::warn!(%reason, retry_in_ms = delay.as_millis() as u64, "link down");
                    delay
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
            result = self.device.login() => result.map_err(|s| lost_status("login", &s))?,
            () = self.stop.cancelled() => return Err(SessionEnd::Stopped),
        };
        let lifetime = expires_at
            .and_then(|at| (at - Utc::now()).to_std().ok())
            .unwrap_or(Duration::from_secs(300));
        let now = Instant::now();
        Ok(AccessToken {
            token,
            renew_at: now
                + lifetime
                    .saturating_sub(renewal_margin(lifetime))
                    .max(MIN_TOKEN_USE),
            expires_at: now + lifetime,
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
        let (access, fresh) = match token.clone() {
            Some(access) if access.renew_at > Instant::now() => (access, false),
            _ => match self.login().await {
                Ok(access) => {
                    *token = Some(access.clone());
                    (access, true)
                }
                Err(end) => return end,
            },
        };
        let (up, down) = match self.open_link(&access).await {
            Ok(link) => link,
            // A stored token refused: it expired early (clock, revocation); log in again
            // at once. A fresh one refused is a credential problem: back off.
            Err(SessionEnd::Lost {
                reason,
                unauthenticated: true,
            }) if !fresh => return SessionEnd::Expired(reason),
            Err(end) => return end,
        };
        *opened_at = Some(Instant::now());
        self.run_session(
            Opened {
                up,
                down,
                access,
                welcome: None,
            },
            None,
        )
        .await
    }

    /// Connects to the gateway and opens the stream with `access`, Hello queued first.
    async fn open_link(
        &self,
        access: &AccessToken,
    ) -> Result<
        (
            mpsc::Sender<pb::OpenRequest>,
            tonic::Streaming<pb::OpenResponse>,
        ),
        SessionEnd,
    > {
        let channel = match endpoint(&self.gateway_url) {
            Ok(endpoint) => tokio::select! {
                connected = endpoint.connect() => match connected {
                    Ok(channel) => channel,
                    Err(e) => return Err(lost(format!("cannot reach the gateway at {}: {e}", self.gateway_url))),
                },
                () = self.stop.cancelled() => return Err(SessionEnd::Stopped),
            },
            Err(reason) => return Err(lost(reason)),
        };
        let (up, up_rx) = mpsc::channel::<pb::OpenRequest>(UP_CHANNEL);
        // Hello goes into the empty channel first, so it is the stream's first message.
        let hello = self.hello().await.map_err(lost)?;
        if up.try_send(hello).is_err() {
            return Err(lost("cannot queue hello"));
        }
        let mut request = tonic::Request::new(ReceiverStream::new(up_rx));
        let Ok(value) = format!("Bearer {}", access.token).parse() else {
            return Err(SessionEnd::Lost {
                reason: "the access token is not a valid header value".into(),
                unauthenticated: true,
            });
        };
        request.metadata_mut().insert("authorization", value);
        let mut client = KioskLinkServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let down = tokio::select! {
            opened = tokio::time::timeout(CONNECT_TIMEOUT, client.open(request)) => match opened {
                Ok(Ok(response)) => response.into_inner(),
                Ok(Err(status)) => return Err(lost_status("open", &status)),
                Err(_) => return Err(lost("the gateway did not answer open in time")),
            },
            () = self.stop.cancelled() => return Err(SessionEnd::Stopped),
        };
        Ok((up, down))
    }

    /// The token renewal by a new link (the fallback for a gateway that does not answer
    /// RenewToken): opens a new link with `access` (logging in again when `None`), and returns
    /// it once its Welcome arrived. The gateway claims the kiosk for the new link before it
    /// sends Welcome, so the old link can go from then on without the kiosk ever being marked
    /// offline.
    async fn successor(&self, access: Option<AccessToken>) -> Result<Opened, String> {
        let access = match access {
            Some(access) => access,
            None => self.login().await.map_err(|end| describe(&end))?,
        };
        let (up, mut down) = self
            .open_link(&access)
            .await
            .map_err(|end| describe(&end))?;
        let first = tokio::select! {
            first = tokio::time::timeout(CONNECT_TIMEOUT, down.message()) => first,
            () = self.stop.cancelled() => return Err("stopping".into()),
        };
        match first {
            Ok(Ok(Some(pb::OpenResponse {
                body: Some(Down::Welcome(welcome)),
            }))) => Ok(Opened {
                up,
                down,
                access,
                welcome: Some(welcome),
            }),
            Ok(Ok(Some(_))) => Err("the new link's first message is not Welcome".into()),
            Ok(Ok(None)) => Err("the gateway ended the new link before Welcome".into()),
            Ok(Err(status)) => Err(format!(
                "new link: {:?}: {}",
                status.code(),
                status.message()
            )),
            Err(_) => Err("no Welcome on the new link in time".into()),
        }
    }

    /// Runs a session on an open link until it ends; `retiring` is an old link being let go.
    async fn run_session(&self, opened: Opened, retiring: Option<Retiring>) -> SessionEnd {
        tracing::info!(renewed = opened.welcome.is_some(), "link open");
        let Opened {
            up,
            down,
            access,
            welcome,
        } = opened;
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
            expires_at: access.expires_at,
            in_band: InBandRenewal::Idle,
            renewal: None,
            retiring,
        }
        .run(up, down, welcome)
        .await
    }

    async fn hello(&self) -> Result<pb::OpenRequest, String> {
        Ok(pb::OpenRequest {
            message_id: String::new(),
            body: Some(Up::Hello(self.device.hello().await?)),
        })
    }
}

/// The kiosk's return detector: polls the bays for inserted items every [`RETURN_POLL`] and
/// reports them durably with [`report_returns`] (whether or not the link is up), then checks
/// returned drives ([`returns::check_returned_drives`]). Anything that failed stays pending
/// in the bays and is tried again on the next poll.
pub(crate) async fn detect_returns<B: Bays + Drives>(
    bays: Arc<B>,
    journal: Journal,
    clock: KioskClock,
    outbox_ready: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(RETURN_POLL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => break,
        }
        let reported = report_returns(&*bays, &journal, &clock).await;
        if reported.queued > 0 {
            outbox_ready.notify_one();
        }
        if let Some(error) = reported.error {
            tracing::warn!(%error, "cannot report returned items yet; retrying");
        }
        match returns::check_returned_drives(&bays, &journal, &clock).await {
            Ok(checked) if !checked.is_empty() => outbox_ready.notify_one(),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot check returned drives yet; retrying"),
        }
    }
}

/// What one [`report_returns`] round did.
#[derive(Debug, Default)]
pub struct Reported {
    /// `ItemReturned` messages added to the outbox.
    pub queued: usize,
    /// Insertions the bays were told to forget.
    pub confirmed: usize,
    /// What stopped the round early, if anything (the rest is tried next round).
    pub error: Option<ExecError>,
}

/// Reports every insertion the bays hold pending, oldest first, durably and exactly once:
/// 1. its `ItemReturned` is committed to the outbox under `message_id` = the insertion id
///    ([`Journal::enqueue_once`]: a no-op when already there);
/// 2. only then the bays forget it ([`Bays::confirm_inserted`]).
///
/// A crash or error between the two leaves the insertion pending: the next round repeats both
/// steps under the same id, so the outbox never holds two messages for one return, and a
/// repeat after the gateway's receipt is recognised by the gateway as a duplicate.
pub async fn report_returns<B: Bays>(bays: &B, journal: &Journal, clock: &KioskClock) -> Reported {
    let mut reported = Reported::default();
    let pending = match within(
        INVENTORY_TIMEOUT,
        "pending_inserted",
        bays.pending_inserted(),
    )
    .await
    {
        Ok(pending) => pending,
        Err(error) => {
            reported.error = Some(error.into());
            return reported;
        }
    };
    for inserted in pending {
        let body = Up::ItemReturned(wire::item_returned(&inserted));
        match journal
            .enqueue_once(&inserted.insertion_id, body, clock.now())
            .await
        {
            Ok(added) => {
                if added {
                    reported.queued += 1;
                    tracing::info!(bay_id = %inserted.bay_id, item_id = %inserted.item.item_id, message_id = %inserted.insertion_id, "item returned");
                }
            }
            Err(error) => {
                reported.error = Some(error.into());
                return reported;
            }
        }
        let confirm = within(
            INVENTORY_TIMEOUT,
            "confirm_inserted",
            bays.confirm_inserted(&inserted.insertion_id),
        );
        match confirm.await {
            Ok(()) => reported.confirmed += 1,
            Err(error) => {
                reported.error = Some(error.into());
                return reported;
            }
        }
    }
    reported
}

/// One open stream's state, owned by the session task.
struct Session<'a, D: Speaker, E: Perform> {
    link: &'a Link<D, E>,
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
    /// When to start (or retry) the token renewal.
    renew_at: Instant,
    /// When the token this link holds expires (the gateway then ends the link).
    expires_at: Instant,
    /// The token renewal on this link, when one is under way.
    in_band: InBandRenewal<'a>,
    /// The fallback renewal's new link, being opened while this one keeps working.
    renewal: Option<Renewal<'a>>,
    /// The link this one replaced, being let go.
    retiring: Option<Retiring>,
}

impl<D: Speaker, E: Perform> Session<'_, D, E> {
    async fn run(
        mut self,
        up: mpsc::Sender<pb::OpenRequest>,
        mut down: tonic::Streaming<pb::OpenResponse>,
        welcome: Option<pb::Welcome>,
    ) -> SessionEnd {
        let mut heartbeat = new_heartbeat(self.heartbeat_every);
        let mut feed = ProgressFeed::take(&self.link.progress);
        if let Some(welcome) = welcome {
            self.on_welcome(welcome, &mut heartbeat);
        }
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
            let mut handover = None;
            let has_up = !self.pending.is_empty() || !self.outbox.is_empty();
            let can_read = self.pending.len() < MAX_PENDING;
            // When the gateway's answer to RenewToken is overdue, if one is awaited.
            let answer_due = match &self.in_band {
                InBandRenewal::Awaiting { until, .. } => Some(*until),
                _ => None,
            };
            tokio::select! {
                () = self.link.stop.cancelled() => return SessionEnd::Stopped,
                permit = up.reserve(), if has_up => {
                    let Ok(permit) = permit else {
                        return lost("the gateway closed the up stream");
                    };
                    if let Some(message) = self.pending.pop_front().or_else(|| self.outbox.pop_front()) {
                        permit.send(wire::outgoing(message, self.link.clock.now()));
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
                    // The token expired (or was revoked): log in again at once.
                    Err(status) if status.code() == tonic::Code::Unauthenticated => {
                        return SessionEnd::Expired(format!("link: {}", status.message()));
                    }
                    Err(status) => return lost_status("link", &status),
                },
                () = self.link.outbox_ready.notified() => self.outbox_dirty = true,
                update = feed.next(), if can_read => {
                    self.pending.push_back(pb::OpenRequest {
                        message_id: String::new(),
                        body: Some(Up::Progress(update)),
                    });
                }
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
                () = tokio::time::sleep_until(self.renew_at), if self.renewal.is_none() && matches!(self.in_band, InBandRenewal::Idle) => {
                    tracing::info!("renewing the access token on the open link");
                    let link = self.link;
                    self.in_band = InBandRenewal::LoggingIn(Box::pin(async move {
                        link.login().await.map_err(|end| describe(&end))
                    }));
                }
                logged_in = in_login(&mut self.in_band) => match logged_in {
                    Ok(access) => {
                        let now = Instant::now();
                        // Half the held token's remaining life at most, so the fallback
                        // still has time before the link ends.
                        let until = now + RENEW_ANSWER_WAIT.min(self.expires_at.saturating_duration_since(now) / 2);
                        self.pending.push_front(pb::OpenRequest {
                            message_id: String::new(),
                            body: Some(Up::RenewToken(pb::RenewToken {
                                access_token: access.token.clone(),
                            })),
                        });
                        self.in_band = InBandRenewal::Awaiting { access, until };
                    }
                    Err(reason) => {
                        tracing::warn!(%reason, retry_in_s = RENEW_RETRY.as_secs(), "token renewal failed; this link stays up");
                        self.in_band = InBandRenewal::Idle;
                        self.renew_at = Instant::now() + RENEW_RETRY;
                    }
                },
                () = tokio::time::sleep_until(answer_due.unwrap_or_else(Instant::now)), if answer_due.is_some() => {
                    let InBandRenewal::Awaiting { access, .. } = std::mem::replace(&mut self.in_band, InBandRenewal::Idle) else {
                        continue;
                    };
                    tracing::info!("the gateway did not answer the renewal on the link; opening a new link before letting this one go");
                    self.renewal = Some(Box::pin(self.link.successor(Some(access))));
                }
                renewed = in_slot(&mut self.renewal) => {
                    self.renewal = None;
                    match renewed {
                        Ok(next) => handover = Some(next),
                        Err(reason) => {
                            tracing::warn!(%reason, retry_in_s = RENEW_RETRY.as_secs(), "token renewal failed; this link stays up");
                            self.renew_at = Instant::now() + RENEW_RETRY;
                        }
                    }
                }
                () = in_slot(&mut self.retiring) => self.retiring = None,
            }
            if let Some(next) = handover {
                // The new link is welcomed: this one retires beside it.
                return SessionEnd::Handover(Box::new(next), Some(retire(up, down)));
            }
        }
    }

    /// The old link got REPLACED while our renewal was opening its successor: the gateway
    /// has taken the new link; finish the handover rather than reconnecting.
    async fn finish_renewal(&mut self) -> SessionEnd {
        let Some(renewal) = self.renewal.take() else {
            return lost("replaced, with no renewal in flight");
        };
        tokio::select! {
            renewed = renewal => match renewed {
                Ok(next) => SessionEnd::Handover(Box::new(next), None),
                Err(reason) => lost(format!("replaced by our renewal, whose link then failed: {reason}")),
            },
            () = self.link.stop.cancelled() => SessionEnd::Stopped,
        }
    }

    fn on_welcome(&mut self, welcome: pb::Welcome, heartbeat: &mut tokio::time::Interval) {
        if let Some(server_time) = welcome.server_time.as_ref().and_then(wire::from_timestamp)
            && let Some(skew_ms) = self.link.clock.correct(server_time)
            && skew_ms.abs() > 2000
        {
            tracing::warn!(skew_ms, "kiosk clock differs from the gateway's; corrected");
        }
        let interval = welcome
            .heartbeat_interval
            .as_ref()
            .and_then(wire::from_duration)
            .filter(|d| (Duration::from_millis(100)..=Duration::from_secs(600)).contains(d));
        let offline = welcome
            .offline_after
            .as_ref()
            .and_then(wire::from_duration)
            .filter(|d| (Duration::from_millis(200)..=Duration::from_secs(3600)).contains(d));
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

    /// Handles one down-message; `Some` ends the session.
    async fn on_message(
        &mut self,
        message: pb::OpenResponse,
        heartbeat: &mut tokio::time::Interval,
    ) -> Option<SessionEnd> {
        match message.body {
            Some(Down::Welcome(welcome)) => self.on_welcome(welcome, heartbeat),
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
            Some(Down::TokenRenewal(answer)) => self.on_token_renewal(answer),
            Some(Down::Reconnect(reconnect))
                if reconnect.reason == pb::ReconnectReason::Replaced as i32
                    && self.renewal.is_some() =>
            {
                tracing::info!("this link was replaced by the renewal's new link");
                return Some(self.finish_renewal().await);
            }
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

    /// The gateway's answer to our RenewToken: from now on the link lives as long as the new
    /// token, or (refused) the renewal is tried again after [`RENEW_RETRY`].
    fn on_token_renewal(&mut self, answer: pb::TokenRenewal) {
        let InBandRenewal::Awaiting { access, .. } =
            std::mem::replace(&mut self.in_band, InBandRenewal::Idle)
        else {
            tracing::warn!("token renewal answer with no renewal under way skipped");
            return;
        };
        if answer.error.is_empty() {
            tracing::info!("access token renewed on the open link");
            // The gateway's word on when the link ends (the token's `exp`, in whole seconds)
            // may be earlier than the login said: renew before whichever comes first.
            let now = Instant::now();
            let left = answer
                .expires_at
                .as_ref()
                .and_then(wire::from_timestamp)
                .and_then(|at| (at - self.link.clock.now()).to_std().ok());
            let renew_at =
                left.map(|left| now + left.saturating_sub(renewal_margin(left)).max(MIN_TOKEN_USE));
            self.renew_at = renew_at.map_or(access.renew_at, |at| at.min(access.renew_at));
            self.expires_at = left.map_or(access.expires_at, |left| {
                (now + left).min(access.expires_at)
            });
        } else {
            tracing::warn!(error = %answer.error, retry_in_s = RENEW_RETRY.as_secs(), "the gateway refused the renewed token; this link stays up");
            self.renew_at = Instant::now() + RENEW_RETRY;
        }
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

/// The progress receiver, held by the session that is up and given back when it ends. Progress
/// is not durable: updates queued while no link was up are dropped when a session takes the
/// feed (they are stale), and the executor drops new ones while the queue is full.
struct ProgressFeed<'a> {
    slot: &'a std::sync::Mutex<Option<mpsc::Receiver<pb::Progress>>>,
    rx: Option<mpsc::Receiver<pb::Progress>>,
}

impl<'a> ProgressFeed<'a> {
    fn take(slot: &'a std::sync::Mutex<Option<mpsc::Receiver<pb::Progress>>>) -> Self {
        let mut rx = slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(rx) = rx.as_mut() {
            while rx.try_recv().is_ok() {}
        }
        Self { slot, rx }
    }

    /// The next update; never resolves when there is no feed or no sender left.
    async fn next(&mut self) -> pb::Progress {
        match self.rx.as_mut() {
            Some(rx) => match rx.recv().await {
                Some(update) => update,
                None => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }
}

impl Drop for ProgressFeed<'_> {
    fn drop(&mut self) {
        if let Some(rx) = self.rx.take() {
            *self
                .slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(rx);
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

    #[tokio::test]
    async fn a_session_takes_the_progress_feed_without_stale_updates_and_gives_it_back() {
        let (tx, rx) = mpsc::channel(4);
        let slot = std::sync::Mutex::new(Some(rx));
        let stale = pb::Progress {
            command_id: "C-old".into(),
            ..pb::Progress::default()
        };
        tx.try_send(stale).unwrap();
        {
            let mut feed = ProgressFeed::take(&slot);
            assert!(slot.lock().unwrap().is_none(), "held by the session");
            tx.try_send(pb::Progress {
                command_id: "C-1".into(),
                ..pb::Progress::default()
            })
            .unwrap();
            assert_eq!(
                feed.next().await.command_id,
                "C-1",
                "the stale one was dropped"
            );
        }
        assert!(
            slot.lock().unwrap().is_some(),
            "given back when the session ends"
        );
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

    mod returns {
        use super::super::*;
        use crate::bays::{BayError, BayInfo, Ejected, Inserted, ItemInfo};
        use crate::config::{
            SimBayConfig, SimFaults, SimItemConfig, SimItemKind, SimulationConfig,
        };
        use crate::simulated::SimulatedBays;

        fn simulation() -> SimulationConfig {
            SimulationConfig {
                bays: vec![SimBayConfig {
                    id: "A01".into(),
                    item: None,
                }],
                faults: SimFaults::default(),
            }
        }

        fn drive(id: &str) -> SimItemConfig {
            SimItemConfig {
                kind: SimItemKind::Drive,
                item_id: id.into(),
                capacity_bytes: Some(1000),
                content_package_id: None,
                write_protected: false,
                charge_percent: None,
                remote_link: false,
            }
        }

        /// Simulated bays on which the agent "dies" right before confirming an insertion.
        struct DiesBeforeConfirm(SimulatedBays);

        impl Bays for DiesBeforeConfirm {
            async fn inventory(&self) -> Result<Vec<BayInfo>, BayError> {
                self.0.inventory().await
            }
            async fn eject(&self, bay_id: &str) -> Result<Ejected, BayError> {
                self.0.eject(bay_id).await
            }
            async fn set_write_protect(
                &self,
                item_id: &str,
                on: bool,
            ) -> Result<ItemInfo, BayError> {
                self.0.set_write_protect(item_id, on).await
            }
            async fn wipe(&self, item_id: &str) -> Result<ItemInfo, BayError> {
                self.0.wipe(item_id).await
            }
            async fn pin(&self, item_id: &str, order_id: &str) -> Result<ItemInfo, BayError> {
                self.0.pin(item_id, order_id).await
            }
            async fn unpin(&self, item_id: &str, order_id: &str) -> Result<ItemInfo, BayError> {
                self.0.unpin(item_id, order_id).await
            }
            async fn pending_inserted(&self) -> Result<Vec<Inserted>, BayError> {
                self.0.pending_inserted().await
            }
            async fn confirm_inserted(&self, _: &str) -> Result<(), BayError> {
                Err(BayError::Storage("killed".into()))
            }
        }

        async fn returns_in_outbox(journal: &Journal) -> Vec<pb::OpenRequest> {
            journal
                .outbox_after(0, 100)
                .await
                .unwrap()
                .into_iter()
                .map(|m| m.request)
                .filter(|r| matches!(r.body, Some(Up::ItemReturned(_))))
                .collect()
        }

        #[tokio::test]
        async fn a_return_reaches_the_outbox_exactly_once_whatever_the_crash_point() {
            let dir = tempfile::tempdir().unwrap();
            let clock = KioskClock::new();
            let bays = SimulatedBays::open(dir.path(), &simulation())
                .await
                .unwrap();
            bays.insert("A01", drive("D-9")).await.unwrap();
            let insertion_id = bays.pending_inserted().await.unwrap()[0]
                .insertion_id
                .clone();

            // 1. The outbox write fails (the journal is gone): the bays keep the item pending.
            let journal = Journal::open(dir.path()).await.unwrap();
            journal.clone().close().await;
            let round = report_returns(&bays, &journal, &clock).await;
            assert!(round.error.is_some());
            assert_eq!((round.queued, round.confirmed), (0, 0));
            assert_eq!(bays.pending_inserted().await.unwrap().len(), 1, "not lost");

            // 2. The outbox write commits, then the agent dies before confirming.
            let journal = Journal::open(dir.path()).await.unwrap();
            let round = report_returns(&DiesBeforeConfirm(bays.clone()), &journal, &clock).await;
            assert_eq!((round.queued, round.confirmed), (1, 0));
            drop(bays);

            // 3. Restart: the insertion is still pending; reporting it again adds nothing.
            let bays = SimulatedBays::open(dir.path(), &simulation())
                .await
                .unwrap();
            let round = report_returns(&bays, &journal, &clock).await;
            assert!(round.error.is_none(), "{:?}", round.error);
            assert_eq!((round.queued, round.confirmed), (0, 1));
            assert!(bays.pending_inserted().await.unwrap().is_empty());

            let returns = returns_in_outbox(&journal).await;
            assert_eq!(returns.len(), 1, "exactly one ItemReturned");
            assert_eq!(
                returns[0].message_id, insertion_id,
                "keyed by the insertion"
            );
            assert!(matches!(
                returns[0].body,
                Some(Up::ItemReturned(ref r)) if r.bay_id == "A01"
                    && r.item.as_ref().is_some_and(|i| i.item_id == "D-9")
            ));
            // Nothing more on later rounds.
            let round = report_returns(&bays, &journal, &clock).await;
            assert_eq!((round.queued, round.confirmed), (0, 0));
            assert_eq!(returns_in_outbox(&journal).await.len(), 1);
        }
    }
}
