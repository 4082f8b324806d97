//! What the executor's tests share: a two-drive simulated kiosk, command builders, and bays
//! whose chosen calls hang.

use std::sync::Arc;
use std::time::Duration;

pub(crate) use sneakernet_proto::gateway::v1 as pb;
pub(crate) use sneakernet_proto::gateway::v1::FailureReason;
pub(crate) use sneakernet_proto::gateway::v1::command_result::Outcome;
use tokio::sync::Notify;

pub(crate) use super::Perform;
use super::{BayTimeouts, Executor};
use crate::bays::{BayError, BayInfo, Bays};
use crate::bays::{DriveError, DriveFile, Drives, Ejected, Inserted, ItemInfo};
use crate::clock::KioskClock;
pub(crate) use crate::config::SimFaults;
use crate::config::{SimBayConfig, SimItemConfig, SimItemKind, SimulationConfig};
use crate::journal::Journal;
use crate::simulated::SimulatedBays;
use crate::wire;
use chrono::Utc;
use sneakernet_proto::common::v1 as common;

pub(crate) const TB: u64 = 1_000_000_000_000;

pub(crate) fn drive(id: &str, package: &str) -> SimItemConfig {
    SimItemConfig {
        kind: SimItemKind::Drive,
        item_id: id.into(),
        capacity_bytes: Some(TB),
        content_package_id: Some(package.into()),
        write_protected: false,
        charge_percent: None,
        remote_link: false,
    }
}

pub(crate) fn simulation(faults: SimFaults) -> SimulationConfig {
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

pub(crate) struct Kiosk {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) bays: Arc<SimulatedBays>,
    pub(crate) journal: Journal,
    pub(crate) executor: Executor<SimulatedBays>,
}

impl Kiosk {
    /// Runs a command of `kind` with a minute to its deadline, to its result.
    pub(crate) async fn run(&self, id: &str, kind: pb::command_payload::Kind) -> pb::CommandResult {
        self.executor.handle(&command(id, kind, 60)).await.unwrap()
    }
}

pub(crate) async fn kiosk(faults: SimFaults) -> Kiosk {
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

pub(crate) fn command(
    id: &str,
    kind: pb::command_payload::Kind,
    deadline_in_s: i64,
) -> pb::Command {
    pb::Command {
        command_id: id.into(),
        deadline: Some(wire::timestamp(
            Utc::now() + chrono::Duration::seconds(deadline_in_s),
        )),
        payload: Some(pb::CommandPayload { kind: Some(kind) }),
        attempt: 1,
    }
}

pub(crate) fn lend_spec(write_protect: bool) -> pb::command_payload::Kind {
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

pub(crate) fn failure_of(result: &pb::CommandResult) -> (FailureReason, String) {
    match &result.outcome {
        Some(Outcome::Failure(f)) => (
            FailureReason::try_from(f.reason).unwrap(),
            f.message.clone(),
        ),
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// Which calls of [`FaultyBays`] never answer, and which file goes bad on the medium.
#[derive(Clone, Copy, Default)]
pub(crate) struct Faults {
    /// This file of any drive has a byte flipped on disk just before it is read back (the
    /// medium lost what was written).
    pub(crate) corrupt_on_read_back: Option<&'static str>,
    /// `eject` hangs before touching the bay.
    pub(crate) eject_before: bool,
    /// `eject` does its work, then never answers.
    pub(crate) eject_after: bool,
    /// `wipe` hangs before touching the drive.
    pub(crate) wipe: bool,
}

/// Simulated bays whose chosen calls hang like a stuck mechanism, or whose medium corrupts.
pub(crate) struct FaultyBays {
    pub(crate) inner: SimulatedBays,
    pub(crate) hang: Faults,
}

impl Bays for FaultyBays {
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

impl Drives for FaultyBays {
    fn create_file(&self, item_id: &str, path: &str) -> Result<DriveFile, DriveError> {
        self.inner.create_file(item_id, path)
    }
    fn read_back(
        &self,
        item_id: &str,
        path: &str,
    ) -> Result<Box<dyn std::io::Read + Send>, DriveError> {
        if self.hang.corrupt_on_read_back == Some(path) {
            let file = self.inner.drive_dir(item_id).join(path);
            let mut bytes = std::fs::read(&file).unwrap();
            bytes[0] ^= 0xff;
            std::fs::write(&file, bytes).unwrap();
        }
        self.inner.read_back(item_id, path)
    }
    async fn prepare(&self, item_id: &str) -> Result<ItemInfo, BayError> {
        self.inner.prepare(item_id).await
    }
    async fn mark_provisioned(
        &self,
        item_id: &str,
        package_id: &str,
        order_id: &str,
    ) -> Result<ItemInfo, BayError> {
        self.inner
            .mark_provisioned(item_id, package_id, order_id)
            .await
    }
    async fn unverified(&self) -> Result<Vec<ItemInfo>, BayError> {
        self.inner.unverified().await
    }
    async fn mark_verified(&self, item_id: &str) -> Result<Option<ItemInfo>, BayError> {
        self.inner.mark_verified(item_id).await
    }
}

pub(crate) const SHORT: BayTimeouts = BayTimeouts {
    inventory: Duration::from_secs(5),
    eject: Duration::from_millis(200),
    configure: Duration::from_millis(200),
    wipe: Duration::from_millis(200),
};

pub(crate) async fn faulty_kiosk(
    hang: Faults,
) -> (
    tempfile::TempDir,
    SimulatedBays,
    Journal,
    Executor<FaultyBays>,
) {
    let dir = tempfile::tempdir().unwrap();
    let inner = SimulatedBays::open(dir.path(), &simulation(SimFaults::default()))
        .await
        .unwrap();
    let journal = Journal::open(dir.path()).await.unwrap();
    let executor = Executor::new(
        journal.clone(),
        Arc::new(FaultyBays {
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
pub(crate) async fn handle_in_time<B: Bays + Drives, S: crate::content_source::ContentSource>(
    executor: &Executor<B, S>,
    command: &pb::Command,
) -> pb::CommandResult {
    tokio::time::timeout(Duration::from_secs(10), executor.handle(command))
        .await
        .expect("a hung bay must not stall the executor")
        .unwrap()
}
