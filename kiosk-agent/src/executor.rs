//! Runs commands exactly once, using the journal.
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
//!   DEADLINE_EXCEEDED. A payload that does not validate fails INVALID_COMMAND. Provision fails
//!   UNSUPPORTED. None of these is a panic.
//! - A result is written with its outbox message in one transaction.
//! - Every bay call has a time limit ([`BayTimeouts`], defaults [`EJECT_TIMEOUT`] and the other
//!   `*_TIMEOUT` constants), so a hung bay fails its command with BAY_FAULT instead of
//!   stalling the worker for ever. A timed-out call is never assumed to have failed: an eject
//!   that timed out is settled from the bay state exactly as crash recovery settles it (the
//!   command stays journaled `executing` until then), and a timed-out write-protect change,
//!   wipe or release is judged from what the bays report afterwards.
//! - A command is taken out of `received` once ([`Journal::start`] refuses a second start);
//!   recovery re-marks an interrupted command explicitly ([`Journal::resume`]).

use std::sync::Arc;
use std::time::Duration;

use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::gateway::v1::FailureReason;
use sneakernet_proto::gateway::v1::command_result::Outcome;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::bays::{BayError, BayInfo, BayState, Bays, ItemFacts, ItemInfo, within};
use crate::clock::KioskClock;
use crate::command::{self, Action, LendTarget};
use crate::journal::{Arrival, Choice, Journal, JournalError, JournaledCommand};
use crate::selection::{self, NoChoice, WantedType};
use crate::wire;

/// The pause point right after a lend's successful eject (tests kill the agent there).
pub const AFTER_EJECT_POINT: &str = "agent::lend::after_eject";

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

/// Executes journaled commands against the bays.
pub struct Executor<B: Bays> {
    journal: Journal,
    bays: Arc<B>,
    clock: KioskClock,
    timeouts: BayTimeouts,
    /// Woken whenever a message was added to the outbox.
    outbox_ready: Arc<Notify>,
}

impl<B: Bays> std::fmt::Debug for Executor<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").finish_non_exhaustive()
    }
}

impl<B: Bays> Executor<B> {
    /// An executor over `journal` and `bays`; `outbox_ready` is notified after every result.
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
        }
    }

    /// The same executor with other time limits for bay calls (tests use short ones).
    pub fn with_timeouts(mut self, timeouts: BayTimeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Journals a command that arrived (first step, before the Ack). A command already done
    /// has its stored result queued again; nothing is executed here.
    pub async fn receive(&self, command: &pb::Command) -> Result<Arrival, ExecError> {
        if !command::is_command_id(&command.command_id) {
            return Err(ExecError::InvalidCommandId(command.command_id.clone()));
        }
        let deadline = command.deadline.as_ref().and_then(wire::from_timestamp);
        let arrival = self
            .journal
            .receive(
                &command.command_id,
                command.payload.as_ref(),
                deadline,
                self.clock.now(),
            )
            .await?;
        if arrival == Arrival::Done {
            self.outbox_ready.notify_one();
        }
        Ok(arrival)
    }

    /// Receives `command`, runs everything pending, and returns its journaled result.
    pub async fn handle(&self, command: &pb::Command) -> Result<pb::CommandResult, ExecError> {
        self.receive(command).await?;
        self.recover().await?;
        self.run_pending(&CancellationToken::new()).await?;
        self.journal
            .command(&command.command_id)
            .await?
            .and_then(|c| c.result)
            .ok_or_else(|| ExecError::Unknown(command.command_id.clone()))
    }

    /// Executes every `received` command, oldest first, until none is left or `stop` is
    /// cancelled (checked between commands: a started command always runs to its result).
    /// Returns how many were finished.
    pub async fn run_pending(&self, stop: &CancellationToken) -> Result<usize, ExecError> {
        let mut finished = 0;
        while !stop.is_cancelled() {
            let Some(command) = self.journal.next_received().await? else {
                break;
            };
            if let Some(result) = self.execute(&command).await? {
                self.finish(&result).await?;
                finished += 1;
            }
        }
        Ok(finished)
    }

    /// Settles every command left `executing` by a crash; returns how many.
    pub async fn recover(&self) -> Result<usize, ExecError> {
        let interrupted = self.journal.executing().await?;
        let mut settled = 0;
        for command in interrupted {
            let id = command.command_id.as_str();
            let result = match command::validate(command.payload.as_ref()) {
                Ok(Action::Lend { .. }) => {
                    self.settle_eject(&command, true, Interruption::Restart)
                        .await?
                }
                Ok(Action::ForceEject { .. }) => {
                    self.settle_eject(&command, false, Interruption::Restart)
                        .await?
                }
                Ok(action) => match self.run_action(id, action, Run::Recovery).await? {
                    Some(result) => result,
                    None => continue,
                },
                Err(reason) => self.failure(id, FailureReason::InvalidCommand, reason, "", ""),
            };
            tracing::warn!(command_id = %id, "settled a command interrupted by a restart");
            self.finish(&result).await?;
            settled += 1;
        }
        Ok(settled)
    }

    /// The worker: recovers, runs pending commands, then sleeps until `wake` or `stop`.
    /// Journal or bay trouble is logged and retried after a pause, never fatal.
    pub async fn run_worker(self: Arc<Self>, wake: Arc<Notify>, stop: CancellationToken) {
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

    async fn finish(&self, result: &pb::CommandResult) -> Result<(), ExecError> {
        if self.journal.finish(result, self.clock.now()).await? {
            self.outbox_ready.notify_one();
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

    /// Checks a received command and runs it; `None` when it turned out to be done already.
    async fn execute(
        &self,
        command: &JournaledCommand,
    ) -> Result<Option<pb::CommandResult>, ExecError> {
        let id = command.command_id.as_str();
        let action = match command::validate(command.payload.as_ref()) {
            Ok(action) => action,
            Err(reason) => {
                return Ok(Some(self.failure(
                    id,
                    FailureReason::InvalidCommand,
                    reason,
                    "",
                    "",
                )));
            }
        };
        let Some(deadline) = command.deadline else {
            return Ok(Some(self.failure(
                id,
                FailureReason::InvalidCommand,
                "deadline is missing or invalid",
                "",
                "",
            )));
        };
        if self.clock.now() > deadline {
            return Ok(Some(self.failure(
                id,
                FailureReason::DeadlineExceeded,
                format!("received after its deadline {deadline}; not started"),
                "",
                "",
            )));
        }
        self.run_action(id, action, Run::Fresh).await
    }

    async fn run_action(
        &self,
        id: &str,
        action: Action,
        run: Run,
    ) -> Result<Option<pb::CommandResult>, ExecError> {
        match action {
            Action::Lend { order_id, target } => self.lend(id, &order_id, &target).await,
            Action::Provision => Ok(Some(self.failure(
                id,
                FailureReason::Unsupported,
                "provisioning arrives with the content issue",
                "",
                "",
            ))),
            Action::SetWriteProtect { item_id, on } => {
                self.set_write_protect(id, &item_id, on, run).await
            }
            Action::Wipe { item_id } => self.wipe(id, &item_id, run).await,
            Action::ForceEject { bay_id } => self.force_eject(id, &bay_id).await,
            Action::RequestInventory => self.request_inventory(id, run).await,
            Action::Release { order_id, item_id } => {
                self.release(id, &order_id, &item_id, run).await
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

    /// A bay call that timed out may still have taken effect: it counts as done only if the
    /// bays now show `item_id` in a bay for which `done` holds; otherwise the timeout stands.
    /// Any other outcome passes through.
    async fn settle_timeout(
        &self,
        outcome: Result<ItemInfo, BayError>,
        item_id: &str,
        done: impl Fn(&BayInfo) -> bool,
    ) -> Result<ItemInfo, BayError> {
        match outcome {
            Err(error @ BayError::Timeout { .. }) => match self.bay_of_item(item_id).await {
                Some(bay) if done(&bay) => bay.item.ok_or(error),
                _ => Err(error),
            },
            other => other,
        }
    }

    // --- one function per command kind, each shaped alike: look, journal, act, answer ---

    async fn lend(
        &self,
        id: &str,
        order_id: &str,
        target: &LendTarget,
    ) -> Result<Option<pb::CommandResult>, ExecError> {
        let bays = match self.inventory().await {
            Ok(bays) => bays,
            Err(error) => return Ok(Some(self.bay_failure(id, &error, "", ""))),
        };
        let chosen = match target {
            LendTarget::Spec { wanted, .. } => selection::choose_by_spec(&bays, wanted),
            LendTarget::Item(item_id) => selection::choose_reserved(&bays, item_id, order_id),
        };
        let bay = match chosen {
            Ok(bay) => bay,
            Err(NoChoice::NoMatchingItem) => {
                return Ok(Some(self.failure(
                    id,
                    FailureReason::NoMatchingItem,
                    "no READY item matches the spec",
                    "",
                    "",
                )));
            }
            Err(NoChoice::ItemNotFound) => {
                let item_id = match target {
                    LendTarget::Item(item_id) => item_id.as_str(),
                    LendTarget::Spec { .. } => "",
                };
                return Ok(Some(self.failure(
                    id,
                    FailureReason::ItemNotFound,
                    format!("item is not in this kiosk or not pinned to order {order_id}"),
                    "",
                    item_id,
                )));
            }
        };
        let Some(item) = bay.item.clone() else {
            return Ok(Some(self.failure(
                id,
                FailureReason::Internal,
                "chosen bay holds no item",
                &bay.bay_id,
                "",
            )));
        };
        let bay_id = bay.bay_id.clone();
        let write_protect = match target {
            LendTarget::Spec {
                wanted: WantedType::Drive { .. },
                write_protect,
            } => Some(*write_protect),
            _ => None,
        };
        let mut leaving = item.clone();
        let mut needs_change = false;
        if let (
            Some(wanted),
            ItemFacts::Drive {
                write_protected, ..
            },
        ) = (write_protect, &mut leaving.facts)
        {
            needs_change = *write_protected != wanted;
            *write_protected = wanted;
        }
        let choice = Choice {
            bay_id: bay_id.clone(),
            item_id: Some(item.item_id.clone()),
            item: Some(wire::item(&leaving)),
        };
        if !self.journal.start(id, Some(&choice)).await? {
            return Ok(None);
        }
        tracing::info!(command_id = %id, bay_id = %bay_id, item_id = %item.item_id, "lending");
        if let (true, Some(on)) = (needs_change, write_protect)
            && let Err(error) = within(
                self.timeouts.configure,
                format!("set_write_protect {}", item.item_id),
                self.bays.set_write_protect(&item.item_id, on),
            )
            .await
        {
            // A timeout here is BAY_FAULT: nothing left the kiosk (no eject was tried), and the
            // drive's write protection is whatever the bays report from now on.
            let mut result = self.bay_failure(id, &error, &bay_id, &item.item_id);
            if let Some(Outcome::Failure(f)) = &mut result.outcome
                && matches!(
                    error,
                    BayError::WriteProtectFailed(_) | BayError::WrongKind { .. }
                )
            {
                f.reason = FailureReason::WriteProtectFailed as i32;
            }
            return Ok(Some(result));
        }
        let eject = within(
            self.timeouts.eject,
            format!("eject {bay_id}"),
            self.bays.eject(&bay_id),
        );
        let ejected = match eject.await {
            Ok(ejected) => ejected,
            Err(error @ BayError::Timeout { .. }) => {
                return self.settle_timed_out_eject(id, true, error).await;
            }
            Err(error) => return Ok(Some(self.bay_failure(id, &error, &bay_id, &item.item_id))),
        };
        sneakernet_runtime::failpoint::pause_point(AFTER_EJECT_POINT).await;
        Ok(Some(match ejected.item {
            Some(out) => {
                if out.item_id != item.item_id {
                    // The user holds whatever came out: report that, loudly.
                    tracing::error!(command_id = %id, bay_id = %bay_id, expected = %item.item_id, ejected = %out.item_id, "bay ejected another item than chosen");
                }
                self.success(
                    id,
                    Outcome::Lend(pb::LendResult {
                        item_id: out.item_id.clone(),
                        bay_id: bay_id.clone(),
                        item: Some(wire::item(&out)),
                    }),
                )
            }
            None => self.failure(
                id,
                FailureReason::BayFault,
                "the bay opened empty",
                &bay_id,
                &item.item_id,
            ),
        }))
    }

    async fn set_write_protect(
        &self,
        id: &str,
        item_id: &str,
        on: bool,
        run: Run,
    ) -> Result<Option<pb::CommandResult>, ExecError> {
        if !self.mark_started(id, None, run).await? {
            return Ok(None);
        }
        let call = within(
            self.timeouts.configure,
            format!("set_write_protect {item_id}"),
            self.bays.set_write_protect(item_id, on),
        );
        let outcome = self
            .settle_timeout(call.await, item_id, |bay| {
                bay.item.as_ref().is_some_and(|item| {
                    matches!(item.facts, ItemFacts::Drive { write_protected, .. } if write_protected == on)
                })
            })
            .await;
        Ok(Some(match outcome {
            Ok(item) => {
                let write_protected = matches!(
                    item.facts,
                    ItemFacts::Drive {
                        write_protected: true,
                        ..
                    }
                );
                self.success(
                    id,
                    Outcome::SetWriteProtect(pb::SetWriteProtectResult {
                        item_id: item.item_id,
                        write_protected,
                    }),
                )
            }
            Err(error @ BayError::WriteProtectFailed(_)) => self.failure(
                id,
                FailureReason::WriteProtectFailed,
                error.to_string(),
                "",
                item_id,
            ),
            Err(error) => self.bay_failure(id, &error, "", item_id),
        }))
    }

    async fn wipe(
        &self,
        id: &str,
        item_id: &str,
        run: Run,
    ) -> Result<Option<pb::CommandResult>, ExecError> {
        if !self.mark_started(id, None, run).await? {
            return Ok(None);
        }
        let call = within(
            self.timeouts.wipe,
            format!("wipe {item_id}"),
            self.bays.wipe(item_id),
        );
        // Done only if the bays now report the drive blank and READY.
        let outcome = self
            .settle_timeout(call.await, item_id, |bay| {
                bay.state == BayState::Ready
                    && bay.item.as_ref().is_some_and(|item| {
                        matches!(
                            item.facts,
                            ItemFacts::Drive {
                                content_package_id: None,
                                write_protected: false,
                                ..
                            }
                        )
                    })
            })
            .await;
        Ok(Some(match outcome {
            Ok(item) => self.success(
                id,
                Outcome::Wipe(pb::WipeResult {
                    item_id: item.item_id,
                }),
            ),
            Err(error) => self.bay_failure(id, &error, "", item_id),
        }))
    }

    async fn force_eject(
        &self,
        id: &str,
        bay_id: &str,
    ) -> Result<Option<pb::CommandResult>, ExecError> {
        let bays = match self.inventory().await {
            Ok(bays) => bays,
            Err(error) => return Ok(Some(self.bay_failure(id, &error, bay_id, ""))),
        };
        let Some(bay) = bays.iter().find(|b| b.bay_id == bay_id) else {
            return Ok(Some(self.bay_failure(
                id,
                &BayError::UnknownBay(bay_id.to_owned()),
                bay_id,
                "",
            )));
        };
        let choice = Choice {
            bay_id: bay_id.to_owned(),
            item_id: bay.item.as_ref().map(|i| i.item_id.clone()),
            item: bay.item.as_ref().map(wire::item),
        };
        if !self.journal.start(id, Some(&choice)).await? {
            return Ok(None);
        }
        let eject = within(
            self.timeouts.eject,
            format!("eject {bay_id}"),
            self.bays.eject(bay_id),
        );
        Ok(Some(match eject.await {
            Err(error @ BayError::Timeout { .. }) => {
                return self.settle_timed_out_eject(id, false, error).await;
            }
            Ok(ejected) => self.success(
                id,
                Outcome::ForceEject(pb::ForceEjectResult {
                    bay_id: bay_id.to_owned(),
                    item_id: ejected.item.map(|i| i.item_id).unwrap_or_default(),
                }),
            ),
            Err(error) => {
                let item_id = choice.item_id.as_deref().unwrap_or("");
                self.bay_failure(id, &error, bay_id, item_id)
            }
        }))
    }

    async fn request_inventory(
        &self,
        id: &str,
        run: Run,
    ) -> Result<Option<pb::CommandResult>, ExecError> {
        if !self.mark_started(id, None, run).await? {
            return Ok(None);
        }
        Ok(Some(match self.inventory().await {
            Ok(bays) => self.success(
                id,
                Outcome::RequestInventory(pb::RequestInventoryResult {
                    inventory: Some(wire::inventory(&bays, self.clock.now())),
                }),
            ),
            Err(error) => self.bay_failure(id, &error, "", ""),
        }))
    }

    async fn release(
        &self,
        id: &str,
        order_id: &str,
        item_id: &str,
        run: Run,
    ) -> Result<Option<pb::CommandResult>, ExecError> {
        if !self.mark_started(id, None, run).await? {
            return Ok(None);
        }
        let call = within(
            self.timeouts.configure,
            format!("unpin {item_id}"),
            self.bays.unpin(item_id, order_id),
        );
        // Released only if the bays now report the drive READY.
        let outcome = self
            .settle_timeout(call.await, item_id, |bay| bay.state == BayState::Ready)
            .await;
        Ok(Some(match outcome {
            Ok(item) => self.success(
                id,
                Outcome::Release(pb::ReleaseResult {
                    item_id: item.item_id,
                }),
            ),
            Err(error) => self.bay_failure(id, &error, "", item_id),
        }))
    }

    /// An eject that timed out may have happened: the command is journaled `executing` with
    /// its choice, and is settled from the bay state exactly as after a crash. When the bays
    /// cannot say, the command stays `executing` and the error stalls the worker's round, whose
    /// recovery settles it once the bays answer.
    async fn settle_timed_out_eject(
        &self,
        id: &str,
        lend: bool,
        error: BayError,
    ) -> Result<Option<pb::CommandResult>, ExecError> {
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
                FailureReason::Internal,
                "interrupted before choosing; nothing left the kiosk",
                "",
                "",
            ));
        };
        let Some(item_id) = choice.item_id.as_deref() else {
            return Ok(match why {
                Interruption::Restart => self.failure(
                    id,
                    FailureReason::Internal,
                    "interrupted; the bay was empty and may not have opened",
                    &choice.bay_id,
                    "",
                ),
                Interruption::Timeout(error) => self.failure(
                    id,
                    FailureReason::BayFault,
                    format!("{error}; the bay was empty and may not have opened"),
                    &choice.bay_id,
                    "",
                ),
            });
        };
        // Inventory trouble is an error, not a verdict: deciding wrongly here would either
        // report a lend that did not happen or hide one that did.
        let bays = self.inventory().await?;
        let still_in_its_bay = bays.iter().any(|b| {
            b.bay_id == choice.bay_id && b.item.as_ref().is_some_and(|i| i.item_id == item_id)
        });
        if still_in_its_bay {
            return Ok(match why {
                Interruption::Restart => self.failure(
                    id,
                    FailureReason::Internal,
                    "interrupted before eject; nothing left the kiosk",
                    &choice.bay_id,
                    item_id,
                ),
                Interruption::Timeout(error) => self.failure(
                    id,
                    FailureReason::BayFault,
                    format!("{error}; the item is still in its bay, nothing left the kiosk"),
                    &choice.bay_id,
                    item_id,
                ),
            });
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

    fn failure(
        &self,
        id: &str,
        reason: FailureReason,
        message: impl Into<String>,
        bay_id: &str,
        item_id: &str,
    ) -> pb::CommandResult {
        wire::failure(id, reason, message, bay_id, item_id, self.clock.now())
    }

    fn bay_failure(
        &self,
        id: &str,
        error: &BayError,
        bay_id: &str,
        item_id: &str,
    ) -> pb::CommandResult {
        self.failure(
            id,
            failure_reason(error),
            error.to_string(),
            bay_id,
            item_id,
        )
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
    use super::*;
    use crate::bays::{Ejected, Inserted, ItemInfo};
    use crate::config::{SimBayConfig, SimFaults, SimItemConfig, SimItemKind, SimulationConfig};
    use crate::simulated::SimulatedBays;
    use chrono::Utc;
    use sneakernet_proto::common::v1 as common;

    const TB: u64 = 1_000_000_000_000;

    fn drive(id: &str, package: &str) -> SimItemConfig {
        SimItemConfig {
            kind: SimItemKind::Drive,
            item_id: id.into(),
            capacity_bytes: Some(TB),
            content_package_id: Some(package.into()),
            write_protected: false,
            charge_percent: None,
        }
    }

    fn simulation(faults: SimFaults) -> SimulationConfig {
        SimulationConfig {
            bays: vec![
                SimBayConfig {
                    id: "A01".into(),
                    item: Some(drive("D-1", "pkg")),
                },
                SimBayConfig {
                    id: "A02".into(),
                    item: Some(drive("D-2", "pkg")),
                },
            ],
            faults,
        }
    }

    struct Kiosk {
        _dir: tempfile::TempDir,
        bays: Arc<SimulatedBays>,
        journal: Journal,
        executor: Executor<SimulatedBays>,
    }

    async fn kiosk(faults: SimFaults) -> Kiosk {
        let dir = tempfile::tempdir().unwrap();
        let bays = Arc::new(
            SimulatedBays::open(dir.path(), &simulation(faults))
                .await
                .unwrap(),
        );
        let journal = Journal::open(dir.path()).await.unwrap();
        let executor = Executor::new(
            journal.clone(),
            Arc::clone(&bays),
            KioskClock::new(),
            Arc::new(Notify::new()),
        );
        Kiosk {
            _dir: dir,
            bays,
            journal,
            executor,
        }
    }

    fn command(id: &str, kind: pb::command_payload::Kind, deadline_in_s: i64) -> pb::Command {
        pb::Command {
            command_id: id.into(),
            deadline: Some(wire::timestamp(
                Utc::now() + chrono::Duration::seconds(deadline_in_s),
            )),
            payload: Some(pb::CommandPayload { kind: Some(kind) }),
            attempt: 1,
        }
    }

    fn lend_spec(write_protect: bool) -> pb::command_payload::Kind {
        pb::command_payload::Kind::Lend(pb::LendCommand {
            target: Some(pb::lend_command::Target::Spec(common::ItemSpec {
                item_type: Some(common::ItemType {
                    kind: common::ItemKind::Drive as i32,
                    capacity_bytes: TB,
                    content_package_id: "pkg".into(),
                }),
                write_protect,
            })),
            order_id: "O-1".into(),
        })
    }

    fn failure_of(result: &pb::CommandResult) -> (FailureReason, String) {
        match &result.outcome {
            Some(Outcome::Failure(f)) => (
                FailureReason::try_from(f.reason).unwrap(),
                f.message.clone(),
            ),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

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
    async fn interrupted_lend_whose_item_left_is_reported_lent() {
        let k = kiosk(SimFaults::default()).await;
        let lend = command("C-1", lend_spec(false), 60);
        k.executor.receive(&lend).await.unwrap();
        // Crash between the eject and the result: journaled executing, item gone.
        let leaving = k.bays.snapshot()[0].item.clone().unwrap();
        let choice = Choice {
            bay_id: "A01".into(),
            item_id: Some("D-1".into()),
            item: Some(wire::item(&leaving)),
        };
        assert!(k.journal.start("C-1", Some(&choice)).await.unwrap());
        k.bays.eject("A01").await.unwrap();

        assert_eq!(k.executor.recover().await.unwrap(), 1);
        let result = k
            .journal
            .command("C-1")
            .await
            .unwrap()
            .unwrap()
            .result
            .unwrap();
        let Some(Outcome::Lend(lent)) = result.outcome else {
            panic!("{result:?}")
        };
        assert_eq!(
            (lent.bay_id.as_str(), lent.item_id.as_str()),
            ("A01", "D-1")
        );
        assert_eq!(lent.item, Some(wire::item(&leaving)));
        // Resent after the restart: answered, not executed again.
        k.executor.handle(&lend).await.unwrap();
        assert_eq!(k.bays.eject_count("D-1"), 1);
        assert_eq!(k.bays.eject_count("D-2"), 0);
    }

    #[tokio::test]
    async fn interrupted_lend_whose_item_stayed_fails_and_ejects_nothing() {
        let k = kiosk(SimFaults::default()).await;
        let lend = command("C-1", lend_spec(false), 60);
        k.executor.receive(&lend).await.unwrap();
        let choice = Choice {
            bay_id: "A01".into(),
            item_id: Some("D-1".into()),
            item: None,
        };
        assert!(k.journal.start("C-1", Some(&choice)).await.unwrap());

        let result = k.executor.handle(&lend).await.unwrap();
        let (reason, message) = failure_of(&result);
        assert_eq!(reason, FailureReason::Internal);
        assert!(message.contains("interrupted before eject"), "{message}");
        assert_eq!(k.bays.eject_count("D-1"), 0);
        assert_eq!(k.bays.snapshot()[0].state, BayState::Ready);
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
        assert_eq!(message, "provisioning arrives with the content issue");

        assert!(matches!(
            k.executor.receive(&command("", lend_spec(false), 60)).await,
            Err(ExecError::InvalidCommandId(_))
        ));
        assert_eq!(k.bays.eject_count("D-1") + k.bays.eject_count("D-2"), 0);
    }

    #[tokio::test]
    async fn reservation_lends_only_the_pinned_drive_and_jams_are_reported() {
        let k = kiosk(SimFaults {
            jammed_bays: vec!["A01".into()],
            ..SimFaults::default()
        })
        .await;
        let by_item = |id: &str, item: &str, order: &str| {
            command(
                id,
                pb::command_payload::Kind::Lend(pb::LendCommand {
                    target: Some(pb::lend_command::Target::ItemId(item.into())),
                    order_id: order.into(),
                }),
                60,
            )
        };
        let not_pinned = k
            .executor
            .handle(&by_item("C-1", "D-2", "O-7"))
            .await
            .unwrap();
        assert_eq!(failure_of(&not_pinned).0, FailureReason::ItemNotFound);

        k.bays.pin("D-2", "O-7").await.unwrap();
        let other_order = k
            .executor
            .handle(&by_item("C-2", "D-2", "O-8"))
            .await
            .unwrap();
        assert_eq!(failure_of(&other_order).0, FailureReason::ItemNotFound);
        let lent = k
            .executor
            .handle(&by_item("C-3", "D-2", "O-7"))
            .await
            .unwrap();
        assert!(matches!(lent.outcome, Some(Outcome::Lend(ref l)) if l.item_id == "D-2"));

        // A01 is jammed: the walk-up lend fails clearly and nothing leaves.
        let jammed = k
            .executor
            .handle(&command("C-4", lend_spec(false), 60))
            .await
            .unwrap();
        assert_eq!(failure_of(&jammed).0, FailureReason::EjectJammed);
        assert_eq!(k.bays.eject_count("D-1"), 0);
        // The bay is now FAULT: the next walk-up lend finds nothing to lend.
        let none = k
            .executor
            .handle(&command("C-5", lend_spec(false), 60))
            .await
            .unwrap();
        assert_eq!(failure_of(&none).0, FailureReason::NoMatchingItem);
    }

    #[tokio::test]
    async fn maintenance_commands_report_their_results() {
        let k = kiosk(SimFaults::default()).await;
        let inventory = k
            .executor
            .handle(&command(
                "C-inv",
                pb::command_payload::Kind::RequestInventory(pb::RequestInventoryCommand {}),
                60,
            ))
            .await
            .unwrap();
        let Some(Outcome::RequestInventory(r)) = inventory.outcome else {
            panic!()
        };
        assert_eq!(r.inventory.unwrap().bays.len(), 2);

        let wp = k
            .executor
            .handle(&command(
                "C-wp",
                pb::command_payload::Kind::SetWriteProtect(pb::SetWriteProtectCommand {
                    item_id: "D-1".into(),
                    on: true,
                }),
                60,
            ))
            .await
            .unwrap();
        assert!(matches!(wp.outcome, Some(Outcome::SetWriteProtect(ref r)) if r.write_protected));

        let eject = k
            .executor
            .handle(&command(
                "C-fe",
                pb::command_payload::Kind::ForceEject(pb::ForceEjectCommand {
                    bay_id: "A02".into(),
                }),
                60,
            ))
            .await
            .unwrap();
        assert!(matches!(eject.outcome, Some(Outcome::ForceEject(ref r)) if r.item_id == "D-2"));

        let unknown = k
            .executor
            .handle(&command(
                "C-wipe",
                pb::command_payload::Kind::Wipe(pb::WipeCommand {
                    item_id: "D-2".into(),
                }),
                60,
            ))
            .await
            .unwrap();
        assert_eq!(failure_of(&unknown).0, FailureReason::ItemNotFound);
    }

    /// Which calls of [`HangingBays`] never answer.
    #[derive(Clone, Copy, Default)]
    struct Hang {
        /// `eject` hangs before touching the bay.
        eject_before: bool,
        /// `eject` does its work, then never answers.
        eject_after: bool,
        /// `wipe` hangs before touching the drive.
        wipe: bool,
    }

    /// Simulated bays whose chosen calls hang like a stuck mechanism.
    struct HangingBays {
        inner: SimulatedBays,
        hang: Hang,
    }

    impl Bays for HangingBays {
        async fn inventory(&self) -> Result<Vec<BayInfo>, BayError> {
            self.inner.inventory().await
        }
        async fn eject(&self, bay_id: &str) -> Result<Ejected, BayError> {
            if self.hang.eject_before {
                std::future::pending::<()>().await;
            }
            let ejected = self.inner.eject(bay_id).await;
            if self.hang.eject_after {
                std::future::pending::<()>().await;
            }
            ejected
        }
        async fn set_write_protect(&self, item_id: &str, on: bool) -> Result<ItemInfo, BayError> {
            self.inner.set_write_protect(item_id, on).await
        }
        async fn wipe(&self, item_id: &str) -> Result<ItemInfo, BayError> {
            if self.hang.wipe {
                std::future::pending::<()>().await;
            }
            self.inner.wipe(item_id).await
        }
        async fn pin(&self, item_id: &str, order_id: &str) -> Result<ItemInfo, BayError> {
            self.inner.pin(item_id, order_id).await
        }
        async fn unpin(&self, item_id: &str, order_id: &str) -> Result<ItemInfo, BayError> {
            self.inner.unpin(item_id, order_id).await
        }
        async fn pending_inserted(&self) -> Result<Vec<Inserted>, BayError> {
            self.inner.pending_inserted().await
        }
        async fn confirm_inserted(&self, insertion_id: &str) -> Result<(), BayError> {
            self.inner.confirm_inserted(insertion_id).await
        }
    }

    const SHORT: BayTimeouts = BayTimeouts {
        inventory: Duration::from_secs(5),
        eject: Duration::from_millis(200),
        configure: Duration::from_millis(200),
        wipe: Duration::from_millis(200),
    };

    async fn hanging_kiosk(
        hang: Hang,
    ) -> (
        tempfile::TempDir,
        SimulatedBays,
        Journal,
        Executor<HangingBays>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let inner = SimulatedBays::open(dir.path(), &simulation(SimFaults::default()))
            .await
            .unwrap();
        let journal = Journal::open(dir.path()).await.unwrap();
        let executor = Executor::new(
            journal.clone(),
            Arc::new(HangingBays {
                inner: inner.clone(),
                hang,
            }),
            KioskClock::new(),
            Arc::new(Notify::new()),
        )
        .with_timeouts(SHORT);
        (dir, inner, journal, executor)
    }

    /// Runs `command` to its result, failing the test (not hanging it) after 10 s.
    async fn handle_in_time<B: Bays>(
        executor: &Executor<B>,
        command: &pb::Command,
    ) -> pb::CommandResult {
        tokio::time::timeout(Duration::from_secs(10), executor.handle(command))
            .await
            .expect("a hung bay must not stall the executor")
            .unwrap()
    }

    #[tokio::test]
    async fn a_hung_eject_fails_bay_fault_and_the_worker_goes_on() {
        let (_dir, bays, journal, executor) = hanging_kiosk(Hang {
            eject_before: true,
            ..Hang::default()
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
    async fn an_eject_that_timed_out_after_the_item_left_is_reported_lent() {
        let (_dir, bays, _journal, executor) = hanging_kiosk(Hang {
            eject_after: true,
            ..Hang::default()
        })
        .await;
        let result = handle_in_time(&executor, &command("C-1", lend_spec(false), 60)).await;
        let Some(Outcome::Lend(lent)) = &result.outcome else {
            panic!("the item left, so the lend happened: {result:?}")
        };
        assert_eq!(
            (lent.bay_id.as_str(), lent.item_id.as_str()),
            ("A01", "D-1")
        );
        assert_eq!(bays.eject_count("D-1"), 1);
        // A forced eject that times out after opening is settled the same way.
        let forced = handle_in_time(
            &executor,
            &command(
                "C-2",
                pb::command_payload::Kind::ForceEject(pb::ForceEjectCommand {
                    bay_id: "A02".into(),
                }),
                60,
            ),
        )
        .await;
        assert!(
            matches!(forced.outcome, Some(Outcome::ForceEject(ref f)) if f.item_id == "D-2"),
            "{forced:?}"
        );
    }

    #[tokio::test]
    async fn a_hung_wipe_fails_bay_fault() {
        let (_dir, bays, _journal, executor) = hanging_kiosk(Hang {
            wipe: true,
            ..Hang::default()
        })
        .await;
        let result = handle_in_time(
            &executor,
            &command(
                "C-1",
                pb::command_payload::Kind::Wipe(pb::WipeCommand {
                    item_id: "D-1".into(),
                }),
                60,
            ),
        )
        .await;
        let (reason, message) = failure_of(&result);
        assert_eq!(reason, FailureReason::BayFault, "{message}");
        assert!(message.contains("wipe D-1"), "{message}");
        // It never wiped: the drive still holds its content and is reported as such.
        assert!(matches!(
            bays.snapshot()[0].item.as_ref().unwrap().facts,
            ItemFacts::Drive {
                content_package_id: Some(_),
                ..
            }
        ));
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
