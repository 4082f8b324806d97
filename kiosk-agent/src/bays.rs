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
        /// Whether the drive has its own remote link module (the NB-IoT module of its
        /// interface), through which its write protection is toggled while it is lent.
        remote_link: bool,
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

/// Why a drive's files could not be written or read. Blocking file access maps the operating
/// system's answers onto these: ENOSPC is [`DriveError::Full`], EROFS (a drive whose write
/// protection is on) is [`DriveError::WriteProtected`], anything else is [`DriveError::Io`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DriveError {
    /// The drive has no room for what was asked (the write did not happen).
    #[error("drive {item_id} is full")]
    Full {
        /// The drive.
        item_id: String,
    },
    /// The drive's write protection is on: nothing may be written or erased file by file.
    #[error("drive {0} is write-protected")]
    WriteProtected(String),
    /// No drive with this id is in the kiosk.
    #[error("drive {0} is not in this kiosk")]
    UnknownDrive(String),
    /// A path that is not a relative, "/"-separated path inside the drive.
    #[error("{0:?} is not a path inside a drive")]
    BadPath(String),
    /// The file does not exist on the drive.
    #[error("{path} is missing on drive {item_id}")]
    Missing {
        /// The drive.
        item_id: String,
        /// The file.
        path: String,
    },
    /// Any other input/output error.
    #[error("drive {item_id}: {message}")]
    Io {
        /// The drive.
        item_id: String,
        /// What failed.
        message: String,
    },
}

impl DriveError {
    /// The typed error an operating-system error on drive `item_id` means.
    pub fn from_io(item_id: &str, context: &str, error: &std::io::Error) -> Self {
        match error.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => Self::Full {
                item_id: item_id.to_owned(),
            },
            std::io::ErrorKind::ReadOnlyFilesystem => Self::WriteProtected(item_id.to_owned()),
            _ => Self::Io {
                item_id: item_id.to_owned(),
                message: format!("{context}: {error}"),
            },
        }
    }
}

/// True when `path` can name a file inside a drive: relative, "/"-separated, 1 to 1024 bytes,
/// no empty, "." or ".." segment, no backslash or NUL (the content contract's rule), so a
/// manifest can never write outside the drive.
pub fn is_drive_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 1024
        && !path.contains(['\\', '\0'])
        && path
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
}

/// One file being written onto a drive, with the room the drive had for it when it was
/// opened. A write that would pass that room fails [`DriveError::Full`] and writes nothing;
/// [`DriveFile::finish`] makes the file durable.
#[derive(Debug)]
pub struct DriveFile {
    item_id: String,
    file: std::fs::File,
    room: u64,
    written: u64,
}

impl DriveFile {
    /// Wraps an open `file` of drive `item_id` that may grow by at most `room` bytes.
    pub fn new(item_id: &str, file: std::fs::File, room: u64) -> Self {
        Self {
            item_id: item_id.to_owned(),
            file,
            room,
            written: 0,
        }
    }

    /// Appends `bytes` (blocking).
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), DriveError> {
        use std::io::Write;
        let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        let after = self.written.saturating_add(len);
        if after > self.room {
            return Err(DriveError::Full {
                item_id: self.item_id.clone(),
            });
        }
        self.file
            .write_all(bytes)
            .map_err(|e| DriveError::from_io(&self.item_id, "write", &e))?;
        self.written = after;
        Ok(())
    }

    /// Flushes the file to the drive (fsync) and returns how many bytes were written.
    pub fn finish(self) -> Result<u64, DriveError> {
        self.file
            .sync_all()
            .map_err(|e| DriveError::from_io(&self.item_id, "fsync", &e))?;
        Ok(self.written)
    }
}

/// The drives in the bays, for provisioning, stocking and verification: their files, and the
/// states those steps move them through. The file methods block on disk I/O: call them from
/// `spawn_blocking`, never on the runtime.
///
/// Reading back (guarantee of [`Drives::read_back`]): what it returns comes from the drive,
/// not from the kiosk's page cache, so a verification proves the bytes are on the medium. On
/// real hardware the driver opens the file with `O_DIRECT` (aligned buffers), or, where the
/// drive's file system refuses `O_DIRECT`, calls `posix_fadvise(POSIX_FADV_DONTNEED)` on the
/// whole file after the writer's fsync and before reading, which drops the clean cached pages
/// so the read goes to the device. The simulator's drives are directories on the kiosk's own
/// disk, so there is no separate medium to reach: it reads through the page cache, and what it
/// reads back is exactly what is in the files (a test that corrupts a file on disk is seen).
pub trait Drives: Send + Sync + 'static {
    /// Creates (or truncates) the file at the relative `path` on drive `item_id`, with its
    /// parent directories, for writing. Fails [`DriveError::WriteProtected`] when the drive's
    /// write protection is on, [`DriveError::BadPath`] for a path outside the drive.
    fn create_file(&self, item_id: &str, path: &str) -> Result<DriveFile, DriveError>;

    /// Opens the file at `path` on drive `item_id` for reading it back from the medium (see
    /// the trait's documentation).
    fn read_back(
        &self,
        item_id: &str,
        path: &str,
    ) -> Result<Box<dyn std::io::Read + Send>, DriveError>;

    // The drive's state, beside its files (async; like [`Bays`], an `Ok` is durable).

    /// Takes the READY drive `item_id` for provisioning: BUSY, its files erased, no content,
    /// writable. Fails [`BayError::ItemBusy`] when it is not READY.
    fn prepare(&self, item_id: &str) -> impl Future<Output = Result<ItemInfo, BayError>> + Send;

    /// The BUSY drive `item_id` now holds verified `package_id` (empty: it is blank and holds
    /// no content): PINNED to `order_id`.
    fn mark_provisioned(
        &self,
        item_id: &str,
        package_id: &str,
        order_id: &str,
    ) -> impl Future<Output = Result<ItemInfo, BayError>> + Send;

    /// Drives that came back (or were interrupted in a wipe) and are not checked yet: BUSY,
    /// never lent until [`Drives::mark_verified`] or a wipe.
    fn unverified(&self) -> impl Future<Output = Result<Vec<ItemInfo>, BayError>> + Send;

    /// The unverified drive `item_id` matched its on-drive manifest: READY with its content.
    /// `Ok(None)` when it is no longer unverified (wiped or taken meanwhile); nothing changes.
    fn mark_verified(
        &self,
        item_id: &str,
    ) -> impl Future<Output = Result<Option<ItemInfo>, BayError>> + Send;
}
