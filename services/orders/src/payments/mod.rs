//! Taking money: the [`PaymentProvider`] trait every processor plugs in behind, and the built-in
//! [`sandbox`] that behaves like a card processor's test mode.
//!
//! The contract every provider keeps: a request is identified by its idempotency key; the same
//! key with the same parameters gives the same outcome and never moves money twice, the same
//! key with other parameters is refused; a [`PaymentError::Timeout`] means "outcome unknown":
//! the caller retries with the same key until it gets a definite answer.
//!
//! Orders names each payment by a local key (`rental:<user>:<request key>`, `refund:<order>`,
//! `orphan-refund:rental:<user>:<request key>`, ...), which grows with the user's idempotency
//! key (up to 128 characters, up to 512 bytes). A provider is only ever asked under the
//! [`ProviderKey`] derived from it, whose length is fixed whatever the local key.

pub mod sandbox;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::domain::money::Money;

/// A future a provider returns (boxed, so providers can live behind `dyn`).
pub type PaymentFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, PaymentError>> + Send + 'a>>;

/// The idempotency key a provider is asked under: a readable purpose (the local key's first
/// part, at most [`ProviderKey::PURPOSE_LEN`] characters of `[A-Za-z0-9-]`), `_`, and the
/// BLAKE3 hash of the whole local key in hex. Always ASCII and at most
/// [`ProviderKey::MAX_LEN`] bytes, so it fits every processor's limit (the sandbox's and real
/// ones' are 128 or more), and the same local key always gives the same provider key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProviderKey(String);

impl ProviderKey {
    /// Longest purpose prefix kept.
    pub const PURPOSE_LEN: usize = 24;
    /// Longest provider key: the purpose, `_`, 64 hex digits.
    pub const MAX_LEN: usize = Self::PURPOSE_LEN + 1 + 64;

    /// The provider key of the payment orders names `local`. The one place a provider key is
    /// made: every charge, refund and lookup goes through it.
    pub fn derive(local: &str) -> Self {
        let purpose: String = local
            .split(':')
            .next()
            .unwrap_or_default()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(Self::PURPOSE_LEN)
            .collect();
        let purpose = if purpose.is_empty() { "key" } else { &purpose };
        Self(format!(
            "{purpose}_{}",
            blake3::hash(local.as_bytes()).to_hex()
        ))
    }

    /// The key as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ProviderKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Charge a payment method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChargeRequest {
    /// Identifies this charge across retries.
    pub idempotency_key: ProviderKey,
    /// The provider's token for the card (for the sandbox: a test card number).
    pub card_token: String,
    /// How much; positive.
    pub amount: Money,
}

/// A charge that went through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Charge {
    /// The provider's id of the charge.
    pub charge_id: String,
    /// What was charged.
    pub amount: Money,
}

/// Pay back (part of) a charge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundRequest {
    /// Identifies this refund across retries.
    pub idempotency_key: ProviderKey,
    /// The charge paid back.
    pub charge_id: String,
    /// How much; positive, at most what is left of the charge.
    pub amount: Money,
}

/// A refund that went through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refund {
    /// The provider's id of the refund.
    pub refund_id: String,
    /// What was paid back.
    pub amount: Money,
}

/// Why a card said no.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeclineReason {
    /// The issuer declined.
    CardDeclined,
    /// Not enough money on the card.
    InsufficientFunds,
}

/// Why a payment did not (definitely) happen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// The card said no; nothing was charged. Final for this key.
    #[error("payment declined: {0:?}")]
    Declined(DeclineReason),
    /// No answer in time: the payment may or may not have happened. Retry with the same key.
    #[error("payment provider timed out; the outcome is unknown")]
    Timeout,
    /// The processor failed; nothing was charged. A retry may succeed.
    #[error("payment processor error; nothing was charged")]
    Processor,
    /// The same key came with other parameters.
    #[error("idempotency key reused with other parameters")]
    KeyReused,
    /// The request is malformed (unknown card, non-positive amount, unknown charge, ...).
    #[error("invalid payment request: {0}")]
    Invalid(String),
    /// The provider's own storage failed; retry.
    #[error("payment provider unavailable: {0}")]
    Unavailable(String),
}

/// A card processor.
pub trait PaymentProvider: Send + Sync + std::fmt::Debug {
    /// Charges a card (idempotent by key).
    fn charge(&self, request: ChargeRequest) -> PaymentFuture<'_, Charge>;
    /// Pays back part or all of a charge (idempotent by key).
    fn refund(&self, request: RefundRequest) -> PaymentFuture<'_, Refund>;
    /// The successful charge made under `idempotency_key`, if any; `None` when none was (it
    /// was declined, failed, or never arrived). Moves no money: this is how an outcome that
    /// was unknown is found out (card processors keep their idempotency records for this).
    fn find_charge<'a>(
        &'a self,
        idempotency_key: &'a ProviderKey,
    ) -> PaymentFuture<'a, Option<Charge>>;
}

/// A provider whose every call ends within a timeout (`orders.payment_timeout`): a call still
/// running then is dropped and answered [`PaymentError::Timeout`], outcome unknown, so no
/// request and no settling step waits on a processor longer than that.
#[derive(Debug)]
pub struct TimedProvider<P> {
    inner: P,
    timeout: Duration,
}

impl<P: PaymentProvider> TimedProvider<P> {
    /// `inner`, each call cut at `timeout`.
    pub fn new(inner: P, timeout: Duration) -> Self {
        Self { inner, timeout }
    }
}

async fn within<T>(timeout: Duration, call: PaymentFuture<'_, T>) -> Result<T, PaymentError> {
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or(Err(PaymentError::Timeout))
}

impl<P: PaymentProvider> PaymentProvider for TimedProvider<P> {
    fn charge(&self, request: ChargeRequest) -> PaymentFuture<'_, Charge> {
        Box::pin(within(self.timeout, self.inner.charge(request)))
    }

    fn refund(&self, request: RefundRequest) -> PaymentFuture<'_, Refund> {
        Box::pin(within(self.timeout, self.inner.refund(request)))
    }

    fn find_charge<'a>(
        &'a self,
        idempotency_key: &'a ProviderKey,
    ) -> PaymentFuture<'a, Option<Charge>> {
        Box::pin(within(
            self.timeout,
            self.inner.find_charge(idempotency_key),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A processor that never answers.
    #[derive(Debug)]
    struct Silent;

    impl PaymentProvider for Silent {
        fn charge(&self, _: ChargeRequest) -> PaymentFuture<'_, Charge> {
            Box::pin(std::future::pending())
        }
        fn refund(&self, _: RefundRequest) -> PaymentFuture<'_, Refund> {
            Box::pin(std::future::pending())
        }
        fn find_charge<'a>(&'a self, _: &'a ProviderKey) -> PaymentFuture<'a, Option<Charge>> {
            Box::pin(std::future::pending())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn every_call_to_a_silent_provider_ends_as_a_timeout() {
        let provider = TimedProvider::new(Silent, Duration::from_secs(20));
        let eur = crate::domain::money::Currency::parse("EUR").unwrap();
        let key = ProviderKey::derive("rental:u:k");
        let charge = ChargeRequest {
            idempotency_key: key.clone(),
            card_token: "4242424242424242".into(),
            amount: Money::new(500, eur),
        };
        assert_eq!(provider.charge(charge).await, Err(PaymentError::Timeout));
        let refund = RefundRequest {
            idempotency_key: key.clone(),
            charge_id: "ch_1".into(),
            amount: Money::new(500, eur),
        };
        assert_eq!(provider.refund(refund).await, Err(PaymentError::Timeout));
        assert_eq!(provider.find_charge(&key).await, Err(PaymentError::Timeout));
    }

    #[test]
    fn provider_keys_are_short_ascii_stable_and_distinct_for_the_longest_local_keys() {
        let user = "0b8f7a52-3c1e-4d6a-9f0e-2b7c5d4e3a19";
        let longest = format!("{}{}", "é".repeat(64), "𝄞".repeat(64));
        let locals = [
            format!("rental:{user}:{longest}"),
            format!("reservation:{user}:{longest}"),
            format!("deposit:{user}:{longest}"),
            format!("orphan-refund:rental:{user}:{longest}"),
            format!("orphan-refund:deposit:{user}:{longest}"),
            format!("refund:{user}"),
            format!("fee:{user}:late"),
            ":".repeat(300),
            String::new(),
        ];
        let mut seen = std::collections::HashSet::new();
        for local in &locals {
            let key = ProviderKey::derive(local);
            assert!(
                key.as_str().is_ascii() && key.as_str().len() <= ProviderKey::MAX_LEN,
                "{key}"
            );
            assert!(key.as_str().len() <= 128, "fits the sandbox: {key}");
            assert_eq!(ProviderKey::derive(local), key, "stable");
            assert!(seen.insert(key), "distinct: {local}");
        }
        assert!(
            ProviderKey::derive(&locals[3])
                .as_str()
                .starts_with("orphan-refund_")
        );
    }
}
