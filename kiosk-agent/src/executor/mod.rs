//! Runs commands exactly once, using the journal.
//!
//! [`Perform`] is what every device on a link shares: the journal logic of receiving a
//! command, answering a repeat from the journal, running pending commands one at a time,
//! settling what a crash interrupted, and the worker. A device says only what it does with a
//! valid command ([`Perform::run`]) and how it settles an interrupted one
//! ([`Perform::settle`]): the kiosk's [`Executor`] (every kind, on its bays) here, a drive's
//! module ([`crate::drive`]) only its own write protection.
//!
//! The rest of this module is the kiosk's executor: what its command kinds share (and the
//! helpers that settle a bay call whose outcome is unknown); each
//! command kind lives in a file of its own, all shaped alike: `execute(executor, id, <the
//! validated fields>, run)` looks at the bays, journals the command `executing` (with its
//! choice, when it has one) before touching hardware, acts, and answers a result (or `None`
//! when another run took the command first).
//!
//! To add a command kind: give it an [`Action`] variant in `command.rs` (validation), a file
//! here with its `execute`, and one arm in `Executor::run_action`; if a repeat after a crash
//! could double a physical effect, give it an arm in [`Executor::recover`] that settles it
//! from what the bays show instead of running it again.
//!
//! Guarantees:
//! - A command is journaled (`received`) before it is acknowledged, and executed by one worker
//!   at a time, in arrival order: two lends never race for the same item.
//! - A command that is already `done` is answered from the journal (its stored result goes back
//!   to the outbox) and never executed again.
//! - Before any hardware is touched the command is journaled `executing` together with its
//!   choice (bay, item, the item as it will leave). After a crash, an `executing` lend is
//!   settled from the bays, not re-run: the item gone from its bay means the lend happened (the
//!   stored item becomes the LendResult); the item still there means it did not (FAILED,
//!   INTERNAL, "interrupted before eject"). Commands without a physical effect that a repeat
//!   could double (write protection, wipe, release, inventory) are simply run again.
//! - A command is never started after its deadline (on the skew-corrected clock): it fails
//!   DEADLINE_EXCEEDED. A payload that does not validate fails INVALID_COMMAND. None of these
//!   is a panic. An interrupted Provision is settled, not re-run: its drive is wiped and it
//!   fails INTERNAL ("interrupted").
//! - A result is written with its outbox message in one transaction.
//! - Every bay call has a time limit ([`BayTimeouts`], defaults [`EJECT_TIMEOUT`] and the other
//!   `*_TIMEOUT` constants), so a hung bay fails its command with BAY_FAULT instead of
//!   stalling the worker for ever. A timed-out call is never assumed to have failed: an eject
//!   that timed out is settled from the bay state exactly as crash recovery settles it (the
//!   command stays journaled `executing` until then), and a timed-out write-protect change,
//!   wipe or release is judged from what the bays report afterwards.
//! - A command is taken out of `received` once ([`Journal::start`] refuses a second start);
//!   recovery re-marks an interrupted command explicitly ([`Journal::resume`]).

mod force_eject;
mod lend;
mod provision;
mod release;
mod request_inventory;
mod set_write_protect;
mod wipe;

#[cfg(test)]
mod testing;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::gateway::v1::FailureReason;
use sneakernet_proto::gateway::v1::command_result::Outcome;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::bays::{BayError, BayInfo, Bays, Drives, ItemInfo, within};
use crate::clock::KioskClock;
use crate::command::{self, Action};
use crate::content_source::ContentSource;
use crate::journal::{Arrival, Choice, Journal, JournalError, JournaledCommand};
use crate::wire;

pub use lend::AFTER_EJECT_POINT;
pub use provision::{Content, MID_COPY_POINT, NoContent, PROGRESS_EVERY, PROGRESS_QUEUE};

/// Longest wait for reading what the bays hold (inventory, inserted items): a status read of
/// the controller, normally milliseconds.
pub const INVENTORY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for an eject: the mechanism opens, pushes the item out and reports, normally
/// a few seconds; two minutes leaves room for a slow or retrying mechanism before the lend
/// fails BAY_FAULT (after checking whether the item left anyway).
pub const EJECT_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for a write-protect change, a pin or an unpin: a command to the drive's
/// controller, normally under a second.
pub const CONFIGURE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a wipe: a quick erase (crypto-erase, or a fresh file system), not a full
/// overwrite; a minute is typical, fifteen is generous.
pub const WIPE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Time limits for bay operations. Past its limit a call's future is dropped, the bay is
/// treated as faulty for that command (BAY_FAULT), and the outcome is judged from the bay
/// state, never assumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BayTimeouts {
    /// Reading the inventory or the inserted items ([`INVENTORY_TIMEOUT`]).
    pub inventory: Duration,
    /// An eject ([`EJECT_TIMEOUT`]).
    pub eject: Duration,
    /// A write-protect change, pin or unpin ([`CONFIGURE_TIMEOUT`]).
    pub configure: Duration,
    /// A wipe ([`WIPE_TIMEOUT`]).
    pub wipe: Duration,
}

impl Default for BayTimeouts {
    fn default() -> Self {
        Self {
            inventory: INVENTORY_TIMEOUT,
            eject: EJECT_TIMEOUT,
            configure: CONFIGURE_TIMEOUT,
            wipe: WIPE_TIMEOUT,
        }
    }
}

/// How a command came to run: taken from `received`, or re-run by recovery from `executing`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Run {
    Fresh,
    Recovery,
}

/// Why an eject's outcome must be read from the bays.
#[derive(Debug)]
enum Interruption {
    /// The agent stopped (crash, kill) while the command was executing.
    Restart,
    /// The eject did not answer within its time limit.
    Timeout(BayError),
}

/// What a command's result says when it failed: the contract's reason, a message for people,
/// and the bay and item it concerns when there is one (absent ones go out as the contract's
/// empty strings, so no call site spells one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failed {
    /// The contract's reason.
    pub reason: FailureReason,
    /// What happened, for operators.
    pub message: String,
    /// The bay concerned, if any.
    pub bay_id: Option<String>,
    /// The item concerned, if any.
    pub item_id: Option<String>,
}

impl Failed {
    /// A failure for `reason` that names no bay and no item.
    pub fn new(reason: FailureReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            bay_id: None,
            item_id: None,
        }
    }

    /// The failure a bay error means ([`failure_reason`]), its message the error's.
    pub fn bay(error: &BayError) -> Self {
        Self::new(failure_reason(error), error.to_string())
    }

    /// The same failure, naming `bay_id`.
    pub fn at_bay(mut self, bay_id: impl Into<String>) -> Self {
        self.bay_id = Some(bay_id.into());
        self
    }

    /// The same failure, naming `item_id`.
    pub fn of_item(mut self, item_id: impl Into<String>) -> Self {
        self.item_id = Some(item_id.into());
        self
    }

    /// The same failure, naming `item_id` when there is one.
    pub fn of_item_if(mut self, item_id: Option<&str>) -> Self {
        self.item_id = item_id.map(str::to_owned);
        self
    }
}

/// Why the executor could not do its part. The command stays journaled where it was and is
/// picked up again (by the worker's next round or by recovery at the next start).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The command id cannot key the journal; the command is dropped unanswered.
    #[error("command id {0:?} is not 1 to 128 printable ASCII characters")]
    InvalidCommandId(String),
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The bays could not say what they hold, so an interrupted command cannot be settled yet.
    #[error("bays: {0}")]
    Bays(#[from] BayError),
    /// The command is not in the journal (handle() after a failed receive).
    #[error("command {0} is not journaled")]
    Unknown(String),
}

/// What one run of a command kind produced: its result, or `None` when another run took the
/// command first (it is done or executing elsewhere).
pub type Answer = Result<Option<pb::CommandResult>, ExecError>;

/// What a device does with its journaled commands; the journal rules every device shares are
/// the provided methods (see the module documentation). Implementations give [`Self::run`]
/// and [`Self::settle`] and the three things the shared rules need.
pub trait Perform: Send + Sync + 'static {
    /// The device's journal of commands and outbox.
    fn journal(&self) -> &Journal;
    /// The device's skew-corrected clock.
    fn clock(&self) -> &KioskClock;
    /// Woken whenever a message was added to the outbox.
    fn outbox_ready(&self) -> &Notify;

    /// Runs a command fresh from `received`, already validated and within its deadline:
    /// journals it `executing` before touching hardware, acts, answers (`None`: another run
    /// took it first).
    fn run(
        &self,
        id: &str,
        action: Action,
        deadline: DateTime<Utc>,
    ) -> impl Future<Output = Answer> + Send;

    /// Settles a command a crash left `executing`, from what the hardware shows or by running
    /// it again where a repeat does no harm (`None`: nothing to settle after all).
    fn settle(&self, command: &JournaledCommand) -> impl Future<Output = Answer> + Send;

    /// Journals a command that arrived (first step, before the Ack). A command already done
    /// has its stored result queued again; nothing is executed here.
    fn receive(
        &self,
        command: &pb::Command,
    ) -> impl Future<Output = Result<Arrival, ExecError>> + Send {
        async move {
            if !command::is_command_id(&command.command_id) {
                return Err(ExecError::InvalidCommandId(command.command_id.clone()));
            }
            let deadline = command.deadline.as_ref().and_then(wire::from_timestamp);
            let arrival = self
                .journal()
                .receive(
                    &command.command_id,
                    command.payload.as_ref(),
                    deadline,
                    self.clock().now(),
                )
                .await?;
            if arrival == Arrival::Done {
                self.outbox_ready().notify_one();
            }
            Ok(arrival)
        }
    }

    /// Receives `command`, runs everything pending, and returns its journaled result.
    fn handle(
        &self,
        command: &pb::Command,
    ) -> impl Future<Output = Result<pb::CommandResult, ExecError>> + Send {
        async move {
            self.receive(command).await?;
            self.recover().await?;
            self.run_pending(&CancellationToken::new()).await?;
            self.journal()
                .command(&command.command_id)
                .await?
                .and_then(|c| c.result)
                .ok_or_else(|| ExecError::Unknown(command.command_id.clone()))
        }
    }

    /// Executes every `received` command, oldest first, until none is left or `stop` is
    /// cancelled (checked between commands: a started command always runs to its result).
    /// Returns how many were finished.
    fn run_pending(
        &self,
        stop: &CancellationToken,
    ) -> impl Future<Output = Result<usize, ExecError>> + Send {
        async move {
            let mut finished = 0;
            while !stop.is_cancelled() {
                let Some(command) = self.journal().next_received().await? else {
                    break;
                };
                if let Some(result) = self.execute(&command).await? {
                    self.finish(&result).await?;
                    finished += 1;
                }
            }
            Ok(finished)
        }
    }

    /// Settles every command left `executing` by a crash; returns how many.
    fn recover(&self) -> impl Future<Output = Result<usize, ExecError>> + Send {
        async move {
            let interrupted = self.journal().executing().await?;
            let mut settled = 0;
            for command in interrupted {
                let Some(result) = self.settle(&command).await? else {
                    continue;
                };
                tracing::warn!(command_id = %command.command_id, "settled a command interrupted by a restart");
                self.finish(&result).await?;
                settled += 1;
            }
            Ok(settled)
        }
    }

    /// The worker: recovers, runs pending commands, then sleeps until `wake` or `stop`.
    /// Journal or hardware trouble is logged and retried after a pause, never fatal.
    fn run_worker(
        self: Arc<Self>,
        wake: Arc<Notify>,
        stop: CancellationToken,
    ) -> impl Future<Output = ()> + Send
    where
        Self: Sized,
    {
        async move {
            loop {
                let round = async {
                    self.recover().await?;
                    self.run_pending(&stop).await
                };
                if let Err(error) = round.await {
                    tracing::error!(%error, "command execution stalled; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        () = stop.cancelled() => break,
                    }
                }
                tokio::select! {
                    () = wake.notified() => {}
                    () = stop.cancelled() => break,
                }
            }
        }
    }

    /// Journals a result with its outbox message (once) and wakes the link.
    fn finish(
        &self,
        result: &pb::CommandResult,
    ) -> impl Future<Output = Result<(), ExecError>> + Send {
        async move {
            if self.journal().finish(result, self.clock().now()).await? {
                self.outbox_ready().notify_one();
                match &result.outcome {
                    Some(Outcome::Failure(f)) => tracing::warn!(
                        command_id = %result.command_id,
                        reason = ?FailureReason::try_from(f.reason).unwrap_or_default(),
                        message = %f.message,
                        "command failed"
                    ),
                    _ => tracing::info!(command_id = %result.command_id, "command succeeded"),
                }
            }
            Ok(())
        }
    }

    /// Checks a received command (payload, deadline) and runs it; `None` when it turned out
    /// to be done already. A bad payload fails INVALID_COMMAND, a late one DEADLINE_EXCEEDED.
    fn execute(&self, command: &JournaledCommand) -> impl Future<Output = Answer> + Send {
        async move {
            let id = command.command_id.as_str();
            let now = self.clock().now();
            let action = match command::validate(command.payload.as_ref()) {
                Ok(action) => action,
                Err(reason) => {
                    return Ok(Some(wire::failure(
                        id,
                        Failed::new(FailureReason::InvalidCommand, reason),
                        now,
                    )));
                }
            };
            let Some(deadline) = command.deadline else {
                return Ok(Some(wire::failure(
                    id,
                    Failed::new(
                        FailureReason::InvalidCommand,
                        "deadline is missing or invalid",
                    ),
                    now,
                )));
            };
            if now > deadline {
                return Ok(Some(wire::failure(
                    id,
                    Failed::new(
                        FailureReason::DeadlineExceeded,
                        format!("received after its deadline {deadline}; not started"),
                    ),
                    now,
                )));
            }
            self.run(id, action, deadline).await
        }
    }
}

/// Executes journaled commands against the bays; Provision with the content `S` gives.
pub struct Executor<B: Bays + Drives, S = NoContent> {
    journal: Journal,
    bays: Arc<B>,
    clock: KioskClock,
    timeouts: BayTimeouts,
    /// Woken whenever a message was added to the outbox.
    outbox_ready: Arc<Notify>,
    /// Where Provision gets content; `None`: Provision answers UNSUPPORTED.
    content: Option<Content<S>>,
}

impl<B: Bays + Drives, S> std::fmt::Debug for Executor<B, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").finish_non_exhaustive()
    }
}

impl<B: Bays + Drives> Executor<B> {
    /// An executor over `journal` and `bays` that provisions nothing (see
    /// [`Executor::with_content`]); `outbox_ready` is notified after every result.
    pub fn new(
        journal: Journal,
        bays: Arc<B>,
        clock: KioskClock,
        outbox_ready: Arc<Notify>,
    ) -> Self {
        Self {
            journal,
            bays,
            clock,
            timeouts: BayTimeouts::default(),
            outbox_ready,
            content: None,
        }
    }
}

impl<B: Bays + Drives, S: ContentSource> Perform for Executor<B, S> {
    fn journal(&self) -> &Journal {
        &self.journal
    }

    fn clock(&self) -> &KioskClock {
        &self.clock
    }

    fn outbox_ready(&self) -> &Notify {
        &self.outbox_ready
    }

    async fn run(&self, id: &str, action: Action, deadline: DateTime<Utc>) -> Answer {
        self.run_action(id, action, Run::Fresh, Some(deadline))
            .await
    }

    /// A lend or forced eject is settled from the bays (never re-run: a second eject would
    /// hand out a second item), a provision is wiped and failed; every other kind is run
    /// again (a repeat sets the same state).
    async fn settle(&self, command: &JournaledCommand) -> Answer {
        let id = command.command_id.as_str();
        Ok(Some(match command::validate(command.payload.as_ref()) {
            Ok(Action::Lend { .. }) => {
                self.settle_eject(command, true, Interruption::Restart)
                    .await?
            }
            Ok(Action::ForceEject { .. }) => {
                self.settle_eject(command, false, Interruption::Restart)
                    .await?
            }
            Ok(Action::Provision { order_id, .. }) => {
                provision::settle_interrupted(self, command, &order_id).await?
            }
            Ok(action) => return self.run_action(id, action, Run::Recovery, None).await,
            Err(reason) => self.failure(id, Failed::new(FailureReason::InvalidCommand, reason)),
        }))
    }
}

impl<B: Bays + Drives, S: ContentSource> Executor<B, S> {
    /// The same executor, provisioning with `content`.
    pub fn with_content<T: ContentSource>(self, content: Content<T>) -> Executor<B, T> {
        Executor {
            journal: self.journal,
            bays: self.bays,
            clock: self.clock,
            timeouts: self.timeouts,
            outbox_ready: self.outbox_ready,
            content: Some(content),
        }
    }

    /// The same executor with other time limits for bay calls (tests use short ones).
    pub fn with_timeouts(mut self, timeouts: BayTimeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// One arm per command kind: each file's `execute`.
    async fn run_action(
        &self,
        id: &str,
        action: Action,
        run: Run,
        deadline: Option<DateTime<Utc>>,
    ) -> Answer {
        match action {
            Action::Lend { order_id, target } => lend::execute(self, id, &order_id, &target).await,
            Action::Provision {
                order_id,
                package_id,
                capacity_bytes,
                write_protect,
            } => {
                let asked = provision::Asked {
                    order_id: &order_id,
                    package_id: &package_id,
                    capacity_bytes,
                    write_protect,
                    deadline,
                };
                provision::execute(self, id, asked).await
            }
            Action::SetWriteProtect { item_id, on } => {
                set_write_protect::execute(self, id, &item_id, on, run).await
            }
            Action::Wipe { item_id } => wipe::execute(self, id, &item_id, run).await,
            Action::ForceEject { bay_id } => force_eject::execute(self, id, &bay_id).await,
            Action::RequestInventory => request_inventory::execute(self, id, run).await,
            Action::Release { order_id, item_id } => {
                release::execute(self, id, &order_id, &item_id, run).await
            }
        }
    }

    /// Journals the command `executing` before any hardware is touched: from `received` for a
    /// fresh run, from `executing` for recovery. False: someone else has it, or it is done.
    async fn mark_started(
        &self,
        id: &str,
        choice: Option<&Choice>,
        run: Run,
    ) -> Result<bool, ExecError> {
        Ok(match run {
            Run::Fresh => self.journal.start(id, choice).await?,
            Run::Recovery => self.journal.resume(id, choice).await?,
        })
    }

    async fn inventory(&self) -> Result<Vec<BayInfo>, BayError> {
        within(self.timeouts.inventory, "inventory", self.bays.inventory()).await
    }

    /// The bay holding `item_id` as the bays report it now; `None` when they do not answer
    /// or it is not there. Used to judge a call that timed out.
    async fn bay_of_item(&self, item_id: &str) -> Option<BayInfo> {
        self.inventory()
            .await
            .ok()?
            .into_iter()
            .find(|b| b.item.as_ref().is_some_and(|i| i.item_id == item_id))
    }

    /// Runs a command whose effect is a state of one item, not a movement (a repeat does no
    /// harm): journals it `executing`, awaits `call` (already under its time limit), judges a
    /// timeout (it counts as done only if the bays now show `item_id` in a bay for which
    /// `done` holds; otherwise the timeout stands), and answers `success(item)` or the bay
    /// error's failure naming the item. `None`: another run has the command.
    async fn run_judged(
        &self,
        id: &str,
        run: Run,
        item_id: &str,
        call: impl Future<Output = Result<ItemInfo, BayError>>,
        done: impl Fn(&BayInfo) -> bool,
        success: impl FnOnce(ItemInfo) -> Outcome,
    ) -> Answer {
        if !self.mark_started(id, None, run).await? {
            return Ok(None);
        }
        let outcome = match call.await {
            Err(error @ BayError::Timeout { .. }) => match self.bay_of_item(item_id).await {
                Some(bay) if done(&bay) => bay.item.ok_or(error),
                _ => Err(error),
            },
            other => other,
        };
        Ok(Some(match outcome {
            Ok(item) => self.success(id, success(item)),
            Err(error) => self.failure(id, Failed::bay(&error).of_item(item_id)),
        }))
    }

    /// An eject that timed out may have happened: the command is journaled `executing` with
    /// its choice, and is settled from the bay state exactly as after a crash. When the bays
    /// cannot say, the command stays `executing` and the error stalls the worker's round, whose
    /// recovery settles it once the bays answer.
    async fn settle_timed_out_eject(&self, id: &str, lend: bool, error: BayError) -> Answer {
        tracing::error!(command_id = %id, %error, "eject timed out; judging from the bay state");
        let command = self
            .journal
            .command(id)
            .await?
            .ok_or_else(|| ExecError::Unknown(id.to_owned()))?;
        self.settle_eject(&command, lend, Interruption::Timeout(error))
            .await
            .map(Some)
    }

    /// Settles an interrupted lend (`lend`) or forced eject from what the bays hold now.
    async fn settle_eject(
        &self,
        command: &JournaledCommand,
        lend: bool,
        why: Interruption,
    ) -> Result<pb::CommandResult, ExecError> {
        let id = command.command_id.as_str();
        let Some(choice) = &command.choice else {
            return Ok(self.failure(
                id,
                Failed::new(
                    FailureReason::Internal,
                    "interrupted before choosing; nothing left the kiosk",
                ),
            ));
        };
        let Some(item_id) = choice.item_id.as_deref() else {
            let failed = match why {
                Interruption::Restart => Failed::new(
                    FailureReason::Internal,
                    "interrupted; the bay was empty and may not have opened",
                ),
                Interruption::Timeout(error) => Failed::new(
                    FailureReason::BayFault,
                    format!("{error}; the bay was empty and may not have opened"),
                ),
            };
            return Ok(self.failure(id, failed.at_bay(&choice.bay_id)));
        };
        // Inventory trouble is an error, not a verdict: deciding wrongly here would either
        // report a lend that did not happen or hide one that did.
        let bays = self.inventory().await?;
        let still_in_its_bay = bays.iter().any(|b| {
            b.bay_id == choice.bay_id && b.item.as_ref().is_some_and(|i| i.item_id == item_id)
        });
        if still_in_its_bay {
            let failed = match why {
                Interruption::Restart => Failed::new(
                    FailureReason::Internal,
                    "interrupted before eject; nothing left the kiosk",
                ),
                Interruption::Timeout(error) => Failed::new(
                    FailureReason::BayFault,
                    format!("{error}; the item is still in its bay, nothing left the kiosk"),
                ),
            };
            return Ok(self.failure(id, failed.at_bay(&choice.bay_id).of_item(item_id)));
        }
        if let Interruption::Timeout(error) = &why {
            tracing::warn!(command_id = %id, %error, bay_id = %choice.bay_id, %item_id, "the timed-out eject happened: the item left");
        }
        Ok(if lend {
            self.success(
                id,
                Outcome::Lend(pb::LendResult {
                    item_id: item_id.to_owned(),
                    bay_id: choice.bay_id.clone(),
                    item: choice.item.clone(),
                }),
            )
        } else {
            self.success(
                id,
                Outcome::ForceEject(pb::ForceEjectResult {
                    bay_id: choice.bay_id.clone(),
                    item_id: item_id.to_owned(),
                }),
            )
        })
    }

    fn success(&self, id: &str, outcome: Outcome) -> pb::CommandResult {
        wire::success(id, outcome, self.clock.now())
    }

    fn failure(&self, id: &str, failed: Failed) -> pb::CommandResult {
        wire::failure(id, failed, self.clock.now())
    }
}

/// The failure reason the contract uses for a bay error.
pub fn failure_reason(error: &BayError) -> FailureReason {
    match error {
        BayError::UnknownBay(_) | BayError::WrongKind { .. } => FailureReason::InvalidCommand,
        BayError::UnknownItem(_) => FailureReason::ItemNotFound,
        BayError::Jammed(_) => FailureReason::EjectJammed,
        BayError::EmptyOnEject(_) | BayError::Fault(_) | BayError::Timeout { .. } => {
            FailureReason::BayFault
        }
        BayError::ItemBusy { .. } => FailureReason::ItemBusy,
        BayError::WriteProtectFailed(_) => FailureReason::WriteProtectFailed,
        BayError::Occupied(_)
        | BayError::AlreadyHeld { .. }
        | BayError::Unidentified(_)
        | BayError::Storage(_) => FailureReason::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use sneakernet_proto::common::v1 as common;

    #[tokio::test]
    async fn resent_lend_is_answered_from_journal_not_re_executed() {
        let k = kiosk(SimFaults::default()).await;
        let lend = command("C-1", lend_spec(true), 60);
        let first = k.executor.handle(&lend).await.unwrap();
        let Some(Outcome::Lend(result)) = &first.outcome else {
            panic!("{first:?}")
        };
        assert_eq!(result.bay_id, "A01", "least used, then lowest bay id");
        let attributes = result.item.as_ref().unwrap().attributes.as_ref().unwrap();
        assert!(
            matches!(
                attributes.kind,
                Some(common::item_attributes::Kind::Drive(ref d)) if d.write_protected
            ),
            "write protection applied before eject"
        );
        assert_eq!(k.bays.eject_count("D-1"), 1);

        // The same command again (gateway resend after a lost Ack): same answer, no eject.
        let second = k.executor.handle(&lend).await.unwrap();
        assert_eq!(second, first);
        assert_eq!(k.bays.eject_count("D-1"), 1);
        assert_eq!(k.bays.eject_count("D-2"), 0);
        // And its result is in the outbox once (not twice) until receipted.
        assert_eq!(k.journal.outbox_len().await.unwrap(), 1);
        assert_eq!(
            k.journal
                .last_finished_command_id()
                .await
                .unwrap()
                .as_deref(),
            Some("C-1")
        );
    }

    #[tokio::test]
    async fn late_invalid_and_unsupported_commands_fail_without_executing() {
        let k = kiosk(SimFaults::default()).await;
        let late = k
            .executor
            .handle(&command("C-late", lend_spec(false), -1))
            .await
            .unwrap();
        assert_eq!(failure_of(&late).0, FailureReason::DeadlineExceeded);

        let mut no_deadline = command("C-nodl", lend_spec(false), 60);
        no_deadline.deadline = None;
        let invalid = k.executor.handle(&no_deadline).await.unwrap();
        assert_eq!(failure_of(&invalid).0, FailureReason::InvalidCommand);

        let mut no_payload = command("C-empty", lend_spec(false), 60);
        no_payload.payload = None;
        let invalid = k.executor.handle(&no_payload).await.unwrap();
        assert_eq!(failure_of(&invalid).0, FailureReason::InvalidCommand);

        let provision = k
            .executor
            .handle(&command(
                "C-prov",
                pb::command_payload::Kind::Provision(pb::ProvisionCommand {
                    order_id: "O-1".into(),
                    package_id: "pkg".into(),
                    capacity_bytes: TB,
                    write_protect: true,
                }),
                60,
            ))
            .await
            .unwrap();
        let (reason, message) = failure_of(&provision);
        assert_eq!(reason, FailureReason::Unsupported);
        assert_eq!(message, "this agent has no content service configured");

        assert!(matches!(
            k.executor.receive(&command("", lend_spec(false), 60)).await,
            Err(ExecError::InvalidCommandId(_))
        ));
        assert_eq!(k.bays.eject_count("D-1") + k.bays.eject_count("D-2"), 0);
    }

    #[tokio::test]
    async fn a_hung_eject_fails_bay_fault_and_the_worker_goes_on() {
        let (_dir, bays, journal, executor) = faulty_kiosk(Faults {
            eject_before: true,
            ..Faults::default()
        })
        .await;
        let result = handle_in_time(&executor, &command("C-1", lend_spec(false), 60)).await;
        let (reason, message) = failure_of(&result);
        assert_eq!(reason, FailureReason::BayFault, "{message}");
        assert!(message.contains("eject A01"), "{message}");
        assert!(message.contains("nothing left the kiosk"), "{message}");
        assert_eq!(bays.eject_count("D-1"), 0);
        assert_eq!(
            journal.command("C-1").await.unwrap().unwrap().state,
            crate::journal::CommandState::Done,
            "settled, not left half-done"
        );
        // The next command runs.
        let wp = handle_in_time(
            &executor,
            &command(
                "C-2",
                pb::command_payload::Kind::SetWriteProtect(pb::SetWriteProtectCommand {
                    item_id: "D-2".into(),
                    on: true,
                }),
                60,
            ),
        )
        .await;
        assert!(
            matches!(wp.outcome, Some(Outcome::SetWriteProtect(_))),
            "{wp:?}"
        );
    }

    #[tokio::test]
    async fn recovery_re_marks_an_interrupted_command_and_runs_it_once() {
        let k = kiosk(SimFaults::default()).await;
        let wp = command(
            "C-1",
            pb::command_payload::Kind::SetWriteProtect(pb::SetWriteProtectCommand {
                item_id: "D-1".into(),
                on: true,
            }),
            60,
        );
        k.executor.receive(&wp).await.unwrap();
        // A crash while it was executing.
        assert!(k.journal.start("C-1", None).await.unwrap());
        // A second start (another worker) is refused: it would run the command twice.
        assert!(!k.journal.start("C-1", None).await.unwrap());
        assert_eq!(
            k.executor
                .run_pending(&CancellationToken::new())
                .await
                .unwrap(),
            0
        );
        // Recovery re-runs it explicitly.
        assert_eq!(k.executor.recover().await.unwrap(), 1);
        let result = k
            .journal
            .command("C-1")
            .await
            .unwrap()
            .unwrap()
            .result
            .unwrap();
        assert!(
            matches!(result.outcome, Some(Outcome::SetWriteProtect(ref r)) if r.write_protected),
            "{result:?}"
        );
    }
}
