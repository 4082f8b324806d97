//! The kiosk's notion of "now": the system clock corrected by the skew to the gateway's clock
//! (learnt from Welcome.server_time). Guarantees: deadlines are judged on the corrected clock,
//! so a kiosk whose clock runs late does not start commands the gateway already gave up on.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};

/// Skews larger than this are ignored as nonsense (a bad server_time) rather than applied.
const MAX_SKEW_MS: i64 = 7 * 24 * 3600 * 1000;

/// A shared, skew-corrected clock. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct KioskClock {
    offset_ms: Arc<AtomicI64>,
}

impl KioskClock {
    /// A clock equal to the system clock until corrected.
    pub fn new() -> Self {
        Self::default()
    }

    /// Now, corrected.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Learns the gateway's time `server_now` (as close to its arrival as possible); returns
    /// the skew applied in milliseconds, or `None` when it was implausible and ignored.
    pub fn correct(&self, server_now: DateTime<Utc>) -> Option<i64> {
        let skew = (server_now - Utc::now()).num_milliseconds();
        if skew.abs() > MAX_SKEW_MS {
            return None;
        }
        self.offset_ms.store(skew, Ordering::Relaxed);
        Some(skew)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_is_applied_and_nonsense_ignored() {
        let clock = KioskClock::new();
        let ahead = Utc::now() + chrono::Duration::minutes(5);
        assert!(clock.correct(ahead).is_some());
        let delta = (clock.now() - Utc::now()).num_seconds();
        assert!((299..=301).contains(&delta), "{delta}");
        assert!(
            clock
                .correct(Utc::now() + chrono::Duration::days(30))
                .is_none()
        );
        let delta = (clock.now() - Utc::now()).num_seconds();
        assert!((299..=301).contains(&delta), "kept the last good skew");
    }
}
