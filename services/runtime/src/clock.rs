//! Time, injected: services read "now" from a [`Clock`] so tests can move it instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The system clock shifted by an adjustable offset, for tests that need time to pass or to be
/// somewhere else ("issue this token as if two hours ago").
#[derive(Clone, Debug, Default)]
pub struct OffsetClock {
    offset_ms: Arc<AtomicI64>,
}

impl OffsetClock {
    /// A clock equal to the system clock until moved.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock by `delta` (negative moves it back).
    pub fn advance(&self, delta: chrono::Duration) {
        self.offset_ms
            .fetch_add(delta.num_milliseconds(), Ordering::SeqCst);
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.offset_ms.load(Ordering::SeqCst))
    }
}

/// A shared clock handle.
pub type SharedClock = Arc<dyn Clock>;

/// How often [`reached`] looks at the clock again while `at` is far: a clock moved forward
/// (a suspended host waking, a test advancing time) is noticed within this.
const LOOK_AGAIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Resolves once `clock` reads `at` or later: at `at` on a clock that runs like the system's,
/// and within a second of a jump past it.
pub async fn reached(clock: &dyn Clock, at: DateTime<Utc>) {
    loop {
        let left = (at - clock.now()).to_std().unwrap_or_default();
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.min(LOOK_AGAIN)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn reached_resolves_when_the_clock_is_moved_past_the_instant_not_before() {
        let clock = OffsetClock::new();
        let at = clock.now() + chrono::Duration::hours(1);
        let mut waiting = Box::pin(reached(&clock, at));
        tokio::select! {
            () = &mut waiting => panic!("resolved an hour early"),
            () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
        }
        clock.advance(chrono::Duration::hours(1));
        tokio::time::timeout(std::time::Duration::from_secs(2), waiting)
            .await
            .expect("resolved once the clock passed the instant");
    }
}
