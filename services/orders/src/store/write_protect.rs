//! Write protection a user asked (SetWriteProtect): the wish recorded on the order with the
//! command that carries it, in one transaction guarded by the order's version; and the
//! drive's answer stored on the order with its change row. What is asked, of whom, and the
//! texts come from the flow ([`crate::write_protect`]).

use chrono::{DateTime, Utc};
use sea_orm::ConnectionTrait;

use super::orders::{ask_for, lock_order, save};
use super::{Store, StoreError};
use crate::entity::order;
use crate::lending::FollowUp;
use crate::write_protect::Outcome;

impl Store {
    /// Records that the user of the order at `version` wants write protection `on`, shown
    /// with `reason`, and queues `command` (none while the drive is still being prepared).
    /// Fails with [`StoreError::Raced`] when the order changed since `version`.
    pub async fn want_write_protect(
        &self,
        order_id: &str,
        version: i64,
        on: bool,
        reason: &str,
        command: Option<&FollowUp>,
        now: DateTime<Utc>,
    ) -> Result<order::Model, StoreError> {
        let txn = self.write().await?;
        let current = lock_order(&txn, order_id)
            .await?
            .filter(|o| o.version == version)
            .ok_or_else(|| StoreError::Raced(format!("order {order_id} changed concurrently")))?;
        let mut next = current;
        next.write_protect_wanted = Some(on);
        let wanting = save(&txn, next, reason, now).await?;
        if let Some(command) = command {
            ask_for(&txn, order_id, std::slice::from_ref(command), now).await?;
        }
        txn.commit().await?;
        self.announce(order_id);
        Ok(wanting)
    }

    /// Stores `outcome` in its own transaction (see [`outcome_in`]): a command the gateway
    /// refused for good.
    pub async fn apply_write_protect(
        &self,
        outcome: &Outcome,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let txn = self.write().await?;
        let touched = outcome_in(&txn, outcome, now).await?;
        txn.commit().await?;
        if let Some(order_id) = touched {
            self.announce(&order_id);
        }
        Ok(())
    }
}

/// Stores a drive's answer to a write-protect command on its order, if the order still holds
/// that drive: the confirmed setting (a failure leaves it), the wish it settles cleared, the
/// reason shown. Returns the order that changed.
pub(super) async fn outcome_in<C: ConnectionTrait>(
    db: &C,
    outcome: &Outcome,
    at: DateTime<Utc>,
) -> Result<Option<String>, StoreError> {
    let Some(current) = lock_order(db, &outcome.order_id).await? else {
        tracing::warn!(order_id = %outcome.order_id, item_id = %outcome.item_id, "write-protect result for an unknown order");
        return Ok(None);
    };
    if current.item_id != outcome.item_id {
        tracing::warn!(order_id = %outcome.order_id, item_id = %outcome.item_id, "write-protect result for a drive the order no longer holds");
        return Ok(None);
    }
    let mut next = current;
    if let Some(write_protected) = outcome.confirmed {
        next.write_protected = write_protected;
    }
    if next.write_protect_wanted == Some(outcome.asked) {
        next.write_protect_wanted = None;
    }
    save(db, next, &outcome.reason, at).await?;
    Ok(Some(outcome.order_id.clone()))
}
