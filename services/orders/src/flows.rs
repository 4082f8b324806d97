//! What every user-facing flow needs ([`Flows`]), and the refusals they share. The flows
//! live one per module: [`crate::scan`] (first instruction), [`crate::deposits`],
//! [`crate::rentals`] (second instruction), [`crate::reservations`] (fourth instruction,
//! cancel, pickup), built from the steps in [`crate::checkout`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sneakernet_runtime::clock::SharedClock;
use sneakernet_runtime::{ErrorInfo, PreconditionViolation, UserId};
use tokio::sync::Notify;

use crate::content_client::ContentClient;
use crate::domain::money::{Currency, Money};
use crate::error::OrdersError;
use crate::gateway_client::GatewayClient;
use crate::payments::PaymentProvider;
use crate::sealing::SealingKey;
use crate::store::Store;

/// The domain of ErrorInfo details.
const DOMAIN: &str = "orders.sneakernet";

/// What the flows need.
#[derive(Clone, Debug)]
pub struct Flows {
    /// The database.
    pub store: Store,
    /// The card processor.
    pub provider: Arc<dyn PaymentProvider>,
    /// Now.
    pub clock: SharedClock,
    /// Seals QR secrets.
    pub sealing: SealingKey,
    /// The deposit asked of every account.
    pub deposit: Money,
    /// How long offers last.
    pub offer_ttl: Duration,
    /// How long a kiosk has to lend.
    pub lend_deadline: Duration,
    /// How long a kiosk has to provision a reservation.
    pub provision_deadline: Duration,
    /// Wakes the settling worker (an outbox row or a refund is waiting).
    pub wake: Arc<Notify>,
    /// The content catalog (reservations' packages).
    pub content: ContentClient,
    /// The device gateway (a provision's progress, for WatchOrder).
    pub gateway: GatewayClient,
}

impl Flows {
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    fn deposit_info(&self, reason: &str) -> ErrorInfo {
        let mut metadata = HashMap::new();
        metadata.insert(
            "deposit_minor_units".to_owned(),
            self.deposit.minor().to_string(),
        );
        metadata.insert(
            "deposit_currency".to_owned(),
            self.deposit.currency().code().to_owned(),
        );
        ErrorInfo {
            reason: reason.into(),
            domain: DOMAIN.into(),
            metadata,
        }
    }

    /// The account holds no deposit: the violation and the amount to pay.
    pub(crate) fn no_deposit(&self, user: &UserId) -> (PreconditionViolation, ErrorInfo) {
        (
            violation(
                "NO_DEPOSIT",
                format!("users/{user}"),
                &format!("Pay the deposit of {} to rent.", self.deposit),
            ),
            self.deposit_info("NO_DEPOSIT"),
        )
    }

    /// The deposit asked is not the configured one.
    pub(crate) fn deposit_changed(&self) -> OrdersError {
        let info = self.deposit_info("DEPOSIT_AMOUNT_CHANGED");
        OrdersError::refused(
            vec![violation(
                "DEPOSIT_AMOUNT_CHANGED",
                String::new(),
                &format!("The deposit is now {}.", self.deposit),
            )],
            Some(info),
        )
    }
}

/// A fingerprint of a request's parameters, to refuse a reused idempotency key.
pub fn fingerprint(parts: &[&str]) -> String {
    let mut hasher = blake3::Hasher::new();
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.finalize().to_hex().to_string()
}

/// One unmet precondition.
pub(crate) fn violation(kind: &str, subject: String, description: &str) -> PreconditionViolation {
    PreconditionViolation {
        kind: kind.into(),
        subject,
        description: description.into(),
    }
}

/// The card declined.
pub(crate) fn declined() -> OrdersError {
    OrdersError::refused_one(
        "PAYMENT_DECLINED",
        String::new(),
        "The card was declined; nothing was charged.",
    )
}

/// The key came with other parameters.
pub(crate) fn key_reused() -> OrdersError {
    OrdersError::invalid(
        "idempotency_key",
        "was used for another request with other parameters",
    )
}

/// The deposit asked, from the configuration.
pub fn configured_deposit(minor: i64, currency: &str) -> Result<Money, String> {
    let currency = Currency::parse(currency).map_err(|e| e.to_string())?;
    Ok(Money::new(minor, currency))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_separate_their_parts() {
        assert_ne!(fingerprint(&["ab", "c"]), fingerprint(&["a", "bc"]));
        assert_eq!(fingerprint(&["a", "b"]), fingerprint(&["a", "b"]));
    }
}
