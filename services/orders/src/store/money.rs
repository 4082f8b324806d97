//! The ledger, payment attempts and deposits.
//!
//! A payment attempt is written (state `pending`) before the provider is asked, under the
//! provider idempotency key it will be asked with, and settled in the same transaction that
//! books what the charge paid for. So a crash or a timeout between asking and booking leaves a
//! `pending` attempt that the sweeper resolves by asking again with the same key (which never
//! charges twice) and refunding what nothing took.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel,
    QueryFilter, QueryOrder, QuerySelect,
};

use super::{Store, StoreError};
use crate::domain::deposit::{DepositEvent, DepositState, transition};
use crate::domain::ledger::{Account, Posting};
use crate::domain::money::Money;
use crate::domain::payment_attempt::{AttemptEvent, AttemptState};
use crate::entity::{account, deposit, ledger_entry, ledger_transaction, payment_attempt};

/// What a ledger transaction was for; the first four show on an order's statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Movement {
    /// The up-front price of an order.
    Price,
    /// Late fees.
    LateFee,
    /// The lost-item fee.
    LostItemFee,
    /// Money paid back for an order.
    Refund,
    /// A deposit paid and held.
    Deposit,
    /// A deposit released and paid back.
    DepositRefund,
    /// A fee the card declined, taken from the deposit.
    DepositKept,
    /// A charge that nothing took, paid back.
    OrphanRefund,
    /// What a user paid becomes revenue.
    Earned,
}

impl Movement {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Movement::Price => "price",
            Movement::LateFee => "late_fee",
            Movement::LostItemFee => "lost_item_fee",
            Movement::Refund => "refund",
            Movement::Deposit => "deposit",
            Movement::DepositRefund => "deposit_refund",
            Movement::DepositKept => "deposit_kept",
            Movement::OrphanRefund => "orphan_refund",
            Movement::Earned => "earned",
        }
    }
}

/// An account as stored.
pub fn account_name(account: &Account) -> String {
    match account {
        Account::ProviderClearing => "provider_clearing".into(),
        Account::UserFunds(user) => format!("user_funds:{user}"),
        Account::DepositHeld(user) => format!("deposit_held:{user}"),
        Account::Revenue => "revenue".into(),
        Account::RefundsPaid => "refunds_paid".into(),
    }
}

/// Where a ledger transaction belongs.
#[derive(Clone, Copy, Debug)]
pub struct Booking<'a> {
    /// The order, or "".
    pub order_id: &'a str,
    /// The deposit, or "".
    pub deposit_id: &'a str,
    /// What for.
    pub movement: Movement,
    /// The provider key of the charge or refund behind it, or "".
    pub payment_key: &'a str,
    /// When.
    pub at: DateTime<Utc>,
}

/// Books one balanced posting.
pub(crate) async fn book<C: ConnectionTrait>(
    db: &C,
    posting: &Posting,
    booking: Booking<'_>,
) -> Result<(), StoreError> {
    let txn_id = uuid::Uuid::now_v7().to_string();
    let amount = posting
        .entries()
        .iter()
        .map(|(_, money)| *money)
        .find(|money| money.minor() > 0)
        .ok_or_else(|| StoreError::Corrupt("a posting that moves nothing".into()))?;
    ledger_transaction::Model {
        txn_id: txn_id.clone(),
        order_id: booking.order_id.to_owned(),
        deposit_id: booking.deposit_id.to_owned(),
        movement: booking.movement.as_str().to_owned(),
        amount: amount.minor(),
        currency: amount.currency().code().to_owned(),
        payment_key: booking.payment_key.to_owned(),
        created_at: booking.at,
    }
    .into_active_model()
    .insert(db)
    .await?;
    let entries: Vec<ledger_entry::ActiveModel> = posting
        .entries()
        .iter()
        .map(|(account, money)| ledger_entry::ActiveModel {
            txn_id: sea_orm::Set(txn_id.clone()),
            account: sea_orm::Set(account_name(account)),
            amount: sea_orm::Set(money.minor()),
            currency: sea_orm::Set(money.currency().code().to_owned()),
            ..Default::default()
        })
        .collect();
    ledger_entry::Entity::insert_many(entries)
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// The statement lines of an order: its charges and refunds, oldest first.
pub(crate) async fn statement<C: ConnectionTrait>(
    db: &C,
    order_id: &str,
) -> Result<Vec<ledger_transaction::Model>, DbErr> {
    ledger_transaction::Entity::find()
        .filter(ledger_transaction::Column::OrderId.eq(order_id))
        .filter(ledger_transaction::Column::Movement.is_in([
            Movement::Price.as_str(),
            Movement::LateFee.as_str(),
            Movement::LostItemFee.as_str(),
            Movement::Refund.as_str(),
        ]))
        .order_by_asc(ledger_transaction::Column::CreatedAt)
        .order_by_asc(ledger_transaction::Column::TxnId)
        .all(db)
        .await
}

/// Whether the account holds a deposit now (one in the held state).
pub(crate) async fn deposit_held<C: ConnectionTrait>(
    db: &C,
    account: &account::Model,
) -> Result<bool, DbErr> {
    Ok(match &account.deposit_id {
        Some(id) => deposit::Entity::find_by_id(id.clone())
            .one(db)
            .await?
            .is_some_and(|d| DepositState::parse(&d.state) == Some(DepositState::Held)),
        None => false,
    })
}

/// The account row, created empty if missing.
pub(crate) async fn account_row<C: ConnectionTrait>(
    db: &C,
    user_id: &str,
) -> Result<account::Model, DbErr> {
    if let Some(row) = account::Entity::find_by_id(user_id.to_owned())
        .lock_exclusive()
        .one(db)
        .await?
    {
        return Ok(row);
    }
    let row = account::Model {
        user_id: user_id.to_owned(),
        card_token: String::new(),
        deposit_id: None,
        open_order_id: None,
    };
    account::Entity::insert(row.clone().into_active_model())
        .on_conflict(
            sea_orm::sea_query::OnConflict::column(account::Column::UserId)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(account::Entity::find_by_id(user_id.to_owned())
        .lock_exclusive()
        .one(db)
        .await?
        .unwrap_or(row))
}

/// Moves an attempt as `event` says, conditionally (only from a state the event applies
/// to); whether it moved.
pub(crate) async fn move_attempt<C: ConnectionTrait>(
    db: &C,
    payment_key: &str,
    event: AttemptEvent,
    charge_id: Option<&str>,
    at: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let (from, to) = event.moves();
    let to = to.as_str();
    let mut update = payment_attempt::Entity::update_many()
        .col_expr(payment_attempt::Column::State, Expr::value(to))
        .col_expr(payment_attempt::Column::UpdatedAt, Expr::value(at));
    if let Some(charge_id) = charge_id {
        update = update.col_expr(payment_attempt::Column::ChargeId, Expr::value(charge_id));
    }
    let done = update
        .filter(payment_attempt::Column::PaymentKey.eq(payment_key))
        .filter(payment_attempt::Column::State.is_in(from.into_iter().map(AttemptState::as_str)))
        .exec(db)
        .await?;
    Ok(done.rows_affected == 1)
}

/// A payment attempt about to be asked of the provider.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NewAttempt<'a> {
    /// Provider idempotency key.
    pub payment_key: &'a str,
    /// Whose card.
    pub user_id: &'a str,
    /// `rental`, `deposit` or `fee`.
    pub purpose: &'a str,
    /// The order or deposit it pays for.
    pub subject_id: &'a str,
    /// Fingerprint of the request.
    pub request_hash: &'a str,
    /// How much.
    pub amount: Money,
    /// The card.
    pub card_token: &'a str,
    /// Rentals: the unit held while charging.
    pub held_item: &'a str,
}

impl NewAttempt<'_> {
    /// Writes it as `pending`.
    pub(crate) async fn insert<C: ConnectionTrait>(
        self,
        db: &C,
        now: DateTime<Utc>,
    ) -> Result<(), DbErr> {
        payment_attempt::Model {
            payment_key: self.payment_key.to_owned(),
            user_id: self.user_id.to_owned(),
            purpose: self.purpose.to_owned(),
            subject_id: self.subject_id.to_owned(),
            request_hash: self.request_hash.to_owned(),
            amount: self.amount.minor(),
            currency: self.amount.currency().code().to_owned(),
            card_token: self.card_token.to_owned(),
            state: AttemptState::Pending.as_str().into(),
            charge_id: String::new(),
            held_item: self.held_item.to_owned(),
            created_at: now,
            updated_at: now,
        }
        .into_active_model()
        .insert(db)
        .await?;
        Ok(())
    }
}

/// How PayDeposit should go on.
#[derive(Debug)]
pub enum DepositStart {
    /// This key already paid this deposit: answer it.
    Existing(deposit::Model),
    /// This key came with another request.
    KeyReused,
    /// The account holds a deposit already (paid under another key).
    AlreadyHeld,
    /// This key was declined before.
    Declined,
    /// This key's payment was abandoned and refunded; a new key is needed.
    Abandoned,
    /// The settling worker is finding out what this key's payment did; retry shortly.
    Resolving,
    /// Charge now, with this provider key, for this deposit id.
    Charge {
        /// Provider idempotency key.
        payment_key: String,
        /// The deposit the charge will pay.
        deposit_id: String,
    },
}

/// A deposit's money, for booking it.
#[derive(Clone, Debug)]
pub struct DepositCharge {
    /// The account.
    pub user_id: String,
    /// The deposit's id.
    pub deposit_id: String,
    /// Provider key.
    pub payment_key: String,
    /// The provider's charge.
    pub charge_id: String,
    /// The amount.
    pub amount: Money,
    /// The card, remembered as the account's.
    pub card_token: String,
    /// PayDeposit's key.
    pub idempotency_key: String,
}

impl Store {
    /// The account's row, if it ever paid or rented.
    pub async fn account(&self, user_id: &str) -> Result<Option<account::Model>, DbErr> {
        account::Entity::find_by_id(user_id.to_owned())
            .one(&self.db)
            .await
    }

    /// A payment attempt by its provider key.
    pub async fn payment_attempt(
        &self,
        payment_key: &str,
    ) -> Result<Option<payment_attempt::Model>, DbErr> {
        payment_attempt::Entity::find_by_id(payment_key.to_owned())
            .one(&self.db)
            .await
    }

    /// A deposit.
    pub async fn deposit(&self, deposit_id: &str) -> Result<Option<deposit::Model>, DbErr> {
        deposit::Entity::find_by_id(deposit_id.to_owned())
            .one(&self.db)
            .await
    }

    /// The deposit the account holds now, if any.
    pub async fn held_deposit(&self, user_id: &str) -> Result<Option<deposit::Model>, DbErr> {
        let Some(account) = self.account(user_id).await? else {
            return Ok(None);
        };
        let Some(deposit_id) = account.deposit_id else {
            return Ok(None);
        };
        Ok(self
            .deposit(&deposit_id)
            .await?
            .filter(|deposit| DepositState::parse(&deposit.state) == Some(DepositState::Held)))
    }

    /// Decides how a PayDeposit goes on, claiming the account's deposit slot for a charge.
    pub async fn begin_deposit(
        &self,
        user_id: &str,
        idempotency_key: &str,
        request_hash: &str,
        amount: Money,
        card_token: &str,
        now: DateTime<Utc>,
    ) -> Result<DepositStart, StoreError> {
        let payment_key = format!("deposit:{user_id}:{idempotency_key}");
        let txn = self.write().await?;
        let account = account_row(&txn, user_id).await?;
        let attempt = payment_attempt::Entity::find_by_id(payment_key.clone())
            .one(&txn)
            .await?;
        if let Some(attempt) = &attempt {
            if attempt.request_hash != request_hash {
                return Ok(DepositStart::KeyReused);
            }
            match AttemptState::parse(&attempt.state) {
                Some(AttemptState::Charged) => {
                    let existing = deposit::Entity::find_by_id(attempt.subject_id.clone())
                        .one(&txn)
                        .await?
                        .ok_or_else(|| {
                            StoreError::Corrupt(format!(
                                "charged deposit {} is missing",
                                attempt.subject_id
                            ))
                        })?;
                    return Ok(DepositStart::Existing(existing));
                }
                Some(AttemptState::Declined) => return Ok(DepositStart::Declined),
                Some(AttemptState::Resolving) => return Ok(DepositStart::Resolving),
                Some(AttemptState::Refunding | AttemptState::Refunded) => {
                    return Ok(DepositStart::Abandoned);
                }
                Some(AttemptState::Pending | AttemptState::Failed) | None => {}
            }
        }
        let deposit_id = attempt
            .as_ref()
            .map(|a| a.subject_id.clone())
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        if account
            .deposit_id
            .as_ref()
            .is_some_and(|held| *held != deposit_id)
        {
            return Ok(DepositStart::AlreadyHeld);
        }
        account::Entity::update_many()
            .col_expr(account::Column::DepositId, Expr::value(deposit_id.clone()))
            .filter(account::Column::UserId.eq(user_id))
            .exec(&txn)
            .await?;
        match attempt {
            Some(_) => {
                move_attempt(&txn, &payment_key, AttemptEvent::Retried, None, now).await?;
            }
            None => {
                NewAttempt {
                    payment_key: &payment_key,
                    user_id,
                    purpose: "deposit",
                    subject_id: &deposit_id,
                    request_hash,
                    amount,
                    card_token,
                    held_item: "",
                }
                .insert(&txn, now)
                .await?;
            }
        }
        txn.commit().await?;
        Ok(DepositStart::Charge {
            payment_key,
            deposit_id,
        })
    }

    /// Books a charged deposit: HELD, money held, card remembered.
    pub async fn finish_deposit(
        &self,
        charge: DepositCharge,
        now: DateTime<Utc>,
    ) -> Result<deposit::Model, StoreError> {
        let txn = self.write().await?;
        let account = account_row(&txn, &charge.user_id).await?;
        if account
            .deposit_id
            .as_ref()
            .is_some_and(|held| *held != charge.deposit_id)
        {
            // Another deposit took the account's slot meanwhile: this charge pays for
            // nothing. Rolled back, the attempt stays pending and the worker pays it back.
            return Err(StoreError::Raced(
                "the account got a deposit from another request meanwhile; this charge is paid back".into(),
            ));
        }
        if !move_attempt(
            &txn,
            &charge.payment_key,
            AttemptEvent::Charged,
            Some(&charge.charge_id),
            now,
        )
        .await?
        {
            // A concurrent call with the same key booked it first: answer that deposit.
            if let Some(existing) = deposit::Entity::find_by_id(charge.deposit_id.clone())
                .one(&txn)
                .await?
            {
                return Ok(existing);
            }
            return Err(StoreError::Raced(
                "the deposit's payment was resolved by the sweeper; use a new idempotency key"
                    .into(),
            ));
        }
        let row = deposit::Model {
            deposit_id: charge.deposit_id.clone(),
            user_id: charge.user_id.clone(),
            amount: charge.amount.minor(),
            currency: charge.amount.currency().code().to_owned(),
            state: DepositState::Held.as_str().into(),
            withheld: 0,
            refunded: 0,
            charge_id: charge.charge_id.clone(),
            idempotency_key: charge.idempotency_key.clone(),
            refund_key: None,
            paid_at: now,
            refunded_at: None,
        }
        .into_active_model()
        .insert(&txn)
        .await?;
        account::Entity::update_many()
            .col_expr(
                account::Column::CardToken,
                Expr::value(charge.card_token.clone()),
            )
            .col_expr(
                account::Column::DepositId,
                Expr::value(charge.deposit_id.clone()),
            )
            .filter(account::Column::UserId.eq(charge.user_id.as_str()))
            .exec(&txn)
            .await?;
        let booking = |movement| Booking {
            order_id: "",
            deposit_id: &charge.deposit_id,
            movement,
            payment_key: &charge.payment_key,
            at: now,
        };
        book(
            &txn,
            &Posting::user_pays(&charge.user_id, charge.amount)?,
            booking(Movement::Deposit),
        )
        .await?;
        book(
            &txn,
            &Posting::hold_deposit(&charge.user_id, charge.amount)?,
            Booking {
                payment_key: "",
                ..booking(Movement::Deposit)
            },
        )
        .await?;
        txn.commit().await?;
        Ok(row)
    }

    /// Gives up a deposit charge: the account's slot is freed; the attempt is declined
    /// (final), forgotten (nothing charged, a retry may succeed) or left pending (outcome
    /// unknown: the sweeper resolves it).
    pub async fn abandon_deposit(
        &self,
        user_id: &str,
        payment_key: &str,
        deposit_id: &str,
        outcome: Abandon,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let txn = self.write().await?;
        account::Entity::update_many()
            .col_expr(
                account::Column::DepositId,
                Expr::value(Option::<String>::None),
            )
            .filter(account::Column::UserId.eq(user_id))
            .filter(account::Column::DepositId.eq(deposit_id))
            .exec(&txn)
            .await?;
        abandon_attempt(&txn, payment_key, outcome, now).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Starts refunding the account's deposit. `Ok(None)` when no deposit is held.
    pub async fn begin_deposit_refund(
        &self,
        user_id: &str,
        idempotency_key: &str,
        now: DateTime<Utc>,
    ) -> Result<RefundStart, StoreError> {
        let txn = self.write().await?;
        // The account row first: it serialises RefundDeposit calls of one account.
        let account = account_row(&txn, user_id).await?;
        if let Some(done) = deposit::Entity::find()
            .filter(deposit::Column::UserId.eq(user_id))
            .filter(deposit::Column::RefundKey.eq(idempotency_key))
            .one(&txn)
            .await?
        {
            return Ok(RefundStart::Existing(done));
        }
        let Some(deposit_id) = account.deposit_id.clone() else {
            return Ok(RefundStart::NoDeposit);
        };
        let Some(held) = deposit::Entity::find_by_id(deposit_id.clone())
            .lock_exclusive()
            .one(&txn)
            .await?
            .filter(|d| DepositState::parse(&d.state) == Some(DepositState::Held))
        else {
            // Claimed by a deposit charge still in progress.
            return Ok(RefundStart::NoDeposit);
        };
        if let Some(open) = account.open_order_id.clone() {
            return Ok(RefundStart::Busy(open));
        }
        let unsettled = super::orders::unsettled_orders(&txn, user_id).await?;
        if let Some(order) = unsettled.first() {
            return Ok(RefundStart::Busy(order.clone()));
        }
        let _ = now;
        let refunding = transition(DepositState::Held, DepositEvent::RefundAsked)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?
            .as_str();
        account::Entity::update_many()
            .col_expr(
                account::Column::DepositId,
                Expr::value(Option::<String>::None),
            )
            .filter(account::Column::UserId.eq(user_id))
            .filter(account::Column::OpenOrderId.is_null())
            .exec(&txn)
            .await?;
        deposit::Entity::update_many()
            .col_expr(deposit::Column::State, Expr::value(refunding))
            .col_expr(deposit::Column::RefundKey, Expr::value(idempotency_key))
            .filter(deposit::Column::DepositId.eq(held.deposit_id.as_str()))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(RefundStart::Refund(deposit::Model {
            state: refunding.into(),
            refund_key: Some(idempotency_key.to_owned()),
            ..held
        }))
    }

    /// Deposits whose refund is asked and not yet paid.
    pub async fn deposits_refunding(&self, limit: u64) -> Result<Vec<deposit::Model>, DbErr> {
        deposit::Entity::find()
            .filter(deposit::Column::State.eq(DepositState::Refunding.as_str()))
            .limit(limit)
            .all(&self.db)
            .await
    }

    /// Books a deposit's refund: released, paid back (minus what was kept), REFUNDED.
    pub async fn finish_deposit_refund(
        &self,
        deposit: &deposit::Model,
        refund_key: &str,
        paid_back: Money,
        now: DateTime<Utc>,
    ) -> Result<deposit::Model, StoreError> {
        let from = DepositState::Refunding;
        let to = transition(from, DepositEvent::RefundPaid)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let txn = self.write().await?;
        let moved = deposit::Entity::update_many()
            .col_expr(deposit::Column::State, Expr::value(to.as_str()))
            .col_expr(deposit::Column::Refunded, Expr::value(paid_back.minor()))
            .col_expr(deposit::Column::RefundedAt, Expr::value(now))
            .filter(deposit::Column::DepositId.eq(deposit.deposit_id.as_str()))
            .filter(deposit::Column::State.eq(from.as_str()))
            .exec(&txn)
            .await?;
        if moved.rows_affected == 1 && paid_back.minor() > 0 {
            let booking = |movement, payment_key| Booking {
                order_id: "",
                deposit_id: &deposit.deposit_id,
                movement,
                payment_key,
                at: now,
            };
            book(
                &txn,
                &Posting::release_deposit(&deposit.user_id, paid_back)?,
                booking(Movement::DepositRefund, ""),
            )
            .await?;
            book(
                &txn,
                &Posting::refund(&deposit.user_id, paid_back)?,
                booking(Movement::DepositRefund, refund_key),
            )
            .await?;
        }
        txn.commit().await?;
        Ok(deposit::Entity::find_by_id(deposit.deposit_id.clone())
            .one(&self.db)
            .await?
            .unwrap_or_else(|| deposit.clone()))
    }

    /// Payment attempts left pending since before `cutoff`, claimed for resolving.
    pub async fn claim_stale_attempts(
        &self,
        cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<payment_attempt::Model>, DbErr> {
        let stale = payment_attempt::Entity::find()
            .filter(payment_attempt::Column::State.eq(AttemptState::Pending.as_str()))
            .filter(payment_attempt::Column::UpdatedAt.lt(cutoff))
            .limit(limit)
            .all(&self.db)
            .await?;
        let (from, to) = AttemptEvent::Claimed.moves();
        let mut claimed = Vec::new();
        for attempt in stale {
            let done = payment_attempt::Entity::update_many()
                .col_expr(payment_attempt::Column::State, Expr::value(to.as_str()))
                .col_expr(payment_attempt::Column::UpdatedAt, Expr::value(now))
                .filter(payment_attempt::Column::PaymentKey.eq(attempt.payment_key.as_str()))
                .filter(payment_attempt::Column::State.is_in(from.iter().map(|s| s.as_str())))
                .filter(payment_attempt::Column::UpdatedAt.lt(cutoff))
                .exec(&self.db)
                .await?;
            if done.rows_affected == 1 {
                claimed.push(attempt);
            }
        }
        Ok(claimed)
    }

    /// Attempts whose charge the sweeper started paying back and did not finish (the refund
    /// failed, or it stopped midway); the refund is asked again under the same key.
    pub async fn refunding_attempts(
        &self,
        limit: u64,
    ) -> Result<Vec<payment_attempt::Model>, DbErr> {
        payment_attempt::Entity::find()
            .filter(payment_attempt::Column::State.eq(AttemptState::Refunding.as_str()))
            .limit(limit)
            .all(&self.db)
            .await
    }

    /// The sweeper found `charge_id` under a claimed attempt and will pay it back: from now on
    /// nothing books it. False if the attempt left RESOLVING meanwhile (a late answer's
    /// booking orphaned it back to PENDING with the charge): then it is not paid back now.
    pub async fn start_refund(
        &self,
        payment_key: &str,
        charge_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, DbErr> {
        move_attempt(
            &self.db,
            payment_key,
            AttemptEvent::RefundStarted,
            Some(charge_id),
            now,
        )
        .await
    }

    /// Attempts the sweeper claimed and did not finish (it stopped midway).
    pub async fn stuck_resolving(
        &self,
        cutoff: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<payment_attempt::Model>, DbErr> {
        payment_attempt::Entity::find()
            .filter(payment_attempt::Column::State.eq(AttemptState::Resolving.as_str()))
            .filter(payment_attempt::Column::UpdatedAt.lt(cutoff))
            .limit(limit)
            .all(&self.db)
            .await
    }

    /// Ends a resolved attempt: `refund` is the refund of a charge nothing took (booked), or
    /// `None` when nothing was charged (`declined` by the card, or failed). Frees what the
    /// attempt held.
    pub async fn finish_resolving(
        &self,
        attempt: &payment_attempt::Model,
        refund: Option<(&str, &str, Money)>,
        declined: bool,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let txn = self.write().await?;
        let event = match (refund, declined) {
            (Some(_), _) => AttemptEvent::ResolvedRefunded,
            (None, true) => AttemptEvent::ResolvedDeclined,
            (None, false) => AttemptEvent::ResolvedFailed,
        };
        let charge_id = refund.map(|(charge_id, _, _)| charge_id);
        if !move_attempt(&txn, &attempt.payment_key, event, charge_id, now).await? {
            return Ok(());
        }
        if let Some((_, refund_key, amount)) = refund {
            let booking = |movement, payment_key| Booking {
                order_id: "",
                deposit_id: "",
                movement,
                payment_key,
                at: now,
            };
            book(
                &txn,
                &Posting::user_pays(&attempt.user_id, amount)?,
                booking(Movement::OrphanRefund, &attempt.payment_key),
            )
            .await?;
            book(
                &txn,
                &Posting::refund(&attempt.user_id, amount)?,
                booking(Movement::OrphanRefund, refund_key),
            )
            .await?;
        }
        release_attempt_claims(&txn, attempt).await?;
        txn.commit().await?;
        Ok(())
    }

    /// A charge went through but its booking lost a race (the claim it paid for was gone):
    /// the attempt goes (back) to pending with the charge's id, so a retry with the key finds
    /// the charge, or else the settling worker pays it back.
    pub async fn orphan_attempt(
        &self,
        payment_key: &str,
        charge_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), DbErr> {
        move_attempt(
            &self.db,
            payment_key,
            AttemptEvent::Orphaned,
            Some(charge_id),
            now,
        )
        .await
        .map(|_| ())
    }

    /// Puts a claimed attempt back to pending (the provider still did not answer).
    pub async fn unclaim_attempt(
        &self,
        payment_key: &str,
        now: DateTime<Utc>,
    ) -> Result<(), DbErr> {
        move_attempt(&self.db, payment_key, AttemptEvent::Unclaimed, None, now)
            .await
            .map(|_| ())
    }
}

/// Frees the account slot and unit an abandoned attempt claimed, unless an order took them.
/// An order's attempt is named by its kind (rental or reservation: both claim a slot and a
/// unit), a deposit's by "deposit".
async fn release_attempt_claims<C: ConnectionTrait>(
    db: &C,
    attempt: &payment_attempt::Model,
) -> Result<(), DbErr> {
    match attempt.purpose.as_str() {
        order if crate::domain::order::OrderKind::parse(order).is_some() => {
            let order_exists = crate::entity::order::Entity::find_by_id(attempt.subject_id.clone())
                .one(db)
                .await?
                .is_some();
            if !order_exists {
                super::fleet::release_hold(db, &attempt.subject_id).await?;
                account::Entity::update_many()
                    .col_expr(
                        account::Column::OpenOrderId,
                        Expr::value(Option::<String>::None),
                    )
                    .filter(account::Column::OpenOrderId.eq(attempt.subject_id.as_str()))
                    .exec(db)
                    .await?;
            }
        }
        "deposit" => {
            let deposit_exists = deposit::Entity::find_by_id(attempt.subject_id.clone())
                .one(db)
                .await?
                .is_some();
            if !deposit_exists {
                account::Entity::update_many()
                    .col_expr(
                        account::Column::DepositId,
                        Expr::value(Option::<String>::None),
                    )
                    .filter(account::Column::DepositId.eq(attempt.subject_id.as_str()))
                    .exec(db)
                    .await?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// How a charge attempt ended without being booked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abandon {
    /// The card declined: final for the key.
    Declined,
    /// Nothing was charged (processor error): the attempt is FAILED, a retry may charge.
    NothingCharged,
    /// The outcome is unknown: the attempt stays pending for a retry or the sweeper.
    Unknown,
}

/// Ends an attempt as `outcome` says.
pub(crate) async fn abandon_attempt<C: ConnectionTrait>(
    db: &C,
    payment_key: &str,
    outcome: Abandon,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    match outcome {
        Abandon::Declined => {
            move_attempt(db, payment_key, AttemptEvent::Declined, None, now).await?;
        }
        Abandon::NothingCharged => {
            // Kept, not deleted: the record of every key asked of the provider stays.
            move_attempt(db, payment_key, AttemptEvent::NothingCharged, None, now).await?;
        }
        Abandon::Unknown => {}
    }
    Ok(())
}

/// How RefundDeposit should go on.
#[derive(Debug)]
pub enum RefundStart {
    /// This key already asked: answer the deposit.
    Existing(deposit::Model),
    /// The account holds no deposit.
    NoDeposit,
    /// An order is open or unsettled (its id).
    Busy(String),
    /// Refund this deposit now (it is REFUNDING).
    Refund(deposit::Model),
}
