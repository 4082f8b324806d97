//! One device link: the task that owns a kiosk's (or a drive module's) open stream.
//!
//! A drive's link is the kiosk link with less to say: its Hello carries no inventory, and
//! what a drive may send is Heartbeat, Ack and the results of its own commands
//! ([`drive_may_send`]); anything else is refused like any bad message. Everything else
//! (delivery, receipts, replacement, heartbeats, offline) is the same code.
//!
//! Life of a session: the first message must be Hello; it waits its turn ([`Admission`]: a
//! Hello with no turn within a second is answered Reconnect with a jittered retry_after); the
//! kiosk is marked online (events
//! KioskOnline, InventoryChanged) and any older session of the kiosk is replaced; Welcome goes
//! out, then every command still to deliver, oldest first. From then on the task answers kiosk
//! messages, delivers new commands when woken (by the command's writer, by Redis from another
//! replica, or by the replica's poll ([`crate::poll`]) when a wake-up was lost), sends heartbeats, and closes the link after `offline_after` of silence, or when
//! its token expires unless the kiosk renewed it on the link (RenewToken: checked like the
//! opening token, same device; no database write). When it ends, the kiosk is marked offline
//! unless a newer session already took over.
//!
//! Every kiosk message is validated before use; a bad one is answered (REJECTED) or logged,
//! never fatal. A durable message (result, item returned, inventory) takes effect once per
//! message id and is answered with a Receipt only after it is committed.
//!
//! Storage failing under a link does not end it: a message whose handling failed is not
//! receipted but held, and handled again after a jittered backoff before the link is read
//! further (the agent resends unreceipted messages only on a new link); failed delivery is
//! tried again the same way. Only storage failing for a whole `offline_after` closes the link,
//! UNAVAILABLE, so a database blip under 50,000 links is not a reconnect storm.

use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;

use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::gateway::v1::open_request::Body as Up;
use sneakernet_proto::gateway::v1::open_response::Body as Down;
use sneakernet_proto::link_rules::{self, Refusal};
use sneakernet_runtime::caller::{Caller, TokenVerifier};
use sneakernet_runtime::clock::SharedClock;
use sneakernet_runtime::{DeviceId, Shutdown};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use crate::admission::Admission;
use crate::budget::{MessageBudget, OpenBudget};
use crate::commands;
use crate::domain::command::CommandEvent;
use crate::error::GatewayError;
use crate::presence::Presence;
use crate::progress::ProgressThrottle;
use crate::registry::SessionHandle;
use crate::store::{self, Store};
use sneakernet_runtime::wire::{duration, timestamp};

/// Messages buffered toward one kiosk. When full, the kiosk is not reading: the session ends
/// and the kiosk gets everything again after it reconnects (commands are resent until acked).
const OUTBOUND_CAPACITY: usize = 64;
/// Commands read from the log per query when delivering.
const DELIVERY_BATCH: u64 = 64;
/// First wait before a failed offline write is tried again; it doubles up to
/// [`OFFLINE_RETRY_MAX`].
const OFFLINE_RETRY_FIRST: Duration = Duration::from_millis(200);
/// Longest wait between tries of a failed offline write.
const OFFLINE_RETRY_MAX: Duration = Duration::from_secs(10);
/// First wait before storage work that failed under a link is tried again.
const STORAGE_RETRY_FIRST: Duration = Duration::from_millis(100);
/// Longest wait between tries of storage work under a link.
const STORAGE_RETRY_MAX: Duration = Duration::from_secs(5);

/// A number in [0, 1), random enough to spread retries.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Link timing.
#[derive(Clone, Copy, Debug)]
pub struct LinkTiming {
    /// How often each side sends Heartbeat.
    pub heartbeat_interval: Duration,
    /// Silence after which the link is closed and the kiosk marked offline.
    pub offline_after: Duration,
    /// How often this replica looks for undelivered commands of its links while wake-ups
    /// may be lost ([`crate::poll`]).
    pub poll_interval: Duration,
    /// How long a new link may take to say Hello.
    pub hello_timeout: Duration,
    /// How often this replica renews the leases of the links it holds ([`crate::liveness`]).
    pub liveness_flush: Duration,
    /// How often this replica marks offline the kiosks whose lease lapsed.
    pub reconcile_every: Duration,
    /// Messages a link may send at once before it is read more slowly ([`MessageBudget`]).
    pub message_burst: u32,
    /// Messages per second a link's budget refills.
    pub messages_per_second: u32,
}

/// What every session needs. Cheap to clone.
#[derive(Clone, Debug)]
pub struct LinkContext {
    /// The gateway's database.
    pub store: Store,
    /// This process's sessions, and where other replicas find them.
    pub presence: Presence,
    /// "Now".
    pub clock: SharedClock,
    /// Link timing.
    pub timing: LinkTiming,
    /// Process shutdown: sessions tell their kiosk to reconnect and end.
    pub shutdown: Shutdown,
    /// Checks the tokens a link is renewed with, as the auth layer checks the opening one.
    pub verifier: TokenVerifier,
    /// How often each device may open its link.
    pub open_budget: OpenBudget,
    /// How many Hellos this replica handles at once.
    pub admission: Admission,
}

/// Why a session ended.
#[derive(Clone, Debug)]
enum Ended {
    /// A newer link of the kiosk took over (nothing to record).
    Replaced,
    /// Offline, for this reason.
    Offline(pb::OfflineReason, String),
}

/// Accepts a link: waits for Hello, marks the kiosk online, replaces any older session, and
/// spawns the session task. Returns the stream of messages to the kiosk.
pub async fn open(
    link: Arc<LinkContext>,
    device: DeviceId,
    token_expires_at: Option<DateTime<Utc>>,
    mut inbound: Streaming<pb::OpenRequest>,
) -> Result<ReceiverStream<Result<pb::OpenResponse, Status>>, Status> {
    // Before Hello and before any write: a device in a reconnect loop costs nothing more.
    if let Err(refused) = link.open_budget.open(&device.stored()) {
        metrics::counter!("gateway_link_opens_refused_total").increment(1);
        tracing::warn!(device = %device, error = %refused, "link open refused: over budget");
        return Err(refused.into());
    }
    let first = tokio::time::timeout(link.timing.hello_timeout, inbound.message())
        .await
        .map_err(|_| Status::from(GatewayError::NoHello("none came in time")))??;
    let hello = match first.and_then(|m| m.body) {
        Some(Up::Hello(hello)) => hello,
        Some(_) => {
            return Err(GatewayError::NoHello("another message came first").into());
        }
        None => return Err(GatewayError::NoHello("the link closed before it").into()),
    };
    let now = link.clock.now();
    let checked = match device {
        DeviceId::Kiosk(_) => link_rules::check_hello(&hello),
        DeviceId::Drive(_) => link_rules::check_drive_hello(&hello),
    };
    checked.map_err(|refusal| {
        Status::from(GatewayError::from(sneakernet_runtime::FieldViolation::new(
            refusal.field,
            refusal.reason,
        )))
    })?;

    // A connect storm queues here, below the pool's size, not on the pool: past a short wait
    // the kiosk is told when to come back, before anything is written.
    let Some(admitted) = link.admission.admit().await else {
        let retry_after = Admission::retry_after(jitter());
        metrics::counter!("gateway_hellos_deferred_total").increment(1);
        tracing::info!(device = %device, retry_after_ms = retry_after.as_millis() as u64, "link open deferred: too many links opening at once");
        let (deferred, receiver) = mpsc::channel(1);
        // The channel is empty and ours: this cannot be full. Dropping the sender ends the
        // stream after the Reconnect.
        let _ = deferred.try_send(Ok(pb::OpenResponse {
            body: Some(Down::Reconnect(pb::Reconnect {
                reason: pb::ReconnectReason::Rebalance.into(),
                message: "too many links are opening at this gateway; retry after retry_after"
                    .into(),
                retry_after: Some(duration(retry_after)),
                gateway_address: String::new(),
            })),
        }));
        return Ok(ReceiverStream::new(receiver));
    };
    // Tests hold a Hello's turn here to make the others wait.
    sneakernet_runtime::failpoint::pause_point("gateway::hello::admitted").await;

    let session_id = uuid::Uuid::now_v7().to_string();
    let handle = SessionHandle::new(session_id.clone());
    let key = device.stored();
    {
        // The row and the registry must agree on the kiosk's latest link even when two open
        // at once: record and claim under one per-kiosk lock, so the last open wins in both.
        let _opening = link.presence.registry().opening(&key).await;
        link.store
            .device_online(&device, &session_id, &hello, now)
            .await?;
        link.presence.registry().claim(&key, handle.clone());
    }
    link.presence.hold(&key);
    metrics::gauge!("gateway_links").set(link.presence.registry().len() as f64);
    tracing::info!(device = %device, session_id = %session_id, agent_version = %hello.agent_version, "device online");

    let (outbound, receiver) = mpsc::channel(OUTBOUND_CAPACITY);
    let welcome = Down::Welcome(pb::Welcome {
        session_id: session_id.clone(),
        server_time: Some(timestamp(now)),
        heartbeat_interval: Some(duration(link.timing.heartbeat_interval)),
        offline_after: Some(duration(link.timing.offline_after)),
    });
    // The channel is empty and ours: this cannot be full.
    let _ = outbound.try_send(Ok(pb::OpenResponse {
        body: Some(welcome),
    }));
    let session = Session {
        link: link.clone(),
        device,
        key,
        handle,
        outbound,
        token_deadline: deadline_of(link.clock.as_ref(), token_expires_at),
        progress: ProgressThrottle::default(),
        admitted: Some(admitted),
    };
    link.shutdown.spawn(session.run(inbound));
    Ok(ReceiverStream::new(receiver))
}

struct Session {
    link: Arc<LinkContext>,
    /// Who is on the other end: a kiosk, or a drive's module.
    device: DeviceId,
    /// The device's stored form: its key in the tables, the registry and presence.
    key: String,
    handle: SessionHandle,
    outbound: mpsc::Sender<Result<pb::OpenResponse, Status>>,
    /// When the kiosk's token expires: the link ends then (UNAUTHENTICATED) and the kiosk logs
    /// in again, so a revoked credential stops speaking within one token lifetime. Moved later
    /// only by a valid RenewToken for this same device ([`Session::renew_token`]).
    token_deadline: Instant,
    /// Progress reports held back so each command's record is written at most once a second.
    progress: ProgressThrottle,
    /// The Hello's turn ([`Admission`]), held through the first delivery (the open's last
    /// query), then given back.
    admitted: Option<OwnedSemaphorePermit>,
}

/// When a token expiring at `expires_at` (by `clock`) has expired, on the runtime's timer; a
/// year away for a link opened without an expiry.
fn deadline_of(
    clock: &dyn sneakernet_runtime::clock::Clock,
    expires_at: Option<DateTime<Utc>>,
) -> Instant {
    expires_at.map_or(
        Instant::now() + Duration::from_secs(365 * 24 * 3600),
        |at| Instant::now() + (at - clock.now()).to_std().unwrap_or(Duration::ZERO),
    )
}

/// The kiosk stopped reading or the stream is gone.
struct LinkGone;

/// Storage failing under a link: what is to be tried again, and when. The link stays open
/// through it; only an outage as long as `offline_after` closes it.
struct Outage {
    /// When storage first failed (reset only once everything tried again succeeded).
    since: Instant,
    /// The kiosk message whose handling failed: not receipted, handled again before the link
    /// is read further (the agent resends unreceipted messages only on a new link).
    held: Option<pb::OpenRequest>,
    /// Delivery failed: commands are looked for again.
    deliver: bool,
    /// When to try again.
    next_try: Instant,
    /// The wait before the try after the next, doubling up to [`STORAGE_RETRY_MAX`].
    backoff: Duration,
}

impl Outage {
    fn begin(held: Option<pb::OpenRequest>, deliver: bool) -> Self {
        let now = Instant::now();
        Self {
            since: now,
            held,
            deliver,
            next_try: now + STORAGE_RETRY_FIRST,
            backoff: STORAGE_RETRY_FIRST,
        }
    }

    /// Sets the next try after a jittered backoff (so links that failed together do not all
    /// come back at once), never beyond a quarter of `offline_after`: the outage's end is
    /// noticed well within the bound.
    fn schedule(&mut self, offline_after: Duration) {
        let ceiling = STORAGE_RETRY_MAX.min(offline_after / 4);
        self.next_try = Instant::now() + self.backoff.mul_f64(0.5 + jitter() / 2.0).min(ceiling);
        self.backoff = (self.backoff * 2).min(ceiling);
    }
}

impl Session {
    async fn run(mut self, mut inbound: Streaming<pb::OpenRequest>) {
        let ended = self.serve(&mut inbound).await;
        self.admitted = None;
        let kiosk = self.key.clone();
        let session_id = self.handle.session_id.clone();
        if self.link.presence.registry().release(&kiosk, &session_id) {
            self.link.presence.release(&kiosk);
        }
        metrics::gauge!("gateway_links").set(self.link.presence.registry().len() as f64);
        let Ended::Offline(reason, message) = ended else {
            tracing::info!(device = %kiosk, session_id = %session_id, "link replaced by a newer one");
            return;
        };
        self.record_offline(reason, message).await;
    }

    /// Marks the kiosk offline with its event (unless a newer session took over), retrying a
    /// failed write with backoff until it lands: a dropped offline write would leave the
    /// kiosk shown online for good. Once the process shuts down, a failed write is left to
    /// the reconcilers ([`crate::liveness`]): the lease of this link lapses with no holder.
    async fn record_offline(&self, reason: pb::OfflineReason, message: String) {
        let kiosk = &self.key;
        let session_id = &self.handle.session_id;
        let mut backoff = OFFLINE_RETRY_FIRST;
        loop {
            let now = self.link.clock.now();
            let offline = pb::KioskOffline {
                reason: reason.into(),
                message: message.clone(),
                last_seen_at: Some(timestamp(now)),
            };
            let written =
                match sneakernet_runtime::failpoint::injected_error("gateway::offline::write") {
                    Some(injected) => Err(GatewayError::Store(sea_orm::DbErr::Custom(injected))),
                    None => {
                        self.link
                            .store
                            .kiosk_offline(kiosk, session_id, offline, now)
                            .await
                    }
                };
            match written {
                Ok(true) => {
                    tracing::info!(device = %kiosk, session_id = %session_id, reason = ?reason, %message, "device offline");
                    return;
                }
                Ok(false) => return,
                Err(error) if self.link.shutdown.is_triggered() => {
                    tracing::error!(device = %kiosk, %error, "cannot record device offline while shutting down; the reconcilers will");
                    return;
                }
                Err(error) => {
                    metrics::counter!("gateway_offline_write_failures_total").increment(1);
                    tracing::warn!(device = %kiosk, %error, retry_in = ?backoff, "cannot record device offline; retrying");
                }
            }
            // Jittered, so a mass disconnect's failed writes do not come back all at once.
            let jittered = backoff.mul_f64(0.5 + jitter() / 2.0);
            tokio::select! {
                () = self.link.shutdown.triggered() => {}
                () = tokio::time::sleep(jittered) => {}
            }
            backoff = (backoff * 2).min(OFFLINE_RETRY_MAX);
        }
    }

    async fn serve(&mut self, inbound: &mut Streaming<pb::OpenRequest>) -> Ended {
        let timing = self.link.timing;
        // Storage work that failed and is being tried again; `None` while storage answers.
        let mut outage: Option<Outage> = None;
        match self.deliver().await {
            Ok(()) => {}
            Err(DeliverError::Gone) => {
                return Ended::Offline(pb::OfflineReason::Disconnected, "kiosk not reading".into());
            }
            Err(DeliverError::Store(error)) => {
                self.admitted = None;
                let mut failed = Outage::begin(None, true);
                failed.schedule(timing.offline_after);
                self.storage_failed(&failed, &error);
                outage = Some(failed);
            }
        }
        self.admitted = None;
        let mut heartbeat = tokio::time::interval_at(
            Instant::now() + timing.heartbeat_interval,
            timing.heartbeat_interval,
        );
        let mut last_heard = Instant::now();
        let mut budget = MessageBudget::new(
            timing.message_burst,
            timing.messages_per_second,
            Instant::now(),
        );
        let replaced = self.handle.replaced.clone();
        let wake = self.handle.wake.clone();
        let shutdown = self.link.shutdown.token();
        loop {
            // Read each turn: a renewal on this link moves it.
            let token_expiry = self.token_deadline;
            let progress_due = self.progress.next_due();
            // Over its message budget, the link is not read until a token is back.
            let read_at = budget.ready_at(Instant::now());
            // A kiosk message held for storage is handled before the next is read, so the
            // kiosk's messages keep their order; meanwhile its silence is ours, not its own.
            let holding = outage.as_ref().is_some_and(|o| o.held.is_some());
            let retry_at = outage.as_ref().map(|o| o.next_try);
            // The kiosk message this turn read, kept if storage fails under it.
            let mut read: Option<pb::OpenRequest> = None;
            let mut delivering = false;
            let outcome = tokio::select! {
                () = replaced.cancelled() => {
                    self.reconnect(pb::ReconnectReason::Replaced, "a newer link of this kiosk replaced this one");
                    return Ended::Replaced;
                }
                () = shutdown.cancelled() => {
                    self.reconnect(pb::ReconnectReason::Shutdown, "this gateway is shutting down");
                    return Ended::Offline(pb::OfflineReason::ClosedByGateway, "gateway shutting down".into());
                }
                () = tokio::time::sleep_until(last_heard + timing.offline_after), if !holding => {
                    return Ended::Offline(
                        pb::OfflineReason::HeartbeatTimeout,
                        format!("nothing heard for {:?}", timing.offline_after),
                    );
                }
                () = self.outbound.closed() => {
                    return Ended::Offline(pb::OfflineReason::Disconnected, "the kiosk closed the link".into());
                }
                () = tokio::time::sleep_until(token_expiry) => {
                    let _ = self.outbound.try_send(Err(GatewayError::TokenExpired.into()));
                    return Ended::Offline(pb::OfflineReason::Unauthenticated, "access token expired".into());
                }
                () = tokio::time::sleep_until(read_at.unwrap_or_else(Instant::now)), if read_at.is_some() && !holding => {
                    // Time spent not reading is ours, not the kiosk's silence.
                    last_heard = Instant::now();
                    Ok(())
                }
                message = inbound.message(), if read_at.is_none() && !holding => match message {
                    Ok(Some(message)) => {
                        last_heard = Instant::now();
                        budget.spend(last_heard);
                        let handled = self.handle_message(&message).await;
                        read = Some(message);
                        handled
                    }
                    Ok(None) => return Ended::Offline(pb::OfflineReason::Disconnected, "the kiosk closed the link".into()),
                    Err(status) => {
                        // Tell the kiosk why (an oversized or undecodable message), if it is
                        // still there to hear it.
                        let _ = self.outbound.try_send(Err(status.clone()));
                        return Ended::Offline(
                            pb::OfflineReason::Disconnected,
                            format!("link broke: {} {}", status.code(), status.message()),
                        );
                    }
                },
                () = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {
                    last_heard = Instant::now();
                    match outage.take() {
                        None => Ok(()),
                        Some(mut failed) => match self.retry(&mut failed).await {
                            Ok(()) => {
                                tracing::info!(device = %self.device, outage = ?failed.since.elapsed(), "storage answers again; link carries on");
                                Ok(())
                            }
                            Err(stop) => {
                                outage = Some(failed);
                                Err(stop)
                            }
                        },
                    }
                }
                () = wake.notified() => {
                    delivering = true;
                    self.deliver().await.map_err(Into::into)
                }
                _ = heartbeat.tick() => self.heartbeat(),
                () = tokio::time::sleep_until(progress_due.unwrap_or_else(Instant::now)), if progress_due.is_some() => {
                    for progress in self.progress.due(Instant::now()) {
                        self.write_progress(&progress).await;
                    }
                    Ok(())
                }
            };
            match outcome {
                Ok(()) => {}
                Err(Stop::Gone) => {
                    return Ended::Offline(
                        pb::OfflineReason::Disconnected,
                        "kiosk not reading".into(),
                    );
                }
                Err(Stop::Unavailable(error)) => {
                    // Not receipted: the message is held and handled again after a jittered
                    // backoff, with the link kept open. A database blip must not become a
                    // reconnect storm of every link that had something to say.
                    let failed = match outage.take() {
                        Some(mut failed) => {
                            failed.held = failed.held.or(read);
                            failed.deliver |= delivering;
                            failed
                        }
                        None => Outage::begin(read, delivering),
                    };
                    if failed.since.elapsed() >= timing.offline_after {
                        return self.close_unavailable(&failed, &error);
                    }
                    let mut failed = failed;
                    failed.schedule(timing.offline_after);
                    self.storage_failed(&failed, &error);
                    outage = Some(failed);
                }
            }
        }
    }

    /// Logs and counts a storage failure under the link, which stays open.
    fn storage_failed(&self, outage: &Outage, error: &GatewayError) {
        metrics::counter!("gateway_link_storage_failures_total").increment(1);
        tracing::warn!(
            device = %self.device,
            %error,
            holding_message = outage.held.is_some(),
            failing_for = ?outage.since.elapsed(),
            retry_in = ?outage.next_try.saturating_duration_since(Instant::now()),
            "storage failed under the link; trying again"
        );
    }

    /// Ends the link because storage stayed unavailable for the whole bound: the kiosk is told
    /// UNAVAILABLE and reconnects with its own backoff, replaying what was not receipted.
    fn close_unavailable(&self, outage: &Outage, error: &GatewayError) -> Ended {
        let failing_for = outage.since.elapsed();
        metrics::counter!("gateway_links_closed_storage_unavailable_total").increment(1);
        tracing::error!(device = %self.device, %error, ?failing_for, "closing link: storage unavailable");
        let _ = self.outbound.try_send(Err(GatewayError::Unavailable(
            "gateway storage unavailable; reconnect later",
        )
        .into()));
        Ended::Offline(
            pb::OfflineReason::ClosedByGateway,
            format!("storage unavailable for {failing_for:?}: {error}"),
        )
    }

    /// Tries the failed storage work again: the held message first, then delivery. On
    /// success of each, it is cleared from `outage`.
    async fn retry(&mut self, outage: &mut Outage) -> Result<(), Stop> {
        if let Some(message) = outage.held.take()
            && let Err(stop) = self.handle_message(&message).await
        {
            outage.held = Some(message);
            return Err(stop);
        }
        if outage.deliver {
            self.deliver().await.map_err(Stop::from)?;
            outage.deliver = false;
        }
        Ok(())
    }

    fn send(&self, body: Down) -> Result<(), LinkGone> {
        self.outbound
            .try_send(Ok(pb::OpenResponse { body: Some(body) }))
            .map_err(|_| LinkGone)
    }

    fn reconnect(&self, reason: pb::ReconnectReason, message: &str) {
        let _ = self.send(Down::Reconnect(pb::Reconnect {
            reason: reason.into(),
            message: message.into(),
            retry_after: Some(duration(Duration::from_secs(1))),
            gateway_address: String::new(),
        }));
    }

    /// Sends a heartbeat and refreshes the kiosk's presence in Redis. The database hears of
    /// the link only in the liveness flush ([`crate::liveness`]), not once per heartbeat.
    fn heartbeat(&mut self) -> Result<(), Stop> {
        let now = self.link.clock.now();
        self.send(Down::Heartbeat(pb::Heartbeat {
            sent_at: Some(timestamp(now)),
        }))?;
        self.link.presence.hold(&self.key);
        Ok(())
    }

    /// Puts every undelivered command on the link, oldest first, a batch at a time. Waits for
    /// room when the kiosk reads slowly (a backlog drains instead of dropping the link), and
    /// gives up only when it reads nothing for `offline_after`.
    async fn deliver(&mut self) -> Result<(), DeliverError> {
        loop {
            let now = self.link.clock.now();
            let pending = self
                .link
                .store
                .undelivered(
                    &self.key,
                    self.handle.delivered_through(),
                    DELIVERY_BATCH,
                    now,
                )
                .await?;
            let full_batch = pending.len() as u64 == DELIVERY_BATCH;
            for row in pending {
                self.deliver_one(row, now).await?;
            }
            if !full_batch {
                return Ok(());
            }
        }
    }

    /// Sends one command (marking it SENT) unless it was acked or expired meanwhile.
    async fn deliver_one(
        &mut self,
        row: crate::entity::command::Model,
        now: DateTime<Utc>,
    ) -> Result<(), DeliverError> {
        let applied = match self
            .link
            .store
            .apply(
                &row.command_id,
                Some(&self.key),
                CommandEvent::Send,
                None,
                None,
                now,
            )
            .await
        {
            Ok(applied) => applied,
            // Acked or expired since we looked: nothing to send.
            Err(GatewayError::Illegal(_)) => None,
            // Not passed: the command is looked for again when storage is back.
            Err(error) => return Err(error.into()),
        };
        self.handle.delivered(row.seq);
        let Some(applied) = applied else {
            return Ok(());
        };
        let command = store::wire_command(&applied.command)?;
        let message = pb::OpenResponse {
            body: Some(Down::Command(command)),
        };
        let sent = tokio::time::timeout(
            self.link.timing.offline_after,
            self.outbound.send(Ok(message)),
        )
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            return Err(DeliverError::Gone);
        }
        tracing::debug!(device = %self.device, command_id = %row.command_id, attempt = applied.command.attempts, "command sent");
        // Tests kill the gateway here: the command is on the wire, its ack not yet in.
        sneakernet_runtime::failpoint::pause_point("gateway::deliver::after_send").await;
        Ok(())
    }

    /// Checks a kiosk message against the link's rules ([`link_rules`]) and applies it; a
    /// message that breaks them is refused (and kept for operators), never applied.
    async fn handle_message(&mut self, message: &pb::OpenRequest) -> Result<(), Stop> {
        let now = self.link.clock.now();
        if let Err(refusal) = link_rules::check_message(message, now) {
            return self.refuse(message, &refusal).await;
        }
        if self.device.drive().is_some()
            && let Some(body) = &message.body
            && !drive_may_send(body)
        {
            let refusal = Refusal::new(message_kind(body), "a drive's link does not carry this");
            return self.refuse(message, &refusal).await;
        }
        match &message.body {
            None => Ok(()),
            Some(Up::Heartbeat(_)) => {
                metrics::counter!("gateway_heartbeats_received_total").increment(1);
                Ok(())
            }
            Some(Up::Hello(_)) => {
                tracing::warn!(device = %self.device, "second Hello on one link ignored");
                Ok(())
            }
            Some(Up::Ack(ack)) => self.ack(ack).await,
            Some(Up::Result(result)) => self.result(message, result).await,
            Some(Up::Progress(progress)) => {
                if let Some(progress) = self.progress.offer(progress.clone(), Instant::now()) {
                    self.write_progress(&progress).await;
                }
                Ok(())
            }
            Some(Up::ItemReturned(returned)) => self.item_returned(message, returned).await,
            Some(Up::InventoryChanged(changed)) => self.inventory_changed(message, changed).await,
            Some(Up::RenewToken(renew)) => self.renew_token(renew),
        }
    }

    /// Renews the link's token in place: a token that verifies as the opening one did (the
    /// auth layer's checks) and names this same device, in the same role, moves the link's
    /// end to its expiry; anything else is refused with the reason and changes nothing. No
    /// database write: a renewal is not a new session.
    fn renew_token(&mut self, renew: &pb::RenewToken) -> Result<(), Stop> {
        let checked = self
            .link
            .verifier
            .verify(&renew.access_token)
            .map_err(|error| error.to_string())
            .and_then(|claims| {
                let caller = Caller::from_claims(&claims).map_err(|error| error.to_string())?;
                match caller.device() {
                    Some(device) if device == self.device => Ok(claims.exp),
                    Some(_) => Err("access token is for another device".to_owned()),
                    None => Err("access token is not a kiosk's or a drive's".to_owned()),
                }
            })
            .and_then(|exp| {
                DateTime::<Utc>::from_timestamp(exp, 0)
                    .ok_or_else(|| "access token expiry is out of range".to_owned())
            });
        let answer = match checked {
            Ok(expires_at) => {
                self.token_deadline = deadline_of(self.link.clock.as_ref(), Some(expires_at));
                metrics::counter!("gateway_link_renewals_total", "outcome" => "renewed")
                    .increment(1);
                tracing::debug!(device = %self.device, %expires_at, "link token renewed");
                pb::TokenRenewal {
                    expires_at: Some(timestamp(expires_at)),
                    error: String::new(),
                }
            }
            Err(error) => {
                metrics::counter!("gateway_link_renewals_total", "outcome" => "refused")
                    .increment(1);
                tracing::warn!(device = %self.device, %error, "link token renewal refused");
                pb::TokenRenewal {
                    expires_at: None,
                    error,
                }
            }
        };
        self.send(Down::TokenRenewal(answer)).map_err(Stop::from)
    }

    /// Records a command's latest progress (not durable: a failed write is only logged).
    async fn write_progress(&self, progress: &pb::Progress) {
        metrics::counter!("gateway_progress_writes_total").increment(1);
        if let Err(error) = self.link.store.set_progress(&self.key, progress).await {
            tracing::warn!(device = %self.device, %error, "progress not recorded");
        }
    }

    async fn ack(&mut self, ack: &pb::Ack) -> Result<(), Stop> {
        let now = self.link.clock.now();
        match self
            .link
            .store
            .apply(
                &ack.command_id,
                Some(&self.key),
                CommandEvent::Ack,
                None,
                None,
                now,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(GatewayError::CommandNotFound(_) | GatewayError::Illegal(_)) => {
                tracing::warn!(device = %self.device, command_id = %ack.command_id, "ack for no command of this kiosk ignored");
                Ok(())
            }
            Err(error) => Err(Stop::Unavailable(error)),
        }
    }

    async fn result(
        &mut self,
        message: &pb::OpenRequest,
        result: &pb::CommandResult,
    ) -> Result<(), Stop> {
        let message_id = message.message_id.as_str();
        // The result supersedes any progress held back: none is written after it.
        self.progress.finished(&result.command_id);
        let Some(outcome) = result.outcome.as_ref() else {
            return self
                .refuse(message, &Refusal::new("result.outcome", "must be set"))
                .await;
        };
        let command = match self.link.store.command(&result.command_id).await {
            Ok(Some(command)) if command.kiosk_id == self.key => command,
            Ok(_) => {
                return self
                    .refuse(
                        message,
                        &Refusal::new("result.command_id", "no such command for this kiosk"),
                    )
                    .await;
            }
            Err(error) => return Err(Stop::Unavailable(error)),
        };
        let payload = match store::wire_command(&command) {
            Ok(wire) => wire.payload.unwrap_or_default(),
            Err(error) => return Err(Stop::Unavailable(error)),
        };
        if !commands::result_matches(&payload, outcome) {
            return self
                .refuse(
                    message,
                    &Refusal::new("result.outcome", "does not match the command's kind"),
                )
                .await;
        }
        let event = match outcome {
            pb::command_result::Outcome::Failure(_) => CommandEvent::Fail,
            _ => CommandEvent::Succeed,
        };
        let now = self.link.clock.now();
        let status = match self
            .link
            .store
            .apply(
                &result.command_id,
                Some(&self.key),
                event,
                Some(result),
                Some(message_id),
                now,
            )
            .await
        {
            Ok(Some(applied)) if applied.changed => {
                if applied.command.late_result {
                    tracing::warn!(device = %self.device, command_id = %result.command_id, "result arrived after the command expired");
                }
                pb::ReceiptStatus::Accepted
            }
            Ok(_) => pb::ReceiptStatus::Duplicate,
            Err(GatewayError::Illegal(illegal)) => {
                return self
                    .refuse(
                        message,
                        &Refusal::new(
                            "result",
                            format!("conflicts with the command's state: {illegal}"),
                        ),
                    )
                    .await;
            }
            Err(GatewayError::CommandNotFound(_)) => {
                return self
                    .refuse(
                        message,
                        &Refusal::new("result.command_id", "no such command for this kiosk"),
                    )
                    .await;
            }
            Err(error) => return Err(Stop::Unavailable(error)),
        };
        self.receipt(message_id, status, "")
    }

    async fn item_returned(
        &mut self,
        message: &pb::OpenRequest,
        returned: &pb::ItemReturned,
    ) -> Result<(), Stop> {
        let now = self.link.clock.now();
        let message_id = message.message_id.as_str();
        match self
            .link
            .store
            .record_kiosk_event(
                &self.key,
                message_id,
                pb::event::Kind::ItemReturned(returned.clone()),
                None,
                now,
            )
            .await
        {
            Ok(true) => self.receipt(message_id, pb::ReceiptStatus::Accepted, ""),
            Ok(false) => self.receipt(message_id, pb::ReceiptStatus::Duplicate, ""),
            Err(error) => Err(Stop::Unavailable(error)),
        }
    }

    async fn inventory_changed(
        &mut self,
        message: &pb::OpenRequest,
        changed: &pb::InventoryChanged,
    ) -> Result<(), Stop> {
        let message_id = message.message_id.as_str();
        let merged = match &changed.change {
            Some(pb::inventory_changed::Change::Full(full)) => full.clone(),
            Some(pb::inventory_changed::Change::Partial(partial)) => {
                let known = match self.link.store.kiosk(&self.key).await {
                    Ok(Some(row)) => {
                        prost::Message::decode(row.inventory.as_slice()).unwrap_or_default()
                    }
                    Ok(None) => pb::Inventory::default(),
                    Err(error) => return Err(Stop::Unavailable(error)),
                };
                let merged = merge(known, partial.clone());
                // A kiosk's inventory is bounded in all it reported, not only per message.
                if let Err(refused) = link_rules::check_merged_inventory(&merged) {
                    return self.refuse(message, &refused).await;
                }
                merged
            }
            None => {
                return self
                    .refuse(
                        message,
                        &Refusal::new("inventory_changed.change", "must be full or partial"),
                    )
                    .await;
            }
        };
        let now = self.link.clock.now();
        let kind = pb::event::Kind::InventoryChanged(pb::KioskInventory {
            inventory: Some(merged.clone()),
        });
        match self
            .link
            .store
            .record_kiosk_event(&self.key, message_id, kind, Some(merged), now)
            .await
        {
            Ok(true) => self.receipt(message_id, pb::ReceiptStatus::Accepted, ""),
            Ok(false) => self.receipt(message_id, pb::ReceiptStatus::Duplicate, ""),
            Err(error) => Err(Stop::Unavailable(error)),
        }
    }

    /// Refuses a kiosk message: logged and counted; one with a well-formed message id is
    /// kept for operators (once) and answered REJECTED, naming what is wrong, so the kiosk
    /// stops resending it. Never applied.
    async fn refuse(&self, message: &pb::OpenRequest, refusal: &Refusal) -> Result<(), Stop> {
        let kind = message.body.as_ref().map_or("empty", message_kind);
        tracing::warn!(device = %self.device, message_id = %message.message_id.escape_debug(), kind, field = %refusal.field, error = %refusal.reason, "kiosk message refused");
        metrics::counter!("gateway_kiosk_messages_refused_total", "kind" => kind).increment(1);
        if link_rules::check_message_id(&message.message_id).is_err() {
            return Ok(());
        }
        let now = self.link.clock.now();
        self.link
            .store
            .keep_refused(&self.key, message, refusal, now)
            .await
            .map_err(Stop::Unavailable)?;
        self.receipt(
            &message.message_id,
            pb::ReceiptStatus::Rejected,
            &refusal.to_string(),
        )
    }

    fn receipt(
        &self,
        message_id: &str,
        status: pb::ReceiptStatus,
        error: &str,
    ) -> Result<(), Stop> {
        metrics::counter!("gateway_kiosk_messages_total", "receipt" => status.as_str_name())
            .increment(1);
        self.send(Down::Receipt(pb::Receipt {
            message_id: message_id.to_owned(),
            status: status.into(),
            error: error.to_owned(),
        }))
        .map_err(|LinkGone| Stop::Gone)
    }
}

/// What a drive's module may say on its link: it has no bays, so no progress, returns or
/// inventory; only liveness and its commands' acks and results.
fn drive_may_send(body: &Up) -> bool {
    matches!(
        body,
        Up::Hello(_) | Up::Heartbeat(_) | Up::Ack(_) | Up::Result(_) | Up::RenewToken(_)
    )
}

/// A kiosk message's kind, for logs and metric labels (a fixed set).
fn message_kind(body: &Up) -> &'static str {
    match body {
        Up::Hello(_) => "hello",
        Up::Heartbeat(_) => "heartbeat",
        Up::Ack(_) => "ack",
        Up::Result(_) => "result",
        Up::Progress(_) => "progress",
        Up::ItemReturned(_) => "item_returned",
        Up::InventoryChanged(_) => "inventory_changed",
        Up::RenewToken(_) => "renew_token",
    }
}

/// A partial inventory report merged into the last known one, bay by bay: a bay the partial
/// report names replaces the known bay of that id, a new one is appended, and the report's
/// `taken_at` wins when set. Public (hidden) only for the fuzz target `kiosk_message`.
#[doc(hidden)]
pub fn merge(mut known: pb::Inventory, partial: pb::Inventory) -> pb::Inventory {
    for bay in partial.bays {
        match known.bays.iter_mut().find(|b| b.bay_id == bay.bay_id) {
            Some(existing) => *existing = bay,
            None => known.bays.push(bay),
        }
    }
    known.taken_at = partial.taken_at.or(known.taken_at);
    known
}

/// Why the session loop must stop.
enum Stop {
    /// The kiosk is not reading, or the stream is gone.
    Gone,
    /// Storage failed.
    Unavailable(GatewayError),
}

impl From<LinkGone> for Stop {
    fn from(_: LinkGone) -> Self {
        Stop::Gone
    }
}

enum DeliverError {
    Gone,
    Store(GatewayError),
}

impl From<GatewayError> for DeliverError {
    fn from(error: GatewayError) -> Self {
        DeliverError::Store(error)
    }
}

impl From<DeliverError> for Stop {
    fn from(error: DeliverError) -> Self {
        match error {
            DeliverError::Gone => Stop::Gone,
            DeliverError::Store(error) => Stop::Unavailable(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bay(id: &str, state: pb::BayState) -> pb::Bay {
        pb::Bay {
            bay_id: id.into(),
            state: state.into(),
            item: None,
            pinned_order_id: String::new(),
        }
    }

    #[test]
    fn a_drive_says_only_liveness_and_its_commands_outcomes() {
        assert!(drive_may_send(&Up::Heartbeat(pb::Heartbeat::default())));
        assert!(drive_may_send(&Up::Ack(pb::Ack::default())));
        assert!(drive_may_send(&Up::Result(pb::CommandResult::default())));
        assert!(!drive_may_send(&Up::Progress(pb::Progress::default())));
        assert!(!drive_may_send(&Up::ItemReturned(
            pb::ItemReturned::default()
        )));
        assert!(!drive_may_send(&Up::InventoryChanged(
            pb::InventoryChanged::default()
        )));
    }

    #[test]
    fn partial_reports_replace_only_their_bays() {
        let known = pb::Inventory {
            bays: vec![
                bay("A1", pb::BayState::Ready),
                bay("A2", pb::BayState::Ready),
            ],
            taken_at: None,
        };
        let partial = pb::Inventory {
            bays: vec![
                bay("A2", pb::BayState::Empty),
                bay("B1", pb::BayState::Fault),
            ],
            taken_at: None,
        };
        let merged = merge(known, partial);
        let states: Vec<(&str, i32)> = merged
            .bays
            .iter()
            .map(|b| (b.bay_id.as_str(), b.state))
            .collect();
        assert_eq!(
            states,
            [
                ("A1", pb::BayState::Ready as i32),
                ("A2", pb::BayState::Empty as i32),
                ("B1", pb::BayState::Fault as i32)
            ]
        );
    }
}
