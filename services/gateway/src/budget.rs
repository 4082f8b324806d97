//! Per-device budgets on the link: how often a device may open its link, and how fast it may
//! send on it.
//!
//! - Opens ([`OpenBudget`]): a burst, then one per `gateway.link_open_every`, per device, per
//!   replica. An open over budget is refused RESOURCE_EXHAUSTED with when to retry, before
//!   Hello is read and before any database write, so a kiosk stuck in a reconnect loop costs
//!   the database nothing.
//! - Messages ([`MessageBudget`]): a token bucket per link. Over budget the session stops
//!   reading the link until a token is back: HTTP/2 flow control then slows the kiosk down.
//!   Nothing is lost or refused, and the time spent waiting never counts as silence.

use std::time::Duration;

use sneakernet_runtime::error::ApiError;
use sneakernet_runtime::rate_limit::KeyedLimiter;
use tokio::time::Instant;

/// Link opens per device: a burst, then one per interval.
#[derive(Clone, Debug)]
pub struct OpenBudget {
    limiter: KeyedLimiter<String>,
}

impl OpenBudget {
    /// `burst` opens at once, then one per `every`.
    pub fn new(burst: u32, every: Duration) -> Self {
        Self {
            limiter: KeyedLimiter::new(
                "link opens for this device",
                burst,
                every.saturating_mul(burst.max(1)),
            ),
        }
    }

    /// Spends one open of `device` (its stored key), or RESOURCE_EXHAUSTED saying when to retry.
    pub fn open(&self, device: &str) -> Result<(), ApiError> {
        self.limiter.check(&device.to_owned())
    }
}

/// Messages on one link: a token bucket owned by its session.
#[derive(Debug)]
pub struct MessageBudget {
    /// Tokens left (fractions accrue between messages).
    tokens: f64,
    burst: f64,
    per_second: f64,
    refilled_at: Instant,
}

impl MessageBudget {
    /// A full bucket of `burst`, refilled at `per_second`.
    pub fn new(burst: u32, per_second: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            tokens: burst,
            burst,
            per_second: f64::from(per_second.max(1)),
            refilled_at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.refilled_at = now;
    }

    /// When the next message may be read: `None` for now, else the instant a token is back.
    pub fn ready_at(&mut self, now: Instant) -> Option<Instant> {
        self.refill(now);
        if self.tokens >= 1.0 {
            return None;
        }
        let missing = 1.0 - self.tokens;
        Some(now + Duration::from_secs_f64(missing / self.per_second))
    }

    /// One message was read.
    pub fn spend(&mut self, now: Instant) {
        self.refill(now);
        self.tokens -= 1.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_read_at_once_then_the_rate_holds() {
        let start = Instant::now();
        let mut budget = MessageBudget::new(10, 5, start);
        for _ in 0..10 {
            assert_eq!(budget.ready_at(start), None);
            budget.spend(start);
        }
        let next = budget.ready_at(start).expect("over budget");
        assert_eq!(next - start, Duration::from_millis(200), "one token at 5/s");
        assert_eq!(budget.ready_at(next), None);
    }

    #[test]
    fn opens_past_the_burst_are_refused_with_when_to_retry_and_other_devices_are_unaffected() {
        let budget = OpenBudget::new(3, Duration::from_secs(10));
        for _ in 0..3 {
            budget.open("K-1").expect("within the burst");
        }
        let refused = budget.open("K-1").expect_err("over budget");
        assert!(
            matches!(refused, ApiError::ResourceExhausted { ref message, retry_after } if message.contains("link opens") && retry_after > Duration::from_secs(5)),
            "{refused:?}"
        );
        budget
            .open("K-2")
            .expect("another kiosk has its own budget");
    }
}
