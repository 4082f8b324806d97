//! Taking money: the [`PaymentProvider`] trait every processor plugs in behind, and the built-in
//! [`sandbox`] that behaves like a card processor's test mode.
//!
//! The contract every provider keeps: a request is identified by its idempotency key; the same
//! key with the same parameters gives the same outcome and never moves money twice, the same
//! key with other parameters is refused; a [`PaymentError::Timeout`] means "outcome unknown":
//! the caller retries with the same key until it gets a definite answer.

pub mod sandbox;

use std::future::Future;
use std::pin::Pin;

use crate::domain::money::Money;

/// A future a provider returns (boxed, so providers can live behind `dyn`).
pub type PaymentFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, PaymentError>> + Send + 'a>>;

/// Charge a payment method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChargeRequest {
    /// Identifies this charge across retries (1 to 128 characters).
    pub idempotency_key: String,
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
    pub idempotency_key: String,
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
    fn find_charge<'a>(&'a self, idempotency_key: &'a str) -> PaymentFuture<'a, Option<Charge>>;
}
