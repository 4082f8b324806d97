//! Admission of new links under a connect storm (every kiosk reconnecting after a gateway
//! restart): at most `gateway.max_concurrent_hellos` Hellos of this replica are handled at
//! once — each writes its device online and reads its commands — below the database pool's
//! size, so links already open and the workers keep their connections.
//!
//! A Hello that gets no turn within [`ADMISSION_WAIT`] is answered Reconnect (REBALANCE) with
//! a `retry_after` spread over [`RETRY_AFTER_MIN`, `RETRY_AFTER_MIN` + `RETRY_AFTER_SPREAD`),
//! which the agent waits, plus its own jitter, before opening again: a storm converges at the
//! rate the database takes Hellos instead of timing out on the pool.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a Hello waits for its turn before it is told to come back. Short: the kiosk's
/// open waits for the answer (the agent gives up after 10 s), and a waiting link holds memory.
pub const ADMISSION_WAIT: Duration = Duration::from_secs(1);
/// The least a deferred kiosk is told to wait.
pub const RETRY_AFTER_MIN: Duration = Duration::from_secs(1);
/// How far deferred kiosks' waits are spread beyond [`RETRY_AFTER_MIN`].
pub const RETRY_AFTER_SPREAD: Duration = Duration::from_secs(4);

/// This replica's turns for Hellos. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Admission {
    turns: Arc<Semaphore>,
}

/// The Hellos a replica takes at once: what `gateway.max_concurrent_hellos` asks, kept below
/// a database pool of `pool` connections (and at least one), so open links and the workers
/// always have a connection. The key is not refused when larger: one configuration file
/// serves every role, and a process with a small pool (the migration job) serves no links.
pub fn hello_turns(configured: u32, pool: u32) -> u32 {
    configured.min(pool.saturating_sub(1)).max(1)
}

impl Admission {
    /// At most `max_concurrent` Hellos at once (at least one).
    pub fn new(max_concurrent: u32) -> Self {
        Self {
            turns: Arc::new(Semaphore::new(max_concurrent.max(1) as usize)),
        }
    }

    /// A turn, held until dropped; `None` when none came within [`ADMISSION_WAIT`].
    pub async fn admit(&self) -> Option<OwnedSemaphorePermit> {
        tokio::time::timeout(ADMISSION_WAIT, self.turns.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }

    /// When a deferred kiosk should try again: spread so deferred kiosks do not all return
    /// at once.
    pub fn retry_after(jitter: f64) -> Duration {
        RETRY_AFTER_MIN + RETRY_AFTER_SPREAD.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_turns_stay_below_the_pool_and_never_reach_zero() {
        assert_eq!(hello_turns(5, 10), 5);
        assert_eq!(hello_turns(10, 10), 9);
        assert_eq!(hello_turns(5, 2), 1);
        assert_eq!(hello_turns(5, 1), 1);
        assert_eq!(hello_turns(1, 0), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hello_past_the_limit_waits_a_moment_then_is_deferred_and_a_freed_turn_admits() {
        let admission = Admission::new(1);
        let first = admission.admit().await.expect("a free turn");
        let waited = tokio::time::Instant::now();
        assert!(
            admission.admit().await.is_none(),
            "no turn while one is held"
        );
        assert_eq!(waited.elapsed(), ADMISSION_WAIT);
        drop(first);
        assert!(admission.admit().await.is_some(), "a freed turn admits");
    }

    #[test]
    fn retry_hints_stay_within_their_spread() {
        assert_eq!(Admission::retry_after(0.0), RETRY_AFTER_MIN);
        assert_eq!(
            Admission::retry_after(1.0),
            RETRY_AFTER_MIN + RETRY_AFTER_SPREAD
        );
        assert_eq!(
            Admission::retry_after(7.0),
            RETRY_AFTER_MIN + RETRY_AFTER_SPREAD
        );
    }
}
