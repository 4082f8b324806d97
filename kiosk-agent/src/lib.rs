//! The kiosk agent: the program on a kiosk. It holds the link to the device gateway, chooses
//! and ejects items by its preset rules, detects returns, and keeps a durable journal so every
//! command takes effect exactly once.
//!
//! Map: [`config`] (the file), [`bays`] (the hardware trait) and [`simulated`] (its simulator),
//! [`selection`] (which item a lend hands out), [`command`] (payload validation), [`journal`]
//! (SQLite: commands and outbox), [`executor`] (exactly-once execution and crash recovery),
//! [`link`] (the gateway stream), [`wire`] (conversions to the contract), [`clock`] (skew).
//!
//! Content: [`cache`] (the chunk cache), [`content_source`] (manifests and chunks from the
//! content service), [`drive_content`] (on-drive manifest, copy, read-back verification),
//! [`returns`] (re-verifying returned drives).
//!
//! A drive's own remote link module runs the same link and journal: [`drive`].
//!
//! Tasks: [`start`] spawns three, all owned by the [`AgentHandle`] and awaited by
//! [`AgentHandle::stop`]: the link, the command worker, and the return detector.
//!
//! One agent per data directory: [`start`] takes an exclusive lock on `data_dir/agent.lock`
//! ([`lock_data_dir`]) before opening anything in it, and holds it until every task has ended,
//! so two agent processes can never both execute a command from one journal.

pub mod bays;
pub mod cache;
pub mod cli;
pub mod clock;
pub mod command;
pub mod config;
pub mod content_source;
pub mod drive;
pub mod drive_content;
pub mod executor;
pub mod journal;
pub mod link;
pub mod returns;
pub mod selection;
pub mod simulated;
pub mod wire;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use crate::cache::{CacheStats, ChunkCache};
use crate::clock::KioskClock;
use crate::config::AgentConfig;
use crate::content_source::{GrpcContentSource, KioskTokens};
use crate::executor::Content;
use crate::executor::{Executor, Perform};
use crate::journal::Journal;
use crate::link::{KioskSpeaker, Link};
use crate::simulated::SimulatedBays;

/// Exchanges the kiosk's credential for an access token; returns its expiry (Unix seconds).
pub async fn login(config: &AgentConfig) -> anyhow::Result<i64> {
    let (_token, expires_at) = link::kiosk_login(config).await.map_err(|s| {
        if s.code() == tonic::Code::Unavailable || s.code() == tonic::Code::InvalidArgument {
            anyhow::anyhow!("{}", s.message())
        } else {
            anyhow::anyhow!("kiosk login refused: {}", s.message())
        }
    })?;
    Ok(expires_at.map(|t| t.timestamp()).unwrap_or_default())
}

/// The lock file in the data directory, held by the running agent.
pub const LOCK_FILE: &str = "agent.lock";

/// An exclusive lock on a data directory: while it lives, no other agent (in this process or
/// another) can lock the same directory. The operating system releases it when the process
/// dies, however it dies, so a crash never leaves a stale lock.
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

/// Locks `data_dir` for this agent (creating the directory and `agent.lock` if needed). Fails
/// at once, naming the directory, when another agent holds it.
pub fn lock_data_dir(data_dir: &Path) -> anyhow::Result<DataDirLock> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data_dir {}", data_dir.display()))?;
    let path = data_dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(DataDirLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(anyhow::anyhow!(
            "another kiosk-agent is running with data_dir {}",
            data_dir.display()
        )),
        Err(std::fs::TryLockError::Error(error)) => Err(anyhow::anyhow!(
            "cannot lock data_dir {} ({}): {error}",
            data_dir.display(),
            path.display()
        )),
    }
}

/// `task`, then the release of its hold on the data directory's lock.
async fn holding(lock: Arc<DataDirLock>, task: impl Future<Output = ()>) {
    task.await;
    drop(lock);
}

/// A running agent. Dropping it without [`AgentHandle::stop`] also stops its tasks (without
/// waiting for them); the data directory stays locked until the last task has ended.
pub struct AgentHandle {
    bays: Arc<SimulatedBays>,
    cache: ChunkCache,
    journal: Journal,
    tasks: TaskTracker,
    stop: DropGuard,
    lock: Arc<DataDirLock>,
}

impl std::fmt::Debug for AgentHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentHandle")
            .field("bays", &self.bays)
            .finish_non_exhaustive()
    }
}

impl AgentHandle {
    /// The simulated bays this agent drives: eject counts, inserts and snapshots for tests;
    /// [`SimulatedBays::stock`] to load a package onto a drive and [`SimulatedBays::drive_dir`]
    /// for where a drive's files are.
    pub fn bays(&self) -> &SimulatedBays {
        &self.bays
    }

    /// The chunk cache's size and counters now (chunks and bytes held, chunks inserted, hits,
    /// evictions, corrupt chunks found). A Provision whose package was cached inserts nothing:
    /// `inserted` does not move.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Stops gracefully: closes the link, lets a running command finish, waits for every task,
    /// then closes the journal, and last releases the data directory's lock.
    pub async fn stop(self) {
        let AgentHandle {
            bays: _,
            cache: _,
            journal,
            tasks,
            stop,
            lock,
        } = self;
        drop(stop); // cancels the token
        tasks.close();
        tasks.wait().await;
        journal.close().await;
        drop(lock);
    }
}

/// Starts the agent: checks the configuration, locks the data directory (failing when
/// another agent runs with it), opens the journal and the simulated bays (`config.simulation`
/// is required until real bays have a driver), settles commands a crash interrupted, and
/// spawns the link, the command worker and the return detector.
pub async fn start(config: AgentConfig) -> anyhow::Result<AgentHandle> {
    config.validate()?;
    let simulation = config.simulation.as_ref().context(
        "`simulation` is missing from the configuration: this agent only drives simulated bays",
    )?;
    let lock = Arc::new(lock_data_dir(&config.data_dir)?);
    let journal = Journal::open(&config.data_dir).await?;
    let bays = Arc::new(
        SimulatedBays::open(&config.data_dir, simulation)
            .await
            .with_context(|| {
                format!(
                    "cannot open the simulated bays in {}",
                    config.data_dir.display()
                )
            })?,
    );
    let cache = ChunkCache::open(config.cache_dir(), config.cache_budget_bytes())
        .await
        .with_context(|| {
            format!(
                "cannot open the chunk cache in {}",
                config.cache_dir().display()
            )
        })?;
    let config = Arc::new(config);
    let channel = link::endpoint(config.content_url())
        .map_err(|e| anyhow::anyhow!("content.url: {e}"))?
        .connect_lazy();
    let source = GrpcContentSource::new(channel, KioskTokens::new(Arc::clone(&config)));
    // Progress is not durable: a bounded queue whose full case drops the update.
    let (progress_tx, progress_rx) = tokio::sync::mpsc::channel(executor::PROGRESS_QUEUE);
    let clock = KioskClock::new();
    let outbox_ready = Arc::new(Notify::new());
    let work_ready = Arc::new(Notify::new());
    let executor = Arc::new(
        Executor::new(
            journal.clone(),
            Arc::clone(&bays),
            clock.clone(),
            Arc::clone(&outbox_ready),
        )
        .with_content(Content {
            source: Arc::new(source),
            cache: cache.clone(),
            retries: config.provision_retries(),
            progress: progress_tx,
        }),
    );
    let settled = executor
        .recover()
        .await
        .context("cannot settle commands interrupted by the last stop")?;
    if settled > 0 {
        tracing::warn!(settled, "settled commands interrupted by the last stop");
    }
    let stop = CancellationToken::new();
    let link = Arc::new(Link {
        device: KioskSpeaker {
            config: Arc::clone(&config),
            bays: Arc::clone(&bays),
            journal: journal.clone(),
            clock: clock.clone(),
        },
        gateway_url: config.gateway_url.clone(),
        settings: config.link.clone(),
        journal: journal.clone(),
        executor: Arc::clone(&executor),
        clock: clock.clone(),
        outbox_ready: Arc::clone(&outbox_ready),
        work_ready: Arc::clone(&work_ready),
        progress: std::sync::Mutex::new(Some(progress_rx)),
        stop: stop.clone(),
    });
    let tasks = TaskTracker::new();
    // Every task holds the lock too: it is released only once none of them can touch the
    // journal or the bays any more.
    tasks.spawn(holding(
        Arc::clone(&lock),
        Arc::clone(&executor).run_worker(work_ready, stop.clone()),
    ));
    tasks.spawn(holding(
        Arc::clone(&lock),
        link::detect_returns(
            Arc::clone(&bays),
            journal.clone(),
            clock,
            outbox_ready,
            stop.clone(),
        ),
    ));
    tasks.spawn(holding(Arc::clone(&lock), link.run()));
    Ok(AgentHandle {
        bays,
        cache,
        journal,
        tasks,
        stop: stop.drop_guard(),
        lock,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LinkConfig, SimBayConfig, SimFaults, SimulationConfig};

    #[test]
    fn a_data_dir_is_locked_by_one_holder_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_data_dir(dir.path()).unwrap();
        let error = lock_data_dir(dir.path()).unwrap_err().to_string();
        assert_eq!(
            error,
            format!(
                "another kiosk-agent is running with data_dir {}",
                dir.path().display()
            )
        );
        drop(first);
        lock_data_dir(dir.path()).expect("free again once released");
    }

    #[tokio::test]
    async fn a_second_agent_on_the_same_data_dir_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let credential_file = dir.path().join("secret");
        std::fs::write(&credential_file, "s3cret\n").unwrap();
        let config = AgentConfig {
            content: Default::default(),
            kiosk_id: "K-1".into(),
            credential_file,
            // Nothing listens here: the link just keeps backing off.
            auth_url: "http://127.0.0.1:9".into(),
            gateway_url: "http://127.0.0.1:9".into(),
            data_dir: dir.path().join("data"),
            allow_plaintext: false,
            qr_secret_file: None,
            link: LinkConfig::default(),
            simulation: Some(SimulationConfig {
                bays: vec![SimBayConfig {
                    id: "A01".into(),
                    item: None,
                }],
                faults: SimFaults::default(),
            }),
        };
        let first = start(config.clone()).await.unwrap();
        let error = start(config.clone()).await.unwrap_err();
        assert!(
            format!("{error:#}").contains(&format!(
                "another kiosk-agent is running with data_dir {}",
                config.data_dir.display()
            )),
            "{error:#}"
        );
        first.stop().await;
        start(config)
            .await
            .expect("starts once the first stopped")
            .stop()
            .await;
    }
}
