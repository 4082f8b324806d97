//! The gateway's queries: the command log, the event log, kiosks.
//!
//! Devices: every `kiosk_id` column holds a device's stored form
//! ([`DeviceId::stored`]): a kiosk's id as it always was, or `drive:<item id>` for a drive's
//! own remote link. The `kiosks` table has a row per device that ever opened a link (a
//! drive's with an empty inventory). Only the contract's edge ([`record`], [`wire_device`],
//! event bodies) splits the stored form into `kiosk_id` and `drive_id`.
//!
//! Every state change and the event it causes are one transaction (`db::begin_write`). Event
//! cursors must become visible in cursor order, or a subscriber reading `cursor > n` could
//! pass over an event that commits late with a lower cursor: on Postgres every transaction
//! that appends an event first takes one advisory lock, so event-writing transactions commit
//! one after another in cursor order; SQLite has a single writer anyway.
//!
//! Lock order, so two writers never wait on each other in a cycle (Postgres would break one
//! off with "deadlock detected"): a kiosk message id, then the command row, then the kiosk
//! row, and the event log's lock last — every row a transaction changes is changed before its
//! first event is appended. A command is logged under the event log's lock, but its row is
//! new, so no other writer waits for it.

use chrono::{DateTime, Utc};
use prost::Message;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait,
    IntoActiveModel, QueryFilter, QueryOrder, QuerySelect, SqlErr, Statement,
};
use sneakernet_proto::gateway::v1 as pb;
use sneakernet_runtime::DeviceId;
use sneakernet_runtime::wire::timestamp;
use tokio::sync::watch;

use crate::domain::command::{CommandEvent, CommandState, transition};
use crate::entity::{command, event, event_horizon, kiosk, kiosk_message, refused_message};
use crate::error::GatewayError;

/// Key of the advisory lock that orders event appends on Postgres.
const EVENT_LOG_LOCK: i64 = 0x736e_6576_656e_7473; // "snevents"

/// A command to log.
#[derive(Clone, Debug)]
pub struct NewCommand {
    /// The kiosk or drive.
    pub device: DeviceId,
    /// Who asks (audit name of the caller).
    pub requested_by: String,
    /// The caller's idempotency key.
    pub idempotency_key: String,
    /// The kind's stored name.
    pub kind: &'static str,
    /// What to do.
    pub payload: pb::CommandPayload,
    /// The kiosk must not start it after this.
    pub deadline: DateTime<Utc>,
    /// Whether the caller chose the deadline (SendCommand), so a retry must repeat it; the
    /// shortcuts (ForceEject, RequestInventory) compute it, and a retry with the same key is
    /// the same request whatever the clock says.
    pub deadline_chosen_by_caller: bool,
}

impl NewCommand {
    /// Fingerprint of the parameters an idempotency key must always come with.
    fn request_hash(&self) -> String {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.payload.encode_to_vec());
        if self.deadline_chosen_by_caller {
            hasher.update(&self.deadline.timestamp_micros().to_le_bytes());
        }
        hasher.finalize().to_hex().to_string()
    }
}

/// What logging a command did.
#[derive(Clone, Debug)]
pub enum Logged {
    /// A new command.
    Created(command::Model),
    /// The same request was logged before: this is that command.
    Existing(command::Model),
}

/// A command after an event was applied.
#[derive(Clone, Debug)]
pub struct Applied {
    /// The row after the change.
    pub command: command::Model,
    /// False for a harmless duplicate (nothing written).
    pub changed: bool,
}

/// The gateway's database, plus the in-process signal of the newest event cursor.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    newest_event: watch::Sender<i64>,
}

impl Store {
    /// Wraps an opened, migrated connection.
    pub async fn new(db: DatabaseConnection) -> Result<Self, GatewayError> {
        let last = last_cursor(&db).await?;
        Ok(Self {
            db,
            newest_event: watch::channel(last).0,
        })
    }

    /// Resolves when an event newer than `seen` was appended by this process.
    pub fn watch_events(&self) -> watch::Receiver<i64> {
        self.newest_event.subscribe()
    }

    fn appended(&self, cursor: Option<i64>) {
        if let Some(cursor) = cursor {
            self.newest_event.send_if_modified(|newest| {
                let newer = cursor > *newest;
                if newer {
                    *newest = cursor;
                }
                newer
            });
        }
    }

    /// Logs a command (state QUEUED) and its event, unless the same caller already logged one
    /// for this kiosk under this idempotency key: then that one is returned, or
    /// INVALID_ARGUMENT if the parameters differ.
    pub async fn log_command(
        &self,
        new: NewCommand,
        now: DateTime<Utc>,
    ) -> Result<Logged, GatewayError> {
        let hash = new.request_hash();
        if let Some(existing) = self.by_idempotency_key(&new).await? {
            return same_request(existing, &hash).map(Logged::Existing);
        }
        let row = command::Model {
            seq: 0,
            command_id: uuid::Uuid::now_v7().to_string(),
            kiosk_id: new.device.stored(),
            requested_by: new.requested_by.clone(),
            idempotency_key: new.idempotency_key.clone(),
            request_hash: hash.clone(),
            kind: new.kind.to_owned(),
            payload: new.payload.encode_to_vec(),
            state: CommandState::Queued.as_str().to_owned(),
            attempts: 0,
            deadline: new.deadline,
            created_at: now,
            updated_at: now,
            result: None,
            progress: None,
            late_result: false,
        };
        let txn = sneakernet_runtime::db::begin_write(&self.db).await?;
        // Command seqs, like event cursors, must become visible in seq order: a link delivers
        // "everything after the last seq it sent" (see `undelivered`).
        lock_log(&txn).await?;
        let mut active = row.into_active_model();
        active.seq = sea_orm::ActiveValue::NotSet;
        let inserted = match active.insert(&txn).await {
            Ok(inserted) => inserted,
            Err(error) if matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                // A concurrent request with the same key won the race: answer with its command.
                drop(txn);
                let existing = self
                    .by_idempotency_key(&new)
                    .await?
                    .ok_or(GatewayError::Store(error))?;
                return same_request(existing, &hash).map(Logged::Existing);
            }
            Err(error) => return Err(error.into()),
        };
        let cursor = append_event(&txn, &inserted.kiosk_id, now, state_changed(&inserted)?).await?;
        txn.commit().await?;
        self.appended(Some(cursor));
        Ok(Logged::Created(inserted))
    }

    async fn by_idempotency_key(
        &self,
        new: &NewCommand,
    ) -> Result<Option<command::Model>, GatewayError> {
        Ok(command::Entity::find()
            .filter(command::Column::RequestedBy.eq(&new.requested_by))
            .filter(command::Column::KioskId.eq(new.device.stored()))
            .filter(command::Column::IdempotencyKey.eq(&new.idempotency_key))
            .one(&self.db)
            .await?)
    }

    /// A command by id.
    pub async fn command(&self, command_id: &str) -> Result<Option<command::Model>, GatewayError> {
        Ok(command::Entity::find()
            .filter(command::Column::CommandId.eq(command_id))
            .one(&self.db)
            .await?)
    }

    /// Up to `limit` of the kiosk's commands still to deliver (QUEUED or SENT, deadline not
    /// passed) with a seq above `after_seq`, in log order.
    pub async fn undelivered(
        &self,
        kiosk_id: &str,
        after_seq: i64,
        limit: u64,
        now: DateTime<Utc>,
    ) -> Result<Vec<command::Model>, GatewayError> {
        Ok(command::Entity::find()
            .filter(command::Column::KioskId.eq(kiosk_id))
            .filter(command::Column::Seq.gt(after_seq))
            .filter(
                command::Column::State
                    .is_in([CommandState::Queued.as_str(), CommandState::Sent.as_str()]),
            )
            .filter(command::Column::Deadline.gt(now))
            .order_by_asc(command::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// For each of `kiosk_ids` that has commands still to deliver (QUEUED or SENT, deadline
    /// not passed), the highest seq among them: one query for the whole list, so a replica
    /// polls for all the links it holds at once. Callers keep the list within a few thousand
    /// ids (one bound parameter each).
    pub async fn newest_undelivered(
        &self,
        kiosk_ids: &[&str],
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, i64)>, GatewayError> {
        if kiosk_ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(command::Entity::find()
            .select_only()
            .column(command::Column::KioskId)
            .column_as(command::Column::Seq.max(), "newest")
            .filter(command::Column::KioskId.is_in(kiosk_ids.iter().copied()))
            .filter(
                command::Column::State
                    .is_in([CommandState::Queued.as_str(), CommandState::Sent.as_str()]),
            )
            .filter(command::Column::Deadline.gt(now))
            .group_by(command::Column::KioskId)
            .into_tuple::<(String, i64)>()
            .all(&self.db)
            .await?)
    }

    /// Applies `event` to a command of `kiosk_id` (`None`: any kiosk), with the kiosk's result
    /// when there is one, and appends the state-change event, in one transaction. When
    /// `message` is given (a kiosk outbox message id), it is recorded in the same transaction;
    /// if it was recorded before, nothing happens and `Ok(None)` says "duplicate".
    pub async fn apply(
        &self,
        command_id: &str,
        kiosk_id: Option<&str>,
        event: CommandEvent,
        result: Option<&pb::CommandResult>,
        message: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Option<Applied>, GatewayError> {
        let txn = sneakernet_runtime::db::begin_write(&self.db).await?;
        if let (Some(kiosk), Some(message_id)) = (kiosk_id, message)
            && !record_message(&txn, kiosk, message_id, now).await?
        {
            return Ok(None);
        }

        let mut query = command::Entity::find().filter(command::Column::CommandId.eq(command_id));
        if let Some(kiosk) = kiosk_id {
            query = query.filter(command::Column::KioskId.eq(kiosk));
        }
        // Locked until commit (FOR UPDATE on Postgres; SQLite's write transaction already
        // excludes other writers), so read, transition and write are one step even when the
        // expiry sweeper or another replica races a kiosk's ack.
        let Some(row) = query.lock_exclusive().one(&txn).await? else {
            return Err(GatewayError::CommandNotFound(command_id.to_owned()));
        };
        let from: CommandState = row.state.parse().map_err(|detail| GatewayError::Corrupt {
            what: "command state",
            detail,
        })?;
        let step = transition(from, event)?;
        if !step.changed {
            // Still commit: the message id (if any) is now recorded.
            txn.commit().await?;
            return Ok(Some(Applied {
                command: row,
                changed: false,
            }));
        }
        let mut update = command::Entity::update_many()
            .col_expr(command::Column::State, Expr::value(step.to.as_str()))
            .col_expr(command::Column::UpdatedAt, Expr::value(now))
            .filter(command::Column::CommandId.eq(command_id))
            .filter(command::Column::State.eq(from.as_str()));
        if event == CommandEvent::Send {
            update = update.col_expr(
                command::Column::Attempts,
                Expr::col(command::Column::Attempts).add(1),
            );
        }
        if let Some(result) = result {
            update = update
                .col_expr(command::Column::Result, Expr::value(result.encode_to_vec()))
                .col_expr(command::Column::LateResult, Expr::value(step.late_result));
        }
        if update.exec(&txn).await?.rows_affected != 1 {
            // Someone else moved it between our read and write (another replica): retryable.
            return Err(GatewayError::Store(sea_orm::DbErr::Custom(format!(
                "command {command_id} changed concurrently; retry"
            ))));
        }
        let updated = command::Entity::find()
            .filter(command::Column::CommandId.eq(command_id))
            .one(&txn)
            .await?
            .ok_or_else(|| GatewayError::CommandNotFound(command_id.to_owned()))?;
        // The kiosk row before the event log's lock (see the module docs on lock order).
        let inventory = match result.and_then(|r| r.outcome.as_ref()) {
            Some(pb::command_result::Outcome::RequestInventory(reported)) => {
                let inventory = reported.inventory.clone().unwrap_or_default();
                set_inventory(&txn, &updated.kiosk_id, &inventory, now).await?;
                Some(inventory)
            }
            _ => None,
        };
        let mut cursor =
            append_event(&txn, &updated.kiosk_id, now, state_changed(&updated)?).await?;
        if let Some(inventory) = inventory {
            // The proto promises the reported inventory as an InventoryChanged event too.
            let kind = pb::event::Kind::InventoryChanged(pb::KioskInventory {
                inventory: Some(inventory),
            });
            cursor = append_event(&txn, &updated.kiosk_id, now, kind).await?;
        }
        txn.commit().await?;
        self.appended(Some(cursor));
        Ok(Some(Applied {
            command: updated,
            changed: true,
        }))
    }

    /// Keeps a command's latest progress (not an event: progress is not durable history).
    pub async fn set_progress(
        &self,
        kiosk_id: &str,
        progress: &pb::Progress,
    ) -> Result<bool, GatewayError> {
        let updated = command::Entity::update_many()
            .col_expr(
                command::Column::Progress,
                Expr::value(progress.encode_to_vec()),
            )
            .filter(command::Column::CommandId.eq(&progress.command_id))
            .filter(command::Column::KioskId.eq(kiosk_id))
            .exec(&self.db)
            .await?
            .rows_affected;
        Ok(updated == 1)
    }

    /// Expires up to `limit` commands whose deadline passed unacknowledged; returns them.
    pub async fn expire_due(
        &self,
        now: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<command::Model>, GatewayError> {
        let due = command::Entity::find()
            .filter(
                command::Column::State
                    .is_in([CommandState::Queued.as_str(), CommandState::Sent.as_str()]),
            )
            .filter(command::Column::Deadline.lte(now))
            .order_by_asc(command::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?;
        let mut expired = Vec::new();
        for row in due {
            match self
                .apply(&row.command_id, None, CommandEvent::Expire, None, None, now)
                .await
            {
                Ok(Some(applied)) if applied.changed => expired.push(applied.command),
                Ok(_) => {}
                // Acked or finished meanwhile: not ours to expire any more.
                Err(GatewayError::Illegal(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(expired)
    }

    /// Records an item-returned or inventory message from a kiosk with its event, once per
    /// message id. `Ok(false)`: a duplicate, nothing written.
    pub async fn record_kiosk_event(
        &self,
        kiosk_id: &str,
        message_id: &str,
        kind: pb::event::Kind,
        inventory: Option<pb::Inventory>,
        now: DateTime<Utc>,
    ) -> Result<bool, GatewayError> {
        let txn = sneakernet_runtime::db::begin_write(&self.db).await?;
        if !record_message(&txn, kiosk_id, message_id, now).await? {
            return Ok(false);
        }
        if let Some(inventory) = inventory {
            set_inventory(&txn, kiosk_id, &inventory, now).await?;
        }
        let cursor = append_event(&txn, kiosk_id, now, kind).await?;
        // Tests fail the commit here: everything above rolls back as the transaction drops.
        if let Some(injected) =
            sneakernet_runtime::failpoint::injected_error("gateway::kiosk_event::commit")
        {
            return Err(GatewayError::Store(sea_orm::DbErr::Custom(injected)));
        }
        txn.commit().await?;
        self.appended(Some(cursor));
        Ok(true)
    }

    /// Keeps a refused kiosk message for operators, once per kiosk and message id. Returns
    /// false when it was kept before (a replay).
    pub async fn keep_refused(
        &self,
        kiosk_id: &str,
        message: &pb::OpenRequest,
        refusal: &sneakernet_proto::link_rules::Refusal,
        now: DateTime<Utc>,
    ) -> Result<bool, GatewayError> {
        let inserted = refused_message::Entity::insert(refused_message::ActiveModel {
            id: sea_orm::ActiveValue::NotSet,
            kiosk_id: sea_orm::ActiveValue::Set(kiosk_id.to_owned()),
            message_id: sea_orm::ActiveValue::Set(message.message_id.clone()),
            received_at: sea_orm::ActiveValue::Set(now),
            field: sea_orm::ActiveValue::Set(refusal.field.clone()),
            reason: sea_orm::ActiveValue::Set(refusal.reason.clone()),
            body: sea_orm::ActiveValue::Set(message.encode_to_vec()),
        })
        .on_conflict(
            OnConflict::columns([
                refused_message::Column::KioskId,
                refused_message::Column::MessageId,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(&self.db)
        .await?;
        Ok(inserted == 1)
    }

    /// Up to `limit` refused messages with an id below `before` (newest first), of one kiosk
    /// or all.
    pub async fn refused_messages(
        &self,
        kiosk_id: Option<&str>,
        before: i64,
        limit: u64,
    ) -> Result<Vec<refused_message::Model>, GatewayError> {
        let mut query =
            refused_message::Entity::find().filter(refused_message::Column::Id.lt(before));
        if let Some(kiosk) = kiosk_id {
            query = query.filter(refused_message::Column::KioskId.eq(kiosk));
        }
        Ok(query
            .order_by_desc(refused_message::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// Forgets refused messages received before `before`; returns how many.
    pub async fn forget_refused(&self, before: DateTime<Utc>) -> Result<u64, GatewayError> {
        Ok(refused_message::Entity::delete_many()
            .filter(refused_message::Column::ReceivedAt.lt(before))
            .exec(&self.db)
            .await?
            .rows_affected)
    }

    /// Forgets delivered kiosk message ids received before `before`; returns how many.
    pub async fn forget_kiosk_messages(&self, before: DateTime<Utc>) -> Result<u64, GatewayError> {
        Ok(kiosk_message::Entity::delete_many()
            .filter(kiosk_message::Column::ReceivedAt.lt(before))
            .exec(&self.db)
            .await?
            .rows_affected)
    }

    /// What the gateway knows of a kiosk.
    pub async fn kiosk(&self, kiosk_id: &str) -> Result<Option<kiosk::Model>, GatewayError> {
        Ok(kiosk::Entity::find_by_id(kiosk_id.to_owned())
            .one(&self.db)
            .await?)
    }

    /// A link opened: the device is online with this session (the last open wins). Writes
    /// KioskOnline, and for a kiosk its inventory and an InventoryChanged event (a drive has
    /// no inventory).
    pub async fn device_online(
        &self,
        device: &DeviceId,
        session_id: &str,
        hello: &pb::Hello,
        now: DateTime<Utc>,
    ) -> Result<(), GatewayError> {
        let kiosk_id = device.stored();
        let kiosk_id = kiosk_id.as_str();
        let inventory = hello.inventory.clone().unwrap_or_default();
        let row = kiosk::Model {
            kiosk_id: kiosk_id.to_owned(),
            online: true,
            session_id: session_id.to_owned(),
            agent_version: hello.agent_version.clone(),
            last_seen_at: now,
            inventory: inventory.encode_to_vec(),
            last_finished_command_id: hello.last_finished_command_id.clone(),
        };
        let txn = sneakernet_runtime::db::begin_write(&self.db).await?;
        kiosk::Entity::insert(row.into_active_model())
            .on_conflict(
                OnConflict::column(kiosk::Column::KioskId)
                    .update_columns([
                        kiosk::Column::Online,
                        kiosk::Column::SessionId,
                        kiosk::Column::AgentVersion,
                        kiosk::Column::LastSeenAt,
                        kiosk::Column::Inventory,
                        kiosk::Column::LastFinishedCommandId,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&txn)
            .await?;
        let mut cursor = append_event(
            &txn,
            kiosk_id,
            now,
            pb::event::Kind::KioskOnline(pb::KioskOnline {
                session_id: session_id.to_owned(),
                agent_version: hello.agent_version.clone(),
            }),
        )
        .await?;
        if device.kiosk().is_some() {
            cursor = append_event(
                &txn,
                kiosk_id,
                now,
                pb::event::Kind::InventoryChanged(pb::KioskInventory {
                    inventory: Some(inventory),
                }),
            )
            .await?;
        }
        txn.commit().await?;
        self.appended(Some(cursor));
        Ok(())
    }

    /// The link of `session_id` closed. If it is still the kiosk's current session, the kiosk
    /// is offline and a KioskOffline event is written; a session replaced by a newer one
    /// writes nothing. Returns whether the kiosk went offline.
    pub async fn kiosk_offline(
        &self,
        kiosk_id: &str,
        session_id: &str,
        offline: pb::KioskOffline,
        now: DateTime<Utc>,
    ) -> Result<bool, GatewayError> {
        self.mark_offline(kiosk_id, session_id, None, offline, now)
            .await
    }

    /// The lease of the kiosk's link `session_id` lapsed: marks it offline with its
    /// KioskOffline event, only if it is still online with that session and was last seen
    /// before `seen_before` (a holder that renewed the lease meanwhile keeps it). Returns
    /// whether the kiosk went offline.
    pub async fn lapse_kiosk(
        &self,
        kiosk_id: &str,
        session_id: &str,
        seen_before: DateTime<Utc>,
        offline: pb::KioskOffline,
        now: DateTime<Utc>,
    ) -> Result<bool, GatewayError> {
        self.mark_offline(kiosk_id, session_id, Some(seen_before), offline, now)
            .await
    }

    async fn mark_offline(
        &self,
        kiosk_id: &str,
        session_id: &str,
        seen_before: Option<DateTime<Utc>>,
        offline: pb::KioskOffline,
        now: DateTime<Utc>,
    ) -> Result<bool, GatewayError> {
        let txn = sneakernet_runtime::db::begin_write(&self.db).await?;
        let mut update = kiosk::Entity::update_many()
            .col_expr(kiosk::Column::Online, Expr::value(false))
            .filter(kiosk::Column::KioskId.eq(kiosk_id))
            .filter(kiosk::Column::SessionId.eq(session_id))
            .filter(kiosk::Column::Online.eq(true));
        if let Some(before) = seen_before {
            update = update.filter(kiosk::Column::LastSeenAt.lt(before));
        }
        let went = update.exec(&txn).await?.rows_affected == 1;
        let cursor = if went {
            Some(append_event(&txn, kiosk_id, now, pb::event::Kind::KioskOffline(offline)).await?)
        } else {
            None
        };
        txn.commit().await?;
        self.appended(cursor);
        Ok(went)
    }

    /// Renews the lease of the links one replica holds, `(kiosk, session)` pairs, in one
    /// statement: `last_seen_at = now` where the kiosk is online with that session. Returns
    /// the kiosks renewed; a pair not among them is no longer its kiosk's online link.
    /// Session ids are unique, so matching kiosk and session each against its list is
    /// matching the pairs.
    pub async fn renew_leases(
        &self,
        held: &[(&str, &str)],
        now: DateTime<Utc>,
    ) -> Result<std::collections::HashSet<String>, GatewayError> {
        if held.is_empty() {
            return Ok(std::collections::HashSet::new());
        }
        let statement = sea_orm::sea_query::Query::update()
            .table(kiosk::Entity)
            .value(kiosk::Column::LastSeenAt, now)
            .and_where(kiosk::Column::Online.eq(true))
            .and_where(kiosk::Column::KioskId.is_in(held.iter().map(|(kiosk, _)| *kiosk)))
            .and_where(kiosk::Column::SessionId.is_in(held.iter().map(|(_, session)| *session)))
            .returning_col(kiosk::Column::KioskId)
            .to_owned();
        let rows = self.db.query_all(&statement).await?;
        rows.iter()
            .map(|row| row.try_get::<String>("", "kiosk_id").map_err(Into::into))
            .collect()
    }

    /// Up to `limit` kiosks shown online, with an id above `after`, whose lease lapsed (last
    /// seen before `seen_before`), by id: (kiosk, session, last seen).
    pub async fn lapsed_kiosks(
        &self,
        seen_before: DateTime<Utc>,
        after: &str,
        limit: u64,
    ) -> Result<Vec<(String, String, DateTime<Utc>)>, GatewayError> {
        Ok(kiosk::Entity::find()
            .select_only()
            .columns([
                kiosk::Column::KioskId,
                kiosk::Column::SessionId,
                kiosk::Column::LastSeenAt,
            ])
            .filter(kiosk::Column::Online.eq(true))
            .filter(kiosk::Column::LastSeenAt.lt(seen_before))
            .filter(kiosk::Column::KioskId.gt(after))
            .order_by_asc(kiosk::Column::KioskId)
            .limit(limit)
            .into_tuple()
            .all(&self.db)
            .await?)
    }

    /// Up to `limit` events after `cursor`, in cursor order.
    pub async fn events_after(
        &self,
        cursor: i64,
        limit: u64,
    ) -> Result<Vec<event::Model>, GatewayError> {
        Ok(event::Entity::find()
            .filter(event::Column::Cursor.gt(cursor))
            .order_by_asc(event::Column::Cursor)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// The newest cursor in the log (0 when empty).
    pub async fn last_cursor(&self) -> Result<i64, GatewayError> {
        last_cursor(&self.db).await
    }
}

// Event log retention: the prune and the horizon Subscribe checks cursors against.
impl Store {
    /// Deletes, in one short transaction, the oldest events written before `before`: at most
    /// `limit`, always a prefix of the log in cursor order (it stops at the first newer event,
    /// so a row written late by a replica with a slow clock is never skipped over), never the
    /// newest event (the log's end must stay known: subscribers' cursors are checked against
    /// it). Raises the horizon to the newest cursor deleted in the same transaction. Returns
    /// how many were deleted; fewer than `limit` means nothing more is due now.
    pub async fn prune_events(
        &self,
        before: DateTime<Utc>,
        limit: u64,
    ) -> Result<u64, GatewayError> {
        let txn = sneakernet_runtime::db::begin_write(&self.db).await?;
        let horizon = event_horizon(&txn).await?;
        let newest = last_cursor(&txn).await?;
        let oldest: Vec<(i64, DateTime<Utc>)> = event::Entity::find()
            .select_only()
            .column(event::Column::Cursor)
            .column(event::Column::OccurredAt)
            .filter(event::Column::Cursor.gt(horizon))
            .filter(event::Column::Cursor.lt(newest))
            .order_by_asc(event::Column::Cursor)
            .limit(limit)
            .into_tuple()
            .all(&txn)
            .await?;
        let Some(through) = oldest
            .iter()
            .take_while(|(_, at)| *at < before)
            .map(|(cursor, _)| *cursor)
            .last()
        else {
            return Ok(0);
        };
        let deleted = event::Entity::delete_many()
            .filter(event::Column::Cursor.gt(horizon))
            .filter(event::Column::Cursor.lte(through))
            .exec(&txn)
            .await?
            .rows_affected;
        // Conditional: of two replicas pruning at once the horizon only moves forward.
        event_horizon::Entity::update_many()
            .col_expr(event_horizon::Column::PrunedThrough, Expr::value(through))
            .filter(event_horizon::Column::Id.eq(1))
            .filter(event_horizon::Column::PrunedThrough.lt(through))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(deleted)
    }

    /// The newest cursor deleted by retention (0 if none was): a subscriber resuming after a
    /// cursor below it would miss events, one at or above it misses nothing.
    pub async fn event_horizon(&self) -> Result<i64, GatewayError> {
        event_horizon(&self.db).await
    }
}

async fn event_horizon<C: ConnectionTrait>(db: &C) -> Result<i64, GatewayError> {
    Ok(event_horizon::Entity::find_by_id(1)
        .one(db)
        .await?
        .map_or(0, |row| row.pruned_through))
}

async fn last_cursor<C: ConnectionTrait>(db: &C) -> Result<i64, GatewayError> {
    Ok(event::Entity::find()
        .order_by_desc(event::Column::Cursor)
        .one(db)
        .await?
        .map_or(0, |e| e.cursor))
}

fn same_request(existing: command::Model, hash: &str) -> Result<command::Model, GatewayError> {
    if existing.request_hash == hash {
        Ok(existing)
    } else {
        Err(sneakernet_runtime::FieldViolation::new(
            "idempotency_key",
            "was used before with another payload or deadline",
        )
        .into())
    }
}

/// Records a kiosk outbox message id; false if it was recorded before.
async fn record_message<C: ConnectionTrait>(
    db: &C,
    kiosk_id: &str,
    message_id: &str,
    now: DateTime<Utc>,
) -> Result<bool, GatewayError> {
    let inserted = kiosk_message::Entity::insert(
        kiosk_message::Model {
            kiosk_id: kiosk_id.to_owned(),
            message_id: message_id.to_owned(),
            received_at: now,
        }
        .into_active_model(),
    )
    .on_conflict(
        OnConflict::columns([
            kiosk_message::Column::KioskId,
            kiosk_message::Column::MessageId,
        ])
        .do_nothing()
        .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(inserted == 1)
}

fn state_changed(row: &command::Model) -> Result<pb::event::Kind, GatewayError> {
    Ok(pb::event::Kind::CommandStateChanged(
        pb::CommandStateChanged {
            command: Some(record(row)?),
        },
    ))
}

/// The stored name of an event kind, for filtering.
pub fn event_kind_name(kind: &pb::event::Kind) -> &'static str {
    match kind {
        pb::event::Kind::CommandStateChanged(_) => "command_state_changed",
        pb::event::Kind::ItemReturned(_) => "item_returned",
        pb::event::Kind::InventoryChanged(_) => "inventory_changed",
        pb::event::Kind::KioskOnline(_) => "kiosk_online",
        pb::event::Kind::KioskOffline(_) => "kiosk_offline",
    }
}

/// Orders log writers on Postgres (see the module docs); a no-op on SQLite, whose write
/// transactions are already one at a time. Reentrant within a transaction.
async fn lock_log<C: ConnectionTrait>(txn: &C) -> Result<(), GatewayError> {
    if txn.get_database_backend() == DbBackend::Postgres {
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock($1)",
            [EVENT_LOG_LOCK.into()],
        ))
        .await?;
    }
    Ok(())
}

async fn set_inventory<C: ConnectionTrait>(
    txn: &C,
    kiosk_id: &str,
    inventory: &pb::Inventory,
    now: DateTime<Utc>,
) -> Result<(), GatewayError> {
    kiosk::Entity::update_many()
        .col_expr(
            kiosk::Column::Inventory,
            Expr::value(inventory.encode_to_vec()),
        )
        .col_expr(kiosk::Column::LastSeenAt, Expr::value(now))
        .filter(kiosk::Column::KioskId.eq(kiosk_id))
        .exec(txn)
        .await?;
    Ok(())
}

/// Appends one event inside `txn`; returns its cursor.
async fn append_event<C: ConnectionTrait>(
    txn: &C,
    kiosk_id: &str,
    now: DateTime<Utc>,
    kind: pb::event::Kind,
) -> Result<i64, GatewayError> {
    lock_log(txn).await?;
    let name = event_kind_name(&kind);
    let (wire_kiosk, drive_id) = wire_device(kiosk_id);
    let body = pb::Event {
        cursor: 0,
        kiosk_id: wire_kiosk,
        occurred_at: Some(timestamp(now)),
        kind: Some(kind),
        drive_id,
    };
    let mut active = event::Model {
        cursor: 0,
        kiosk_id: kiosk_id.to_owned(),
        kind: name.to_owned(),
        occurred_at: now,
        body: body.encode_to_vec(),
    }
    .into_active_model();
    active.cursor = sea_orm::ActiveValue::NotSet;
    Ok(active.insert(txn).await?.cursor)
}

/// A device's stored form as the contract's pair (`kiosk_id`, `drive_id`). A stored form
/// that is neither (none is written) shows as a kiosk id, as it would have before drives.
pub fn wire_device(stored: &str) -> (String, String) {
    DeviceId::parse_stored(stored).map_or_else(
        |_| (stored.to_owned(), String::new()),
        |device| device.wire_ids(),
    )
}

/// A stored command as the API shows it.
pub fn record(row: &command::Model) -> Result<pb::CommandRecord, GatewayError> {
    let corrupt = |what: &'static str| {
        move |e: prost::DecodeError| GatewayError::Corrupt {
            what,
            detail: e.to_string(),
        }
    };
    let state: CommandState = row.state.parse().map_err(|detail| GatewayError::Corrupt {
        what: "command state",
        detail,
    })?;
    let (kiosk_id, drive_id) = wire_device(&row.kiosk_id);
    Ok(pb::CommandRecord {
        command_id: row.command_id.clone(),
        kiosk_id,
        drive_id,
        payload: Some(
            pb::CommandPayload::decode(row.payload.as_slice())
                .map_err(corrupt("command payload"))?,
        ),
        state: proto_state(state).into(),
        result: row
            .result
            .as_deref()
            .map(pb::CommandResult::decode)
            .transpose()
            .map_err(corrupt("command result"))?,
        progress: row
            .progress
            .as_deref()
            .map(pb::Progress::decode)
            .transpose()
            .map_err(corrupt("command progress"))?,
        created_at: Some(timestamp(row.created_at)),
        updated_at: Some(timestamp(row.updated_at)),
        deadline: Some(timestamp(row.deadline)),
        attempts: u32::try_from(row.attempts).unwrap_or(0),
        idempotency_key: row.idempotency_key.clone(),
        requested_by: row.requested_by.clone(),
        late_result: row.late_result,
    })
}

/// The protobuf form of a state.
pub fn proto_state(state: CommandState) -> pb::CommandState {
    match state {
        CommandState::Queued => pb::CommandState::Queued,
        CommandState::Sent => pb::CommandState::Sent,
        CommandState::Acked => pb::CommandState::Acked,
        CommandState::Succeeded => pb::CommandState::Succeeded,
        CommandState::Failed => pb::CommandState::Failed,
        CommandState::Expired => pb::CommandState::Expired,
    }
}

/// The command as it goes on the link.
pub fn wire_command(row: &command::Model) -> Result<pb::Command, GatewayError> {
    Ok(pb::Command {
        command_id: row.command_id.clone(),
        deadline: Some(timestamp(row.deadline)),
        payload: Some(
            pb::CommandPayload::decode(row.payload.as_slice()).map_err(|e| {
                GatewayError::Corrupt {
                    what: "command payload",
                    detail: e.to_string(),
                }
            })?,
        ),
        attempt: u32::try_from(row.attempts).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store(dir: &std::path::Path) -> Store {
        let config = sneakernet_runtime::Config {
            data_dir: dir.to_owned(),
            ..Default::default()
        };
        let db = sneakernet_runtime::db::open_and_migrate::<crate::migration::Migrator>(
            &config, "gateway",
        )
        .await
        .expect("gateway db");
        Store::new(db).await.expect("store")
    }

    fn returned(item: &str) -> pb::event::Kind {
        pb::event::Kind::ItemReturned(pb::ItemReturned {
            bay_id: "A1".into(),
            item: Some(sneakernet_proto::common::v1::Item {
                item_id: item.into(),
                ..Default::default()
            }),
            returned_at: None,
        })
    }

    #[tokio::test]
    async fn message_ids_deduplicate_until_retention_forgets_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path()).await;
        let now = Utc::now();
        assert!(
            store
                .record_kiosk_event("K-1", "m-1", returned("D-1"), None, now)
                .await
                .unwrap()
        );
        assert!(
            !store
                .record_kiosk_event("K-1", "m-1", returned("D-1"), None, now)
                .await
                .unwrap(),
            "a replay is a duplicate"
        );
        assert_eq!(
            store
                .forget_kiosk_messages(now - chrono::Duration::days(1))
                .await
                .unwrap(),
            0,
            "young ids are kept"
        );
        assert_eq!(
            store
                .forget_kiosk_messages(now + chrono::Duration::seconds(1))
                .await
                .unwrap(),
            1
        );
        assert!(
            store
                .record_kiosk_event("K-1", "m-1", returned("D-1"), None, now)
                .await
                .unwrap(),
            "forgotten ids count as new"
        );
    }

    /// Retention deletes a prefix of the log in bounded batches, raises the horizon with it,
    /// keeps recent events, stops at the first recent one (a late row with an old time behind
    /// it stays), and never deletes the newest event.
    async fn retention_prunes_old_events_in_batches(store: &Store, backend: &str) {
        let now = Utc::now();
        let old = now - chrono::Duration::days(40);
        let mut n = 0;
        let mut write = |at| {
            n += 1;
            let id = format!("m-{n}");
            async move {
                store
                    .record_kiosk_event("K-1", &id, returned("D-1"), None, at)
                    .await
                    .unwrap()
            }
        };
        for _ in 0..7 {
            assert!(write(old).await);
        }
        for at in [now, old, now] {
            assert!(write(at).await);
        }
        let all = store.events_after(0, 100).await.unwrap();
        assert_eq!(all.len(), 10, "{backend}");
        let cutoff = now - chrono::Duration::days(30);
        let batches = [
            store.prune_events(cutoff, 3).await.unwrap(),
            store.prune_events(cutoff, 3).await.unwrap(),
            store.prune_events(cutoff, 3).await.unwrap(),
            store.prune_events(cutoff, 3).await.unwrap(),
        ];
        assert_eq!(
            batches,
            [3, 3, 1, 0],
            "{backend}: bounded batches, then done"
        );
        assert_eq!(
            store.event_horizon().await.unwrap(),
            all[6].cursor,
            "{backend}: the horizon is the newest cursor deleted"
        );
        let kept: Vec<i64> = store
            .events_after(0, 100)
            .await
            .unwrap()
            .iter()
            .map(|e| e.cursor)
            .collect();
        let expected: Vec<i64> = all[7..].iter().map(|e| e.cursor).collect();
        assert_eq!(
            kept, expected,
            "{backend}: recent events and what follows are kept"
        );

        // Everything is past retention now, except that the log's end is always kept.
        let later = now + chrono::Duration::days(1);
        assert_eq!(
            store.prune_events(later, 100).await.unwrap(),
            2,
            "{backend}"
        );
        let kept = store.events_after(0, 100).await.unwrap();
        assert_eq!(kept.len(), 1, "{backend}");
        assert_eq!(kept[0].cursor, all[9].cursor, "{backend}: the newest stays");
        assert_eq!(store.last_cursor().await.unwrap(), all[9].cursor);
        assert_eq!(store.event_horizon().await.unwrap(), all[8].cursor);
        assert_eq!(
            store.prune_events(later, 100).await.unwrap(),
            0,
            "{backend}"
        );
    }

    #[tokio::test]
    async fn events_past_retention_are_pruned_in_batches_and_recent_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        retention_prunes_old_events_in_batches(&store(dir.path()).await, "sqlite").await;
        if let Some((store, _dir)) = postgres_store().await {
            retention_prunes_old_events_in_batches(&store, "postgres").await;
        }
    }

    /// A store on the Postgres backend, if this run has one (a loud skip otherwise).
    async fn postgres_store() -> Option<(Store, tempfile::TempDir)> {
        let backend = sneakernet_runtime::testing::backends()
            .into_iter()
            .find(|b| matches!(b, sneakernet_runtime::testing::Backend::Postgres(_)))?;
        let dir = tempfile::tempdir().unwrap();
        let mut config = sneakernet_runtime::Config {
            data_dir: dir.path().to_owned(),
            ..Default::default()
        };
        backend.configure(&mut config);
        let db = sneakernet_runtime::db::open_and_migrate::<crate::migration::Migrator>(
            &config, "gateway",
        )
        .await
        .expect("gateway db");
        Some((Store::new(db).await.expect("store"), dir))
    }

    /// The Postgres backend process of `db`'s connection.
    async fn pid<C: ConnectionTrait>(db: &C) -> i32 {
        let row = db
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT pg_backend_pid() AS pid",
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get("", "pid").unwrap()
    }

    /// How many Postgres sessions wait for a lock `holder` holds.
    async fn blocked_by(db: &DatabaseConnection, holder: i32) -> i64 {
        let row = db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT count(*) AS n FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                [holder.into()],
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get("", "n").unwrap()
    }

    #[tokio::test]
    async fn an_inventory_result_takes_the_kiosk_row_before_the_event_log_so_a_kiosk_coming_online_never_deadlocks()
     {
        let Some((store, _dir)) = postgres_store().await else {
            return;
        };
        let now = Utc::now();
        let kiosk = DeviceId::Kiosk(sneakernet_runtime::KioskId::parse("K-1").unwrap());
        let hello = pb::Hello {
            agent_version: "test".into(),
            inventory: Some(pb::Inventory::default()),
            last_finished_command_id: String::new(),
        };
        store
            .device_online(&kiosk, "s-1", &hello, now)
            .await
            .unwrap();
        let payload = pb::CommandPayload {
            kind: Some(pb::command_payload::Kind::RequestInventory(
                pb::RequestInventoryCommand {},
            )),
        };
        let Logged::Created(command) = store
            .log_command(
                NewCommand {
                    device: kiosk.clone(),
                    requested_by: "test".into(),
                    idempotency_key: "k".into(),
                    kind: crate::commands::request_inventory::KIND,
                    payload,
                    deadline: now + chrono::Duration::minutes(5),
                    deadline_chosen_by_caller: false,
                },
                now,
            )
            .await
            .unwrap()
        else {
            panic!("a new command");
        };
        for event in [CommandEvent::Send, CommandEvent::Ack] {
            store
                .apply(&command.command_id, Some("K-1"), event, None, None, now)
                .await
                .unwrap();
        }

        // A link opening for K-1 (as device_online does) holds the kiosk row ...
        let txn = sneakernet_runtime::db::begin_write(&store.db)
            .await
            .unwrap();
        kiosk::Entity::update_many()
            .col_expr(kiosk::Column::SessionId, Expr::value("s-2"))
            .filter(kiosk::Column::KioskId.eq("K-1"))
            .exec(&txn)
            .await
            .unwrap();
        let holder = pid(&txn).await;
        // ... while the kiosk's inventory result is applied: it must wait for the kiosk row.
        let result = pb::CommandResult {
            command_id: command.command_id.clone(),
            outcome: Some(pb::command_result::Outcome::RequestInventory(
                pb::RequestInventoryResult {
                    inventory: Some(pb::Inventory::default()),
                },
            )),
            finished_at: None,
        };
        let applying = {
            let store = store.clone();
            let command_id = command.command_id.clone();
            tokio::spawn(async move {
                store
                    .apply(
                        &command_id,
                        Some("K-1"),
                        CommandEvent::Succeed,
                        Some(&result),
                        Some("m-1"),
                        Utc::now(),
                    )
                    .await
            })
        };
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while blocked_by(&store.db, holder).await == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the result never waited for the kiosk row"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // The link now appends its KioskOnline (the event log's lock) and commits: neither
        // side is broken off as a deadlock.
        append_event(
            &txn,
            "K-1",
            now,
            pb::event::Kind::KioskOnline(pb::KioskOnline {
                session_id: "s-2".into(),
                agent_version: "test".into(),
            }),
        )
        .await
        .expect("the link's event is appended, not broken off as a deadlock");
        txn.commit().await.unwrap();
        let applied = applying
            .await
            .unwrap()
            .expect("the result is applied after the link's commit")
            .expect("not a duplicate");
        assert_eq!(applied.command.state, CommandState::Succeeded.as_str());
    }
}
