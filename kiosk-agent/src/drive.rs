//! A drive's own remote link: the program of the module in a drive's interface (the seed's
//! NB-IoT module), through which the drive's write protection is toggled while it is lent.
//!
//! It is a device on the same link as a kiosk, built from the same parts: [`crate::link`]
//! (login, stream, Hello, outbox replay, heartbeats, token renewal, reconnect with backoff)
//! and [`crate::journal`] with the shared exactly-once rules of [`Perform`] (a command is
//! journaled before its Ack, a resent one is answered from the journal, a result waits in
//! the outbox until receipted). What is its own:
//! - it logs in with the drive's credential (AuthService.DriveLogin), so its token speaks
//!   only as this drive, and its Hello carries no inventory;
//! - its executor ([`ModuleExecutor`]) knows one command: SetWriteProtect on this drive
//!   ([`accept`]); any other kind fails UNSUPPORTED and another drive's ITEM_NOT_FOUND (the
//!   gateway never sends those; a module still never acts on them);
//! - the hardware is a [`Module`]: the simulated one ([`SimulatedModule`]) toggles the same
//!   write-protect flag the kiosk sets, wherever the drive is.
//!
//! One runner per data directory (its journal), locked like an agent's ([`crate::lock_data_dir`]).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sneakernet_proto::auth::v1::DriveLoginRequest;
use sneakernet_proto::auth::v1::auth_service_client::AuthServiceClient;
use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::gateway::v1::FailureReason;
use sneakernet_proto::gateway::v1::command_result::Outcome;
use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use crate::bays::{BayError, within};
use crate::clock::KioskClock;
use crate::command::{self, Action};
use crate::config::LinkConfig;
use crate::executor::{Answer, CONFIGURE_TIMEOUT, ExecError, Failed, Perform};
use crate::journal::{Journal, JournaledCommand};
use crate::link::{self, Link, Speaker};
use crate::simulated::SimulatedBays;
use crate::{DataDirLock, wire};

/// The module's hardware: it can set its own drive's write protection, nothing else.
pub trait Module: Send + Sync + 'static {
    /// Sets the drive's write protection; returns it as it is now. An `Ok` is durable.
    fn set_write_protect(&self, on: bool) -> impl Future<Output = Result<bool, BayError>> + Send;
}

/// The module of a simulated drive: toggles the write-protect flag of that drive in the
/// simulator that holds it ([`SimulatedBays::module_set_write_protect`]), the same flag the
/// kiosk sets, whether the drive is in a bay or lent.
#[derive(Clone, Debug)]
pub struct SimulatedModule {
    /// The simulator of the kiosk that lent the drive (shared, never a second copy of its
    /// state file).
    pub bays: SimulatedBays,
    /// The drive.
    pub item_id: String,
}

impl Module for SimulatedModule {
    async fn set_write_protect(&self, on: bool) -> Result<bool, BayError> {
        self.bays.module_set_write_protect(&self.item_id, on).await
    }
}

/// How a drive's module reaches the gateway.
#[derive(Clone, Debug)]
pub struct DriveConfig {
    /// The drive's item id; the credential is this drive's.
    pub item_id: String,
    /// The secret from AuthService.IssueDriveCredential.
    pub secret: String,
    /// gRPC address of the auth service.
    pub auth_url: String,
    /// gRPC address of the device gateway.
    pub gateway_url: String,
    /// True lets `auth_url` and `gateway_url` be `http://` to a host beyond loopback (the
    /// kiosk's `allow_plaintext` rule: the drive's secret travels at login). Off: refused.
    pub allow_plaintext: bool,
    /// The module's durable state: its command journal (`journal.db`). Created if missing.
    pub data_dir: PathBuf,
    /// How the link reconnects.
    pub link: LinkConfig,
}

/// Whether a module with drive `own_item` runs `action`: `Ok(on)` for SetWriteProtect on
/// itself, else the failure it answers instead.
pub fn accept(own_item: &str, action: &Action) -> Result<bool, Failed> {
    match action {
        Action::SetWriteProtect { item_id, on } if item_id == own_item => Ok(*on),
        Action::SetWriteProtect { item_id, .. } => Err(Failed::new(
            FailureReason::ItemNotFound,
            format!("this module belongs to drive {own_item}, not {item_id}"),
        )
        .of_item(item_id.clone())),
        _ => Err(Failed::new(
            FailureReason::Unsupported,
            "a drive's module only changes its own write protection",
        )),
    }
}

/// Runs a drive module's commands exactly once (the shared rules of [`Perform`]).
pub struct ModuleExecutor<M: Module> {
    item_id: String,
    module: M,
    journal: Journal,
    clock: KioskClock,
    outbox_ready: Arc<Notify>,
}

impl<M: Module> ModuleExecutor<M> {
    /// An executor for drive `item_id`'s `module`, journaling in `journal`.
    pub fn new(
        item_id: impl Into<String>,
        module: M,
        journal: Journal,
        clock: KioskClock,
        outbox_ready: Arc<Notify>,
    ) -> Self {
        Self {
            item_id: item_id.into(),
            module,
            journal,
            clock,
            outbox_ready,
        }
    }

    /// Journals it executing (`fresh`: from received; else re-marked after a crash), sets
    /// the protection, answers. A repeat sets the same state, so recovery simply runs again.
    async fn set(&self, id: &str, on: bool, fresh: bool) -> Answer {
        let started = if fresh {
            self.journal.start(id, None).await?
        } else {
            self.journal.resume(id, None).await?
        };
        if !started {
            return Ok(None);
        }
        let now = || self.clock.now();
        let set = within(
            CONFIGURE_TIMEOUT,
            format!("module set_write_protect {}", self.item_id),
            self.module.set_write_protect(on),
        )
        .await;
        Ok(Some(match set {
            Ok(write_protected) => wire::success(
                id,
                Outcome::SetWriteProtect(pb::SetWriteProtectResult {
                    item_id: self.item_id.clone(),
                    write_protected,
                }),
                now(),
            ),
            Err(error) => wire::failure(id, Failed::bay(&error).of_item(&self.item_id), now()),
        }))
    }

    fn refuse(&self, id: &str, failed: Failed) -> Answer {
        Ok(Some(wire::failure(id, failed, self.clock.now())))
    }
}

impl<M: Module> Perform for ModuleExecutor<M> {
    fn journal(&self) -> &Journal {
        &self.journal
    }

    fn clock(&self) -> &KioskClock {
        &self.clock
    }

    fn outbox_ready(&self) -> &Notify {
        &self.outbox_ready
    }

    async fn run(&self, id: &str, action: Action, _deadline: DateTime<Utc>) -> Answer {
        match accept(&self.item_id, &action) {
            Ok(on) => self.set(id, on, true).await,
            Err(failed) => self.refuse(id, failed),
        }
    }

    async fn settle(&self, command: &JournaledCommand) -> Answer {
        let id = command.command_id.as_str();
        match command::validate(command.payload.as_ref()) {
            Ok(action) => match accept(&self.item_id, &action) {
                Ok(on) => self.set(id, on, false).await,
                Err(failed) => self.refuse(id, failed),
            },
            Err(reason) => self.refuse(id, Failed::new(FailureReason::InvalidCommand, reason)),
        }
    }
}

/// A drive on the link: logs in with DriveLogin, says Hello with no inventory.
struct DriveSpeaker {
    config: Arc<DriveConfig>,
    journal: Journal,
}

impl Speaker for DriveSpeaker {
    async fn login(&self) -> Result<(String, Option<DateTime<Utc>>), tonic::Status> {
        drive_login(&self.config).await
    }

    async fn hello(&self) -> Result<pb::Hello, String> {
        Ok(pb::Hello {
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            inventory: None,
            last_finished_command_id: link::last_finished(&self.journal).await?,
        })
    }
}

/// Logs in with the drive's credential; returns the token and its expiry.
async fn drive_login(
    config: &DriveConfig,
) -> Result<(String, Option<DateTime<Utc>>), tonic::Status> {
    let channel = link::endpoint(&config.auth_url)
        .map_err(tonic::Status::invalid_argument)?
        .connect()
        .await
        .map_err(|e| {
            tonic::Status::unavailable(format!("cannot reach auth at {}: {e}", config.auth_url))
        })?;
    let response = AuthServiceClient::new(channel)
        .drive_login(DriveLoginRequest {
            item_id: config.item_id.clone(),
            secret: config.secret.clone(),
        })
        .await?
        .into_inner();
    let expires_at = response
        .access_token_expires_at
        .as_ref()
        .and_then(wire::from_timestamp);
    Ok((response.access_token, expires_at))
}

/// A running drive module. Dropping it without [`DriveHandle::stop`] also stops its tasks.
pub struct DriveHandle {
    item_id: String,
    journal: Journal,
    tasks: TaskTracker,
    stop: DropGuard,
    lock: Arc<DataDirLock>,
}

impl std::fmt::Debug for DriveHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriveHandle")
            .field("item_id", &self.item_id)
            .finish_non_exhaustive()
    }
}

impl DriveHandle {
    /// The drive this module belongs to.
    pub fn item_id(&self) -> &str {
        &self.item_id
    }

    /// Stops gracefully: closes the link, lets a running command finish, waits for every
    /// task, closes the journal, releases the data directory.
    pub async fn stop(self) {
        let DriveHandle {
            item_id: _,
            journal,
            tasks,
            stop,
            lock,
        } = self;
        drop(stop);
        tasks.close();
        tasks.wait().await;
        journal.close().await;
        drop(lock);
    }
}

/// Starts a drive's module: locks its data directory, opens its journal, settles commands a
/// crash interrupted, and spawns its link and its command worker.
pub async fn start<M: Module>(config: DriveConfig, module: M) -> anyhow::Result<DriveHandle> {
    sneakernet_proto::ids::ItemId::parse(&config.item_id)
        .map_err(|why| anyhow::anyhow!("item_id {:?}: {why}", config.item_id))?;
    for (key, url) in [
        ("auth_url", config.auth_url.as_str()),
        ("gateway_url", config.gateway_url.as_str()),
    ] {
        crate::config::check_transport(key, url, config.allow_plaintext, "drive")
            .map_err(|why| anyhow::anyhow!("drive {}: {why}", config.item_id))?;
    }
    let lock = Arc::new(crate::lock_data_dir(&config.data_dir)?);
    let journal = Journal::open(&config.data_dir).await?;
    let clock = KioskClock::new();
    let outbox_ready = Arc::new(Notify::new());
    let work_ready = Arc::new(Notify::new());
    let executor = Arc::new(ModuleExecutor::new(
        config.item_id.clone(),
        module,
        journal.clone(),
        clock.clone(),
        Arc::clone(&outbox_ready),
    ));
    executor
        .recover()
        .await
        .map_err(|e: ExecError| anyhow::anyhow!(e))
        .context("cannot settle commands interrupted by the last stop")?;
    let config = Arc::new(config);
    let stop = CancellationToken::new();
    // A module reports no progress: the feed stays empty.
    let (_no_progress, progress) = tokio::sync::mpsc::channel(1);
    let link = Arc::new(Link {
        device: DriveSpeaker {
            config: Arc::clone(&config),
            journal: journal.clone(),
        },
        gateway_url: config.gateway_url.clone(),
        settings: config.link.clone(),
        journal: journal.clone(),
        executor: Arc::clone(&executor),
        clock,
        outbox_ready,
        work_ready: Arc::clone(&work_ready),
        progress: std::sync::Mutex::new(Some(progress)),
        stop: stop.clone(),
    });
    let tasks = TaskTracker::new();
    let held = Arc::clone(&lock);
    let worker_stop = stop.clone();
    tasks.spawn(async move {
        executor.run_worker(work_ready, worker_stop).await;
        drop(held);
    });
    let held = Arc::clone(&lock);
    tasks.spawn(async move {
        link.run().await;
        drop(held);
    });
    Ok(DriveHandle {
        item_id: config.item_id.clone(),
        journal,
        tasks,
        stop: stop.drop_guard(),
        lock,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    use crate::bays::{Bays, DriveError};
    use crate::config::{SimBayConfig, SimItemConfig, SimItemKind, SimulationConfig};

    /// A module that counts how often it was asked.
    #[derive(Default)]
    struct Counting {
        calls: AtomicU32,
    }

    impl Module for Arc<Counting> {
        async fn set_write_protect(&self, on: bool) -> Result<bool, BayError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(on)
        }
    }

    fn set(id: &str, item: &str, on: bool) -> pb::Command {
        pb::Command {
            command_id: id.into(),
            deadline: Some(wire::timestamp(Utc::now() + chrono::Duration::minutes(5))),
            payload: Some(pb::CommandPayload {
                kind: Some(pb::command_payload::Kind::SetWriteProtect(
                    pb::SetWriteProtectCommand {
                        item_id: item.into(),
                        on,
                    },
                )),
            }),
            attempt: 1,
        }
    }

    #[tokio::test]
    async fn a_module_refuses_plaintext_beyond_loopback_unless_allowed_naming_the_address() {
        let dir = tempfile::tempdir().unwrap();
        let config = |gateway: &str, allow_plaintext| DriveConfig {
            item_id: "D-1".into(),
            secret: "s".into(),
            auth_url: "http://127.0.0.1:1".into(),
            gateway_url: gateway.into(),
            allow_plaintext,
            data_dir: dir.path().join("module"),
            link: LinkConfig {
                backoff_initial: std::time::Duration::from_millis(50),
                backoff_max: std::time::Duration::from_millis(100),
            },
        };
        let refused = match start(
            config("http://gateway.example:443", false),
            Arc::new(Counting::default()),
        )
        .await
        {
            Ok(_) => panic!("plaintext to a remote gateway is refused"),
            Err(error) => error.to_string(),
        };
        assert!(refused.contains("gateway_url"), "{refused}");
        assert!(refused.contains("drive's secret"), "{refused}");
        assert!(refused.contains("allow_plaintext"), "{refused}");
        assert!(
            !dir.path().join("module").exists(),
            "refused before anything is written"
        );
        for url in ["https://gateway.example:443", "http://[::1]:1"] {
            let running = start(config(url, false), Arc::new(Counting::default()))
                .await
                .unwrap_or_else(|e| panic!("{url}: {e:#}"));
            running.stop().await;
        }
        let allowed = start(
            config("http://gateway.example:443", true),
            Arc::new(Counting::default()),
        )
        .await
        .expect("allowed when told");
        allowed.stop().await;
    }

    #[tokio::test]
    async fn a_resent_command_is_answered_from_the_journal_not_run_again() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).await.unwrap();
        let module = Arc::new(Counting::default());
        let executor = ModuleExecutor::new(
            "D-1",
            Arc::clone(&module),
            journal.clone(),
            KioskClock::new(),
            Arc::new(Notify::new()),
        );
        let first = executor.handle(&set("C-1", "D-1", true)).await.unwrap();
        let again = executor.handle(&set("C-1", "D-1", true)).await.unwrap();
        assert_eq!(first, again);
        assert!(matches!(
            first.outcome,
            Some(Outcome::SetWriteProtect(ref r)) if r.write_protected && r.item_id == "D-1"
        ));
        assert_eq!(module.calls.load(Ordering::SeqCst), 1, "executed once");
        let other = executor.handle(&set("C-2", "D-2", true)).await.unwrap();
        assert!(matches!(
            other.outcome,
            Some(Outcome::Failure(ref f)) if f.reason == FailureReason::ItemNotFound as i32
        ));
        assert_eq!(
            module.calls.load(Ordering::SeqCst),
            1,
            "another drive's is refused"
        );
    }

    #[tokio::test]
    async fn a_lent_drives_module_toggles_the_flag_its_user_writes_against() {
        let dir = tempfile::tempdir().unwrap();
        let drive = |id: &str, remote_link: bool| SimItemConfig {
            kind: SimItemKind::Drive,
            item_id: id.into(),
            capacity_bytes: Some(1_000_000),
            content_package_id: None,
            write_protected: false,
            charge_percent: None,
            remote_link,
        };
        let config = SimulationConfig {
            bays: vec![
                SimBayConfig {
                    id: "A01".into(),
                    item: Some(drive("D-1", true)),
                },
                SimBayConfig {
                    id: "A02".into(),
                    item: Some(drive("D-2", false)),
                },
            ],
            faults: Default::default(),
        };
        let bays = SimulatedBays::open(dir.path(), &config).await.unwrap();
        bays.eject("A01").await.unwrap();
        let module = SimulatedModule {
            bays: bays.clone(),
            item_id: "D-1".into(),
        };
        assert_eq!(bays.write_as_user("D-1", "mine.txt", b"hi"), Ok(2));
        assert_eq!(module.set_write_protect(true).await, Ok(true));
        assert_eq!(bays.write_protected_anywhere("D-1"), Some(true));
        assert_eq!(
            bays.write_as_user("D-1", "mine.txt", b"again"),
            Err(DriveError::WriteProtected("D-1".into()))
        );
        assert_eq!(module.set_write_protect(false).await, Ok(false));
        assert_eq!(bays.write_as_user("D-1", "mine.txt", b"again"), Ok(5));
        let without = SimulatedModule {
            bays: bays.clone(),
            item_id: "D-2".into(),
        };
        assert!(
            without.set_write_protect(true).await.is_err(),
            "a drive without a module cannot be reached"
        );
    }

    #[test]
    fn a_module_runs_only_its_own_write_protection() {
        let on = Action::SetWriteProtect {
            item_id: "D-1".into(),
            on: true,
        };
        assert_eq!(accept("D-1", &on), Ok(true));
        let other = accept("D-2", &on).unwrap_err();
        assert_eq!(other.reason, FailureReason::ItemNotFound);
        assert_eq!(other.item_id.as_deref(), Some("D-1"));
        let wipe = Action::Wipe {
            item_id: "D-1".into(),
        };
        assert_eq!(
            accept("D-1", &wipe).unwrap_err().reason,
            FailureReason::Unsupported
        );
    }
}
