//! Supervised background tasks: event consumers, workers and sweepers that a service cannot
//! do its job without.
//!
//! A supervised task that panics, returns an error, or ends before shutdown is logged at ERROR,
//! counted (`background_task_failures_total{task}`), and started again after a backoff that
//! doubles from [`FIRST_BACKOFF`] up to [`MAX_BACKOFF`] (and starts over once a run lasted
//! [`STABLE_AFTER`]). While it is down, gRPC health reports NOT_SERVING for the services the
//! task serves, so Kubernetes and load balancers see it; once restarted they are SERVING again.

use std::collections::BTreeSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::watch;

use crate::shutdown::Shutdown;

/// Backoff before the first restart.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest backoff between restarts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A run that lasted this long resets the backoff.
pub const STABLE_AFTER: Duration = Duration::from_secs(60);

/// Which supervised tasks are down, by the services they serve. Shared by the tasks (which
/// mark themselves) and the server (which turns it into health statuses). Cheap to clone.
#[derive(Clone, Debug)]
pub struct TaskHealth {
    down: Arc<watch::Sender<BTreeSet<(&'static str, &'static str)>>>,
}

impl Default for TaskHealth {
    fn default() -> Self {
        Self {
            down: Arc::new(watch::channel(BTreeSet::new()).0),
        }
    }
}

impl TaskHealth {
    /// Nothing down.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks `task` down (or up again) for `services`; a service is NOT_SERVING while any task
    /// of it is down. Supervised tasks mark themselves; a node marks a readiness hold (the
    /// empty name `""` is the server's overall status).
    pub fn set(&self, task: &'static str, services: &[&'static str], down: bool) {
        self.down.send_if_modified(|set| {
            let mut changed = false;
            for service in services {
                changed |= if down {
                    set.insert((service, task))
                } else {
                    set.remove(&(service, task))
                };
            }
            changed
        });
    }

    /// Whether `service` has a supervised task down now.
    pub fn is_down(&self, service: &str) -> bool {
        self.down.borrow().iter().any(|(s, _)| *s == service)
    }

    /// Follows changes (the server maps them to health statuses).
    pub fn subscribe(&self) -> watch::Receiver<BTreeSet<(&'static str, &'static str)>> {
        self.down.subscribe()
    }
}

/// A background task to keep running: its name (for logs, metrics and health) and the gRPC
/// services that report NOT_SERVING while it is down.
#[derive(Clone, Debug)]
pub struct Supervised {
    /// The task's name (`orders-settle`).
    pub name: &'static str,
    /// Fully-qualified names of the services it serves.
    pub serves: Vec<&'static str>,
}

/// Runs `run()` on `shutdown`'s tracker until shutdown, restarting it as the module docs say.
/// `run` builds one run of the task; it should return only on shutdown (an `Ok` before
/// shutdown counts as a failure: a supervised task is meant to run for good).
pub fn spawn<F, Fut, E>(shutdown: &Shutdown, health: TaskHealth, task: Supervised, mut run: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let stop = shutdown.clone();
    shutdown.spawn(async move {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let started = tokio::time::Instant::now();
            // A panic unwinds out of this run only: the task's own state is rebuilt by `run`.
            let outcome = tokio::select! {
                () = stop.triggered() => return,
                outcome = AssertUnwindSafe(run()).catch_unwind() => outcome,
            };
            if stop.is_triggered() {
                return;
            }
            let why = match outcome {
                Ok(Ok(())) => "ended before shutdown".to_owned(),
                Ok(Err(error)) => error.to_string(),
                Err(panic) => format!("panicked: {}", panic_message(panic.as_ref())),
            };
            if started.elapsed() >= STABLE_AFTER {
                backoff = FIRST_BACKOFF;
            }
            tracing::error!(task = task.name, error = %why, retry_in = ?backoff, "background task failed; restarting");
            metrics::counter!("background_task_failures_total", "task" => task.name).increment(1);
            health.set(task.name, &task.serves, true);
            tokio::select! {
                () = stop.triggered() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            tracing::info!(task = task.name, "background task restarted");
            health.set(task.name, &task.serves, false);
        }
    });
}

/// The text a panic carried (its `&str` or `String` payload).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_is_marked_down_restarted_and_marked_up() {
        let shutdown = Shutdown::new();
        let health = TaskHealth::new();
        let mut changes = health.subscribe();
        let runs = Arc::new(AtomicU32::new(0));
        let counted = runs.clone();
        spawn(
            &shutdown,
            health.clone(),
            Supervised {
                name: "worker",
                serves: vec!["svc.A", "svc.B"],
            },
            move || {
                let run = counted.fetch_add(1, Ordering::SeqCst);
                async move {
                    if run == 0 {
                        panic!("first run dies");
                    }
                    std::future::pending::<Result<(), String>>().await
                }
            },
        );
        changes.changed().await.unwrap();
        assert!(health.is_down("svc.A") && health.is_down("svc.B"));
        assert!(!health.is_down("svc.C"));
        changes.changed().await.unwrap();
        assert!(!health.is_down("svc.A"), "up again once restarted");
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        shutdown.trigger();
        assert!(shutdown.wait(Duration::from_secs(1)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_while_a_task_keeps_failing() {
        let shutdown = Shutdown::new();
        let starts = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = starts.clone();
        spawn(
            &shutdown,
            TaskHealth::new(),
            Supervised {
                name: "flaky",
                serves: vec![],
            },
            move || {
                seen.lock().unwrap().push(tokio::time::Instant::now());
                async { Err::<(), _>("no") }
            },
        );
        tokio::time::sleep(Duration::from_secs(16)).await;
        let starts = starts.lock().unwrap().clone();
        let gaps: Vec<u64> = starts.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect();
        assert_eq!(gaps, [1, 2, 4, 8]);
        shutdown.trigger();
    }
}
