//! A reservation's own steps: cancelled by its user, expired after its pickup window (the
//! no-show fee kept, the rest paid back), collected at its kiosk. Each is one transaction
//! guarded by the order's version and state, so a step decided on a stale read changes
//! nothing ([`StoreError::Raced`]); the texts and follow-up commands come from the flow.

#![deny(clippy::arithmetic_side_effects)]

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use sneakernet_proto::gateway::v1 as gateway;

use super::money::{Booking, Movement, book};
use super::orders::{enqueue, fail_provision_in, kind_and_state, let_go_in, lock_order, step};
use super::{Store, StoreError};
use crate::domain::ledger::Posting;
use crate::domain::money::Money;
use crate::domain::order::{OrderEvent, OrderKind, OrderState};
use crate::entity::order;
use crate::lending::{CommandTarget, FollowUp};

/// A pickup, as the flow decided it.
#[derive(Clone, Debug)]
pub struct Pickup {
    /// The lend of the pinned drive.
    pub command: gateway::CommandPayload,
    /// Its outbox key.
    pub command_key: String,
    /// The reason shown for DISPENSING.
    pub reason: String,
    /// How long the kiosk has to lend.
    pub deadline: DateTime<Utc>,
}

/// An expiry, as the flow decided it (the refund already paid back by the provider).
#[derive(Clone, Debug)]
pub struct NoShow {
    /// The no-show fee kept (earned).
    pub kept: Money,
    /// What was paid back, under `refund_key`.
    pub refunded: Money,
    /// The provider key of the refund.
    pub refund_key: String,
    /// The reason shown for EXPIRED.
    pub reason: String,
    /// The drive's release.
    pub follow_ups: Vec<FollowUp>,
}

/// Loads the order at `version` in `state`s, or says why not.
async fn guarded<C: sea_orm::ConnectionTrait>(
    db: &C,
    order_id: &str,
    version: i64,
    states: &[OrderState],
) -> Result<order::Model, StoreError> {
    let current = lock_order(db, order_id)
        .await?
        .ok_or_else(|| StoreError::Raced(format!("order {order_id} is gone")))?;
    let (kind, state) = kind_and_state(&current)?;
    if current.version != version || kind != OrderKind::Reservation || !states.contains(&state) {
        return Err(StoreError::Raced(format!(
            "reservation {order_id} changed concurrently"
        )));
    }
    Ok(current)
}

impl Store {
    /// The user's reservations READY_FOR_PICKUP at `kiosk_id` whose pickup deadline is after
    /// `now`, oldest first.
    pub async fn ready_reservations(
        &self,
        user_id: &str,
        kiosk_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<order::Model>, sea_orm::DbErr> {
        order::Entity::find()
            .filter(order::Column::UserId.eq(user_id))
            .filter(order::Column::KioskId.eq(kiosk_id))
            .filter(order::Column::Kind.eq(OrderKind::Reservation.as_str()))
            .filter(order::Column::State.eq(OrderState::ReadyForPickup.as_str()))
            .filter(order::Column::PickupDeadline.gt(now))
            .order_by_asc(order::Column::CreatedAt)
            .all(&self.db)
            .await
    }

    /// Cancels the reservation at `version` (PAID, PROVISIONING, or READY_FOR_PICKUP before its
    /// pickup deadline): CANCELLED with `reason`, the command it waits for never sent if not yet,
    /// slot and unit freed, `follow_ups` queued; the full refund follows.
    pub async fn cancel_reservation(
        &self,
        order_id: &str,
        version: i64,
        reason: &str,
        follow_ups: &[FollowUp],
        now: DateTime<Utc>,
    ) -> Result<order::Model, StoreError> {
        let txn = self.write().await?;
        let current = guarded(
            &txn,
            order_id,
            version,
            &[
                OrderState::Paid,
                OrderState::Provisioning,
                OrderState::ReadyForPickup,
            ],
        )
        .await?;
        if current.pickup_deadline.is_some_and(|at| at <= now) {
            return Err(StoreError::Raced(format!(
                "reservation {order_id} is past its pickup deadline"
            )));
        }
        let cancelled = step(&txn, current, OrderEvent::Cancelled, reason, now, |o| {
            o.deadline = now;
        })
        .await?;
        let_go_in(&txn, order_id, follow_ups, now).await?;
        txn.commit().await?;
        self.announce(order_id);
        Ok(cancelled)
    }

    /// A PAID or PROVISIONING reservation whose provisioning failed or timed out: CANCELLED
    /// with `reason`, a full refund follows. Nothing happens to an order past that.
    pub async fn fail_provision(
        &self,
        order_id: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let txn = self.write().await?;
        let changed = fail_provision_in(&txn, order_id, reason, now).await?;
        txn.commit().await?;
        if changed {
            self.announce(order_id);
        }
        Ok(())
    }

    /// A READY_FOR_PICKUP reservation at `version` past its pickup deadline: EXPIRED, the
    /// no-show fee earned and the refund booked (both in the ledger), slot and unit freed, the
    /// drive's release queued.
    pub async fn expire_reservation(
        &self,
        order_id: &str,
        version: i64,
        no_show: &NoShow,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let txn = self.write().await?;
        let current = guarded(&txn, order_id, version, &[OrderState::ReadyForPickup]).await?;
        let user = current.user_id.clone();
        if no_show.refunded.minor() > 0 {
            book(
                &txn,
                &Posting::refund(&user, no_show.refunded)?,
                Booking {
                    order_id,
                    deposit_id: "",
                    movement: Movement::Refund,
                    payment_key: &no_show.refund_key,
                    at: now,
                },
            )
            .await?;
        }
        if no_show.kept.minor() > 0 {
            book(
                &txn,
                &Posting::earn(&user, no_show.kept)?,
                Booking {
                    order_id,
                    deposit_id: "",
                    movement: Movement::Earned,
                    payment_key: "",
                    at: now,
                },
            )
            .await?;
        }
        let refunded = current
            .amount_refunded
            .checked_add(no_show.refunded.minor())
            .ok_or_else(|| StoreError::Corrupt("amount refunded would overflow".into()))?;
        step(
            &txn,
            current,
            OrderEvent::PickupExpired,
            &no_show.reason,
            now,
            |o| {
                o.amount_refunded = refunded;
                o.deadline = now;
            },
        )
        .await?;
        let_go_in(&txn, order_id, &no_show.follow_ups, now).await?;
        txn.commit().await?;
        self.announce(order_id);
        Ok(())
    }

    /// Collects the READY_FOR_PICKUP reservation at `version` before its pickup deadline:
    /// DISPENSING, and the lend of its pinned drive in the outbox, in one transaction.
    pub async fn collect_reservation(
        &self,
        order_id: &str,
        version: i64,
        pickup: &Pickup,
        now: DateTime<Utc>,
    ) -> Result<order::Model, StoreError> {
        let txn = self.write().await?;
        let current = guarded(&txn, order_id, version, &[OrderState::ReadyForPickup]).await?;
        if current.pickup_deadline.is_none_or(|at| at <= now) {
            return Err(StoreError::Raced(format!(
                "reservation {order_id} is past its pickup deadline"
            )));
        }
        let kiosk_id = current.kiosk_id.clone();
        let collecting = step(
            &txn,
            current,
            OrderEvent::LendRequested,
            &pickup.reason,
            now,
            |o| {
                o.deadline = pickup.deadline;
                o.command_id = None;
            },
        )
        .await?;
        enqueue(
            &txn,
            &CommandTarget::Kiosk(kiosk_id),
            &pickup.command_key,
            order_id,
            &pickup.command,
            pickup.deadline,
            now,
        )
        .await?;
        txn.commit().await?;
        self.announce(order_id);
        Ok(collecting)
    }
}

/// Sends a release again for each drive `inventory` shows pinned for an order that no longer
/// wants it, as [`crate::lending::release_again`] decides from the order and the releases of
/// that drive already in the outbox; inside the caller's transaction (the inventory event's).
pub(crate) async fn release_outlived_pins<C: sea_orm::ConnectionTrait>(
    db: &C,
    kiosk_id: &str,
    inventory: &gateway::Inventory,
    cursor: i64,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    use crate::entity::outbox;
    for bay in &inventory.bays {
        let Some(item) = bay
            .item
            .as_ref()
            .filter(|_| !bay.pinned_order_id.is_empty())
        else {
            continue;
        };
        let row = order::Entity::find_by_id(bay.pinned_order_id.clone())
            .one(db)
            .await?;
        let state = row.as_ref().map(kind_and_state).transpose()?;
        let pinned_for = match (&row, state) {
            (Some(row), Some((_, state))) => crate::lending::PinnedFor::Order {
                state,
                item_id: &row.item_id,
            },
            _ => crate::lending::PinnedFor::Unknown,
        };
        let prefix = crate::lending::release_key_prefix(&bay.pinned_order_id, &item.item_id);
        let release_pending = outbox::Entity::find()
            .filter(outbox::Column::IdempotencyKey.starts_with(prefix.as_str()))
            .filter(outbox::Column::Deadline.gt(at))
            .all(db)
            .await?
            .iter()
            .any(|queued| {
                queued.idempotency_key == prefix
                    || queued
                        .idempotency_key
                        .strip_prefix(prefix.as_str())
                        .is_some_and(|rest| rest.starts_with(':'))
            });
        let again =
            crate::lending::release_again(kiosk_id, bay, pinned_for, release_pending, cursor);
        if let Some(again) = again {
            tracing::warn!(kiosk_id, order_id = %bay.pinned_order_id, item_id = %item.item_id, "drive still pinned for a finished order; releasing it again");
            super::orders::ask_kiosk(db, std::slice::from_ref(&again), at).await?;
        }
    }
    Ok(())
}
