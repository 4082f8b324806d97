//! The kiosk's bays, whatever mechanism is behind them: the [`Bays`] trait and the plain types
//! it speaks in.
//!
//! Guarantees an implementation must give:
//! - `inventory` reports every bay of the kiosk, including empty and faulty ones;
//! - an operation that returns `Ok` has physically happened and is durable (a restart after
//!   `eject` returned never shows the item in its bay again); one that returns `Err` changed
//!   nothing the user could take away (no item left the kiosk);
//! - errors are typed ([`BayError`]) so the executor can answer the right failure reason;
//! - an operation whose future is dropped before it finished (the executor gives every call a
//!   time limit, see [`crate::executor::BayTimeouts`]) leaves `inventory` truthful: the item is
//!   either still in its bay or gone, and the executor settles the command from that;
//! - an inserted item is reported by [`Bays::pending_inserted`] until
//!   [`Bays::confirm_inserted`] names it, across restarts, always under the same
//!   `insertion_id`: the agent first commits the `ItemReturned` to its outbox (keyed by that
//!   id), then confirms, so a crash anywhere in between never loses nor doubles a return.
//!
//! Everything here is plain data; converting to the wire types happens in [`crate::wire`].

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Kind of lendable item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ItemKind {
    /// A portable hard drive.
    Drive,
    /// A power bank.
    PowerBank,
}

/// Measured facts about one item, by kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemFacts {
    /// A drive.
    Drive {
        /// Nominal capacity in bytes.
        capacity_bytes: u64,
        /// The verified content package it holds; `None` when blank.
        content_package_id: Option<String>,
        /// Whether write protection is on.
        write_protected: bool,
    },
    /// A power bank.
    PowerBank {
        /// State of charge, 0 to 100.
        charge_percent: u32,
    },
}

/// One physical item as the kiosk identified it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemInfo {
    /// The item's own id (1 to 64 printable ASCII characters).
    pub item_id: String,
    /// What the kiosk measured about it.
    pub facts: ItemFacts,
}

impl ItemInfo {
    /// The item's kind.
    pub fn kind(&self) -> ItemKind {
        match self.facts {
            ItemFacts::Drive { .. } => ItemKind::Drive,
            ItemFacts::PowerBank { .. } => ItemKind::PowerBank,
        }
    }
}

/// The condition of a bay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BayState {
    /// No item.
    Empty,
    /// Holds an item that may be lent to a walk-up user.
    Ready,
    /// Holds an item being worked on (wiped, charged, provisioned); not lendable.
    Busy,
    /// Holds a drive kept for one reservation; lent only to that order.
    Pinned {
        /// The order it is kept for.
        order_id: String,
    },
    /// Holds an item set aside (unknown, failed verification); not lendable.
    Quarantined,
    /// The mechanism reported a fault; nothing in it can be ejected normally.
    Fault,
}

/// One bay and what it holds, at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BayInfo {
    /// The bay's id, unique in the kiosk.
    pub bay_id: String,
    /// Its condition.
    pub state: BayState,
    /// The item in it, if any.
    pub item: Option<ItemInfo>,
    /// How many times the item in it has been lent (ejected) from this kiosk; 0 when empty.
    pub lend_count: u32,
}

/// An item that came into a bay (a return, or an operator stocking the kiosk).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inserted {
    /// This insertion's id (a UUID), assigned when the bay detected the item and stored with
    /// it: the same on every report until confirmed. The agent uses it as the `message_id` of
    /// the `ItemReturned`, so a report repeated after a crash is the same message.
    pub insertion_id: String,
    /// The bay it is in.
    pub bay_id: String,
    /// The item as identified.
    pub item: ItemInfo,
    /// When the bay detected it.
    pub at: DateTime<Utc>,
}

/// Why a bay operation did not happen. Nothing left the kiosk in any of these cases.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BayError {
    /// No bay has this id.
    #[error("no bay {0}")]
    UnknownBay(String),
    /// No bay holds this item.
    #[error("item {0} is not in this kiosk")]
    UnknownItem(String),
    /// The eject mechanism jammed; the item stays in.
    #[error("bay {0} jammed")]
    Jammed(String),
    /// The bay reported an item but nothing came out.
    #[error("bay {0} reported an item but ejected nothing")]
    EmptyOnEject(String),
    /// The bay is in FAULT and refuses the operation.
    #[error("bay {0} is faulty")]
    Fault(String),
    /// The item's state does not allow the operation (for example wiping a pinned drive).
    #[error("item {item_id} is busy: {reason}")]
    ItemBusy {
        /// The item.
        item_id: String,
        /// Why.
        reason: String,
    },
    /// The operation does not apply to this kind of item (write-protecting a power bank).
    #[error("item {item_id} is a {kind:?}: {reason}")]
    WrongKind {
        /// The item.
        item_id: String,
        /// What it is.
        kind: ItemKind,
        /// What was asked.
        reason: String,
    },
    /// The drive did not accept the write-protect change.
    #[error("item {0} did not accept the write-protect change")]
    WriteProtectFailed(String),
    /// An insert into a bay that already holds an item.
    #[error("bay {0} is not empty")]
    Occupied(String),
    /// An insert of an item the kiosk already holds in another bay.
    #[error("item {item_id} is already in bay {bay_id}")]
    AlreadyHeld {
        /// The item.
        item_id: String,
        /// Where it is.
        bay_id: String,
    },
    /// An inserted item could not be identified or is malformed.
    #[error("cannot identify the item: {0}")]
    Unidentified(String),
    /// The mechanism's own state could not be read or saved.
    #[error("bay state storage failed: {0}")]
    Storage(String),
    /// The operation did not finish within its time limit; the agent stopped waiting. Whether
    /// it took effect is judged from [`Bays::inventory`], never assumed.
    #[error("bay operation {operation} did not finish within {after:?}")]
    Timeout {
        /// The operation (`eject A01`, `wipe D-1`, ...).
        operation: String,
        /// The limit it exceeded.
        after: Duration,
    },
}

/// What an eject produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ejected {
    /// The bay opened.
    pub bay_id: String,
    /// The item that left; `None` when the bay was empty (a forced eject of an empty bay).
    pub item: Option<ItemInfo>,
}

/// The kiosk's bay hardware. Futures are `Send` so the executor can run on any worker thread.
pub trait Bays: Send + Sync + 'static {
    /// Every bay with its state, item, attributes and lend count.
    fn inventory(&self) -> impl Future<Output = Result<Vec<BayInfo>, BayError>> + Send;

    /// Opens `bay_id` and pushes out what it holds. `Ok` means the item left the kiosk.
    fn eject(&self, bay_id: &str) -> impl Future<Output = Result<Ejected, BayError>> + Send;

    /// Turns a drive's write protection on or off; returns the drive as it is now.
    fn set_write_protect(
        &self,
        item_id: &str,
        on: bool,
    ) -> impl Future<Output = Result<ItemInfo, BayError>> + Send;

    /// Erases a drive that is not pinned; returns it, blank and READY.
    fn wipe(&self, item_id: &str) -> impl Future<Output = Result<ItemInfo, BayError>> + Send;

    /// Keeps a READY drive for `order_id` (PINNED): only a lend for that order may take it.
    fn pin(
        &self,
        item_id: &str,
        order_id: &str,
    ) -> impl Future<Output = Result<ItemInfo, BayError>> + Send;

    /// Releases a drive pinned to `order_id`: it becomes READY for walk-up lends. Unpinning a
    /// drive that is already READY succeeds (idempotent); one pinned to another order is busy.
    fn unpin(
        &self,
        item_id: &str,
        order_id: &str,
    ) -> impl Future<Output = Result<ItemInfo, BayError>> + Send;

    /// Items put into bays and not yet confirmed, oldest first. An item stays listed, with
    /// the same [`Inserted::insertion_id`], on every call and across restarts until
    /// [`Bays::confirm_inserted`] names it.
    fn pending_inserted(&self) -> impl Future<Output = Result<Vec<Inserted>, BayError>> + Send;

    /// Forgets the pending insertion `insertion_id`: its return is durably reported. `Ok` for
    /// an id that is not pending (already confirmed), so a confirmation repeated after a crash
    /// is harmless.
    fn confirm_inserted(
        &self,
        insertion_id: &str,
    ) -> impl Future<Output = Result<(), BayError>> + Send;
}

/// Runs one bay call with a time limit: past `limit` the call's future is dropped and the
/// answer is [`BayError::Timeout`] naming `operation`. Whether a dropped call took effect is for
/// the caller to judge from [`Bays::inventory`].
pub async fn within<T>(
    limit: Duration,
    operation: impl Into<String>,
    call: impl Future<Output = Result<T, BayError>>,
) -> Result<T, BayError> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => Err(BayError::Timeout {
            operation: operation.into(),
            after: limit,
        }),
    }
}
