//! The built-in sandbox provider: a card processor's test mode, selected by test card numbers
//! (documented on `orders.v1.PaymentMethod`), with its records in the orders database so they
//! survive a restart.
//!
//! | card | behaviour |
//! |---|---|
//! | 4242424242424242 | approves |
//! | 4000000000000002 | declines |
//! | 4000000000009995 | declines: insufficient funds |
//! | 4000000000000119 | charges, but answers Timeout; a retry with the same key finds the charge |
//! | 4000000000000101 | processor error, nothing charged |
//! | 4000000000000341 | approves the first charge of this card, declines every later one |

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, IntoActiveModel, QueryFilter,
    QuerySelect, SqlErr,
};

use super::{
    Charge, ChargeRequest, DeclineReason, PaymentError, PaymentFuture, PaymentProvider,
    ProviderKey, Refund, RefundRequest,
};
use crate::domain::money::{Currency, Money};
use crate::entity::sandbox_charge as record;

/// Test card: approves.
pub const APPROVES: &str = "4242424242424242";
/// Test card: declines.
pub const DECLINES: &str = "4000000000000002";
/// Test card: declines for insufficient funds.
pub const INSUFFICIENT_FUNDS: &str = "4000000000009995";
/// Test card: charges but times out.
pub const TIMES_OUT: &str = "4000000000000119";
/// Test card: processor error.
pub const PROCESSOR_ERROR: &str = "4000000000000101";
/// Test card: first charge approved, later ones declined.
pub const FIRST_ONLY: &str = "4000000000000341";

const SUCCEEDED: &str = "succeeded";
const DECLINED: &str = "card_declined";
const NO_FUNDS: &str = "insufficient_funds";

/// The sandbox provider over the orders database.
#[derive(Clone, Debug)]
pub struct SandboxProvider {
    db: DatabaseConnection,
}

impl SandboxProvider {
    /// A sandbox keeping its records in `db` (the orders database, migrated).
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    async fn find(&self, key: &str) -> Result<Option<record::Model>, PaymentError> {
        record::Entity::find_by_id(key.to_owned())
            .one(&self.db)
            .await
            .map_err(unavailable)
    }

    /// Stores a new record; if a concurrent request with the key got there first, that one.
    async fn store(&self, row: record::Model) -> Result<record::Model, PaymentError> {
        let key = row.idempotency_key.clone();
        match row.into_active_model().insert(&self.db).await {
            Ok(stored) => Ok(stored),
            Err(error) if matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                self.find(&key).await?.ok_or_else(|| unavailable(error))
            }
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn do_charge(&self, request: ChargeRequest) -> Result<Charge, PaymentError> {
        check_key(request.idempotency_key.as_str())?;
        if request.amount.minor() <= 0 {
            return Err(PaymentError::Invalid("the amount must be positive".into()));
        }
        if let Some(existing) = self.find(request.idempotency_key.as_str()).await? {
            return replay_charge(&existing, &request);
        }
        let outcome = match request.card_token.as_str() {
            APPROVES | TIMES_OUT => SUCCEEDED,
            DECLINES => DECLINED,
            INSUFFICIENT_FUNDS => NO_FUNDS,
            PROCESSOR_ERROR => return Err(PaymentError::Processor),
            FIRST_ONLY => {
                let earlier = record::Entity::find()
                    .filter(record::Column::Kind.eq("charge"))
                    .filter(record::Column::Subject.eq(FIRST_ONLY))
                    .filter(record::Column::Outcome.eq(SUCCEEDED))
                    .one(&self.db)
                    .await
                    .map_err(unavailable)?;
                if earlier.is_some() {
                    DECLINED
                } else {
                    SUCCEEDED
                }
            }
            _ => return Err(PaymentError::Invalid("not a sandbox test card".into())),
        };
        let stored = self
            .store(record::Model {
                idempotency_key: request.idempotency_key.to_string(),
                kind: "charge".into(),
                payment_id: format!("ch_{}", uuid::Uuid::new_v4().simple()),
                subject: request.card_token.clone(),
                amount: request.amount.minor(),
                currency: request.amount.currency().code().to_owned(),
                outcome: outcome.into(),
                created_at: Utc::now(),
            })
            .await?;
        let answer = replay_charge(&stored, &request)?;
        if request.card_token == TIMES_OUT {
            // The charge is recorded; the caller just never hears so. Its retry finds it.
            return Err(PaymentError::Timeout);
        }
        Ok(answer)
    }

    async fn do_refund(&self, request: RefundRequest) -> Result<Refund, PaymentError> {
        check_key(request.idempotency_key.as_str())?;
        if request.amount.minor() <= 0 {
            return Err(PaymentError::Invalid("the amount must be positive".into()));
        }
        if let Some(existing) = self.find(request.idempotency_key.as_str()).await? {
            return replay_refund(&existing, &request);
        }
        // The charge row is locked while refunds are summed and the new one is written, so two
        // concurrent refunds cannot together exceed the charge.
        let txn = sneakernet_runtime::db::begin_write(&self.db)
            .await
            .map_err(unavailable)?;
        let charge = record::Entity::find()
            .filter(record::Column::Kind.eq("charge"))
            .filter(record::Column::PaymentId.eq(&request.charge_id))
            .filter(record::Column::Outcome.eq(SUCCEEDED))
            .lock_exclusive()
            .one(&txn)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| {
                PaymentError::Invalid(format!("no successful charge {}", request.charge_id))
            })?;
        if charge.currency != request.amount.currency().code() {
            return Err(PaymentError::Invalid(
                "a refund is in the charge's currency".into(),
            ));
        }
        let refunded: i64 = record::Entity::find()
            .filter(record::Column::Kind.eq("refund"))
            .filter(record::Column::Subject.eq(&request.charge_id))
            .all(&txn)
            .await
            .map_err(unavailable)?
            .iter()
            .map(|r| r.amount)
            .sum();
        if refunded.saturating_add(request.amount.minor()) > charge.amount {
            return Err(PaymentError::Invalid(format!(
                "refunds would exceed the charge ({} of {} minor units refunded already)",
                refunded, charge.amount
            )));
        }
        let row = record::Model {
            idempotency_key: request.idempotency_key.to_string(),
            kind: "refund".into(),
            payment_id: format!("re_{}", uuid::Uuid::new_v4().simple()),
            subject: request.charge_id.clone(),
            amount: request.amount.minor(),
            currency: request.amount.currency().code().to_owned(),
            outcome: SUCCEEDED.into(),
            created_at: Utc::now(),
        };
        let stored = match row.into_active_model().insert(&txn).await {
            Ok(stored) => {
                txn.commit().await.map_err(unavailable)?;
                stored
            }
            Err(error) if matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                drop(txn);
                self.find(request.idempotency_key.as_str())
                    .await?
                    .ok_or_else(|| unavailable(error))?
            }
            Err(error) => return Err(unavailable(error)),
        };
        replay_refund(&stored, &request)
    }

    /// How many refunds were recorded for `charge_id` (for tests and the auditor).
    pub async fn refunds_of(&self, charge_id: &str) -> Result<usize, PaymentError> {
        Ok(record::Entity::find()
            .filter(record::Column::Kind.eq("refund"))
            .filter(record::Column::Subject.eq(charge_id))
            .all(&self.db)
            .await
            .map_err(unavailable)?
            .len())
    }
}

impl PaymentProvider for SandboxProvider {
    fn charge(&self, request: ChargeRequest) -> PaymentFuture<'_, Charge> {
        Box::pin(async move {
            let answer = self.do_charge(request).await;
            // Tests hold the answer here (a processor that never answers): the charge is
            // recorded, the caller has not heard of it.
            sneakernet_runtime::failpoint::pause_point("orders::sandbox::charge::answer").await;
            answer
        })
    }

    fn refund(&self, request: RefundRequest) -> PaymentFuture<'_, Refund> {
        Box::pin(self.do_refund(request))
    }

    fn find_charge<'a>(
        &'a self,
        idempotency_key: &'a ProviderKey,
    ) -> PaymentFuture<'a, Option<Charge>> {
        Box::pin(async move {
            let Some(found) = self.find(idempotency_key.as_str()).await? else {
                return Ok(None);
            };
            if found.kind != "charge" || found.outcome != SUCCEEDED {
                return Ok(None);
            }
            let currency = Currency::parse(&found.currency)
                .map_err(|e| PaymentError::Unavailable(format!("stored charge: {e}")))?;
            Ok(Some(Charge {
                charge_id: found.payment_id,
                amount: Money::new(found.amount, currency),
            }))
        })
    }
}

fn unavailable(error: impl std::fmt::Display) -> PaymentError {
    PaymentError::Unavailable(error.to_string())
}

fn check_key(key: &str) -> Result<(), PaymentError> {
    if key.is_empty() || key.len() > 128 {
        return Err(PaymentError::Invalid(
            "the idempotency key must be 1 to 128 characters".into(),
        ));
    }
    Ok(())
}

fn amount_of(row: &record::Model) -> Result<Money, PaymentError> {
    let currency =
        Currency::parse(&row.currency).map_err(|e| unavailable(format!("stored record: {e}")))?;
    Ok(Money::new(row.amount, currency))
}

/// The answer a stored charge gives to `request`: its outcome, or KeyReused.
fn replay_charge(row: &record::Model, request: &ChargeRequest) -> Result<Charge, PaymentError> {
    if row.kind != "charge"
        || row.subject != request.card_token
        || amount_of(row)? != request.amount
    {
        return Err(PaymentError::KeyReused);
    }
    match row.outcome.as_str() {
        SUCCEEDED => Ok(Charge {
            charge_id: row.payment_id.clone(),
            amount: request.amount,
        }),
        NO_FUNDS => Err(PaymentError::Declined(DeclineReason::InsufficientFunds)),
        _ => Err(PaymentError::Declined(DeclineReason::CardDeclined)),
    }
}

/// The answer a stored refund gives to `request`: the refund, or KeyReused.
fn replay_refund(row: &record::Model, request: &RefundRequest) -> Result<Refund, PaymentError> {
    if row.kind != "refund" || row.subject != request.charge_id || amount_of(row)? != request.amount
    {
        return Err(PaymentError::KeyReused);
    }
    Ok(Refund {
        refund_id: row.payment_id.clone(),
        amount: request.amount,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sandbox(dir: &std::path::Path) -> SandboxProvider {
        let config = sneakernet_runtime::Config {
            data_dir: dir.to_owned(),
            ..Default::default()
        };
        let db = sneakernet_runtime::db::open_and_migrate::<crate::migration::Migrator>(
            &config, "orders",
        )
        .await
        .expect("orders db");
        SandboxProvider::new(db)
    }

    fn eur(minor: i64) -> Money {
        Money::new(minor, Currency::parse("EUR").unwrap())
    }

    fn charge(key: &str, card: &str, minor: i64) -> ChargeRequest {
        ChargeRequest {
            idempotency_key: ProviderKey::derive(key),
            card_token: card.into(),
            amount: eur(minor),
        }
    }

    #[tokio::test]
    async fn test_cards_behave_as_documented_and_keys_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let provider = sandbox(dir.path()).await;
        let first = provider.charge(charge("k1", APPROVES, 500)).await.unwrap();
        assert_eq!(
            provider.charge(charge("k1", APPROVES, 500)).await.unwrap(),
            first,
            "same key, same charge"
        );
        assert_eq!(
            provider.charge(charge("k1", APPROVES, 600)).await,
            Err(PaymentError::KeyReused)
        );
        assert_eq!(
            provider.charge(charge("k2", DECLINES, 500)).await,
            Err(PaymentError::Declined(DeclineReason::CardDeclined))
        );
        assert_eq!(
            provider.charge(charge("k2", DECLINES, 500)).await,
            Err(PaymentError::Declined(DeclineReason::CardDeclined)),
            "a decline is final for its key"
        );
        assert_eq!(
            provider.charge(charge("k3", INSUFFICIENT_FUNDS, 500)).await,
            Err(PaymentError::Declined(DeclineReason::InsufficientFunds))
        );
        assert_eq!(
            provider.charge(charge("k4", PROCESSOR_ERROR, 500)).await,
            Err(PaymentError::Processor)
        );
        assert_eq!(
            provider
                .charge(charge("k5", FIRST_ONLY, 500))
                .await
                .map(|c| c.amount),
            Ok(eur(500))
        );
        assert_eq!(
            provider.charge(charge("k6", FIRST_ONLY, 300)).await,
            Err(PaymentError::Declined(DeclineReason::CardDeclined))
        );
        assert!(matches!(
            provider.charge(charge("k7", "1234", 500)).await,
            Err(PaymentError::Invalid(_))
        ));
        assert!(matches!(
            provider.charge(charge("k8", APPROVES, 0)).await,
            Err(PaymentError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn a_timeout_is_resolved_by_retrying_the_key_without_a_second_charge() {
        let dir = tempfile::tempdir().unwrap();
        let provider = sandbox(dir.path()).await;
        assert_eq!(
            provider.charge(charge("t1", TIMES_OUT, 700)).await,
            Err(PaymentError::Timeout)
        );
        // After a restart, the processor still knows the charge.
        let provider = sandbox(dir.path()).await;
        let found = provider
            .charge(charge("t1", TIMES_OUT, 700))
            .await
            .expect("the retry finds the charge");
        assert_eq!(found.amount, eur(700));
        let charges = record::Entity::find()
            .filter(record::Column::Kind.eq("charge"))
            .all(&provider.db)
            .await
            .unwrap();
        assert_eq!(charges.len(), 1, "charged once");
    }

    #[tokio::test]
    async fn an_unknown_outcome_is_found_by_key_without_moving_money() {
        let dir = tempfile::tempdir().unwrap();
        let provider = sandbox(dir.path()).await;
        assert_eq!(
            provider
                .find_charge(&ProviderKey::derive("never-asked"))
                .await,
            Ok(None)
        );
        let _ = provider.charge(charge("t1", TIMES_OUT, 700)).await;
        let found = provider
            .find_charge(&ProviderKey::derive("t1"))
            .await
            .unwrap()
            .expect("charged");
        assert_eq!(found.amount, eur(700));
        let _ = provider.charge(charge("d1", DECLINES, 700)).await;
        assert_eq!(
            provider.find_charge(&ProviderKey::derive("d1")).await,
            Ok(None),
            "declined"
        );
        let charges = record::Entity::find()
            .filter(record::Column::Kind.eq("charge"))
            .all(&provider.db)
            .await
            .unwrap();
        assert_eq!(charges.len(), 2, "looking up charged nothing");
    }

    #[tokio::test]
    async fn refunds_are_idempotent_and_never_exceed_the_charge() {
        let dir = tempfile::tempdir().unwrap();
        let provider = sandbox(dir.path()).await;
        let paid = provider.charge(charge("c", APPROVES, 1000)).await.unwrap();
        let refund = |key: &str, minor| RefundRequest {
            idempotency_key: ProviderKey::derive(key),
            charge_id: paid.charge_id.clone(),
            amount: eur(minor),
        };
        let first = provider.refund(refund("r1", 600)).await.unwrap();
        assert_eq!(provider.refund(refund("r1", 600)).await.unwrap(), first);
        assert!(
            matches!(
                provider.refund(refund("r2", 500)).await,
                Err(PaymentError::Invalid(_))
            ),
            "600 + 500 > 1000"
        );
        provider.refund(refund("r3", 400)).await.unwrap();
        assert_eq!(provider.refunds_of(&paid.charge_id).await.unwrap(), 2);
        let unknown = RefundRequest {
            idempotency_key: ProviderKey::derive("r4"),
            charge_id: "ch_nope".into(),
            amount: eur(1),
        };
        assert!(matches!(
            provider.refund(unknown).await,
            Err(PaymentError::Invalid(_))
        ));
    }
}
