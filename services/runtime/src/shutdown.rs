//! Graceful shutdown, shaped like mini-redis: a signal cancels one token; listeners stop
//! accepting, streams end, and every task spawned through [`Shutdown::spawn`] is tracked so
//! the process waits for all of them (up to a grace period) before it exits.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The shutdown trigger and the set of tasks that must finish before the process exits.
/// Clones share both.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Shutdown {
    /// A trigger not yet pulled, with no tasks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts shutdown. Idempotent.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Whether shutdown has started.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once shutdown has started.
    pub async fn triggered(&self) {
        self.token.cancelled().await;
    }

    /// The underlying token, for `select!` in tasks and for servers' shutdown signals.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Spawns a tracked task. It must watch [`Self::triggered`] (or the token) and end soon
    /// after shutdown starts; [`Self::wait`] waits for it.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Triggers shutdown when the process gets SIGINT or SIGTERM.
    pub fn trigger_on_signals(&self) {
        let this = self.clone();
        self.spawn(async move {
            tokio::select! {
                () = wait_for_signal() => {
                    tracing::info!("shutdown signal received");
                    this.trigger();
                }
                () = this.triggered() => {}
            }
        });
    }

    /// After shutdown started: waits for every tracked task, at most `grace`. Returns whether
    /// all finished in time.
    pub async fn wait(&self, grace: Duration) -> bool {
        self.tracker.close();
        let done = tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok();
        if !done {
            tracing::warn!(
                remaining = self.tracker.len(),
                "tasks still running after the shutdown grace period"
            );
        }
        done
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only ctrl-c stops the process");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_returns_when_tracked_tasks_observe_the_trigger() {
        let shutdown = Shutdown::new();
        let seen = shutdown.clone();
        let task = shutdown.spawn(async move {
            seen.triggered().await;
            7
        });
        shutdown.trigger();
        assert!(shutdown.wait(Duration::from_secs(5)).await);
        assert_eq!(task.await.unwrap(), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_gives_up_after_the_grace_period() {
        let shutdown = Shutdown::new();
        shutdown.spawn(std::future::pending::<()>());
        shutdown.trigger();
        assert!(!shutdown.wait(Duration::from_secs(1)).await);
    }
}
