//! Events a consumer could not apply, set aside (parked) so the events after them still flow.
//!
//! Parking an event and moving the consumer's cursor past it are one transaction, so an event
//! is either applied, or parked, never both and never neither. A retry applies the event and
//! removes it in one transaction; what it does to the kiosk view is guarded by cursor (a late
//! retry never rolls the view back), and what it does to orders by their state machine.

use chrono::{DateTime, Utc};
use prost::Message;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, QuerySelect};
use sneakernet_proto::gateway::v1 as gateway;

use super::{Store, StoreError, set_cursor};
use crate::entity::parked_event;

/// Longest error text kept per parked event.
const MAX_ERROR: usize = 2000;

/// What a retry of a parked event did.
#[derive(Debug)]
pub enum Retried {
    /// Applied (or superseded) and no longer parked.
    Applied,
    /// No parked event has that cursor.
    NotFound,
    /// Still fails; it stays parked with this error.
    StillFailing(String),
}

fn bounded(error: &str) -> String {
    let mut end = error.len().min(MAX_ERROR);
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    error[..end].to_owned()
}

impl Store {
    /// Parks `event` for `consumer` with the error that stopped it, and moves the consumer's
    /// cursor past it, in one transaction.
    pub async fn park(
        &self,
        consumer: &str,
        event: &gateway::Event,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let cursor = i64::try_from(event.cursor).unwrap_or(i64::MAX);
        let txn = self.write().await?;
        parked_event::Entity::insert(
            parked_event::Model {
                cursor,
                consumer: consumer.to_owned(),
                kiosk_id: event.kiosk_id.clone(),
                event: event.encode_to_vec(),
                error: bounded(error),
                attempts: 1,
                parked_at: now,
            }
            .into_active_model(),
        )
        .on_conflict(
            OnConflict::column(parked_event::Column::Cursor)
                .update_column(parked_event::Column::Error)
                .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;
        set_cursor(&txn, consumer, cursor).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Up to `limit` parked events with a cursor above `after`, oldest first.
    pub async fn parked(
        &self,
        after: i64,
        limit: u64,
    ) -> Result<Vec<parked_event::Model>, sea_orm::DbErr> {
        parked_event::Entity::find()
            .filter(parked_event::Column::Cursor.gt(after))
            .order_by_asc(parked_event::Column::Cursor)
            .limit(limit)
            .all(&self.db)
            .await
    }

    /// Applies a parked event again; see [`Retried`].
    pub async fn retry_parked(
        &self,
        cursor: i64,
        now: DateTime<Utc>,
    ) -> Result<Retried, StoreError> {
        let Some(row) = parked_event::Entity::find_by_id(cursor)
            .one(&self.db)
            .await?
        else {
            return Ok(Retried::NotFound);
        };
        let event = gateway::Event::decode(row.event.as_slice())
            .map_err(|e| StoreError::Corrupt(format!("parked event {cursor}: {e}")))?;
        let attempt = async {
            let txn = self.write().await?;
            let touched = self.apply_event_in(&txn, &event).await?;
            let removed = parked_event::Entity::delete_by_id(cursor)
                .exec(&txn)
                .await?
                .rows_affected;
            txn.commit().await?;
            Ok::<_, StoreError>((touched, removed))
        };
        match attempt.await {
            Ok((touched, removed)) => {
                if let Some(order_id) = touched {
                    self.announce(&order_id);
                }
                tracing::info!(cursor, kiosk_id = %row.kiosk_id, at = %now, "parked event applied on retry");
                Ok(if removed == 1 {
                    Retried::Applied
                } else {
                    Retried::NotFound
                })
            }
            Err(error) if error.is_transient() => Err(error),
            Err(error) => {
                let text = error.to_string();
                parked_event::Entity::update_many()
                    .col_expr(parked_event::Column::Error, Expr::value(bounded(&text)))
                    .col_expr(
                        parked_event::Column::Attempts,
                        Expr::col(parked_event::Column::Attempts).add(1),
                    )
                    .filter(parked_event::Column::Cursor.eq(cursor))
                    .exec(&self.db)
                    .await?;
                Ok(Retried::StillFailing(text))
            }
        }
    }

    /// Removes a parked event without applying it; false when there was none.
    pub async fn drop_parked(&self, cursor: i64) -> Result<bool, sea_orm::DbErr> {
        let removed = parked_event::Entity::delete_by_id(cursor)
            .exec(&self.db)
            .await?
            .rows_affected;
        Ok(removed == 1)
    }
}
