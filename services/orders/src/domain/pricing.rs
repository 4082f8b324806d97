//! Pricing: what a rental costs up front, and what is owed when it comes back late or not at
//! all (DESIGN.md §4; the terms are `orders.v1.Pricing`).
//!
//! - A rental of `d` days costs the base price (which covers the first day) plus `d - 1` times
//!   the price per extra day.
//! - Returning within the grace period after the due time costs nothing more. After it, each
//!   started day counted from the due time costs the late fee, up to the late-fee cap.
//! - Once the item is still out `lost_after_days` days after its due time it counts as lost:
//!   the lost-item fee is charged once and late fees stop accruing there.
//!
//! All arithmetic is integer minor units (see `money`); nothing here rounds.

use chrono::{DateTime, Duration, Utc};

use super::money::{Money, MoneyError};

/// The terms one order is made under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Terms {
    /// Price of one use, covering the first day.
    pub base_price: Money,
    /// Price of each day beyond the first.
    pub price_per_extra_day: Money,
    /// Longest rental, in days (1 to 365).
    pub max_duration_days: u32,
    /// Free time after the due time.
    pub grace_period: Duration,
    /// Per started day late, once the grace period has passed.
    pub late_fee_per_day: Money,
    /// Most late fees one order accrues in total; zero means no cap.
    pub late_fee_cap: Money,
    /// Charged once when the item counts as lost.
    pub lost_item_fee: Money,
    /// Days after the due time at which the item counts as lost (at least 1).
    pub lost_after_days: u32,
}

/// Why terms or a duration were refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    /// A rental length outside 1 ..= max_duration_days.
    #[error("a rental lasts 1 to {max} days, not {asked}")]
    Duration {
        /// What was asked.
        asked: u32,
        /// The longest allowed.
        max: u32,
    },
    /// Terms that make no sense (mixed currencies, negative prices, zero limits).
    #[error("invalid pricing: {0}")]
    Terms(String),
    /// Arithmetic failed.
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// What a late or missing item owes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overtime {
    /// Late fees, after the cap.
    pub late_fee: Money,
    /// The lost-item fee, if the item counts as lost.
    pub lost_item_fee: Option<Money>,
}

impl Terms {
    /// Checks the terms: one currency, nothing negative, sane limits.
    pub fn validate(&self) -> Result<(), PricingError> {
        let currency = self.base_price.currency();
        for (name, amount) in [
            ("base_price", self.base_price),
            ("price_per_extra_day", self.price_per_extra_day),
            ("late_fee_per_day", self.late_fee_per_day),
            ("late_fee_cap", self.late_fee_cap),
            ("lost_item_fee", self.lost_item_fee),
        ] {
            if amount.currency() != currency {
                return Err(PricingError::Terms(format!(
                    "{name} is in {}, base_price in {currency}",
                    amount.currency()
                )));
            }
            if amount.minor() < 0 {
                return Err(PricingError::Terms(format!("{name} must not be negative")));
            }
        }
        if !(1..=365).contains(&self.max_duration_days) {
            return Err(PricingError::Terms(
                "max_duration_days must be 1 to 365".into(),
            ));
        }
        if self.lost_after_days == 0 {
            return Err(PricingError::Terms(
                "lost_after_days must be at least 1".into(),
            ));
        }
        if self.grace_period < Duration::zero() {
            return Err(PricingError::Terms(
                "grace_period must not be negative".into(),
            ));
        }
        Ok(())
    }

    /// The up-front price of an order (a rental, or a reservation: the same terms) lending an
    /// item for `days` days: the base price and each extra day.
    pub fn price_for_days(&self, days: u32) -> Result<Money, PricingError> {
        if days == 0 || days > self.max_duration_days {
            return Err(PricingError::Duration {
                asked: days,
                max: self.max_duration_days,
            });
        }
        Ok(self
            .base_price
            .checked_add(self.price_per_extra_day.checked_mul(days - 1)?)?)
    }

    /// What an item due at `due` owes at `at` (its return, or now if it is still out).
    pub fn overtime(
        &self,
        due: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Result<Overtime, PricingError> {
        let zero = Money::zero(self.base_price.currency());
        let late = at - due;
        if late <= self.grace_period {
            return Ok(Overtime {
                late_fee: zero,
                lost_item_fee: None,
            });
        }
        let lost_after = Duration::days(i64::from(self.lost_after_days));
        let lost = late >= lost_after;
        // Each started day from the due time; no more days than until the item counts as lost.
        let started_days = late.num_days() + i64::from(late > Duration::days(late.num_days()));
        let days = if lost {
            i64::from(self.lost_after_days)
        } else {
            started_days
        };
        let days = u32::try_from(days).map_err(|_| MoneyError::Overflow)?;
        let mut late_fee = self.late_fee_per_day.checked_mul(days)?;
        if !self.late_fee_cap.is_zero() {
            late_fee = late_fee.min(self.late_fee_cap)?;
        }
        Ok(Overtime {
            late_fee,
            lost_item_fee: lost.then_some(self.lost_item_fee),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::Currency;

    fn eur(minor: i64) -> Money {
        Money::new(minor, Currency::parse("EUR").unwrap())
    }

    fn terms() -> Terms {
        Terms {
            base_price: eur(500),
            price_per_extra_day: eur(200),
            max_duration_days: 14,
            grace_period: Duration::hours(2),
            late_fee_per_day: eur(300),
            late_fee_cap: eur(1500),
            lost_item_fee: eur(8000),
            lost_after_days: 10,
        }
    }

    #[test]
    fn the_price_covers_the_first_day_and_adds_each_extra_day() {
        let terms = terms();
        assert_eq!(terms.price_for_days(1), Ok(eur(500)));
        assert_eq!(terms.price_for_days(3), Ok(eur(900)));
        assert_eq!(
            terms.price_for_days(0),
            Err(PricingError::Duration { asked: 0, max: 14 })
        );
        assert_eq!(
            terms.price_for_days(15),
            Err(PricingError::Duration { asked: 15, max: 14 })
        );
    }

    #[test]
    fn lateness_is_free_within_grace_then_per_started_day_up_to_the_cap() {
        let terms = terms();
        let due = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let owed = |late: Duration| terms.overtime(due, due + late).unwrap();
        assert_eq!(owed(Duration::hours(-5)).late_fee, eur(0), "early");
        assert_eq!(owed(Duration::hours(2)).late_fee, eur(0), "within grace");
        assert_eq!(
            owed(Duration::hours(3)).late_fee,
            eur(300),
            "first started day"
        );
        assert_eq!(
            owed(Duration::hours(24)).late_fee,
            eur(300),
            "exactly one day"
        );
        assert_eq!(
            owed(Duration::hours(25)).late_fee,
            eur(600),
            "second started day"
        );
        assert_eq!(owed(Duration::days(7)).late_fee, eur(1500), "capped");
        assert_eq!(owed(Duration::days(7)).lost_item_fee, None);
    }

    #[test]
    fn an_item_out_long_enough_counts_as_lost_once() {
        let terms = terms();
        let due = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let lost = terms.overtime(due, due + Duration::days(10)).unwrap();
        assert_eq!(lost.lost_item_fee, Some(eur(8000)));
        assert_eq!(
            lost.late_fee,
            eur(1500),
            "late fees stop at the cap and at loss"
        );
        let uncapped = Terms {
            late_fee_cap: eur(0),
            ..terms
        };
        let later = uncapped.overtime(due, due + Duration::days(30)).unwrap();
        assert_eq!(
            later.late_fee,
            eur(3000),
            "no more days than until the loss"
        );
    }

    #[test]
    fn nonsense_terms_are_refused() {
        let yen = Money::new(100, Currency::parse("JPY").unwrap());
        assert!(
            Terms {
                late_fee_per_day: yen,
                ..terms()
            }
            .validate()
            .is_err()
        );
        assert!(
            Terms {
                base_price: eur(-1),
                ..terms()
            }
            .validate()
            .is_err()
        );
        assert!(
            Terms {
                lost_after_days: 0,
                ..terms()
            }
            .validate()
            .is_err()
        );
        assert!(
            Terms {
                max_duration_days: 400,
                ..terms()
            }
            .validate()
            .is_err()
        );
        assert!(terms().validate().is_ok());
    }
}
