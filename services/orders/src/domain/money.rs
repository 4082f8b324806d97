//! Money: integer minor units of one ISO 4217 currency, with checked arithmetic.
//!
//! Rules: amounts are never floats; two currencies never mix (an error, not a conversion);
//! every operation that could overflow is checked; multiplication is by whole numbers only
//! (days, units), so no rounding ever happens inside the system. Where a future rule needs a
//! fraction (a percentage), it must round half away from zero, once, at the end, and say so.

use std::fmt;

/// A currency: an ISO 4217 alphabetic code and its minor-unit exponent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: [u8; 3],
    exponent: u8,
}

/// Currencies the system accepts, with their ISO 4217 exponents. Adding one is a data change
/// here; an unknown code is refused rather than guessed at.
const KNOWN: &[(&str, u8)] = &[
    ("EUR", 2),
    ("USD", 2),
    ("GBP", 2),
    ("CHF", 2),
    ("CNY", 2),
    ("SEK", 2),
    ("NOK", 2),
    ("DKK", 2),
    ("PLN", 2),
    ("CAD", 2),
    ("AUD", 2),
    ("JPY", 0),
    ("KRW", 0),
    ("BHD", 3),
    ("KWD", 3),
];

impl Currency {
    /// The currency with this code, if the system knows it.
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        KNOWN
            .iter()
            .find(|(known, _)| *known == code)
            .map(|(known, exponent)| {
                let bytes = known.as_bytes();
                Currency {
                    code: [bytes[0], bytes[1], bytes[2]],
                    exponent: *exponent,
                }
            })
            .ok_or_else(|| MoneyError::UnknownCurrency(code.chars().take(8).collect()))
    }

    /// The ISO 4217 code.
    pub fn code(&self) -> &str {
        std::str::from_utf8(&self.code).unwrap_or("???")
    }

    /// Digits after the decimal point (2 for EUR, 0 for JPY).
    pub fn exponent(&self) -> u8 {
        self.exponent
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Why an amount could not be made or computed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Not a currency the system knows.
    #[error("unknown currency {0:?}")]
    UnknownCurrency(String),
    /// Two currencies in one computation.
    #[error("cannot combine {0} and {1}")]
    CurrencyMismatch(Currency, Currency),
    /// The result does not fit.
    #[error("amount out of range")]
    Overflow,
    /// A negative amount where only zero or more makes sense.
    #[error("amount must not be negative")]
    Negative,
}

/// An amount of money.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Money {
    minor: i64,
    currency: Currency,
}

impl Money {
    /// `minor` minor units of `currency`.
    pub fn new(minor: i64, currency: Currency) -> Self {
        Self { minor, currency }
    }

    /// Nothing, in `currency`.
    pub fn zero(currency: Currency) -> Self {
        Self::new(0, currency)
    }

    /// A non-negative amount (prices, fees, payments).
    pub fn non_negative(minor: i64, currency: Currency) -> Result<Self, MoneyError> {
        if minor < 0 {
            return Err(MoneyError::Negative);
        }
        Ok(Self::new(minor, currency))
    }

    /// The amount in minor units.
    pub fn minor(&self) -> i64 {
        self.minor
    }

    /// The currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// Whether the amount is zero.
    pub fn is_zero(&self) -> bool {
        self.minor == 0
    }

    fn same(&self, other: &Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch(self.currency, other.currency))
        }
    }

    /// `self + other`.
    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.same(&other)?;
        self.minor
            .checked_add(other.minor)
            .map(|m| Money::new(m, self.currency))
            .ok_or(MoneyError::Overflow)
    }

    /// `self - other`.
    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.same(&other)?;
        self.minor
            .checked_sub(other.minor)
            .map(|m| Money::new(m, self.currency))
            .ok_or(MoneyError::Overflow)
    }

    /// `self × times` (days, units).
    pub fn checked_mul(self, times: u32) -> Result<Money, MoneyError> {
        self.minor
            .checked_mul(i64::from(times))
            .map(|m| Money::new(m, self.currency))
            .ok_or(MoneyError::Overflow)
    }

    /// `-self`.
    pub fn checked_neg(self) -> Result<Money, MoneyError> {
        self.minor
            .checked_neg()
            .map(|m| Money::new(m, self.currency))
            .ok_or(MoneyError::Overflow)
    }

    /// The smaller of two amounts of one currency.
    pub fn min(self, other: Money) -> Result<Money, MoneyError> {
        self.same(&other)?;
        Ok(if other.minor < self.minor {
            other
        } else {
            self
        })
    }
}

impl fmt::Display for Money {
    /// `12.50 EUR`, `1200 JPY`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exponent = u32::from(self.currency.exponent);
        if exponent == 0 {
            return write!(f, "{} {}", self.minor, self.currency);
        }
        let scale = 10_u64.pow(exponent);
        let sign = if self.minor < 0 { "-" } else { "" };
        let absolute = self.minor.unsigned_abs();
        write!(
            f,
            "{sign}{}.{:0width$} {}",
            absolute / scale,
            absolute % scale,
            self.currency,
            width = exponent as usize
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur(minor: i64) -> Money {
        Money::new(minor, Currency::parse("EUR").unwrap())
    }

    #[test]
    fn currencies_are_known_or_refused() {
        assert_eq!(Currency::parse("JPY").unwrap().exponent(), 0);
        assert_eq!(Currency::parse("EUR").unwrap().code(), "EUR");
        assert!(matches!(
            Currency::parse("eur"),
            Err(MoneyError::UnknownCurrency(_))
        ));
        assert!(matches!(
            Currency::parse("XXX"),
            Err(MoneyError::UnknownCurrency(_))
        ));
    }

    #[test]
    fn arithmetic_is_checked_and_never_mixes_currencies() {
        assert_eq!(eur(150).checked_add(eur(50)), Ok(eur(200)));
        assert_eq!(eur(150).checked_sub(eur(200)), Ok(eur(-50)));
        assert_eq!(eur(150).checked_mul(3), Ok(eur(450)));
        assert_eq!(eur(i64::MAX).checked_add(eur(1)), Err(MoneyError::Overflow));
        assert_eq!(eur(i64::MAX).checked_mul(2), Err(MoneyError::Overflow));
        assert_eq!(eur(i64::MIN).checked_neg(), Err(MoneyError::Overflow));
        let yen = Money::new(100, Currency::parse("JPY").unwrap());
        assert!(matches!(
            eur(1).checked_add(yen),
            Err(MoneyError::CurrencyMismatch(..))
        ));
        assert_eq!(
            Money::non_negative(-1, eur(0).currency()),
            Err(MoneyError::Negative)
        );
    }

    #[test]
    fn amounts_print_with_their_currency_exponent() {
        assert_eq!(eur(1250).to_string(), "12.50 EUR");
        assert_eq!(eur(-5).to_string(), "-0.05 EUR");
        assert_eq!(
            Money::new(1200, Currency::parse("JPY").unwrap()).to_string(),
            "1200 JPY"
        );
        assert_eq!(
            Money::new(1234, Currency::parse("KWD").unwrap()).to_string(),
            "1.234 KWD"
        );
    }
}
