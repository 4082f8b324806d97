//! Orders: creating a rental around its charge, every change through the one transition
//! function with its history row, what kiosk events do to orders, the outbox of kiosk
//! commands, and the settling steps (refunds, fees, closing).

// What a kiosk sent flows through here: no arithmetic that can panic or wrap.
#![deny(clippy::arithmetic_side_effects)]

use chrono::{DateTime, Duration, Utc};
use prost::Message;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel,
    QueryFilter, QueryOrder, QuerySelect,
};
use sneakernet_proto::gateway::v1 as gateway;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_runtime::wire::timestamp;

use super::fleet::{self, TypeKey};
use super::money::{self, Abandon, Booking, Movement, book};
use super::{Store, StoreError};
use crate::domain::ledger::Posting;
use crate::domain::money::{Currency, Money};
use crate::domain::order::{OrderEvent, OrderKind, OrderState, transition};
use crate::domain::payment_attempt::{AttemptEvent, AttemptState};
use crate::domain::reservable::DriveAsk;
use crate::entity::{account, deposit, offer, order, order_change, outbox, payment_attempt};
use crate::lending::{CommandEffect, CommandTarget, FollowUp};

/// The order's kind and state, parsed.
pub fn kind_and_state(row: &order::Model) -> Result<(OrderKind, OrderState), StoreError> {
    let kind = OrderKind::parse(&row.kind).ok_or_else(|| {
        StoreError::Corrupt(format!("order {} has kind {:?}", row.order_id, row.kind))
    })?;
    let state = row
        .state
        .parse()
        .map_err(|e: String| StoreError::Corrupt(format!("order {}: {e}", row.order_id)))?;
    Ok((kind, state))
}

/// The currency of an order.
pub fn currency(row: &order::Model) -> Result<Currency, StoreError> {
    Currency::parse(&row.currency)
        .map_err(|e| StoreError::Corrupt(format!("order {}: {e}", row.order_id)))
}

fn proto_state(state: OrderState) -> pb::OrderState {
    match state {
        OrderState::Paid => pb::OrderState::Paid,
        OrderState::Provisioning => pb::OrderState::Provisioning,
        OrderState::ReadyForPickup => pb::OrderState::ReadyForPickup,
        OrderState::Dispensing => pb::OrderState::Dispensing,
        OrderState::Lent => pb::OrderState::Lent,
        OrderState::Returned => pb::OrderState::Returned,
        OrderState::Closed => pb::OrderState::Closed,
        OrderState::Failed => pb::OrderState::Failed,
        OrderState::Cancelled => pb::OrderState::Cancelled,
        OrderState::Refunded => pb::OrderState::Refunded,
        OrderState::Expired => pb::OrderState::Expired,
    }
}

/// The stored state for a protobuf state (`None` for UNSPECIFIED or unknown).
pub fn state_of_proto(state: i32) -> Option<OrderState> {
    OrderState::ALL
        .into_iter()
        .find(|s| i32::from(proto_state(*s)) == state)
}

fn money_proto(minor: i64, currency: &str) -> sneakernet_proto::common::v1::Money {
    sneakernet_proto::common::v1::Money {
        minor_units: minor,
        currency: currency.to_owned(),
    }
}

/// An order as the API shows it.
pub fn to_proto(
    row: &order::Model,
    statement: &[crate::entity::ledger_transaction::Model],
) -> pb::Order {
    let (kind, state) = kind_and_state(row)
        .map(|(k, s)| {
            (
                match k {
                    OrderKind::Rental => pb::OrderKind::Rental,
                    OrderKind::Reservation => pb::OrderKind::Reservation,
                },
                proto_state(s),
            )
        })
        .unwrap_or((pb::OrderKind::Unspecified, pb::OrderState::Unspecified));
    let movements = statement
        .iter()
        .filter_map(|txn| {
            let kind = match txn.movement.as_str() {
                "price" => pb::MoneyMovementKind::Price,
                "late_fee" => pb::MoneyMovementKind::LateFee,
                "lost_item_fee" => pb::MoneyMovementKind::LostItemFee,
                "refund" => pb::MoneyMovementKind::Refund,
                _ => return None,
            };
            Some(pb::MoneyMovement {
                kind: kind.into(),
                amount: Some(money_proto(txn.amount, &txn.currency)),
                at: Some(timestamp(txn.created_at)),
            })
        })
        .collect();
    pb::Order {
        order_id: row.order_id.clone(),
        user_id: row.user_id.clone(),
        kind: kind.into(),
        state: state.into(),
        state_reason: row.state_reason.clone(),
        choice: pb::ItemChoice::decode(row.choice.as_slice()).ok(),
        content_title: row.content_title.clone(),
        item_id: row.item_id.clone(),
        kiosk_id: row.kiosk_id.clone(),
        returned_kiosk_id: row.returned_kiosk_id.clone(),
        write_protected: row.write_protected,
        pricing: pb::Pricing::decode(row.pricing.as_slice()).ok(),
        price: Some(money_proto(row.price, &row.currency)),
        amount_charged: Some(money_proto(row.amount_charged, &row.currency)),
        amount_refunded: Some(money_proto(row.amount_refunded, &row.currency)),
        movements,
        created_at: Some(timestamp(row.created_at)),
        updated_at: Some(timestamp(row.updated_at)),
        lent_at: row.lent_at.map(timestamp),
        due_at: row.due_at.map(timestamp),
        returned_at: row.returned_at.map(timestamp),
        closed_at: row.closed_at.map(timestamp),
        pickup_deadline: row.pickup_deadline.map(timestamp),
    }
}

/// Writes `next` (a changed copy of the stored order at `version`) as the next version with
/// its history row. Fails with [`StoreError::Raced`] if the stored version moved.
pub(super) async fn save<C: ConnectionTrait>(
    db: &C,
    mut next: order::Model,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<order::Model, StoreError> {
    let before = next.version;
    next.version = before
        .checked_add(1)
        .ok_or_else(|| overflow("order version"))?;
    next.updated_at = now;
    next.state_reason = reason.to_owned();
    if before == 0 {
        next.clone().into_active_model().insert(db).await?;
    } else {
        let active = next.clone().into_active_model().reset_all();
        let done = order::Entity::update_many()
            .set(active)
            .filter(order::Column::OrderId.eq(next.order_id.as_str()))
            .filter(order::Column::Version.eq(before))
            .exec(db)
            .await?;
        if done.rows_affected != 1 {
            return Err(StoreError::Raced(format!(
                "order {} changed concurrently",
                next.order_id
            )));
        }
    }
    let statement = money::statement(db, &next.order_id).await?;
    order_change::Model {
        order_id: next.order_id.clone(),
        version: next.version,
        reason: reason.to_owned(),
        at: now,
        snapshot: to_proto(&next, &statement).encode_to_vec(),
    }
    .into_active_model()
    .insert(db)
    .await?;
    Ok(next)
}

/// Applies `event` to the order through the one transition function, with `edit` for the
/// fields the step sets, and saves it.
pub(super) async fn step<C: ConnectionTrait>(
    db: &C,
    current: order::Model,
    event: OrderEvent,
    reason: &str,
    now: DateTime<Utc>,
    edit: impl FnOnce(&mut order::Model),
) -> Result<order::Model, StoreError> {
    let (kind, state) = kind_and_state(&current)?;
    let to = transition(kind, state, event)?;
    let mut next = current;
    next.state = to.as_str().to_owned();
    if to.is_terminal() {
        next.closed_at = Some(now);
    }
    edit(&mut next);
    save(db, next, reason, now).await
}

/// Orders of a user not yet terminal (ids), oldest first.
pub(crate) async fn unsettled_orders<C: ConnectionTrait>(
    db: &C,
    user_id: &str,
) -> Result<Vec<String>, DbErr> {
    let terminal: Vec<&str> = OrderState::ALL
        .into_iter()
        .filter(|s| s.is_terminal())
        .map(OrderState::as_str)
        .collect();
    Ok(order::Entity::find()
        .filter(order::Column::UserId.eq(user_id))
        .filter(order::Column::State.is_not_in(terminal))
        .order_by_asc(order::Column::CreatedAt)
        .all(db)
        .await?
        .into_iter()
        .map(|o| o.order_id)
        .collect())
}

pub(super) async fn lock_order<C: ConnectionTrait>(
    db: &C,
    order_id: &str,
) -> Result<Option<order::Model>, DbErr> {
    order::Entity::find_by_id(order_id.to_owned())
        .lock_exclusive()
        .one(db)
        .await
}

pub(super) async fn free_slot<C: ConnectionTrait>(db: &C, order_id: &str) -> Result<(), DbErr> {
    account::Entity::update_many()
        .col_expr(
            account::Column::OpenOrderId,
            Expr::value(Option::<String>::None),
        )
        .filter(account::Column::OpenOrderId.eq(order_id))
        .exec(db)
        .await?;
    Ok(())
}

/// The order this user already made with the request's key: answered if the request is the
/// same, refused as a reused key if not.
async fn same_key_order<C: ConnectionTrait>(
    db: &C,
    request: &OrderOpening,
) -> Result<Option<Opening>, DbErr> {
    Ok(order::Entity::find()
        .filter(order::Column::UserId.eq(request.user_id.as_str()))
        .filter(order::Column::IdempotencyKey.eq(request.idempotency_key.as_str()))
        .one(db)
        .await?
        .map(|existing| {
            if existing.request_hash == request.request_hash {
                Opening::Existing(Box::new(existing))
            } else {
                Opening::KeyReused
            }
        }))
}

/// What an earlier payment attempt under the key already decided, if anything: another
/// request's key, a decline, an outcome being resolved, or a payment given up. `None` when a
/// retry may charge (pending or nothing charged).
fn decided_attempt(attempt: &payment_attempt::Model, attempt_hash: &str) -> Option<Opening> {
    if attempt.request_hash != attempt_hash {
        return Some(Opening::KeyReused);
    }
    match AttemptState::parse(&attempt.state) {
        Some(AttemptState::Declined) => Some(Opening::Declined),
        Some(AttemptState::Pending | AttemptState::Failed) => None,
        Some(AttemptState::Resolving) => Some(Opening::Resolving),
        Some(AttemptState::Charged | AttemptState::Refunding | AttemptState::Refunded) | None => {
            Some(Opening::Abandoned)
        }
    }
}

/// Claims the account's one open-order slot for `order_id` (conditionally: a concurrent
/// claim loses). `Some(refusal)` when another order holds it.
async fn claim_slot<C: ConnectionTrait>(
    db: &C,
    account: &account::Model,
    order_id: &str,
) -> Result<Option<Opening>, DbErr> {
    match &account.open_order_id {
        Some(open) if open != order_id => return Ok(Some(Opening::ItemOut(open.clone()))),
        _ => {}
    }
    let claimed = account::Entity::update_many()
        .col_expr(
            account::Column::OpenOrderId,
            Expr::value(order_id.to_owned()),
        )
        .filter(account::Column::UserId.eq(account.user_id.as_str()))
        .filter(
            sea_orm::Condition::any()
                .add(account::Column::OpenOrderId.is_null())
                .add(account::Column::OpenOrderId.eq(order_id)),
        )
        .exec(db)
        .await?;
    Ok((claimed.rows_affected != 1).then(|| Opening::ItemOut(String::new())))
}

/// Writes a command for a kiosk (or a drive's own link) to the outbox, to be handed to the
/// gateway after commit.
pub(crate) async fn enqueue<C: ConnectionTrait>(
    db: &C,
    target: &CommandTarget,
    idempotency_key: &str,
    order_id: &str,
    payload: &gateway::CommandPayload,
    deadline: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    outbox::ActiveModel {
        kiosk_id: sea_orm::Set(target.kiosk_id().to_owned()),
        drive_id: sea_orm::Set(target.drive_id().to_owned()),
        idempotency_key: sea_orm::Set(idempotency_key.to_owned()),
        order_id: sea_orm::Set(order_id.to_owned()),
        payload: sea_orm::Set(payload.encode_to_vec()),
        deadline: sea_orm::Set(deadline),
        created_at: sea_orm::Set(now),
        sent_at: sea_orm::Set(None),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(())
}

/// How opening an order goes on (see [`Store::open_order`]).
#[derive(Debug)]
pub enum Opening {
    /// This key already made this order: answer it.
    Existing(Box<order::Model>),
    /// This key came with another request.
    KeyReused,
    /// This key was declined before.
    Declined,
    /// This key's payment was abandoned and refunded; a new key is needed.
    Abandoned,
    /// The settling worker is finding out what this key's payment did; retry shortly.
    Resolving,
    /// The account holds no deposit.
    NoDeposit,
    /// The account has this order open.
    ItemOut(String),
    /// No unit of the type is free at the kiosk.
    TypeUnavailable,
    /// Charge now with this provider key; the unit and the account's slot are held for
    /// this order id until the order is booked or abandoned.
    Charge {
        /// Provider key.
        payment_key: String,
        /// The order the charge will pay.
        order_id: String,
    },
}

/// An order being opened: what the user asked for, checked, and its price.
#[derive(Clone, Debug)]
pub struct OrderOpening {
    /// Rental or reservation: names the payment attempt's purpose and key.
    pub kind: OrderKind,
    /// The account.
    pub user_id: String,
    /// The request's idempotency key.
    pub idempotency_key: String,
    /// Fingerprint of the request (stored on the order).
    pub request_hash: String,
    /// Fingerprint of the request and its price (stored on the payment attempt: a retry at
    /// another price is another charge).
    pub attempt_hash: String,
    /// The kiosk.
    pub kiosk_id: String,
    /// The type.
    pub wanted: TypeKey,
    /// A reservation: what its drive must take. The hold is then any unit that can take it
    /// (`fleet::hold_reservable_unit`), not a unit of `wanted` exactly.
    pub reservable: Option<DriveAsk>,
    /// The card to charge.
    pub card_token: String,
    /// The price.
    pub price: Money,
}

/// A paid order, to be booked.
#[derive(Clone, Debug)]
pub struct PaidOrder {
    /// The order row (version 0; `save` makes it 1).
    pub order: order::Model,
    /// Provider key of the charge.
    pub payment_key: String,
    /// Why the order is where it is, as the user reads it.
    pub reason: String,
    /// The kiosk command the order waits for (a lend for a rental, a provision for a
    /// reservation), queued in the outbox under `command_key`.
    pub command: gateway::CommandPayload,
    /// The outbox key of `command` (one command per key).
    pub command_key: String,
}

/// How a fee was booked, for the text the user reads (worded by the flow that books it).
#[derive(Clone, Copy, Debug)]
pub enum FeeBooked {
    /// Charged to the card.
    Charged {
        /// Which fee.
        movement: Movement,
        /// How much.
        amount: Money,
    },
    /// The card declined: what could be was taken from the held deposit.
    FromDeposit {
        /// The fee.
        amount: Money,
        /// What the deposit gave (at most the fee; zero with nothing held).
        kept: Money,
    },
}

/// The provider key of an order's charge: one per account, kind and idempotency key.
pub fn payment_key(kind: OrderKind, user_id: &str, idempotency_key: &str) -> String {
    format!("{}:{user_id}:{idempotency_key}", kind.as_str())
}

/// Which orders a listing shows.
#[derive(Clone, Debug, Default)]
pub struct OrderFilter {
    /// Only this user's (always set for users).
    pub user_id: Option<String>,
    /// Only this kind.
    pub kind: Option<OrderKind>,
    /// Only these states (empty: all).
    pub states: Vec<OrderState>,
}

impl Store {
    /// Stores an offer made to `user_id`.
    pub async fn save_offer(
        &self,
        offer: &pb::Offer,
        user_id: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), DbErr> {
        offer::Model {
            offer_id: offer.offer_id.clone(),
            user_id: user_id.to_owned(),
            kiosk_id: offer.kiosk_id.clone(),
            expires_at,
            body: offer.encode_to_vec(),
        }
        .into_active_model()
        .insert(&self.db)
        .await?;
        Ok(())
    }

    /// An offer.
    pub async fn offer(&self, offer_id: &str) -> Result<Option<offer::Model>, DbErr> {
        offer::Entity::find_by_id(offer_id.to_owned())
            .one(&self.db)
            .await
    }

    /// Forgets offers that expired before `before`.
    pub async fn forget_offers(&self, before: DateTime<Utc>) -> Result<u64, DbErr> {
        Ok(offer::Entity::delete_many()
            .filter(offer::Column::ExpiresAt.lt(before))
            .exec(&self.db)
            .await?
            .rows_affected)
    }

    /// The order a user made with this idempotency key.
    pub async fn order_by_key(
        &self,
        user_id: &str,
        idempotency_key: &str,
    ) -> Result<Option<order::Model>, DbErr> {
        order::Entity::find()
            .filter(order::Column::UserId.eq(user_id))
            .filter(order::Column::IdempotencyKey.eq(idempotency_key))
            .one(&self.db)
            .await
    }

    /// One order.
    pub async fn order(&self, order_id: &str) -> Result<Option<order::Model>, DbErr> {
        order::Entity::find_by_id(order_id.to_owned())
            .one(&self.db)
            .await
    }

    /// The order as the API shows it.
    pub async fn order_proto(&self, row: &order::Model) -> Result<pb::Order, DbErr> {
        let statement = money::statement(&self.db, &row.order_id).await?;
        Ok(to_proto(row, &statement))
    }

    /// The changes of an order after `version`, in order.
    pub async fn changes_after(
        &self,
        order_id: &str,
        version: i64,
    ) -> Result<Vec<order_change::Model>, DbErr> {
        order_change::Entity::find()
            .filter(order_change::Column::OrderId.eq(order_id))
            .filter(order_change::Column::Version.gt(version))
            .order_by_asc(order_change::Column::Version)
            .all(&self.db)
            .await
    }

    /// Up to `limit` orders matching `filter` older than `before` (created_at, id), newest
    /// first.
    pub async fn list_orders(
        &self,
        filter: &OrderFilter,
        before: Option<(DateTime<Utc>, String)>,
        limit: u64,
    ) -> Result<Vec<order::Model>, DbErr> {
        let mut query = order::Entity::find();
        if let Some(user) = &filter.user_id {
            query = query.filter(order::Column::UserId.eq(user.as_str()));
        }
        if let Some(kind) = filter.kind {
            query = query.filter(order::Column::Kind.eq(kind.as_str()));
        }
        if !filter.states.is_empty() {
            query =
                query.filter(order::Column::State.is_in(filter.states.iter().map(|s| s.as_str())));
        }
        if let Some((at, id)) = before {
            query = query.filter(
                sea_orm::Condition::any()
                    .add(order::Column::CreatedAt.lt(at))
                    .add(
                        sea_orm::Condition::all()
                            .add(order::Column::CreatedAt.eq(at))
                            .add(order::Column::OrderId.lt(id)),
                    ),
            );
        }
        query
            .order_by_desc(order::Column::CreatedAt)
            .order_by_desc(order::Column::OrderId)
            .limit(limit)
            .all(&self.db)
            .await
    }

    /// Opens an order: answers the same key's order, or refuses (key reused, payment already
    /// decided, no deposit, an item out, nothing free), or holds a unit of the type and the
    /// account's one open-order slot for the order id, with a pending payment attempt, all in
    /// one transaction. Nothing is held when it refuses.
    pub async fn open_order(
        &self,
        request: &OrderOpening,
        now: DateTime<Utc>,
    ) -> Result<Opening, StoreError> {
        let payment_key = payment_key(request.kind, &request.user_id, &request.idempotency_key);
        let txn = self.write().await?;
        let account = money::account_row(&txn, &request.user_id).await?;
        if let Some(answer) = same_key_order(&txn, request).await? {
            return Ok(answer);
        }
        let attempt = payment_attempt::Entity::find_by_id(payment_key.clone())
            .one(&txn)
            .await?;
        if let Some(attempt) = &attempt
            && let Some(answer) = decided_attempt(attempt, &request.attempt_hash)
        {
            return Ok(answer);
        }
        // A retry pays for the order its first attempt was for.
        let order_id = attempt
            .as_ref()
            .map(|a| a.subject_id.clone())
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        if !money::deposit_held(&txn, &account).await? {
            return Ok(Opening::NoDeposit);
        }
        if let Some(refused) = claim_slot(&txn, &account, &order_id).await? {
            return Ok(refused);
        }
        fleet::release_hold(&txn, &order_id).await?;
        let held = match &request.reservable {
            None => fleet::hold_unit(&txn, &request.kiosk_id, &request.wanted, &order_id).await?,
            Some(ask) => {
                fleet::hold_reservable_unit(&txn, &request.kiosk_id, ask, &order_id).await?
            }
        };
        let Some(unit) = held else {
            // Dropping the transaction rolls the slot back.
            return Ok(Opening::TypeUnavailable);
        };
        match attempt {
            Some(_) => {
                payment_attempt::Entity::update_many()
                    .col_expr(
                        payment_attempt::Column::State,
                        Expr::value(AttemptEvent::Retried.moves().1.as_str()),
                    )
                    .col_expr(payment_attempt::Column::HeldItem, Expr::value(unit))
                    .col_expr(payment_attempt::Column::UpdatedAt, Expr::value(now))
                    .filter(payment_attempt::Column::PaymentKey.eq(payment_key.as_str()))
                    .exec(&txn)
                    .await?;
            }
            None => {
                money::NewAttempt {
                    payment_key: &payment_key,
                    user_id: &request.user_id,
                    purpose: request.kind.as_str(),
                    subject_id: &order_id,
                    request_hash: &request.attempt_hash,
                    amount: request.price,
                    card_token: &request.card_token,
                    held_item: &unit,
                }
                .insert(&txn, now)
                .await?;
            }
        }
        txn.commit().await?;
        Ok(Opening::Charge {
            payment_key,
            order_id,
        })
    }

    /// Books a paid order in one transaction: its payment attempt CHARGED, the order (at its
    /// first version, with `paid.reason`), the charge in the ledger, and its kiosk command in
    /// the outbox. A concurrent call with the same key that booked first is answered with its
    /// order; [`StoreError::Raced`] when the charge pays for nothing (rolled back, the attempt
    /// stays pending and the settling worker pays it back).
    pub async fn book_paid_order(
        &self,
        paid: PaidOrder,
        now: DateTime<Utc>,
    ) -> Result<order::Model, StoreError> {
        let txn = self.write().await?;
        if !money::move_attempt(
            &txn,
            &paid.payment_key,
            AttemptEvent::Charged,
            Some(&paid.order.charge_id),
            now,
        )
        .await?
        {
            // A concurrent call with the same key booked it first: answer that order.
            if let Some(existing) = order::Entity::find_by_id(paid.order.order_id.clone())
                .one(&txn)
                .await?
            {
                return Ok(existing);
            }
            return Err(StoreError::Raced(
                "the order's payment was resolved by the sweeper; use a new idempotency key".into(),
            ));
        }
        let account = money::account_row(&txn, &paid.order.user_id).await?;
        if account.open_order_id.as_deref() != Some(paid.order.order_id.as_str()) {
            // The slot was freed (an abandoned concurrent call) and maybe taken by another
            // order: this charge pays for nothing.
            return Err(StoreError::Raced(
                "this request was overtaken by another of the account; nothing is kept, the charge is paid back; retry with a new idempotency key".into(),
            ));
        }
        let price = Money::new(paid.order.price, currency(&paid.order)?);
        book(
            &txn,
            &Posting::user_pays(&paid.order.user_id, price)?,
            Booking {
                order_id: &paid.order.order_id,
                deposit_id: "",
                movement: Movement::Price,
                payment_key: &paid.payment_key,
                at: now,
            },
        )
        .await?;
        let order = save(&txn, paid.order, &paid.reason, now).await?;
        enqueue(
            &txn,
            &CommandTarget::Kiosk(order.kiosk_id.clone()),
            &paid.command_key,
            &order.order_id,
            &paid.command,
            order.deadline,
            now,
        )
        .await?;
        txn.commit().await?;
        self.announce(&order.order_id);
        Ok(order)
    }

    /// Gives up an order's charge: the unit and the account slot are freed, the attempt ends
    /// as `outcome` says.
    pub async fn abandon_order(
        &self,
        payment_key: &str,
        order_id: &str,
        outcome: Abandon,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let txn = self.write().await?;
        free_slot(&txn, order_id).await?;
        fleet::release_hold(&txn, order_id).await?;
        money::abandon_attempt(&txn, payment_key, outcome, now).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Commands decided and not yet handed to the gateway, oldest first.
    pub async fn unsent_commands(&self, limit: u64) -> Result<Vec<outbox::Model>, DbErr> {
        outbox::Entity::find()
            .filter(outbox::Column::SentAt.is_null())
            .order_by_asc(outbox::Column::OutboxId)
            .limit(limit)
            .all(&self.db)
            .await
    }

    /// The gateway logged an outbox command: mark it sent; a lend moves its order to
    /// DISPENSING (if it still waits for it).
    pub async fn command_sent(
        &self,
        row: &outbox::Model,
        command_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let txn = self.write().await?;
        // The order first, then its outbox row: the order every writer locks them in (a cancel
        // or a failed lend takes the order, then the order's outbox rows). The other way round,
        // Postgres breaks the cycle by aborting one of them: a user's cancel answered ABORTED.
        lock_order(&txn, &row.order_id).await?;
        outbox::Entity::update_many()
            .col_expr(outbox::Column::SentAt, Expr::value(now))
            .filter(outbox::Column::OutboxId.eq(row.outbox_id))
            .exec(&txn)
            .await?;
        let mut changed = None;
        let kind = gateway::CommandPayload::decode(row.payload.as_slice())
            .ok()
            .and_then(|p| p.kind);
        let is_lend = matches!(kind, Some(gateway::command_payload::Kind::Lend(_)));
        let is_provision = matches!(kind, Some(gateway::command_payload::Kind::Provision(_)));
        if is_provision && command_id.is_empty() {
            // The gateway refused the provision for good: it will never reach the kiosk.
            let reason = format!(
                "{} {}",
                crate::lending::NOT_PROVISIONED_IN_TIME,
                crate::lending::REFUNDING_IN_FULL
            );
            if fail_provision_in(&txn, &row.order_id, &reason, now).await? {
                changed = lock_order(&txn, &row.order_id).await?;
            }
        } else if is_provision
            && let Some(current) = lock_order(&txn, &row.order_id).await?
            && current.state == OrderState::Paid.as_str()
        {
            let command_id = command_id.to_owned();
            changed = Some(
                step(
                    &txn,
                    current,
                    OrderEvent::ProvisionRequested,
                    crate::lending::PREPARING,
                    now,
                    |o| o.command_id = Some(command_id),
                )
                .await?,
            );
        } else if is_lend
            && !command_id.is_empty()
            && let Some(current) = lock_order(&txn, &row.order_id).await?
            && current.state == OrderState::Dispensing.as_str()
            && current.command_id.is_none()
        {
            // A reservation's lend (the order went DISPENSING when it was collected): note
            // the command to ask about it if its result is late.
            let mut next = current;
            next.command_id = Some(command_id.to_owned());
            let reason = next.state_reason.clone();
            changed = Some(save(&txn, next, &reason, now).await?);
        } else if is_lend && command_id.is_empty() {
            // The gateway refused the lend for good: it will never reach the kiosk.
            if fail_lend_in(&txn, &row.order_id, crate::lending::NOT_ASKED_IN_TIME, now).await? {
                changed = lock_order(&txn, &row.order_id).await?;
            }
        } else if is_lend
            && let Some(current) = lock_order(&txn, &row.order_id).await?
            && current.state == OrderState::Paid.as_str()
        {
            let command_id = command_id.to_owned();
            changed = Some(
                step(
                    &txn,
                    current,
                    OrderEvent::LendRequested,
                    crate::lending::HANDING_OUT,
                    now,
                    |o| o.command_id = Some(command_id),
                )
                .await?,
            );
        }
        txn.commit().await?;
        if let Some(order) = changed {
            self.announce(&order.order_id);
        }
        Ok(())
    }

    /// Orders in `state` whose deadline is before `before`, oldest deadline first.
    pub async fn orders_due(
        &self,
        state: OrderState,
        before: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<order::Model>, DbErr> {
        order::Entity::find()
            .filter(order::Column::State.eq(state.as_str()))
            .filter(order::Column::Deadline.lt(before))
            .order_by_asc(order::Column::Deadline)
            .limit(limit)
            .all(&self.db)
            .await
    }

    /// DISPENSING orders whose lend is overdue (`deadline` before `before`), oldest first,
    /// those noted unanswered (their reason is `noted`) after every other: such an order
    /// waits for an operator or its late result, so however many there are, they never crowd
    /// newer overdue lends out of a batch. One noted since `quiet_since` is left out (its
    /// first quiet spell); afterwards it fills what room a batch has left. Their deadline
    /// stays, so the audit keeps naming them.
    pub async fn dispensing_due(
        &self,
        before: DateTime<Utc>,
        noted: &str,
        quiet_since: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<order::Model>, DbErr> {
        order::Entity::find()
            .filter(order::Column::State.eq(OrderState::Dispensing.as_str()))
            .filter(order::Column::Deadline.lt(before))
            .filter(
                sea_orm::Condition::any()
                    .add(order::Column::StateReason.ne(noted))
                    .add(order::Column::UpdatedAt.lt(quiet_since)),
            )
            .order_by(order::Column::StateReason.eq(noted), sea_orm::Order::Asc)
            .order_by_asc(order::Column::Deadline)
            .limit(limit)
            .all(&self.db)
            .await
    }

    /// The lend of a PAID or DISPENSING order failed (or was never possible in time): FAILED,
    /// unit and slot freed; a refund follows. Nothing happens to an order already past that.
    pub async fn fail_lend(
        &self,
        order_id: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let txn = self.write().await?;
        let changed = fail_lend_in(&txn, order_id, reason, now).await?;
        txn.commit().await?;
        if changed {
            self.announce(order_id);
        }
        Ok(())
    }

    /// Says on a DISPENSING order, once, that its kiosk acknowledged the lend and never
    /// answered (a new version with `reason`, so WatchOrder and operators see it). The order
    /// stays DISPENSING: a late result still decides it. Returns whether it was noted now
    /// (false if noted before or no longer DISPENSING).
    pub async fn note_lend_unanswered(
        &self,
        order_id: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let txn = self.write().await?;
        let Some(current) = lock_order(&txn, order_id).await? else {
            return Ok(false);
        };
        if current.state != OrderState::Dispensing.as_str() || current.state_reason == reason {
            return Ok(false);
        }
        save(&txn, current, reason, now).await?;
        txn.commit().await?;
        self.announce(order_id);
        Ok(true)
    }

    /// Books the refund of a FAILED or CANCELLED order and ends it REFUNDED, with the text
    /// `say` words from the order as it was and the amount.
    pub async fn refunded(
        &self,
        order_id: &str,
        refund_key: &str,
        amount: Money,
        say: fn(&order::Model, Money) -> String,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let txn = self.write().await?;
        let Some(current) = lock_order(&txn, order_id).await? else {
            return Ok(());
        };
        if current.state != OrderState::Failed.as_str()
            && current.state != OrderState::Cancelled.as_str()
        {
            return Ok(());
        }
        if amount.minor() > 0 {
            book(
                &txn,
                &Posting::refund(&current.user_id, amount)?,
                Booking {
                    order_id,
                    deposit_id: "",
                    movement: Movement::Refund,
                    payment_key: refund_key,
                    at: now,
                },
            )
            .await?;
        }
        let reason = say(&current, amount);
        let refunded = current
            .amount_refunded
            .checked_add(amount.minor())
            .ok_or_else(|| overflow("amount refunded"))?;
        step(&txn, current, OrderEvent::Refunded, &reason, now, |o| {
            o.amount_refunded = refunded;
        })
        .await?;
        txn.commit().await?;
        self.announce(order_id);
        Ok(())
    }

    /// Books a fee of a returned or lost order under `key` (the fee's provider key): charged
    /// to the card when `charged`, else taken from the deposit (the card declined), with the
    /// text `say` words from what was booked. A fee already booked under `key` is not booked
    /// again.
    #[allow(clippy::too_many_arguments)]
    pub async fn fee_booked(
        &self,
        order_id: &str,
        movement: Movement,
        amount: Money,
        key: &str,
        charged: bool,
        say: fn(FeeBooked) -> String,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let txn = self.write().await?;
        let Some(current) = lock_order(&txn, order_id).await? else {
            return Ok(());
        };
        let already = crate::entity::ledger_transaction::Entity::find()
            .filter(crate::entity::ledger_transaction::Column::PaymentKey.eq(key))
            .one(&txn)
            .await?;
        if already.is_some() {
            return Ok(());
        }
        let user = current.user_id.clone();
        let booking = |movement| Booking {
            order_id,
            deposit_id: "",
            movement,
            payment_key: key,
            at: now,
        };
        let mut next = current.clone();
        let reason;
        if charged {
            book(&txn, &Posting::user_pays(&user, amount)?, booking(movement)).await?;
            book(
                &txn,
                &Posting::earn(&user, amount)?,
                Booking {
                    payment_key: "",
                    ..booking(Movement::Earned)
                },
            )
            .await?;
            next.amount_charged = next
                .amount_charged
                .checked_add(amount.minor())
                .ok_or_else(|| overflow("amount charged"))?;
            reason = say(FeeBooked::Charged { movement, amount });
        } else {
            // The card declined: the fee is taken from the held deposit, which pays back less.
            let account = account::Entity::find_by_id(user.clone()).one(&txn).await?;
            let held = match account.and_then(|a| a.deposit_id) {
                Some(id) => {
                    deposit::Entity::find_by_id(id)
                        .lock_exclusive()
                        .one(&txn)
                        .await?
                }
                None => None,
            };
            let kept = held.as_ref().map_or(0, |d| {
                amount
                    .minor()
                    .min(d.amount.saturating_sub(d.withheld))
                    .max(0)
            });
            if let Some(held) = held
                && kept > 0
            {
                let kept_money = Money::new(kept, amount.currency());
                book(
                    &txn,
                    &Posting::release_deposit(&user, kept_money)?,
                    booking(Movement::DepositKept),
                )
                .await?;
                book(
                    &txn,
                    &Posting::earn(&user, kept_money)?,
                    Booking {
                        payment_key: "",
                        ..booking(Movement::DepositKept)
                    },
                )
                .await?;
                let withheld = held
                    .withheld
                    .checked_add(kept)
                    .ok_or_else(|| overflow("deposit withheld"))?;
                deposit::Entity::update_many()
                    .col_expr(deposit::Column::Withheld, Expr::value(withheld))
                    .filter(deposit::Column::DepositId.eq(held.deposit_id.as_str()))
                    .exec(&txn)
                    .await?;
            }
            reason = say(FeeBooked::FromDeposit {
                amount,
                kept: Money::new(kept, amount.currency()),
            });
        }
        if movement == Movement::LostItemFee {
            next.lost_fee_charged = true;
        }
        save(&txn, next, &reason, now).await?;
        txn.commit().await?;
        self.announce(order_id);
        Ok(())
    }

    /// A RETURNED order whose fees are booked: CLOSED, with the text `say` words from what
    /// the user paid in total.
    pub async fn close(
        &self,
        order_id: &str,
        say: fn(Money) -> String,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let txn = self.write().await?;
        let Some(current) = lock_order(&txn, order_id).await? else {
            return Ok(());
        };
        if current.state != OrderState::Returned.as_str() {
            return Ok(());
        }
        let total = Money::new(current.amount_charged, currency(&current)?);
        step(&txn, current, OrderEvent::Settled, &say(total), now, |_| {}).await?;
        txn.commit().await?;
        self.announce(order_id);
        Ok(())
    }

    /// LENT orders due before `before` whose lost-item fee is not charged.
    pub async fn lent_overdue(
        &self,
        before: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<order::Model>, DbErr> {
        order::Entity::find()
            .filter(order::Column::State.eq(OrderState::Lent.as_str()))
            .filter(order::Column::LostFeeCharged.eq(false))
            .filter(order::Column::DueAt.lt(before))
            .order_by_asc(order::Column::DueAt)
            .limit(limit)
            .all(&self.db)
            .await
    }

    /// Applies a command record fetched from the gateway (the sweeper's fallback when an
    /// event is late), in its own transaction.
    pub async fn apply_command_record(
        &self,
        record: &gateway::CommandRecord,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        // The gateway's time of the change, as an event of it would carry: when the result
        // reached the gateway, not when this sweeper asked.
        let at = record
            .updated_at
            .as_ref()
            .and_then(sneakernet_runtime::wire::from_timestamp)
            .map_or(now, |at| at.min(now));
        let txn = self.write().await?;
        let touched = self
            .apply_command(&txn, crate::lending::effect_of(record), at)
            .await?;
        txn.commit().await?;
        if let Some(order_id) = touched {
            self.announce(&order_id);
        }
        Ok(())
    }

    /// Stores what a command's new state does (decided by [`crate::lending::effect_of`]):
    /// the order moved with the texts given, units marked, the follow-up command queued.
    /// Returns the order that changed, if any.
    pub(crate) async fn apply_command<C: ConnectionTrait>(
        &self,
        db: &C,
        effect: CommandEffect,
        at: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError> {
        match effect {
            CommandEffect::Nothing => Ok(None),
            CommandEffect::Lent {
                order_id,
                record,
                lent,
                handing_out,
                take_item,
                returned_elsewhere,
            } => {
                let texts = LentTexts {
                    handing_out,
                    take_item: &take_item,
                    returned_elsewhere,
                };
                lent_in(db, &order_id, &record, &lent, &texts, at).await
            }
            CommandEffect::LendFailed {
                order_id,
                kiosk_id,
                reason,
                not_ready_item,
                follow_ups,
            } => {
                if let Some(item_id) = not_ready_item {
                    fleet::unit_not_ready(db, &kiosk_id, &item_id).await?;
                }
                ask_kiosk(db, &follow_ups, at).await?;
                Ok(fail_lend_in(db, &order_id, &reason, at)
                    .await?
                    .then_some(order_id))
            }
            CommandEffect::Wiped { kiosk_id, item_id } => {
                fleet::unit_wiped(db, &kiosk_id, &item_id).await?;
                Ok(None)
            }
            CommandEffect::Provisioned {
                order_id,
                kiosk_id,
                item,
                ready,
                release,
                then,
            } => {
                let provisioned = Provisioned {
                    order_id: &order_id,
                    kiosk_id: &kiosk_id,
                    item: &item,
                    ready: &ready,
                    then,
                };
                provisioned_in(db, &provisioned, release, at).await
            }
            CommandEffect::WriteProtect(outcome) => {
                super::write_protect::outcome_in(db, &outcome, at).await
            }
            CommandEffect::ProvisionFailed { order_id, reason } => {
                Ok(fail_provision_in(db, &order_id, &reason, at)
                    .await?
                    .then_some(order_id))
            }
        }
    }

    /// An item came back to a kiosk: the order it was lent under is RETURNED, and its unit is
    /// recorded at that kiosk (waiting for a wipe if it came back writable).
    ///
    /// Returns are legitimate at any kiosk, so the rule is about the item, not the kiosk: a
    /// return closes the LENT order of the item (the latest lend if a lie left two), wherever
    /// it was lent, and never an order in any other state. The unit goes to the returning
    /// kiosk as [`fleet::claim_unit`] allows; for an item under a LENT order another kiosk's
    /// bay that still claims it lets go first (a lent item is in nobody's bay), and so does a
    /// kiosk with a lend in flight (its result may come late), but an item lent to nobody that
    /// another kiosk holds in a bay is not moved by naming it.
    pub(crate) async fn apply_return<C: ConnectionTrait>(
        &self,
        db: &C,
        kiosk_id: &str,
        returned: &gateway::ItemReturned,
        cursor: i64,
        at: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError> {
        let Some(item) = &returned.item else {
            return Ok(None);
        };
        let effect = crate::lending::on_return(kiosk_id, item, cursor);
        let lent_under = order::Entity::find()
            .filter(order::Column::ItemId.eq(item.item_id.as_str()))
            .filter(order::Column::State.eq(OrderState::Lent.as_str()))
            .order_by_desc(order::Column::LentAt)
            .lock_exclusive()
            .one(db)
            .await?;
        if lent_under.is_some() {
            fleet::let_go_of_lent_item(db, kiosk_id, &item.item_id).await?;
        }
        // The kiosk's own time, unclamped: it is compared only with that kiosk's own time of
        // a lend's end (see `lent_in`), never with a server's clock.
        let back = returned
            .returned_at
            .as_ref()
            .and_then(sneakernet_runtime::wire::from_timestamp);
        fleet::claim_unit(
            db,
            kiosk_id,
            item,
            effect.ready,
            None,
            fleet::ClaimBy::Return { at: back },
        )
        .await?;
        ask_kiosk(db, effect.wipe.as_slice(), at).await?;
        let Some(current) = lent_under else {
            return Ok(None);
        };
        // The kiosk may have been offline when the item came back: its time is believed
        // between the lend and the gateway's receipt of the report, never beyond (see
        // orders.proto, Order.returned_at).
        let returned_at = reported_within(
            returned.returned_at.as_ref(),
            current.lent_at.unwrap_or(at),
            at,
        );
        let order_id = current.order_id.clone();
        step(db, current, OrderEvent::Returned, &effect.reason, at, |o| {
            o.returned_kiosk_id = kiosk_id.to_owned();
            o.returned_at = Some(returned_at);
            o.deadline = at;
        })
        .await?;
        free_slot(db, &order_id).await?;
        Ok(Some(order_id))
    }
}

/// Queues each follow-up command in the outbox, from `at`, for `order_id` (empty: none).
pub(super) async fn ask_for<C: ConnectionTrait>(
    db: &C,
    order_id: &str,
    follow_ups: &[FollowUp],
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    for follow_up in follow_ups {
        enqueue(
            db,
            &follow_up.target,
            &follow_up.key,
            order_id,
            &follow_up.command,
            later(at, follow_up.within)?,
            at,
        )
        .await?;
    }
    Ok(())
}

/// Queues each follow-up command in the outbox, from `at`, for no order.
pub(super) async fn ask_kiosk<C: ConnectionTrait>(
    db: &C,
    follow_ups: &[FollowUp],
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    ask_for(db, "", follow_ups, at).await
}

/// What every end of a reservation before pickup does beside its step: the command it waited
/// for never leaves if not sent yet, the account's slot and the unit are freed, and the
/// follow-ups (the pinned drive's release) are queued.
pub(super) async fn let_go_in<C: ConnectionTrait>(
    db: &C,
    order_id: &str,
    follow_ups: &[FollowUp],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    outbox::Entity::update_many()
        .col_expr(outbox::Column::SentAt, Expr::value(now))
        .filter(outbox::Column::OrderId.eq(order_id))
        .filter(outbox::Column::SentAt.is_null())
        .exec(db)
        .await?;
    free_slot(db, order_id).await?;
    fleet::release_hold(db, order_id).await?;
    ask_kiosk(db, follow_ups, now).await
}

/// A PAID or PROVISIONING reservation whose provisioning failed (or never reached the kiosk in
/// time): CANCELLED, a full refund follows; whether the order changed. Nothing happens to an
/// order past that (a late result after a cancel).
pub(super) async fn fail_provision_in<C: ConnectionTrait>(
    db: &C,
    order_id: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let Some(current) = lock_order(db, order_id).await? else {
        return Ok(false);
    };
    let (kind, state) = kind_and_state(&current)?;
    if kind != OrderKind::Reservation
        || !matches!(state, OrderState::Paid | OrderState::Provisioning)
    {
        return Ok(false);
    }
    step(db, current, OrderEvent::ProvisionFailed, reason, now, |o| {
        o.deadline = now;
    })
    .await?;
    let_go_in(db, order_id, &[], now).await?;
    Ok(true)
}

/// The kiosk pinned `item` for the order: READY_FOR_PICKUP with that drive until the pickup
/// window of its terms has passed, the order's hold moved to the drive. An order that no
/// longer waits for a drive (cancelled meanwhile) does not move; the drive is released
/// instead, unless it is the order's own already (a result applied twice).
async fn provisioned_in<C: ConnectionTrait>(
    db: &C,
    provisioned: &Provisioned<'_>,
    release: FollowUp,
    at: DateTime<Utc>,
) -> Result<Option<String>, StoreError> {
    let Provisioned {
        order_id,
        kiosk_id,
        item,
        ready,
        then,
    } = *provisioned;
    let Some(mut current) = lock_order(db, order_id).await? else {
        tracing::warn!(order_id, item_id = %item.item_id, "provision result for an unknown order; releasing the drive");
        ask_kiosk(db, &[release], at).await?;
        return Ok(None);
    };
    let (_, state) = kind_and_state(&current)?;
    match state {
        OrderState::Paid => {
            // The result overtook the outbox's note that the command was sent.
            current = step(
                db,
                current,
                OrderEvent::ProvisionRequested,
                crate::lending::PREPARING,
                at,
                |_| {},
            )
            .await?;
        }
        OrderState::Provisioning => {}
        _ if current.item_id == item.item_id => return Ok(None),
        _ => {
            tracing::warn!(order_id, item_id = %item.item_id, state = %state, "drive provisioned for an order that no longer waits; releasing it");
            ask_kiosk(db, &[release], at).await?;
            return Ok(None);
        }
    }
    let pricing = pb::Pricing::decode(current.pricing.as_slice()).unwrap_or_default();
    let pickup = crate::lending::pickup_deadline(&pricing, at)
        .ok_or_else(|| StoreError::Corrupt(format!("order {order_id}: pickup deadline")))?;
    let item_id = item.item_id.clone();
    let drive = drive_facts(Some(item));
    let ready_order = step(db, current, OrderEvent::Provisioned, ready, at, |o| {
        o.item_id = item_id;
        o.pickup_deadline = Some(pickup);
        o.deadline = pickup;
        o.write_protected = drive.is_some_and(|d| d.write_protected);
        o.remote_link = drive.is_some_and(|d| d.remote_link);
    })
    .await?;
    fleet::pin_hold(db, kiosk_id, item, order_id).await?;
    // The write protection its user asked while the drive was being prepared.
    if let Some(follow_up) = then(&ready_order) {
        ask_for(db, order_id, &[follow_up], at).await?;
    }
    Ok(Some(order_id.to_owned()))
}

/// A provision's result, as [`CommandEffect::Provisioned`] carries it.
#[derive(Clone, Copy)]
struct Provisioned<'a> {
    order_id: &'a str,
    kiosk_id: &'a str,
    item: &'a sneakernet_proto::common::v1::Item,
    ready: &'a str,
    then: fn(&order::Model) -> Option<FollowUp>,
}

/// A drive's facts as a kiosk reported them; `None` for anything else.
fn drive_facts(
    item: Option<&sneakernet_proto::common::v1::Item>,
) -> Option<&sneakernet_proto::common::v1::DriveAttributes> {
    match item?.attributes.as_ref()?.kind.as_ref()? {
        sneakernet_proto::common::v1::item_attributes::Kind::Drive(drive) => Some(drive),
        _ => None,
    }
}

/// A time a kiosk reported, believed only within `[earliest, latest]` (times the servers
/// know); `latest` when the kiosk said nothing or something unreadable.
pub(crate) fn reported_within(
    reported: Option<&prost_types::Timestamp>,
    earliest: DateTime<Utc>,
    latest: DateTime<Utc>,
) -> DateTime<Utc> {
    let earliest = earliest.min(latest);
    reported
        .and_then(sneakernet_runtime::wire::from_timestamp)
        .map_or(latest, |at| at.clamp(earliest, latest))
}

fn overflow(what: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} would overflow"))
}

/// `at` plus `by`, or an error naming the overflow (never a panic, whatever time came in).
pub(super) fn later(at: DateTime<Utc>, by: Duration) -> Result<DateTime<Utc>, StoreError> {
    at.checked_add_signed(by)
        .ok_or_else(|| StoreError::Corrupt(format!("{at} plus {by} is past the end of time")))
}

/// The texts a lend result shows (see [`CommandEffect::Lent`]).
struct LentTexts<'a> {
    handing_out: &'static str,
    take_item: &'a str,
    returned_elsewhere: fn(&str) -> String,
}

/// See [`Store::fail_lend`]; whether the order changed.
pub(super) async fn fail_lend_in<C: ConnectionTrait>(
    db: &C,
    order_id: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let Some(current) = lock_order(db, order_id).await? else {
        return Ok(false);
    };
    if current.state != OrderState::Paid.as_str()
        && current.state != OrderState::Dispensing.as_str()
    {
        return Ok(false);
    }
    step(db, current, OrderEvent::LendFailed, reason, now, |o| {
        o.deadline = now;
    })
    .await?;
    // A lend not yet handed to the gateway must never be: the money goes back.
    outbox::Entity::update_many()
        .col_expr(outbox::Column::SentAt, Expr::value(now))
        .filter(outbox::Column::OrderId.eq(order_id))
        .filter(outbox::Column::SentAt.is_null())
        .exec(db)
        .await?;
    free_slot(db, order_id).await?;
    fleet::release_hold(db, order_id).await?;
    Ok(true)
}

/// The kiosk lent `lent.item_id` for the order: LENT (through DISPENSING if the outbox had
/// not marked it yet), the price earned, the unit gone, the hold released. A lend reported
/// for an order that already failed is kept for the auditor, never applied.
async fn lent_in<C: ConnectionTrait>(
    db: &C,
    order_id: &str,
    record: &gateway::CommandRecord,
    lent: &gateway::LendResult,
    texts: &LentTexts<'_>,
    at: DateTime<Utc>,
) -> Result<Option<String>, StoreError> {
    let Some(mut current) = lock_order(db, order_id).await? else {
        tracing::warn!(order_id, item_id = %lent.item_id, "lend result for an unknown order");
        return Ok(None);
    };
    // Only the lending kiosk's own unit leaves (by `kiosk_id` in the SQL): a result naming
    // another kiosk's item never removes it. That item may already be back in another kiosk:
    // that kiosk's return arrived before this kiosk's late result (it was offline after
    // ejecting). Then the order is lent and returned at once, and the unit stays where it is.
    // The same holds when the item came back into the lending kiosk itself before its
    // result arrived (the kiosk's outbox replayed the return first): it stays in that bay.
    // Both times are that one kiosk's clock as it reported them; without both, nothing is
    // inferred (the result is applied as an item that left).
    let finished = record
        .result
        .as_ref()
        .and_then(|r| r.finished_at.as_ref())
        .and_then(sneakernet_runtime::wire::from_timestamp);
    fleet::hand_over_hold(db, &record.kiosk_id, &lent.item_id, order_id).await?;
    let back_here = match finished {
        Some(finished) => {
            fleet::returned_since(db, &record.kiosk_id, &lent.item_id, finished).await?
        }
        None => None,
    };
    let back_at = if let Some(back) = back_here {
        Some((record.kiosk_id.clone(), back))
    } else if fleet::remove_unit(db, &record.kiosk_id, &lent.item_id).await? {
        None
    } else {
        crate::entity::kiosk_item::Entity::find_by_id(lent.item_id.clone())
            .one(db)
            .await?
            .map(|row| row.kiosk_id)
            .filter(|kiosk| *kiosk != record.kiosk_id)
            .map(|kiosk| (kiosk, at))
    };
    let (_, state) = kind_and_state(&current)?;
    if state == OrderState::Paid {
        let command_id = record.command_id.clone();
        current = step(
            db,
            current,
            OrderEvent::LendRequested,
            texts.handing_out,
            at,
            |o| o.command_id = Some(command_id),
        )
        .await?;
    } else if state != OrderState::Dispensing {
        if matches!(state, OrderState::Failed | OrderState::Refunded)
            && current.late_item_id.is_none()
        {
            tracing::error!(order_id, item_id = %lent.item_id, "kiosk lent an item for an order that had already failed");
            let mut next = current;
            next.late_item_id = Some(lent.item_id.clone());
            let reason = next.state_reason.clone();
            save(db, next, &reason, at).await?;
            return Ok(Some(order_id.to_owned()));
        }
        return Ok(None);
    }
    // The lend happened after the command was logged and before its result reached the
    // gateway (`at`): the kiosk's time is believed within that, never beyond (see
    // orders.proto, Order.lent_at).
    let commanded_at = record
        .created_at
        .as_ref()
        .and_then(sneakernet_runtime::wire::from_timestamp)
        .unwrap_or(at);
    let lent_at = reported_within(
        record.result.as_ref().and_then(|r| r.finished_at.as_ref()),
        commanded_at,
        at,
    );
    let days = pb::ItemChoice::decode(current.choice.as_slice())
        .map(|c| c.duration_days)
        .unwrap_or(1);
    let due = later(lent_at, Duration::days(i64::from(days)))?;
    let price = Money::new(current.price, currency(&current)?);
    book(
        db,
        &Posting::earn(&current.user_id, price)?,
        Booking {
            order_id,
            deposit_id: "",
            movement: Movement::Earned,
            payment_key: "",
            at,
        },
    )
    .await?;
    let reason = texts.take_item;
    let item_id = lent.item_id.clone();
    // What the drive is now (its write protection, whether it has its own remote link), as
    // the kiosk reported it when it left.
    let drive = drive_facts(lent.item.as_ref());
    let lent_order = step(db, current, OrderEvent::Lent, reason, at, |o| {
        o.item_id = item_id;
        o.lent_at = Some(lent_at);
        o.due_at = Some(due);
        o.deadline = due;
        o.write_protected = drive.is_some_and(|d| d.write_protected);
        o.remote_link = drive.is_some_and(|d| d.remote_link);
    })
    .await?;
    fleet::release_hold(db, order_id).await?;
    if let Some((kiosk_id, back)) = back_at {
        tracing::warn!(order_id, item_id = %lent.item_id, kiosk_id, "lend result arrived after the item was returned");
        let reason = (texts.returned_elsewhere)(&kiosk_id);
        let returned_at = back.clamp(lent_at.min(at), at);
        step(db, lent_order, OrderEvent::Returned, &reason, at, |o| {
            o.returned_kiosk_id = kiosk_id.clone();
            o.returned_at = Some(returned_at);
            o.deadline = at;
        })
        .await?;
        free_slot(db, order_id).await?;
    }
    Ok(Some(order_id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Whatever time a kiosk reports (any seconds, any nanos), the times that set money
        /// stay within what the servers know, and adding a rental's length never panics.
        #[test]
        fn kiosk_times_never_escape_the_servers_window_nor_panic(
            seconds: i64,
            nanos: i32,
            days in 0i64..=366,
        ) {
            let earliest = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
            let latest = later(earliest, Duration::hours(3)).unwrap();
            let reported = prost_types::Timestamp { seconds, nanos };
            let at = reported_within(Some(&reported), earliest, latest);
            proptest::prop_assert!(earliest <= at && at <= latest);
            proptest::prop_assert!(later(at, Duration::days(days)).is_ok());
            let end = DateTime::<Utc>::MAX_UTC;
            proptest::prop_assert!(later(end, Duration::days(days.max(1))).is_err());
        }
    }
}
