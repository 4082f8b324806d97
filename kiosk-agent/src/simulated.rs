//! Simulated bays: the [`Bays`] that tests and standalone kiosks use.
//!
//! Guarantees:
//! - The bays' contents, each item's eject count, the items that left, and the items inserted
//!   but not yet reported live in `data_dir/simulator.json`. Every change is written to a
//!   temporary file, fsynced, and renamed over it (then the directory is fsynced), and an
//!   operation returns only once its change is on disk: a kill at any moment leaves either the
//!   old or the new state, never a torn file. A stray temporary file is ignored and removed.
//! - The file is seeded from [`SimulationConfig::bays`] on first start only; afterwards the file
//!   is the truth (an ejected item never reappears because the config still lists it).
//! - Faults come from the configuration on every start: a jammed bay's eject fails and the bay
//!   turns FAULT; an "empty on eject" bay reports its item but ejects nothing (and turns FAULT);
//!   `slow_eject` delays every eject.
//! - Inserted items: [`SimulatedBays::insert`] in-process, or a JSON file dropped atomically
//!   into `data_dir/sim-inbox/` by `kiosk-agent insert` (picked up, applied and deleted by the
//!   running agent on its next [`Bays::pending_inserted`]). The simulator identifies an
//!   inserted item at once: a drive that comes back is BUSY (unverified) until the return check
//!   ([`crate::returns`]) matched it against its on-drive manifest (write-protected drives
//!   only: READY with its content) or wiped it (blank READY); a power bank is READY as inserted.
//! - Drives are real files: drive `D` is the directory `data_dir/drives/<D>/` (the id
//!   percent-encoded where it is not `A-Z a-z 0-9 - _`; [`SimulatedBays::drive_dir`]). Writes
//!   through [`Drives::create_file`] fail FULL once the bytes of all files under the directory
//!   would pass the drive's capacity, and WRITE_PROTECTED while its write protection is on; a
//!   wipe erases the directory. The directory stays while the drive is lent, so a test can
//!   change a lent drive's bytes before it comes back.
//! - Every insertion gets an id (a UUID: the inbox file's name, or a fresh one in-process),
//!   stored with the pending insertion in the state file. [`Bays::pending_inserted`] lists
//!   pending insertions without consuming them; only [`Bays::confirm_inserted`] forgets one,
//!   after the agent committed its `ItemReturned`. An inbox file applied but not yet deleted
//!   when the agent died is recognised by that id on the next start and not applied twice.
//! - A drive with a remote link module (`remote_link` in its [`SimItemConfig`]) has its write
//!   protection toggled by that module ([`SimulatedBays::module_set_write_protect`]) wherever
//!   the drive is: in a bay, or lent (departed). It is the same flag the kiosk sets, so a lent
//!   drive's user sees the change at once: [`SimulatedBays::write_as_user`] writes a file onto
//!   the drive the way its renter would, and is refused WRITE_PROTECTED while the flag is on.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::bays::{
    BayError, BayInfo, BayState, Bays, DriveError, DriveFile, Drives, Ejected, Inserted, ItemFacts,
    ItemInfo, is_drive_path,
};
use crate::config::{SimFaults, SimItemConfig, SimItemKind, SimulationConfig, is_bay_id};
use crate::content_source::Manifest;
use crate::drive_content::{self, StockError};

/// The simulator's state file, under `data_dir`.
pub const STATE_FILE: &str = "simulator.json";
/// The directory holding the simulated drives' directories, under `data_dir`.
pub const DRIVES_DIR: &str = "drives";
/// The directory `kiosk-agent insert` drops requests into, under `data_dir`.
pub const INBOX_DIR: &str = "sim-inbox";
/// The state file's format version.
const FORMAT: u32 = 1;
/// At most this many inbox files are applied per [`Bays::pending_inserted`] call, so a flood
/// of files cannot stall the return detector.
const INBOX_BATCH: usize = 64;

/// One request in the simulator's inbox: put an item into a bay.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct InboxInsert {
    /// The bay.
    pub bay_id: String,
    /// The item's id.
    pub item_id: String,
    /// The item's facts; `None` to re-insert an item that left this kiosk, as it left.
    #[serde(default)]
    pub item: Option<SimItemConfig>,
}

/// Writes an insert request into `data_dir/sim-inbox/` atomically (temporary file, fsync,
/// rename), for a running agent to pick up. Returns the file written.
pub fn queue_insert(data_dir: &Path, request: &InboxInsert) -> std::io::Result<PathBuf> {
    let inbox = data_dir.join(INBOX_DIR);
    std::fs::create_dir_all(&inbox)?;
    let name = uuid::Uuid::now_v7();
    let file = inbox.join(format!("{name}.json"));
    let bytes = serde_json::to_vec_pretty(request).map_err(std::io::Error::other)?;
    write_atomically(&file, &bytes)?;
    Ok(file)
}

/// Why the simulated kiosk under `data_dir` would refuse `request` once its running agent
/// picks it up, judged now by the agent's own rule ([`SimState::admit`]) against its state
/// file (or, before its first start, the bays `config` seeds) with the requests already
/// waiting in its inbox applied first, as the agent will apply them. `Ok` is the item as it
/// will go in. The state may still change before the agent applies the request (a lend
/// empties a bay, an earlier request fills one); the agent checks again and renames a
/// refused request `*.rejected`.
pub fn check_insert(
    data_dir: &Path,
    config: &SimulationConfig,
    request: &InboxInsert,
) -> Result<SimItemConfig, BayError> {
    let file = data_dir.join(STATE_FILE);
    let mut state = match std::fs::read(&file) {
        Ok(bytes) => serde_json::from_slice::<SimState>(&bytes)
            .map_err(|e| storage(&format!("read {}", file.display()), e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => SimState::seed(config),
        Err(e) => return Err(storage(&format!("read {}", file.display()), e)),
    };
    for (_, waiting) in read_inbox(&data_dir.join(INBOX_DIR)) {
        // A waiting request the agent will refuse changes nothing; the id is never stored.
        if let Ok(waiting) = waiting
            && let Ok(item) = state.admit(&waiting)
        {
            let _ = state.insert(&waiting.bay_id, item, Utc::now(), String::new());
        }
    }
    state.admit(request)
}

/// What a simulated kiosk's state file says now, read without opening the simulator: for a
/// person's tools beside a running agent (the file is replaced atomically, so a read sees a
/// whole state; it may lag the agent's memory by one change in flight).
#[derive(Clone, Debug)]
pub struct SimulatorView {
    /// Every bay, as [`SimulatedBays::snapshot`] shows it.
    pub bays: Vec<BayInfo>,
    /// Items that left this kiosk, as they left.
    pub departed: BTreeMap<String, SimItemConfig>,
}

/// Reads `data_dir/simulator.json`; `None` when the kiosk has no state file yet.
pub fn read_view(data_dir: &Path) -> Result<Option<SimulatorView>, BayError> {
    let file = data_dir.join(STATE_FILE);
    let bytes = match std::fs::read(&file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(storage(&format!("read {}", file.display()), e)),
    };
    let state: SimState = serde_json::from_slice(&bytes)
        .map_err(|e| storage(&format!("read {}", file.display()), e))?;
    Ok(Some(SimulatorView {
        bays: state.info(),
        departed: state.departed,
    }))
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum SimCondition {
    #[default]
    Ready,
    Busy,
    Pinned,
    Quarantined,
    /// A drive that came back, or whose wipe was interrupted: BUSY until the return check
    /// ([`crate::returns`]) verified it against its on-drive manifest or wiped it.
    Unverified,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
struct SimBay {
    id: String,
    item: Option<SimItemConfig>,
    #[serde(default)]
    condition: SimCondition,
    #[serde(default)]
    pinned_order_id: Option<String>,
    #[serde(default)]
    fault: bool,
    /// The insertion that put its item in (cleared when it leaves): recognises an inbox file
    /// applied before a crash and not yet deleted.
    #[serde(default)]
    insertion_id: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
struct SimInserted {
    /// A UUID; empty only in files written before insertion ids existed (fixed on open).
    #[serde(default)]
    id: String,
    bay_id: String,
    item: SimItemConfig,
    at: DateTime<Utc>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
struct SimState {
    format: u32,
    bays: Vec<SimBay>,
    /// Ejects per item id, for ever.
    #[serde(default)]
    eject_counts: BTreeMap<String, u32>,
    /// Items that left the kiosk, as they left (so `insert --item X` can bring one back).
    #[serde(default)]
    departed: BTreeMap<String, SimItemConfig>,
    /// Inserted and not yet confirmed by `confirm_inserted`, oldest first.
    #[serde(default)]
    inserted: Vec<SimInserted>,
}

impl SimState {
    fn seed(config: &SimulationConfig) -> Self {
        Self {
            format: FORMAT,
            bays: config
                .bays
                .iter()
                .map(|b| SimBay {
                    id: b.id.clone(),
                    item: b.item.clone(),
                    condition: SimCondition::Ready,
                    pinned_order_id: None,
                    fault: false,
                    insertion_id: None,
                })
                .collect(),
            eject_counts: BTreeMap::new(),
            departed: BTreeMap::new(),
            inserted: Vec::new(),
        }
    }

    fn bay_mut(&mut self, bay_id: &str) -> Result<&mut SimBay, BayError> {
        self.bays
            .iter_mut()
            .find(|b| b.id == bay_id)
            .ok_or_else(|| BayError::UnknownBay(bay_id.to_owned()))
    }

    /// A drive wherever it is (in a bay or lent), as its module sees itself.
    fn drive_anywhere(&mut self, item_id: &str) -> Option<&mut SimItemConfig> {
        let in_bay = self
            .bays
            .iter_mut()
            .filter_map(|b| b.item.as_mut())
            .find(|i| i.item_id == item_id);
        in_bay
            .or_else(|| self.departed.get_mut(item_id))
            .filter(|i| i.kind == SimItemKind::Drive)
    }

    fn bay_of_item(&mut self, item_id: &str) -> Result<&mut SimBay, BayError> {
        self.bays
            .iter_mut()
            .find(|b| b.item.as_ref().is_some_and(|i| i.item_id == item_id))
            .ok_or_else(|| BayError::UnknownItem(item_id.to_owned()))
    }

    /// Clears drive `item_id` for writing (no content, writable) and puts its bay in `then`,
    /// if the bay is not faulty and `refuse` finds nothing against its condition. Returns the
    /// drive as it was before.
    fn clear_drive(
        &mut self,
        item_id: &str,
        refuse: impl Fn(SimCondition) -> Option<&'static str>,
        then: SimCondition,
        what: &str,
    ) -> Result<SimItemConfig, BayError> {
        let bay = self.bay_of_item(item_id)?;
        if bay.fault {
            return Err(BayError::Fault(bay.id.clone()));
        }
        if let Some(reason) = refuse(bay.condition) {
            return Err(BayError::ItemBusy {
                item_id: item_id.to_owned(),
                reason: reason.into(),
            });
        }
        let Some(drive) = bay.item.as_mut() else {
            return Err(BayError::UnknownItem(item_id.to_owned()));
        };
        if drive.kind != SimItemKind::Drive {
            return Err(wrong_kind(drive, what));
        }
        let before = drive.clone();
        drive.content_package_id = None;
        drive.write_protected = false;
        bay.condition = then;
        Ok(before)
    }

    fn info(&self) -> Vec<BayInfo> {
        self.bays
            .iter()
            .map(|bay| {
                let state = match (&bay.item, bay.fault, bay.condition) {
                    (_, true, _) => BayState::Fault,
                    (None, false, _) => BayState::Empty,
                    (Some(_), false, SimCondition::Ready) => BayState::Ready,
                    (Some(_), false, SimCondition::Busy | SimCondition::Unverified) => {
                        BayState::Busy
                    }
                    (Some(_), false, SimCondition::Quarantined) => BayState::Quarantined,
                    (Some(_), false, SimCondition::Pinned) => BayState::Pinned {
                        order_id: bay.pinned_order_id.clone().unwrap_or_default(),
                    },
                };
                let lend_count = bay
                    .item
                    .as_ref()
                    .and_then(|i| self.eject_counts.get(&i.item_id).copied())
                    .unwrap_or(0);
                BayInfo {
                    bay_id: bay.id.clone(),
                    state,
                    item: bay.item.as_ref().map(item_info),
                    lend_count,
                }
            })
            .collect()
    }

    /// The item an inbox `request` puts into its bay, if the kiosk takes it: its facts as
    /// given, or as it left this kiosk when none are given; refused for an item that never
    /// left (it was lent elsewhere: only its facts identify it) and whatever
    /// [`SimState::admissible`] refuses. The one rule for a request, whether a running agent
    /// applies it or `kiosk-agent insert` checks it first ([`check_insert`]).
    fn admit(&self, request: &InboxInsert) -> Result<SimItemConfig, BayError> {
        if !is_bay_id(&request.bay_id) {
            return Err(BayError::UnknownBay(request.bay_id.clone()));
        }
        let item = match &request.item {
            Some(item) if item.item_id == request.item_id => item.clone(),
            Some(_) => {
                return Err(BayError::Unidentified(
                    "item.item_id differs from item_id".into(),
                ));
            }
            None => self
                .departed
                .get(&request.item_id)
                .cloned()
                .ok_or_else(|| {
                    BayError::Unidentified(format!(
                        "item {} never left this kiosk; give its kind and facts",
                        request.item_id
                    ))
                })?,
        };
        self.admissible(&request.bay_id, &item)?;
        Ok(item)
    }

    /// Whether `item` may go into `bay_id`: well-formed, not in a bay already, and the bay
    /// exists, works and is empty.
    fn admissible(&self, bay_id: &str, item: &SimItemConfig) -> Result<(), BayError> {
        item.check("item").map_err(BayError::Unidentified)?;
        if let Some(holder) = self
            .bays
            .iter()
            .find(|b| b.item.as_ref().is_some_and(|i| i.item_id == item.item_id))
        {
            return Err(BayError::AlreadyHeld {
                item_id: item.item_id.clone(),
                bay_id: holder.id.clone(),
            });
        }
        let bay = self
            .bays
            .iter()
            .find(|b| b.id == bay_id)
            .ok_or_else(|| BayError::UnknownBay(bay_id.to_owned()))?;
        if bay.fault {
            return Err(BayError::Fault(bay_id.to_owned()));
        }
        if bay.item.is_some() {
            return Err(BayError::Occupied(bay_id.to_owned()));
        }
        Ok(())
    }

    fn insert(
        &mut self,
        bay_id: &str,
        item: SimItemConfig,
        now: DateTime<Utc>,
        insertion_id: String,
    ) -> Result<(), BayError> {
        self.admissible(bay_id, &item)?;
        let bay = self.bay_mut(bay_id)?;
        // A drive that comes back may hold anything now: it waits BUSY until the return
        // check verified it against its manifest or wiped it. A power bank is ready as it is.
        bay.condition = if item.kind == SimItemKind::Drive {
            SimCondition::Unverified
        } else {
            SimCondition::Ready
        };
        bay.item = Some(item.clone());
        bay.pinned_order_id = None;
        bay.insertion_id = Some(insertion_id.clone());
        self.departed.remove(&item.item_id);
        self.inserted.push(SimInserted {
            id: insertion_id,
            bay_id: bay_id.to_owned(),
            item,
            at: now,
        });
        Ok(())
    }
}

/// Refuses a drive pinned to a reservation (for [`SimState::clear_drive`]).
fn pinned(condition: SimCondition) -> Option<&'static str> {
    (condition == SimCondition::Pinned).then_some("pinned to a reservation")
}

fn item_info(item: &SimItemConfig) -> ItemInfo {
    let facts = match item.kind {
        SimItemKind::Drive => ItemFacts::Drive {
            capacity_bytes: item.capacity_bytes.unwrap_or(0),
            content_package_id: item.content_package_id.clone(),
            write_protected: item.write_protected,
            remote_link: item.remote_link,
        },
        SimItemKind::PowerBank => ItemFacts::PowerBank {
            charge_percent: item.charge_percent.unwrap_or(0),
        },
    };
    ItemInfo {
        item_id: item.item_id.clone(),
        facts,
    }
}

fn wrong_kind(item: &SimItemConfig, reason: &str) -> BayError {
    BayError::WrongKind {
        item_id: item.item_id.clone(),
        kind: item_info(item).kind(),
        reason: reason.to_owned(),
    }
}

struct Live {
    state: SimState,
    /// Bumped by every change; the file holds some version <= this.
    version: u64,
}

struct Inner {
    file: PathBuf,
    inbox: PathBuf,
    drives: PathBuf,
    faults: SimFaults,
    live: Mutex<Live>,
    /// The version last written to `file`; held while writing so writes never interleave and
    /// an older snapshot never overwrites a newer one.
    written: Mutex<u64>,
}

/// Simulated bays backed by `data_dir/simulator.json`. Cheap to clone (shared state).
#[derive(Clone)]
pub struct SimulatedBays {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SimulatedBays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatedBays")
            .field("file", &self.inner.file)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the state half-changed in a way that matters
    // more than stopping the kiosk would: every change is made on the value then persisted.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn storage(context: &str, error: impl std::fmt::Display) -> BayError {
    BayError::Storage(format!("{context}: {error}"))
}

impl SimulatedBays {
    /// Opens the simulator in `data_dir`: loads `simulator.json`, or seeds it from `config`
    /// when it does not exist yet. A corrupt state file is an error, never a silent reseed.
    pub async fn open(data_dir: &Path, config: &SimulationConfig) -> Result<Self, BayError> {
        let data_dir = data_dir.to_owned();
        let config = config.clone();
        tokio::task::spawn_blocking(move || Self::open_blocking(&data_dir, &config))
            .await
            .map_err(|e| storage("simulator start", e))?
    }

    fn open_blocking(data_dir: &Path, config: &SimulationConfig) -> Result<Self, BayError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| storage(&format!("create {}", data_dir.display()), e))?;
        let file = data_dir.join(STATE_FILE);
        let inbox = data_dir.join(INBOX_DIR);
        let drives = data_dir.join(DRIVES_DIR);
        for dir in [&inbox, &drives] {
            std::fs::create_dir_all(dir)
                .map_err(|e| storage(&format!("create {}", dir.display()), e))?;
        }
        // A temporary file left by a kill mid-write never became the state: drop it.
        let _ = std::fs::remove_file(temp_path(&file));
        let (mut state, mut fresh) = match std::fs::read(&file) {
            Ok(bytes) => {
                let state: SimState = serde_json::from_slice(&bytes)
                    .map_err(|e| storage(&format!("read {}", file.display()), e))?;
                if state.format != FORMAT {
                    return Err(storage(
                        &format!("read {}", file.display()),
                        format!("unknown format {}", state.format),
                    ));
                }
                (state, false)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (SimState::seed(config), true),
            Err(e) => return Err(storage(&format!("read {}", file.display()), e)),
        };
        // Pending insertions from before insertion ids existed get one now, saved before any
        // is reported, so every report of them carries the same id.
        for pending in &mut state.inserted {
            if uuid::Uuid::parse_str(&pending.id).is_err() {
                pending.id = uuid::Uuid::now_v7().to_string();
                fresh = true;
            }
        }
        // Every drive in a bay has its directory, blank ones too.
        for item in state.bays.iter().filter_map(|b| b.item.as_ref()) {
            if item.kind == SimItemKind::Drive {
                let dir = drives.join(drive_dir_name(&item.item_id));
                std::fs::create_dir_all(&dir)
                    .map_err(|e| storage(&format!("create {}", dir.display()), e))?;
            }
        }
        if fresh {
            let bytes = serde_json::to_vec_pretty(&state).map_err(|e| storage("encode", e))?;
            write_atomically(&file, &bytes)
                .map_err(|e| storage(&format!("write {}", file.display()), e))?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                file,
                inbox,
                drives,
                faults: config.faults.clone(),
                live: Mutex::new(Live { state, version: 0 }),
                written: Mutex::new(0),
            }),
        })
    }

    /// Every bay as it is now (in memory, which never runs ahead of a completed operation).
    pub fn snapshot(&self) -> Vec<BayInfo> {
        lock(&self.inner.live).state.info()
    }

    /// How many times `item_id` has been ejected from this kiosk, ever (0 if never).
    pub fn eject_count(&self, item_id: &str) -> u32 {
        lock(&self.inner.live)
            .state
            .eject_counts
            .get(item_id)
            .copied()
            .unwrap_or(0)
    }

    /// Puts `item` into the empty bay `bay_id`, as a user returning it would; the next
    /// [`Bays::pending_inserted`] reports it (until confirmed).
    pub async fn insert(&self, bay_id: &str, item: SimItemConfig) -> Result<(), BayError> {
        let now = Utc::now();
        let insertion_id = uuid::Uuid::now_v7().to_string();
        self.change(|state| state.insert(bay_id, item, now, insertion_id))
            .await
    }

    /// Applies `change` to the state, then waits until the state (with this change or a later
    /// one) is on disk. The change is made whether it returns `Ok` or `Err` (a jam marks the
    /// bay FAULT and fails), so both are persisted.
    async fn change<T: Send + 'static>(
        &self,
        change: impl FnOnce(&mut SimState) -> Result<T, BayError> + Send,
    ) -> Result<T, BayError> {
        let (result, version, bytes) = {
            let mut live = lock(&self.inner.live);
            let before = live.state.clone();
            let result = change(&mut live.state);
            let bytes = match serde_json::to_vec_pretty(&live.state) {
                Ok(bytes) => bytes,
                Err(e) => {
                    live.state = before;
                    return Err(storage("encode", e));
                }
            };
            live.version += 1;
            (result, live.version, bytes)
        };
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || inner.persist(version, &bytes))
            .await
            .map_err(|e| storage("persist", e))??;
        result
    }

    /// Applies every request waiting in the inbox (at most [`INBOX_BATCH`]), oldest first,
    /// deleting each file once applied. A request that cannot be applied is renamed
    /// `*.rejected` and logged, so it is neither lost silently nor retried for ever.
    async fn drain_inbox(&self) -> Result<(), BayError> {
        let inbox = self.inner.inbox.clone();
        let requests = tokio::task::spawn_blocking(move || read_inbox(&inbox))
            .await
            .map_err(|e| storage("inbox", e))?;
        for (path, request) in requests {
            // The file's name is a UUIDv7 written by `queue_insert`; it becomes the
            // insertion's id, so re-applying the same file is recognised.
            let insertion_id = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| uuid::Uuid::parse_str(s).ok())
                .unwrap_or_else(uuid::Uuid::now_v7)
                .to_string();
            let applied = match request {
                Ok(request) => self.apply_inbox(request, insertion_id).await,
                Err(reason) => Err(BayError::Unidentified(reason)),
            };
            let outcome = tokio::task::spawn_blocking({
                let path = path.clone();
                let ok = applied.is_ok();
                move || {
                    if ok {
                        std::fs::remove_file(&path)
                    } else {
                        std::fs::rename(&path, path.with_extension("rejected"))
                    }
                }
            })
            .await
            .map_err(|e| storage("inbox", e))?;
            if let Err(error) = applied {
                tracing::warn!(file = %path.display(), %error, "simulator insert request rejected");
            }
            if let Err(error) = outcome {
                tracing::warn!(file = %path.display(), %error, "cannot clear simulator inbox file");
            }
        }
        Ok(())
    }

    async fn apply_inbox(
        &self,
        request: InboxInsert,
        insertion_id: String,
    ) -> Result<(), BayError> {
        let now = Utc::now();
        self.change(move |state| {
            let applied_before = state.bays.iter().any(|b| {
                b.id == request.bay_id
                    && b.insertion_id.as_deref() == Some(insertion_id.as_str())
                    && b.item
                        .as_ref()
                        .is_some_and(|i| i.item_id == request.item_id)
            });
            if applied_before {
                // Applied before a crash that came before the file's deletion.
                return Ok(());
            }
            let item = state.admit(&request)?;
            state.insert(&request.bay_id, item, now, insertion_id)
        })
        .await
    }
}

impl Inner {
    fn persist(&self, version: u64, bytes: &[u8]) -> Result<(), BayError> {
        let mut written = lock(&self.written);
        if *written >= version {
            return Ok(()); // a later snapshot, which includes this change, is already on disk
        }
        write_atomically(&self.file, bytes)
            .map_err(|e| storage(&format!("write {}", self.file.display()), e))?;
        *written = version;
        Ok(())
    }
}

type InboxEntry = (PathBuf, Result<InboxInsert, String>);

fn read_inbox(inbox: &Path) -> Vec<InboxEntry> {
    let entries = match std::fs::read_dir(inbox) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(error) => {
            tracing::warn!(dir = %inbox.display(), %error, "cannot read simulator inbox");
            return Vec::new();
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    // Names are UUIDv7: sorting by name is sorting by time of writing.
    files.sort();
    files.truncate(INBOX_BATCH);
    files
        .into_iter()
        .map(|path| {
            let request = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    if bytes.len() > 64 * 1024 {
                        return Err("request file larger than 64 KiB".to_owned());
                    }
                    serde_json::from_slice::<InboxInsert>(&bytes).map_err(|e| e.to_string())
                });
            (path, request)
        })
        .collect()
}

fn temp_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    file.with_file_name(name)
}

/// Writes `bytes` to `file` so that a crash leaves either the old file or the new one.
fn write_atomically(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temp = temp_path(file);
    {
        let mut out = std::fs::File::create(&temp)?;
        out.write_all(bytes)?;
        out.sync_all()?;
    }
    std::fs::rename(&temp, file)?;
    if let Some(dir) = file.parent() {
        // The rename is durable only once the directory entry is.
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl Bays for SimulatedBays {
    async fn inventory(&self) -> Result<Vec<BayInfo>, BayError> {
        Ok(self.snapshot())
    }

    async fn eject(&self, bay_id: &str) -> Result<Ejected, BayError> {
        if !self.inner.faults.slow_eject.is_zero() {
            tokio::time::sleep(self.inner.faults.slow_eject).await;
        }
        let jammed = self.inner.faults.jammed_bays.iter().any(|b| b == bay_id);
        let empty = self
            .inner
            .faults
            .empty_on_eject_bays
            .iter()
            .any(|b| b == bay_id);
        let bay_id = bay_id.to_owned();
        self.change(move |state| {
            let bay = state.bay_mut(&bay_id)?;
            if jammed {
                bay.fault = true;
                return Err(BayError::Jammed(bay_id));
            }
            if empty && bay.item.is_some() {
                bay.fault = true;
                return Err(BayError::EmptyOnEject(bay_id));
            }
            let item = bay.item.take();
            bay.condition = SimCondition::Ready;
            bay.pinned_order_id = None;
            bay.fault = false;
            bay.insertion_id = None;
            if let Some(item) = &item {
                *state.eject_counts.entry(item.item_id.clone()).or_insert(0) += 1;
                state.departed.insert(item.item_id.clone(), item.clone());
            }
            Ok(Ejected {
                bay_id,
                item: item.as_ref().map(item_info),
            })
        })
        .await
    }

    async fn set_write_protect(&self, item_id: &str, on: bool) -> Result<ItemInfo, BayError> {
        let item_id = item_id.to_owned();
        self.change(move |state| {
            let bay = state.bay_of_item(&item_id)?;
            if bay.fault {
                return Err(BayError::Fault(bay.id.clone()));
            }
            let Some(item) = bay.item.as_mut() else {
                return Err(BayError::UnknownItem(item_id));
            };
            if item.kind != SimItemKind::Drive {
                return Err(wrong_kind(item, "only drives have write protection"));
            }
            item.write_protected = on;
            Ok(item_info(item))
        })
        .await
    }

    async fn wipe(&self, item_id: &str) -> Result<ItemInfo, BayError> {
        // First marked unverified (no content, writable), then erased, then READY: a kill in
        // between leaves a drive the return check wipes again, never one lent half-erased.
        let item = item_id.to_owned();
        self.change(move |state| {
            state.clear_drive(
                &item,
                pinned,
                SimCondition::Unverified,
                "only drives can be wiped",
            )
        })
        .await?;
        self.erase(item_id).await?;
        let item = item_id.to_owned();
        self.change(move |state| {
            let bay = state.bay_of_item(&item)?;
            if bay.condition == SimCondition::Unverified {
                bay.condition = SimCondition::Ready;
            }
            bay.item
                .as_ref()
                .map(item_info)
                .ok_or(BayError::UnknownItem(item))
        })
        .await
    }

    async fn pin(&self, item_id: &str, order_id: &str) -> Result<ItemInfo, BayError> {
        let item_id = item_id.to_owned();
        let order_id = order_id.to_owned();
        self.change(move |state| {
            let bay = state.bay_of_item(&item_id)?;
            if bay.fault {
                return Err(BayError::Fault(bay.id.clone()));
            }
            let Some(item) = bay.item.as_ref() else {
                return Err(BayError::UnknownItem(item_id));
            };
            if item.kind != SimItemKind::Drive {
                return Err(wrong_kind(item, "only drives are pinned"));
            }
            match bay.condition {
                SimCondition::Ready => {}
                SimCondition::Pinned if bay.pinned_order_id.as_deref() == Some(&order_id) => {}
                _ => {
                    return Err(BayError::ItemBusy {
                        item_id,
                        reason: "not READY".into(),
                    });
                }
            }
            let info = item_info(item);
            bay.condition = SimCondition::Pinned;
            bay.pinned_order_id = Some(order_id);
            Ok(info)
        })
        .await
    }

    async fn unpin(&self, item_id: &str, order_id: &str) -> Result<ItemInfo, BayError> {
        let item_id = item_id.to_owned();
        let order_id = order_id.to_owned();
        self.change(move |state| {
            let bay = state.bay_of_item(&item_id)?;
            let Some(item) = bay.item.as_ref() else {
                return Err(BayError::UnknownItem(item_id));
            };
            let info = item_info(item);
            match bay.condition {
                SimCondition::Ready => Ok(info),
                SimCondition::Pinned if bay.pinned_order_id.as_deref() == Some(&order_id) => {
                    bay.condition = SimCondition::Ready;
                    bay.pinned_order_id = None;
                    Ok(info)
                }
                _ => Err(BayError::ItemBusy {
                    item_id,
                    reason: "pinned to another order or not lendable".into(),
                }),
            }
        })
        .await
    }

    async fn pending_inserted(&self) -> Result<Vec<Inserted>, BayError> {
        self.drain_inbox().await?;
        Ok(lock(&self.inner.live)
            .state
            .inserted
            .iter()
            .map(|i| Inserted {
                insertion_id: i.id.clone(),
                bay_id: i.bay_id.clone(),
                item: item_info(&i.item),
                at: i.at,
            })
            .collect())
    }

    async fn confirm_inserted(&self, insertion_id: &str) -> Result<(), BayError> {
        let pending = lock(&self.inner.live)
            .state
            .inserted
            .iter()
            .any(|i| i.id == insertion_id);
        if !pending {
            return Ok(());
        }
        let insertion_id = insertion_id.to_owned();
        self.change(move |state| {
            state.inserted.retain(|i| i.id != insertion_id);
            Ok(())
        })
        .await
    }
}

/// The directory name of drive `item_id`: the id itself, each byte that is not
/// `A-Z a-z 0-9 - _` written `%XX` (so no id can name `..` or a path, and two ids never share
/// a directory).
fn drive_dir_name(item_id: &str) -> String {
    item_id
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The bytes of every file under `dir` (0 when it does not exist).
fn bytes_under(dir: &Path) -> std::io::Result<u64> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut total = 0u64;
    for entry in entries {
        let entry = entry?;
        let meta = entry.metadata()?;
        total = total.saturating_add(if meta.is_dir() {
            bytes_under(&entry.path())?
        } else {
            meta.len()
        });
    }
    Ok(total)
}

impl SimulatedBays {
    /// The directory that is drive `item_id` (`data_dir/drives/<item_id>/`, see the module
    /// documentation), whether or not the drive is in a bay now. Tests read, corrupt or fill
    /// it; standalone may look at it.
    pub fn drive_dir(&self, item_id: &str) -> PathBuf {
        self.inner.drives.join(drive_dir_name(item_id))
    }

    /// (capacity, write protected) of the drive `item_id` in a bay.
    fn drive_facts(&self, item_id: &str) -> Result<(u64, bool), DriveError> {
        let live = lock(&self.inner.live);
        live.state
            .bays
            .iter()
            .filter_map(|b| b.item.as_ref())
            .find(|i| i.item_id == item_id && i.kind == SimItemKind::Drive)
            .map(|i| (i.capacity_bytes.unwrap_or(0), i.write_protected))
            .ok_or_else(|| DriveError::UnknownDrive(item_id.to_owned()))
    }

    /// Erases drive `item_id`'s directory (and makes it again, empty).
    async fn erase(&self, item_id: &str) -> Result<(), BayError> {
        let dir = self.drive_dir(item_id);
        tokio::task::spawn_blocking(move || {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(storage(&format!("erase {}", dir.display()), e)),
            }
            std::fs::create_dir_all(&dir)
                .map_err(|e| storage(&format!("create {}", dir.display()), e))
        })
        .await
        .map_err(|e| storage("erase", e))?
    }

    /// Stocks drive `item_id` (in a bay, not pinned) with a content package, as a factory
    /// loading drives would: erases it, copies every file of `manifest` from
    /// `source_dir/<path>`, reads it all back and verifies it, writes the on-drive manifest,
    /// and records `manifest.package_id` as the drive's content, READY, with its write
    /// protection as it was. On failure the drive is wiped (blank READY) and the error says why.
    pub async fn stock(
        &self,
        item_id: &str,
        manifest: &Manifest,
        source_dir: &Path,
    ) -> Result<ItemInfo, StockError> {
        let item = item_id.to_owned();
        let protected = self
            .change(move |state| {
                state
                    .clear_drive(
                        &item,
                        pinned,
                        SimCondition::Busy,
                        "only drives hold content",
                    )
                    .map(|before| before.write_protected)
            })
            .await?;
        self.erase(item_id).await?;
        let copied = tokio::task::spawn_blocking({
            let bays = self.clone();
            let item = item_id.to_owned();
            let manifest = manifest.clone();
            let source = source_dir.to_owned();
            move || drive_content::copy_from_dir(&bays, &item, &manifest, &source)
        })
        .await
        .map_err(|e| StockError::Bay(storage("stock", e)))?;
        if let Err(error) = copied {
            self.wipe(item_id).await?;
            return Err(error);
        }
        let item = item_id.to_owned();
        let package = manifest.package_id.clone();
        Ok(self
            .change(move |state| {
                let bay = state.bay_of_item(&item)?;
                let Some(drive) = bay.item.as_mut() else {
                    return Err(BayError::UnknownItem(item));
                };
                drive.content_package_id = Some(package);
                drive.write_protected = protected;
                bay.condition = SimCondition::Ready;
                Ok(item_info(drive))
            })
            .await?)
    }
}

impl SimulatedBays {
    /// The drive's own module sets its write protection, wherever the drive is (in a bay or
    /// lent); returns it as it is now. UnknownItem for a drive this simulator never held, and
    /// for a drive without a module (it has no remote link to be reached through).
    pub async fn module_set_write_protect(
        &self,
        item_id: &str,
        on: bool,
    ) -> Result<bool, BayError> {
        let item_id = item_id.to_owned();
        self.change(move |state| {
            let Some(drive) = state.drive_anywhere(&item_id).filter(|d| d.remote_link) else {
                return Err(BayError::UnknownItem(item_id));
            };
            drive.write_protected = on;
            Ok(drive.write_protected)
        })
        .await
    }

    /// Whether drive `item_id` (in a bay or lent) is write-protected now; `None` when this
    /// simulator never held it.
    pub fn write_protected_anywhere(&self, item_id: &str) -> Option<bool> {
        let mut live = lock(&self.inner.live);
        live.state
            .drive_anywhere(item_id)
            .map(|drive| drive.write_protected)
    }

    /// Writes `bytes` as `path` onto drive `item_id` the way its user would (the drive may be
    /// lent): refused WRITE_PROTECTED while its write protection is on, FULL past its
    /// capacity. Returns the bytes written.
    pub fn write_as_user(
        &self,
        item_id: &str,
        path: &str,
        bytes: &[u8],
    ) -> Result<u64, DriveError> {
        if !is_drive_path(path) {
            return Err(DriveError::BadPath(path.to_owned()));
        }
        let (capacity, protected) = {
            let mut live = lock(&self.inner.live);
            let drive = live
                .state
                .drive_anywhere(item_id)
                .ok_or_else(|| DriveError::UnknownDrive(item_id.to_owned()))?;
            (drive.capacity_bytes.unwrap_or(0), drive.write_protected)
        };
        if protected {
            return Err(DriveError::WriteProtected(item_id.to_owned()));
        }
        let mut file = self.open_on_drive(item_id, path, capacity)?;
        file.write(bytes)?;
        file.finish()
    }

    /// Creates `path` on drive `item_id`'s directory, with the room its capacity leaves.
    fn open_on_drive(
        &self,
        item_id: &str,
        path: &str,
        capacity: u64,
    ) -> Result<DriveFile, DriveError> {
        let dir = self.drive_dir(item_id);
        let file = dir.join(path);
        let io = |context: &str, e: std::io::Error| DriveError::from_io(item_id, context, &e);
        let used = bytes_under(&dir).map_err(|e| io("measure", e))?;
        let replaced = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        let room = capacity.saturating_sub(used.saturating_sub(replaced));
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(&format!("create {path}"), e))?;
        }
        let out = std::fs::File::create(&file).map_err(|e| io(&format!("create {path}"), e))?;
        Ok(DriveFile::new(item_id, out, room))
    }
}

impl Drives for SimulatedBays {
    fn create_file(&self, item_id: &str, path: &str) -> Result<DriveFile, DriveError> {
        if !is_drive_path(path) {
            return Err(DriveError::BadPath(path.to_owned()));
        }
        let (capacity, protected) = self.drive_facts(item_id)?;
        if protected {
            return Err(DriveError::WriteProtected(item_id.to_owned()));
        }
        self.open_on_drive(item_id, path, capacity)
    }

    fn read_back(
        &self,
        item_id: &str,
        path: &str,
    ) -> Result<Box<dyn std::io::Read + Send>, DriveError> {
        if !is_drive_path(path) {
            return Err(DriveError::BadPath(path.to_owned()));
        }
        self.drive_facts(item_id)?;
        match std::fs::File::open(self.drive_dir(item_id).join(path)) {
            Ok(file) => Ok(Box::new(file)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(DriveError::Missing {
                item_id: item_id.to_owned(),
                path: path.to_owned(),
            }),
            Err(e) => Err(DriveError::from_io(item_id, &format!("open {path}"), &e)),
        }
    }

    async fn prepare(&self, item_id: &str) -> Result<ItemInfo, BayError> {
        let item = item_id.to_owned();
        let not_ready = |condition| (condition != SimCondition::Ready).then_some("not READY");
        let before = self
            .change(move |state| {
                state.clear_drive(
                    &item,
                    not_ready,
                    SimCondition::Busy,
                    "only drives are provisioned",
                )
            })
            .await?;
        let info = item_info(&SimItemConfig {
            content_package_id: None,
            write_protected: false,
            ..before
        });
        self.erase(item_id).await?;
        Ok(info)
    }

    async fn mark_provisioned(
        &self,
        item_id: &str,
        package_id: &str,
        order_id: &str,
    ) -> Result<ItemInfo, BayError> {
        let item = item_id.to_owned();
        let package = package_id.to_owned();
        let order = order_id.to_owned();
        self.change(move |state| {
            let bay = state.bay_of_item(&item)?;
            if bay.condition != SimCondition::Busy {
                return Err(BayError::ItemBusy {
                    item_id: item,
                    reason: "not being provisioned".into(),
                });
            }
            let Some(drive) = bay.item.as_mut() else {
                return Err(BayError::UnknownItem(item));
            };
            drive.content_package_id = (!package.is_empty()).then_some(package);
            bay.condition = SimCondition::Pinned;
            bay.pinned_order_id = Some(order);
            Ok(item_info(drive))
        })
        .await
    }

    async fn unverified(&self) -> Result<Vec<ItemInfo>, BayError> {
        Ok(lock(&self.inner.live)
            .state
            .bays
            .iter()
            .filter(|b| b.condition == SimCondition::Unverified && !b.fault)
            .filter_map(|b| b.item.as_ref().map(item_info))
            .collect())
    }

    async fn mark_verified(&self, item_id: &str) -> Result<Option<ItemInfo>, BayError> {
        let item = item_id.to_owned();
        self.change(move |state| {
            let Ok(bay) = state.bay_of_item(&item) else {
                return Ok(None);
            };
            if bay.condition != SimCondition::Unverified {
                return Ok(None);
            }
            bay.condition = SimCondition::Ready;
            Ok(bay.item.as_ref().map(item_info))
        })
        .await
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::SimBayConfig;
    use crate::content_source::manifest::tests::proto_manifest;

    pub(crate) fn drive(id: &str, capacity: u64, package: Option<&str>) -> SimItemConfig {
        SimItemConfig {
            kind: SimItemKind::Drive,
            item_id: id.into(),
            capacity_bytes: Some(capacity),
            content_package_id: package.map(str::to_owned),
            write_protected: false,
            charge_percent: None,
            remote_link: false,
        }
    }

    fn config() -> SimulationConfig {
        SimulationConfig {
            bays: vec![
                SimBayConfig {
                    id: "A01".into(),
                    item: Some(drive("D-1", 1000, Some("pkg"))),
                },
                SimBayConfig {
                    id: "A02".into(),
                    item: None,
                },
                SimBayConfig {
                    id: "A03".into(),
                    item: Some(drive("D-3", 1000, None)),
                },
            ],
            faults: SimFaults::default(),
        }
    }

    #[tokio::test]
    async fn an_insert_is_judged_before_it_is_queued_by_the_rule_the_running_agent_applies() {
        let dir = tempfile::tempdir().unwrap();
        let request = |bay: &str, item: &str, facts: Option<SimItemConfig>| InboxInsert {
            bay_id: bay.into(),
            item_id: item.into(),
            item: facts,
        };
        let judged = |request: &InboxInsert| check_insert(dir.path(), &config(), request);
        // Before the agent's first start: against the bays the configuration seeds.
        assert_eq!(
            judged(&request("A01", "D-9", Some(drive("D-9", 5, None)))).unwrap_err(),
            BayError::Occupied("A01".into())
        );
        let bays = SimulatedBays::open(dir.path(), &config()).await.unwrap();
        bays.eject("A01").await.unwrap();

        // An item lent at another kiosk, named without its facts: this kiosk cannot know it.
        let lent_elsewhere = request("A01", "D-X", None);
        assert!(
            matches!(judged(&lent_elsewhere), Err(BayError::Unidentified(why)) if why.contains("D-X")),
            "{:?}",
            judged(&lent_elsewhere)
        );
        // An occupied bay, and an item that is in a bay already.
        assert_eq!(
            judged(&request("A03", "D-1", None)).unwrap_err(),
            BayError::Occupied("A03".into())
        );
        assert_eq!(
            judged(&request("A02", "D-3", Some(drive("D-3", 1000, None)))).unwrap_err(),
            BayError::AlreadyHeld {
                item_id: "D-3".into(),
                bay_id: "A03".into()
            }
        );
        // Taken: the item that left, back as it left.
        let back = request("A02", "D-1", None);
        assert_eq!(judged(&back).unwrap(), drive("D-1", 1000, Some("pkg")));

        // A request queued and not yet applied fills its bay for the next check.
        queue_insert(dir.path(), &back).unwrap();
        assert_eq!(
            judged(&request("A02", "D-9", Some(drive("D-9", 5, None)))).unwrap_err(),
            BayError::Occupied("A02".into())
        );
        // The running agent decides the same: it takes the first, refuses the lent one.
        queue_insert(dir.path(), &lent_elsewhere).unwrap();
        let taken = bays.pending_inserted().await.unwrap();
        let ids: Vec<_> = taken.iter().map(|i| i.item.item_id.as_str()).collect();
        assert_eq!(ids, ["D-1"]);
        let rejected = std::fs::read_dir(dir.path().join(INBOX_DIR))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "rejected")
            })
            .count();
        assert_eq!(rejected, 1);
    }

    #[tokio::test]
    async fn state_survives_reopen_and_is_seeded_only_once() {
        let dir = tempfile::tempdir().unwrap();
        let bays = SimulatedBays::open(dir.path(), &config()).await.unwrap();
        let ejected = bays.eject("A01").await.unwrap();
        assert_eq!(ejected.item.unwrap().item_id, "D-1");
        bays.set_write_protect("D-3", true).await.unwrap();
        drop(bays);

        let bays = SimulatedBays::open(dir.path(), &config()).await.unwrap();
        assert_eq!(bays.eject_count("D-1"), 1);
        let snapshot = bays.snapshot();
        assert_eq!(snapshot[0].state, BayState::Empty, "config does not reseed");
        assert_eq!(
            snapshot[2].item.as_ref().unwrap().facts,
            ItemFacts::Drive {
                capacity_bytes: 1000,
                content_package_id: None,
                write_protected: true,
                remote_link: false,
            }
        );
    }

    #[tokio::test]
    async fn a_torn_temporary_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let bays = SimulatedBays::open(dir.path(), &config()).await.unwrap();
        bays.eject("A01").await.unwrap();
        drop(bays);
        let file = dir.path().join(STATE_FILE);
        // A kill in the middle of the next write leaves half a temporary file behind.
        std::fs::write(temp_path(&file), b"{\"format\":1,\"bays\":[{\"id\":").unwrap();

        let bays = SimulatedBays::open(dir.path(), &config()).await.unwrap();
        assert_eq!(bays.eject_count("D-1"), 1);
        assert_eq!(bays.snapshot()[0].state, BayState::Empty);
        assert!(!temp_path(&file).exists(), "stray temporary file removed");
    }

    #[tokio::test]
    async fn a_corrupt_state_file_is_an_error_not_a_reseed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), b"{not json").unwrap();
        let error = SimulatedBays::open(dir.path(), &config())
            .await
            .unwrap_err();
        assert!(error.to_string().contains(STATE_FILE), "{error}");
    }

    #[tokio::test]
    async fn jammed_and_empty_bays_fail_and_turn_faulty() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config();
        config.faults.jammed_bays = vec!["A01".into()];
        config.faults.empty_on_eject_bays = vec!["A03".into()];
        let bays = SimulatedBays::open(dir.path(), &config).await.unwrap();
        assert_eq!(
            bays.eject("A01").await.unwrap_err(),
            BayError::Jammed("A01".into())
        );
        assert_eq!(
            bays.eject("A03").await.unwrap_err(),
            BayError::EmptyOnEject("A03".into())
        );
        let snapshot = bays.snapshot();
        assert_eq!(snapshot[0].state, BayState::Fault);
        assert!(snapshot[0].item.is_some(), "the jammed item stays in");
        assert_eq!(bays.eject_count("D-1"), 0);
    }

    #[tokio::test]
    async fn inserts_are_taken_once_in_process_and_through_the_inbox() {
        let dir = tempfile::tempdir().unwrap();
        let bays = SimulatedBays::open(dir.path(), &config()).await.unwrap();
        bays.eject("A01").await.unwrap();
        assert_eq!(
            bays.insert("A03", drive("D-9", 5, None)).await.unwrap_err(),
            BayError::Occupied("A03".into())
        );
        bays.insert("A02", drive("D-9", 5, None)).await.unwrap();
        // The CLI's way: re-insert a known item by id alone.
        queue_insert(
            dir.path(),
            &InboxInsert {
                bay_id: "A01".into(),
                item_id: "D-1".into(),
                item: None,
            },
        )
        .unwrap();
        // And one that cannot be applied.
        let rejected = queue_insert(
            dir.path(),
            &InboxInsert {
                bay_id: "A01".into(),
                item_id: "UNKNOWN".into(),
                item: None,
            },
        )
        .unwrap();

        let taken = bays.pending_inserted().await.unwrap();
        let ids: Vec<_> = taken.iter().map(|i| i.item.item_id.as_str()).collect();
        assert_eq!(ids, ["D-9", "D-1"]);
        assert_eq!(
            bays.pending_inserted().await.unwrap(),
            taken,
            "listed again, same ids, until confirmed"
        );
        for inserted in &taken {
            bays.confirm_inserted(&inserted.insertion_id).await.unwrap();
        }
        bays.confirm_inserted(&taken[0].insertion_id).await.unwrap();
        assert!(
            bays.pending_inserted().await.unwrap().is_empty(),
            "confirmed once"
        );
        assert!(rejected.with_extension("rejected").exists());
        let leftovers = std::fs::read_dir(dir.path().join(INBOX_DIR))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "json")
            })
            .count();
        assert_eq!(leftovers, 0);
        assert_eq!(
            bays.snapshot()[0].state,
            BayState::Busy,
            "a drive back writable waits for a wipe"
        );
        bays.wipe("D-1").await.unwrap();
        assert_eq!(bays.snapshot()[0].state, BayState::Ready);
    }

    #[tokio::test]
    async fn pinned_drives_are_not_wiped_and_unpin_checks_the_order() {
        let dir = tempfile::tempdir().unwrap();
        let bays = SimulatedBays::open(dir.path(), &config()).await.unwrap();
        bays.pin("D-1", "O-1").await.unwrap();
        assert!(matches!(
            bays.wipe("D-1").await,
            Err(BayError::ItemBusy { .. })
        ));
        assert!(matches!(
            bays.unpin("D-1", "O-2").await,
            Err(BayError::ItemBusy { .. })
        ));
        bays.unpin("D-1", "O-1").await.unwrap();
        assert_eq!(bays.snapshot()[0].state, BayState::Ready);
        let wiped = bays.wipe("D-1").await.unwrap();
        assert!(matches!(
            wiped.facts,
            ItemFacts::Drive {
                content_package_id: None,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn a_pending_insertion_survives_a_restart_under_the_same_id() {
        let dir = tempfile::tempdir().unwrap();
        let bays = SimulatedBays::open(dir.path(), &config()).await.unwrap();
        bays.insert("A02", drive("D-9", 5, None)).await.unwrap();
        let before = bays.pending_inserted().await.unwrap();
        assert_eq!(before.len(), 1);
        assert!(uuid::Uuid::parse_str(&before[0].insertion_id).is_ok());
        // A crash before the agent confirmed it.
        drop(bays);
        let bays = SimulatedBays::open(dir.path(), &config()).await.unwrap();
        assert_eq!(
            bays.pending_inserted().await.unwrap(),
            before,
            "same item, same id"
        );
        bays.confirm_inserted(&before[0].insertion_id)
            .await
            .unwrap();
        drop(bays);
        let bays = SimulatedBays::open(dir.path(), &config()).await.unwrap();
        assert!(
            bays.pending_inserted().await.unwrap().is_empty(),
            "confirmation is durable"
        );
    }

    #[tokio::test]
    async fn an_inbox_file_applied_before_a_crash_is_not_applied_twice() {
        let dir = tempfile::tempdir().unwrap();
        let bays = SimulatedBays::open(dir.path(), &config()).await.unwrap();
        let request = InboxInsert {
            bay_id: "A02".into(),
            item_id: "D-9".into(),
            item: Some(drive("D-9", 5, None)),
        };
        let file = queue_insert(dir.path(), &request).unwrap();
        let bytes = std::fs::read(&file).unwrap();
        let pending = bays.pending_inserted().await.unwrap();
        assert_eq!(pending.len(), 1);
        // The agent died after applying the file and before deleting it.
        std::fs::write(&file, bytes).unwrap();
        drop(bays);
        let bays = SimulatedBays::open(dir.path(), &config()).await.unwrap();
        assert_eq!(
            bays.pending_inserted().await.unwrap(),
            pending,
            "one insertion, same id"
        );
        assert!(!file.exists(), "the file is cleared");
        assert!(
            !file.with_extension("rejected").exists(),
            "and not rejected"
        );
    }

    /// A package of two files written into `dir`, and its manifest.
    pub(crate) fn package(dir: &Path, package_id: &str) -> Manifest {
        let files: [(&str, &[u8]); 2] = [("a.bin", &[7u8; 300]), ("sub/b.txt", b"hello")];
        for (path, bytes) in &files {
            let file = dir.join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, bytes).unwrap();
        }
        let mut manifest = Manifest::try_from(proto_manifest(&files)).unwrap();
        manifest.package_id = package_id.into();
        manifest
    }

    fn write(
        bays: &SimulatedBays,
        item: &str,
        path: &str,
        bytes: &[u8],
    ) -> Result<u64, DriveError> {
        let mut file = bays.create_file(item, path)?;
        file.write(bytes)?;
        file.finish()
    }

    #[tokio::test]
    async fn a_drive_is_a_directory_that_fills_up_and_refuses_writes_while_protected() {
        let dir = tempfile::tempdir().unwrap();
        let bays = SimulatedBays::open(dir.path(), &config()).await.unwrap();
        assert_eq!(write(&bays, "D-3", "x/one", &[1; 600]).unwrap(), 600);
        assert_eq!(
            std::fs::read(bays.drive_dir("D-3").join("x/one")).unwrap(),
            vec![1; 600]
        );
        // 600 of 1000 bytes used: 500 more do not fit, 400 do.
        assert_eq!(
            write(&bays, "D-3", "two", &[2; 500]).unwrap_err(),
            DriveError::Full {
                item_id: "D-3".into()
            }
        );
        write(&bays, "D-3", "two", &[2; 400]).unwrap();
        assert!(matches!(
            write(&bays, "D-3", "../escape", b"x"),
            Err(DriveError::BadPath(_))
        ));

        bays.set_write_protect("D-3", true).await.unwrap();
        assert_eq!(
            write(&bays, "D-3", "three", b"x").unwrap_err(),
            DriveError::WriteProtected("D-3".into())
        );
        bays.set_write_protect("D-3", false).await.unwrap();
        write(&bays, "D-3", "x/one", b"x").unwrap();

        bays.wipe("D-3").await.unwrap();
        assert_eq!(
            std::fs::read_dir(bays.drive_dir("D-3")).unwrap().count(),
            0,
            "a wipe erases the drive for real"
        );
        assert_eq!(bays.snapshot()[2].state, BayState::Ready);
        assert_eq!(drive_dir_name("../x y"), "%2E%2E%2Fx%20y");
    }

    #[tokio::test]
    async fn a_stocked_drive_holds_the_package_byte_for_byte_with_its_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let source = tempfile::tempdir().unwrap();
        let manifest = package(source.path(), "pkg-1");
        let bays = SimulatedBays::open(dir.path(), &config()).await.unwrap();
        bays.set_write_protect("D-3", true).await.unwrap();
        let item = bays.stock("D-3", &manifest, source.path()).await.unwrap();
        assert_eq!(
            item.facts,
            ItemFacts::Drive {
                capacity_bytes: 1000,
                content_package_id: Some("pkg-1".into()),
                write_protected: true,
                remote_link: false,
            }
        );
        assert_eq!(
            std::fs::read(bays.drive_dir("D-3").join("sub/b.txt")).unwrap(),
            b"hello"
        );
        let on_drive = drive_content::read_manifest(&bays, "D-3").unwrap().unwrap();
        assert_eq!(on_drive, manifest);
        assert_eq!(bays.snapshot()[2].state, BayState::Ready);
    }
}
