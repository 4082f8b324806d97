//! The kiosk agent: the program on a kiosk. It holds the link to the device gateway, chooses
//! and ejects items by its preset rules, detects returns, and keeps a durable journal so every
//! command takes effect exactly once.
//!
//! Map: [`config`] (the file), [`bays`] (the hardware trait) and [`simulated`] (its simulator),
//! [`selection`] (which item a lend hands out), [`command`] (payload validation), [`journal`]
//! (SQLite: commands and outbox), [`executor`] (exactly-once execution and crash recovery),
//! [`link`] (the gateway stream), [`wire`] (conversions to the contract), [`clock`] (skew).
//!
//! Tasks: [`start`] spawns three, all owned by the [`AgentHandle`] and awaited by
//! [`AgentHandle::stop`]: the link, the command worker, and the return detector.

pub mod bays;
pub mod cli;
pub mod clock;
pub mod command;
pub mod config;
pub mod executor;
pub mod journal;
pub mod link;
pub mod selection;
pub mod simulated;
pub mod wire;

use std::sync::Arc;

use anyhow::Context;
use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use crate::clock::KioskClock;
use crate::config::AgentConfig;
use crate::executor::Executor;
use crate::journal::Journal;
use crate::link::Link;
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

/// A running agent. Dropping it without [`AgentHandle::stop`] also stops its tasks (without
/// waiting for them).
pub struct AgentHandle {
    bays: Arc<SimulatedBays>,
    journal: Journal,
    tasks: TaskTracker,
    stop: DropGuard,
}

impl std::fmt::Debug for AgentHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentHandle")
            .field("bays", &self.bays)
            .finish_non_exhaustive()
    }
}

impl AgentHandle {
    /// The simulated bays this agent drives (for tests: eject counts, inserts, snapshots).
    pub fn bays(&self) -> &SimulatedBays {
        &self.bays
    }

    /// Stops gracefully: closes the link, lets a running command finish, waits for every task,
    /// then closes the journal.
    pub async fn stop(self) {
        let AgentHandle {
            bays: _,
            journal,
            tasks,
            stop,
        } = self;
        drop(stop); // cancels the token
        tasks.close();
        tasks.wait().await;
        journal.close().await;
    }
}

/// Starts the agent: checks the configuration, opens the journal and the simulated bays
/// (`config.simulation` is required until real bays have a driver), settles commands a crash
/// interrupted, and spawns the link, the command worker and the return detector.
pub async fn start(config: AgentConfig) -> anyhow::Result<AgentHandle> {
    config.validate()?;
    let simulation = config.simulation.as_ref().context(
        "`simulation` is missing from the configuration: this agent only drives simulated bays",
    )?;
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
    let clock = KioskClock::new();
    let outbox_ready = Arc::new(Notify::new());
    let work_ready = Arc::new(Notify::new());
    let executor = Arc::new(Executor::new(
        journal.clone(),
        Arc::clone(&bays),
        clock.clone(),
        Arc::clone(&outbox_ready),
    ));
    let settled = executor
        .recover()
        .await
        .context("cannot settle commands interrupted by the last stop")?;
    if settled > 0 {
        tracing::warn!(settled, "settled commands interrupted by the last stop");
    }
    let stop = CancellationToken::new();
    let link = Arc::new(Link {
        config: Arc::new(config),
        journal: journal.clone(),
        bays: Arc::clone(&bays),
        executor: Arc::clone(&executor),
        clock,
        outbox_ready,
        work_ready: Arc::clone(&work_ready),
        stop: stop.clone(),
    });
    let tasks = TaskTracker::new();
    tasks.spawn(Arc::clone(&executor).run_worker(work_ready, stop.clone()));
    tasks.spawn(Arc::clone(&link).detect_returns());
    tasks.spawn(link.run());
    Ok(AgentHandle {
        bays,
        journal,
        tasks,
        stop: stop.drop_guard(),
    })
}
