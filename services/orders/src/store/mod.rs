//! The orders service's queries, one transaction per decision.
//!
//! - here: consumers' cursors and the kiosk view fed by gateway events. Applying an event and
//!   moving the cursor past it are one transaction, and an event at or below the stored cursor
//!   changes nothing, so replays after a crash are harmless.
//! - [`fleet`]: kiosk profiles, price rules, units and holds.
//! - [`nearby`]: FindKiosks' reads (kiosks in a bounding box, by index).
//! - [`money`]: the ledger, payment attempts, deposits.
//! - [`orders`]: orders, their change history, the outbox, and what kiosk events do to them.
//! - [`reservations`]: a reservation's ends before pickup (cancel, no-show) and its pickup.
//! - [`write_protect`]: write protection a user asked, and the drive's answer.
//! - [`parked`]: events a consumer could not apply, set aside for operators.
//! - [`sealing`]: the fingerprint of the key sealing QR secrets.
//! - [`audit`]: the auditor's checks.

pub mod audit;
pub mod fleet;
pub mod money;
pub mod nearby;
pub mod orders;
pub mod parked;
pub mod reservations;
pub mod sealing;
#[cfg(test)]
pub(crate) mod tests;
pub mod write_protect;

use chrono::{DateTime, Utc};
use prost::Message;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, QuerySelect,
};
use sneakernet_proto::gateway::v1 as gateway;

use crate::entity::{event_cursor, kiosk_view};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
    /// A posting did not balance (a bug).
    #[error("ledger: {0}")]
    Ledger(#[from] crate::domain::ledger::LedgerError),
    /// An order was asked to move where it cannot (a bug or a replay).
    #[error(transparent)]
    Illegal(#[from] crate::domain::order::IllegalTransition),
    /// Arithmetic failed.
    #[error("money: {0}")]
    Money(#[from] crate::domain::money::MoneyError),
    /// A concurrent change won; the caller may retry.
    #[error("{0}")]
    Raced(String),
    /// Stored data that cannot be read (a bug or a manual edit).
    #[error("corrupt data: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether trying again later may succeed: the database was unreachable, or broke a lock
    /// cycle. Anything else (data the database refuses, an illegal transition, a defect) will
    /// fail the same way again.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Raced(_) => true,
            StoreError::Db(error) => sneakernet_runtime::db::DbFailure::of(error).is_transient(),
            _ => false,
        }
    }
}

impl From<StoreError> for sneakernet_runtime::ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Raced(message) => sneakernet_runtime::ApiError::Aborted(message),
            // Unreachable: UNAVAILABLE; a broken lock cycle or serialization conflict, where
            // nothing was written: ABORTED; both retried by the caller.
            StoreError::Db(error) => sneakernet_runtime::ApiError::from(error),
            other => sneakernet_runtime::ApiError::Internal(other.to_string()),
        }
    }
}

/// The orders service's database, and the wake-ups of WatchOrder after an order changed.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) db: DatabaseConnection,
    /// Wakes the watchers of an order that changed, in this replica and (through Redis) the
    /// others; a lost wake-up is covered by the watchers' safety poll.
    wakeups: crate::wake::OrderWakeups,
}

impl Store {
    /// Wraps an opened, migrated connection, with wake-ups within this process only.
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            db,
            wakeups: crate::wake::OrderWakeups::local(),
        }
    }

    /// The same store announcing changes through `wakeups` (shared across replicas).
    #[must_use]
    pub fn with_wakeups(mut self, wakeups: crate::wake::OrderWakeups) -> Self {
        self.wakeups = wakeups;
        self
    }

    /// The connection (for the sandbox payment provider, which shares the database).
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Announces, after commit, that an order changed. Every store function that writes an
    /// order's version calls it once its transaction committed.
    pub(crate) fn announce(&self, order_id: &str) {
        self.wakeups.announce(order_id);
    }

    /// The wake-ups of order changes (WatchOrder follows them).
    pub fn wakeups(&self) -> &crate::wake::OrderWakeups {
        &self.wakeups
    }

    /// A write transaction (see `sneakernet_runtime::db::begin_write`).
    pub(crate) async fn write(&self) -> Result<sea_orm::DatabaseTransaction, sea_orm::DbErr> {
        sneakernet_runtime::db::begin_write(&self.db).await
    }

    /// The cursor of the last event `consumer` handled (0: none).
    pub async fn cursor(&self, consumer: &str) -> Result<i64, sea_orm::DbErr> {
        Ok(event_cursor::Entity::find_by_id(consumer.to_owned())
            .one(&self.db)
            .await?
            .map_or(0, |row| row.cursor))
    }

    /// Applies one gateway event to the kiosk view and moves `consumer`'s cursor to it, in one
    /// transaction. Returns false (and writes nothing) for an event at or below the cursor.
    pub async fn apply_kiosk_event(
        &self,
        consumer: &str,
        event: &gateway::Event,
    ) -> Result<bool, StoreError> {
        let cursor = i64::try_from(event.cursor).unwrap_or(i64::MAX);
        let txn = sneakernet_runtime::db::begin_write(&self.db).await?;
        let stored = event_cursor::Entity::find_by_id(consumer.to_owned())
            .lock_exclusive()
            .one(&txn)
            .await?
            .map_or(0, |row| row.cursor);
        if cursor <= stored {
            return Ok(false);
        }
        let touched = self.apply_event_in(&txn, event).await?;
        set_cursor(&txn, consumer, cursor).await?;
        txn.commit().await?;
        if let Some(order_id) = touched {
            self.announce(&order_id);
        }
        Ok(true)
    }

    /// What one gateway event does, inside the caller's transaction: the kiosk view (only
    /// from events newer than what it shows, so a parked event retried late never rolls it
    /// back), units, and orders. Returns the order that changed, if any.
    pub(crate) async fn apply_event_in<C: sea_orm::ConnectionTrait>(
        &self,
        txn: &C,
        event: &gateway::Event,
    ) -> Result<Option<String>, StoreError> {
        let cursor = i64::try_from(event.cursor).unwrap_or(i64::MAX);
        // The gateway stamps every event with its own clock when it writes it: the time the
        // kiosk's report was received, not the kiosk's clock.
        let at = event
            .occurred_at
            .as_ref()
            .and_then(sneakernet_runtime::wire::from_timestamp)
            .unwrap_or_else(Utc::now);
        let kiosk = event.kiosk_id.as_str();
        let mut touched = None;
        if kiosk.is_empty() {
            // An event of a drive's own remote link (Event.drive_id), not of a kiosk: it has no
            // place in the kiosk view or the units. Only its commands' results move orders (a
            // SetWriteProtect the drive confirmed on the road); anything else only moves the
            // cursor.
            if let Some(gateway::event::Kind::CommandStateChanged(changed)) = &event.kind
                && let Some(record) = &changed.command
                && record.requested_by == format!("service:{}", crate::SERVICE)
            {
                return self
                    .apply_command(txn, crate::lending::effect_of(record), at)
                    .await;
            }
            return Ok(None);
        }
        match &event.kind {
            Some(gateway::event::Kind::KioskOnline(online)) => {
                upsert(txn, kiosk, cursor, at, |row| {
                    row.online = true;
                    row.agent_version = online.agent_version.clone();
                })
                .await?;
            }
            Some(gateway::event::Kind::KioskOffline(offline)) => {
                let last_seen = offline
                    .last_seen_at
                    .as_ref()
                    .and_then(sneakernet_runtime::wire::from_timestamp)
                    .unwrap_or(at)
                    .min(at);
                upsert(txn, kiosk, cursor, last_seen, |row| row.online = false).await?;
            }
            Some(gateway::event::Kind::InventoryChanged(changed)) => {
                let inventory = changed
                    .inventory
                    .clone()
                    .unwrap_or_default()
                    .encode_to_vec();
                let newer = upsert(txn, kiosk, cursor, at, |row| row.inventory = inventory).await?;
                if newer && let Some(inventory) = &changed.inventory {
                    fleet::replace_units(txn, kiosk, inventory).await?;
                    reservations::release_outlived_pins(txn, kiosk, inventory, cursor, at).await?;
                }
            }
            Some(gateway::event::Kind::CommandStateChanged(changed)) => {
                if let Some(record) = &changed.command
                    && record.requested_by == format!("service:{}", crate::SERVICE)
                {
                    touched = self
                        .apply_command(txn, crate::lending::effect_of(record), at)
                        .await?;
                }
            }
            Some(gateway::event::Kind::ItemReturned(returned)) => {
                touched = self.apply_return(txn, kiosk, returned, cursor, at).await?;
            }
            None => {}
        }
        Ok(touched)
    }

    /// Moves `consumer`'s cursor forward (a checkpoint of filtered-out events).
    pub async fn advance(&self, consumer: &str, cursor: i64) -> Result<(), sea_orm::DbErr> {
        let txn = sneakernet_runtime::db::begin_write(&self.db).await?;
        let stored = event_cursor::Entity::find_by_id(consumer.to_owned())
            .lock_exclusive()
            .one(&txn)
            .await?;
        if stored.is_none_or(|row| row.cursor < cursor) {
            set_cursor(&txn, consumer, cursor).await?;
        }
        txn.commit().await
    }

    /// Forgets `consumer`'s position and the view it built (the event log was reset): it
    /// rebuilds from the start.
    pub async fn reset(&self, consumer: &str) -> Result<(), sea_orm::DbErr> {
        let txn = sneakernet_runtime::db::begin_write(&self.db).await?;
        kiosk_view::Entity::delete_many().exec(&txn).await?;
        crate::entity::kiosk_item::Entity::delete_many()
            .exec(&txn)
            .await?;
        event_cursor::Entity::delete_by_id(consumer.to_owned())
            .exec(&txn)
            .await?;
        txn.commit().await
    }

    /// Up to `limit` kiosks with an id above `after`, by id; only online ones if asked.
    pub async fn kiosks(
        &self,
        after: &str,
        limit: u64,
        online_only: bool,
    ) -> Result<Vec<kiosk_view::Model>, sea_orm::DbErr> {
        let mut query = kiosk_view::Entity::find().filter(kiosk_view::Column::KioskId.gt(after));
        if online_only {
            query = query.filter(kiosk_view::Column::Online.eq(true));
        }
        query
            .order_by_asc(kiosk_view::Column::KioskId)
            .limit(limit)
            .all(&self.db)
            .await
    }

    /// One kiosk.
    pub async fn kiosk(&self, kiosk_id: &str) -> Result<Option<kiosk_view::Model>, sea_orm::DbErr> {
        kiosk_view::Entity::find_by_id(kiosk_id.to_owned())
            .one(&self.db)
            .await
    }
}

async fn set_cursor<C: sea_orm::ConnectionTrait>(
    db: &C,
    consumer: &str,
    cursor: i64,
) -> Result<(), sea_orm::DbErr> {
    event_cursor::Entity::insert(
        event_cursor::Model {
            consumer: consumer.to_owned(),
            cursor,
        }
        .into_active_model(),
    )
    .on_conflict(
        OnConflict::column(event_cursor::Column::Consumer)
            .update_column(event_cursor::Column::Cursor)
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Creates or changes a kiosk's row with `change`, stamping the event's cursor and time.
/// Returns false, changing nothing, when the row already reflects a newer event.
async fn upsert<C: sea_orm::ConnectionTrait>(
    db: &C,
    kiosk_id: &str,
    cursor: i64,
    at: DateTime<Utc>,
    change: impl FnOnce(&mut kiosk_view::Model),
) -> Result<bool, sea_orm::DbErr> {
    let existing = kiosk_view::Entity::find_by_id(kiosk_id.to_owned())
        .one(db)
        .await?;
    if existing.as_ref().is_some_and(|row| row.cursor >= cursor) {
        return Ok(false);
    }
    let is_new = existing.is_none();
    let mut row = existing.unwrap_or_else(|| kiosk_view::Model {
        kiosk_id: kiosk_id.to_owned(),
        online: false,
        agent_version: String::new(),
        last_seen_at: at,
        inventory: Vec::new(),
        cursor,
    });
    change(&mut row);
    row.cursor = cursor;
    row.last_seen_at = row.last_seen_at.max(at);
    if is_new {
        row.into_active_model().insert(db).await?;
    } else {
        kiosk_view::Entity::update_many()
            .col_expr(kiosk_view::Column::Online, Expr::value(row.online))
            .col_expr(
                kiosk_view::Column::AgentVersion,
                Expr::value(row.agent_version),
            )
            .col_expr(
                kiosk_view::Column::LastSeenAt,
                Expr::value(row.last_seen_at),
            )
            .col_expr(kiosk_view::Column::Inventory, Expr::value(row.inventory))
            .col_expr(kiosk_view::Column::Cursor, Expr::value(row.cursor))
            .filter(kiosk_view::Column::KioskId.eq(kiosk_id))
            .exec(db)
            .await?;
    }
    Ok(true)
}
