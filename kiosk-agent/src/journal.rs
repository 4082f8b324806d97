//! The kiosk's durable journal: every command it received with its state and result, and the
//! outbox of messages to the gateway that wait for a Receipt. One SQLite file,
//! `data_dir/journal.db`, in WAL mode with `synchronous = FULL`: a kiosk may lose power, and a
//! commit that returned must survive it.
//!
//! Guarantees:
//! - A command id is journaled once; its state only moves `received -> executing -> done`
//!   (or `received -> done`), by conditional updates, never backwards. [`Journal::start`]
//!   takes a command out of `received` once: a second start (another worker, another process)
//!   is refused. Only recovery re-marks an interrupted `executing` command, explicitly, with
//!   [`Journal::resume`].
//! - The choice a lend made (bay, item, and the item as it will leave) is journaled as
//!   `executing` before any hardware is touched, so a crash can be settled on restart.
//! - A command's result and the outbox message carrying it are written in one transaction:
//!   there is never a `done` command whose result is not either in the outbox or already
//!   receipted by the gateway.
//! - Outbox messages have strictly increasing `seq` in commit order, never reused (the counter
//!   survives deleting rows), so "send everything after seq N" misses nothing.
//! - A message queued under a caller's id ([`Journal::enqueue_once`]) is in the outbox at most
//!   once: queuing it again while it waits is a no-op, so a step repeated after a crash never
//!   doubles it (and once receipted, a repeat carries the same id: the gateway answers
//!   DUPLICATE).

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prost::Message;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectOptions, Database, DatabaseConnection,
    DatabaseTransaction, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, QuerySelect, Set,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use sneakernet_proto::gateway::v1 as pb;

/// The journal's file, under `data_dir`.
pub const JOURNAL_FILE: &str = "journal.db";

/// Why the journal could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The database refused or failed.
    #[error("journal database: {0}")]
    Db(#[from] sea_orm::DbErr),
    /// A stored message does not decode (the file was damaged or written by another program).
    #[error("journal holds an undecodable {what}: {reason}")]
    Corrupt {
        /// Which stored value.
        what: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
    /// The journal file or its directory cannot be created.
    #[error("cannot open the journal {file}: {reason}")]
    Open {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
}

/// Where a journaled command is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandState {
    /// Journaled (and acknowledged); not started.
    Received,
    /// Started: hardware may have been touched. Settled by recovery after a crash.
    Executing,
    /// Finished; the result is stored.
    Done,
}

impl CommandState {
    fn as_str(self) -> &'static str {
        match self {
            CommandState::Received => "received",
            CommandState::Executing => "executing",
            CommandState::Done => "done",
        }
    }

    fn parse(text: &str) -> Result<Self, JournalError> {
        match text {
            "received" => Ok(CommandState::Received),
            "executing" => Ok(CommandState::Executing),
            "done" => Ok(CommandState::Done),
            other => Err(JournalError::Corrupt {
                what: "command state",
                reason: format!("{other:?}"),
            }),
        }
    }
}

/// What a lend (or forced eject) chose, journaled before touching hardware.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    /// The bay to open.
    pub bay_id: String,
    /// The item in it; `None` for a forced eject of an empty bay.
    pub item_id: Option<String>,
    /// The item as it will leave (write protection applied), for the result.
    pub item: Option<sneakernet_proto::common::v1::Item>,
}

/// A journaled command.
#[derive(Clone, Debug, PartialEq)]
pub struct JournaledCommand {
    /// Its id.
    pub command_id: String,
    /// Its payload as received (`None` when it had none).
    pub payload: Option<pb::CommandPayload>,
    /// Its deadline (`None` when it had none or an invalid one).
    pub deadline: Option<DateTime<Utc>>,
    /// Where it is.
    pub state: CommandState,
    /// What it chose, once executing.
    pub choice: Option<Choice>,
    /// Its result, once done.
    pub result: Option<pb::CommandResult>,
}

/// What [`Journal::receive`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// First time: journaled as received.
    New,
    /// Seen before and not finished (queued or running).
    InProgress,
    /// Seen before and finished: its result is (again) in the outbox.
    Done,
}

/// One message waiting in the outbox.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxMessage {
    /// Its position; strictly increasing in commit order.
    pub seq: i64,
    /// The message, its `message_id` set.
    pub request: pb::OpenRequest,
}

/// The journal. Cheap to clone (a connection pool).
#[derive(Clone, Debug)]
pub struct Journal {
    db: DatabaseConnection,
}

impl Journal {
    /// Opens (creating if missing) `data_dir/journal.db` and applies its migrations.
    pub async fn open(data_dir: &Path) -> Result<Self, JournalError> {
        let file = data_dir.join(JOURNAL_FILE);
        let open_error = |reason: String| JournalError::Open {
            file: file.display().to_string(),
            reason,
        };
        tokio::fs::create_dir_all(data_dir)
            .await
            .map_err(|e| open_error(e.to_string()))?;
        let mut options = ConnectOptions::new("sqlite::memory:");
        let filename = file.clone();
        options
            .max_connections(4)
            .min_connections(1)
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(30))
            .sqlx_logging(false)
            .map_sqlx_sqlite_opts(move |_| {
                SqliteConnectOptions::new()
                    .filename(&filename)
                    .create_if_missing(true)
                    // WAL: readers never block the writer. FULL: every commit is fsynced, so a
                    // power cut loses no committed journal entry (NORMAL could lose the last).
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(10))
            });
        let db = Database::connect(options)
            .await
            .map_err(|e| open_error(e.to_string()))?;
        migration::Migrator::up(&db, None)
            .await
            .map_err(|e| open_error(format!("migration: {e}")))?;
        Ok(Self { db })
    }

    /// Closes the pool (pending writes are already committed).
    pub async fn close(self) {
        if let Err(error) = self.db.close().await {
            tracing::warn!(%error, "closing the journal failed");
        }
    }

    async fn begin_write(&self) -> Result<DatabaseTransaction, JournalError> {
        Ok(self
            .db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            })
            .await?)
    }

    /// Journals command `command_id` as received unless it is known; says what was found.
    /// For a command already done, makes sure its result is in the outbox (adding a message
    /// with a fresh id when the earlier one was already receipted), in the same transaction.
    pub async fn receive(
        &self,
        command_id: &str,
        payload: Option<&pb::CommandPayload>,
        deadline: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Arrival, JournalError> {
        let txn = self.begin_write().await?;
        if let Some(row) = command_row::Entity::find_by_id(command_id.to_owned())
            .one(&txn)
            .await?
        {
            let arrival = match CommandState::parse(&row.state)? {
                CommandState::Done => {
                    let queued = outbox_row::Entity::find()
                        .filter(outbox_row::Column::CommandId.eq(command_id))
                        .one(&txn)
                        .await?
                        .is_some();
                    if !queued {
                        let result =
                            decode_result(row.result.as_deref())?.ok_or(JournalError::Corrupt {
                                what: "result",
                                reason: "a done command without a result".into(),
                            })?;
                        push_outbox(
                            &txn,
                            None,
                            Some(command_id),
                            pb::open_request::Body::Result(result),
                            now,
                        )
                        .await?;
                    }
                    Arrival::Done
                }
                CommandState::Received | CommandState::Executing => Arrival::InProgress,
            };
            txn.commit().await?;
            return Ok(arrival);
        }
        let seq = next_counter(&txn, "command").await?;
        command_row::ActiveModel {
            command_id: Set(command_id.to_owned()),
            seq: Set(seq),
            payload: Set(payload.map(Message::encode_to_vec)),
            deadline: Set(deadline),
            state: Set(CommandState::Received.as_str().to_owned()),
            chosen_bay: Set(None),
            chosen_item: Set(None),
            chosen_item_snapshot: Set(None),
            result: Set(None),
            received_at: Set(now),
            finished_at: Set(None),
            finished_seq: Set(None),
        }
        .insert(&txn)
        .await?;
        txn.commit().await?;
        Ok(Arrival::New)
    }

    /// The command, if journaled.
    pub async fn command(
        &self,
        command_id: &str,
    ) -> Result<Option<JournaledCommand>, JournalError> {
        command_row::Entity::find_by_id(command_id.to_owned())
            .one(&self.db)
            .await?
            .map(JournaledCommand::try_from)
            .transpose()
    }

    /// The oldest command received and not started.
    pub async fn next_received(&self) -> Result<Option<JournaledCommand>, JournalError> {
        command_row::Entity::find()
            .filter(command_row::Column::State.eq(CommandState::Received.as_str()))
            .order_by_asc(command_row::Column::Seq)
            .one(&self.db)
            .await?
            .map(JournaledCommand::try_from)
            .transpose()
    }

    /// Every command that was started and not finished (after a crash), oldest first.
    pub async fn executing(&self) -> Result<Vec<JournaledCommand>, JournalError> {
        command_row::Entity::find()
            .filter(command_row::Column::State.eq(CommandState::Executing.as_str()))
            .order_by_asc(command_row::Column::Seq)
            .all(&self.db)
            .await?
            .into_iter()
            .map(JournaledCommand::try_from)
            .collect()
    }

    /// Marks a `received` command executing with its choice. Returns false when it is not
    /// `received`: already started (by another worker, or before a crash: recovery settles
    /// it) or done. On false, do not touch hardware.
    pub async fn start(
        &self,
        command_id: &str,
        choice: Option<&Choice>,
    ) -> Result<bool, JournalError> {
        self.mark_executing(command_id, choice, CommandState::Received)
            .await
    }

    /// Recovery only: re-marks a command left `executing` by a crash (or a bay that never
    /// answered) as executing again, with `choice`, before re-running it. Returns false when it
    /// is not `executing`.
    pub async fn resume(
        &self,
        command_id: &str,
        choice: Option<&Choice>,
    ) -> Result<bool, JournalError> {
        self.mark_executing(command_id, choice, CommandState::Executing)
            .await
    }

    async fn mark_executing(
        &self,
        command_id: &str,
        choice: Option<&Choice>,
        from: CommandState,
    ) -> Result<bool, JournalError> {
        let txn = self.begin_write().await?;
        let updated = command_row::Entity::update_many()
            .col_expr(
                command_row::Column::State,
                Expr::value(CommandState::Executing.as_str()),
            )
            .col_expr(
                command_row::Column::ChosenBay,
                Expr::value(choice.map(|c| c.bay_id.clone())),
            )
            .col_expr(
                command_row::Column::ChosenItem,
                Expr::value(choice.and_then(|c| c.item_id.clone())),
            )
            .col_expr(
                command_row::Column::ChosenItemSnapshot,
                Expr::value(choice.and_then(|c| c.item.as_ref().map(Message::encode_to_vec))),
            )
            .filter(command_row::Column::CommandId.eq(command_id))
            .filter(command_row::Column::State.eq(from.as_str()))
            .exec(&txn)
            .await?
            .rows_affected;
        txn.commit().await?;
        Ok(updated == 1)
    }

    /// Marks the command done with `result` and puts the result in the outbox, in one
    /// transaction. Returns false (and writes nothing) when it was already done.
    pub async fn finish(
        &self,
        result: &pb::CommandResult,
        now: DateTime<Utc>,
    ) -> Result<bool, JournalError> {
        let command_id = result.command_id.as_str();
        let txn = self.begin_write().await?;
        let finished_seq = next_counter(&txn, "finished").await?;
        let updated = command_row::Entity::update_many()
            .col_expr(
                command_row::Column::State,
                Expr::value(CommandState::Done.as_str()),
            )
            .col_expr(
                command_row::Column::Result,
                Expr::value(result.encode_to_vec()),
            )
            .col_expr(command_row::Column::FinishedAt, Expr::value(now))
            .col_expr(command_row::Column::FinishedSeq, Expr::value(finished_seq))
            .filter(command_row::Column::CommandId.eq(command_id))
            .filter(command_row::Column::State.ne(CommandState::Done.as_str()))
            .exec(&txn)
            .await?
            .rows_affected;
        if updated != 1 {
            return Ok(false); // dropping the transaction rolls it back
        }
        push_outbox(
            &txn,
            None,
            Some(command_id),
            pb::open_request::Body::Result(result.clone()),
            now,
        )
        .await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Puts a message that is not a command result (ItemReturned, InventoryChanged) in the
    /// outbox; returns its message id.
    pub async fn enqueue(
        &self,
        body: pb::open_request::Body,
        now: DateTime<Utc>,
    ) -> Result<String, JournalError> {
        let txn = self.begin_write().await?;
        let message_id = push_outbox(&txn, None, None, body, now).await?;
        txn.commit().await?;
        Ok(message_id)
    }

    /// Puts a message that is not a command result in the outbox under `message_id` (a UUID
    /// the caller keeps durably, for example a bay's insertion id), unless a message with that
    /// id is already there. Returns whether it was added. Once this returned, the message is
    /// durable: the caller may forget its own copy.
    pub async fn enqueue_once(
        &self,
        message_id: &str,
        body: pb::open_request::Body,
        now: DateTime<Utc>,
    ) -> Result<bool, JournalError> {
        let txn = self.begin_write().await?;
        let present = outbox_row::Entity::find_by_id(message_id.to_owned())
            .one(&txn)
            .await?
            .is_some();
        if present {
            return Ok(false); // dropping the transaction rolls it back
        }
        push_outbox(&txn, Some(message_id), None, body, now).await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Up to `limit` outbox messages with `seq` greater than `after`, in seq order.
    pub async fn outbox_after(
        &self,
        after: i64,
        limit: u64,
    ) -> Result<Vec<OutboxMessage>, JournalError> {
        outbox_row::Entity::find()
            .filter(outbox_row::Column::Seq.gt(after))
            .order_by_asc(outbox_row::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| {
                let request = pb::OpenRequest::decode(row.body.as_slice()).map_err(|e| {
                    JournalError::Corrupt {
                        what: "outbox message",
                        reason: e.to_string(),
                    }
                })?;
                Ok(OutboxMessage {
                    seq: row.seq,
                    request,
                })
            })
            .collect()
    }

    /// Drops the outbox message the gateway receipted; false when it was not there.
    pub async fn remove_outbox(&self, message_id: &str) -> Result<bool, JournalError> {
        let deleted = outbox_row::Entity::delete_by_id(message_id.to_owned())
            .exec(&self.db)
            .await?
            .rows_affected;
        Ok(deleted == 1)
    }

    /// How many messages wait in the outbox.
    pub async fn outbox_len(&self) -> Result<u64, JournalError> {
        use sea_orm::PaginatorTrait;
        Ok(outbox_row::Entity::find().count(&self.db).await?)
    }

    /// The command finished last, for Hello; `None` when none has finished.
    pub async fn last_finished_command_id(&self) -> Result<Option<String>, JournalError> {
        Ok(command_row::Entity::find()
            .filter(command_row::Column::State.eq(CommandState::Done.as_str()))
            .order_by_desc(command_row::Column::FinishedSeq)
            .one(&self.db)
            .await?
            .map(|row| row.command_id))
    }
}

fn decode_result(bytes: Option<&[u8]>) -> Result<Option<pb::CommandResult>, JournalError> {
    bytes
        .map(|b| {
            pb::CommandResult::decode(b).map_err(|e| JournalError::Corrupt {
                what: "result",
                reason: e.to_string(),
            })
        })
        .transpose()
}

impl TryFrom<command_row::Model> for JournaledCommand {
    type Error = JournalError;

    fn try_from(row: command_row::Model) -> Result<Self, JournalError> {
        let payload = row
            .payload
            .as_deref()
            .map(|b| {
                pb::CommandPayload::decode(b).map_err(|e| JournalError::Corrupt {
                    what: "payload",
                    reason: e.to_string(),
                })
            })
            .transpose()?;
        let item = row
            .chosen_item_snapshot
            .as_deref()
            .map(|b| {
                sneakernet_proto::common::v1::Item::decode(b).map_err(|e| JournalError::Corrupt {
                    what: "chosen item",
                    reason: e.to_string(),
                })
            })
            .transpose()?;
        let choice = row.chosen_bay.map(|bay_id| Choice {
            bay_id,
            item_id: row.chosen_item,
            item,
        });
        Ok(Self {
            command_id: row.command_id,
            payload,
            deadline: row.deadline,
            state: CommandState::parse(&row.state)?,
            choice,
            result: decode_result(row.result.as_deref())?,
        })
    }
}

/// The next value of counter `name` (1, 2, ...), inside a write transaction.
async fn next_counter(txn: &DatabaseTransaction, name: &str) -> Result<i64, JournalError> {
    let current = counter_row::Entity::find_by_id(name.to_owned())
        .one(txn)
        .await?
        .map(|row| row.value)
        .unwrap_or(0);
    let next = current + 1;
    counter_row::Entity::insert(
        counter_row::Model {
            name: name.to_owned(),
            value: next,
        }
        .into_active_model(),
    )
    .on_conflict(
        OnConflict::column(counter_row::Column::Name)
            .update_column(counter_row::Column::Value)
            .to_owned(),
    )
    .exec_without_returning(txn)
    .await?;
    Ok(next)
}

/// Adds an outbox message under `message_id`, or under a fresh UUIDv7 when `None`.
async fn push_outbox(
    txn: &DatabaseTransaction,
    message_id: Option<&str>,
    command_id: Option<&str>,
    body: pb::open_request::Body,
    now: DateTime<Utc>,
) -> Result<String, JournalError> {
    let message_id = message_id.map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    let seq = next_counter(txn, "outbox").await?;
    let request = pb::OpenRequest {
        message_id: message_id.clone(),
        body: Some(body),
    };
    outbox_row::ActiveModel {
        message_id: Set(message_id.clone()),
        seq: Set(seq),
        command_id: Set(command_id.map(str::to_owned)),
        body: Set(request.encode_to_vec()),
        created_at: Set(now),
    }
    .insert(txn)
    .await?;
    Ok(message_id)
}

/// `commands`: one row per command id ever received.
mod command_row {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "commands")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub command_id: String,
        /// Arrival order.
        pub seq: i64,
        /// Encoded `CommandPayload`; `None` when the command had none.
        pub payload: Option<Vec<u8>>,
        pub deadline: Option<DateTimeUtc>,
        /// received | executing | done.
        pub state: String,
        pub chosen_bay: Option<String>,
        pub chosen_item: Option<String>,
        /// Encoded `Item` as it leaves (for the result after a crash).
        pub chosen_item_snapshot: Option<Vec<u8>>,
        /// Encoded `CommandResult`.
        pub result: Option<Vec<u8>>,
        pub received_at: DateTimeUtc,
        pub finished_at: Option<DateTimeUtc>,
        /// Finishing order, for `last_finished_command_id`.
        pub finished_seq: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `outbox`: kiosk messages waiting for a Receipt.
mod outbox_row {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "outbox")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub message_id: String,
        pub seq: i64,
        /// The command whose result this carries, if any.
        pub command_id: Option<String>,
        /// Encoded `OpenRequest`, `message_id` set.
        pub body: Vec<u8>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `counters`: monotonic sequences that survive row deletion.
mod counter_row {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "counters")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        pub value: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The journal's migrations, applied at every start (idempotent).
mod migration {
    use sea_orm_migration::prelude::*;
    use sea_orm_migration::schema::*;

    pub struct Migrator;

    #[async_trait::async_trait]
    impl MigratorTrait for Migrator {
        fn migrations() -> Vec<Box<dyn MigrationTrait>> {
            vec![Box::new(Init)]
        }
    }

    #[derive(DeriveMigrationName)]
    struct Init;

    #[async_trait::async_trait]
    impl MigrationTrait for Init {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .create_table(
                    Table::create()
                        .table(Commands::Table)
                        .if_not_exists()
                        .col(string(Commands::CommandId).primary_key())
                        .col(big_integer(Commands::Seq))
                        .col(blob_null(Commands::Payload))
                        .col(timestamp_with_time_zone_null(Commands::Deadline))
                        .col(string(Commands::State))
                        .col(string_null(Commands::ChosenBay))
                        .col(string_null(Commands::ChosenItem))
                        .col(blob_null(Commands::ChosenItemSnapshot))
                        .col(blob_null(Commands::Result))
                        .col(timestamp_with_time_zone(Commands::ReceivedAt))
                        .col(timestamp_with_time_zone_null(Commands::FinishedAt))
                        .col(big_integer_null(Commands::FinishedSeq))
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(
                    Index::create()
                        .name("commands_state_seq")
                        .table(Commands::Table)
                        .col(Commands::State)
                        .col(Commands::Seq)
                        .if_not_exists()
                        .to_owned(),
                )
                .await?;
            manager
                .create_table(
                    Table::create()
                        .table(Outbox::Table)
                        .if_not_exists()
                        .col(string(Outbox::MessageId).primary_key())
                        .col(big_integer_uniq(Outbox::Seq))
                        .col(string_null(Outbox::CommandId))
                        .col(blob(Outbox::Body))
                        .col(timestamp_with_time_zone(Outbox::CreatedAt))
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(
                    Index::create()
                        .name("outbox_command")
                        .table(Outbox::Table)
                        .col(Outbox::CommandId)
                        .if_not_exists()
                        .to_owned(),
                )
                .await?;
            manager
                .create_table(
                    Table::create()
                        .table(Counters::Table)
                        .if_not_exists()
                        .col(string(Counters::Name).primary_key())
                        .col(big_integer(Counters::Value))
                        .to_owned(),
                )
                .await
        }
    }

    #[derive(DeriveIden)]
    enum Commands {
        Table,
        CommandId,
        Seq,
        Payload,
        Deadline,
        State,
        ChosenBay,
        ChosenItem,
        ChosenItemSnapshot,
        Result,
        ReceivedAt,
        FinishedAt,
        FinishedSeq,
    }

    #[derive(DeriveIden)]
    enum Outbox {
        Table,
        MessageId,
        Seq,
        CommandId,
        Body,
        CreatedAt,
    }

    #[derive(DeriveIden)]
    enum Counters {
        Table,
        Name,
        Value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(command_id: &str) -> pb::CommandResult {
        crate::wire::success(
            command_id,
            pb::command_result::Outcome::Wipe(pb::WipeResult {
                item_id: "D-1".into(),
            }),
            Utc::now(),
        )
    }

    #[tokio::test]
    async fn commands_results_and_outbox_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).await.unwrap();
        let now = Utc::now();
        let payload = pb::CommandPayload {
            kind: Some(pb::command_payload::Kind::RequestInventory(
                pb::RequestInventoryCommand {},
            )),
        };
        assert_eq!(
            journal
                .receive("C-1", Some(&payload), Some(now), now)
                .await
                .unwrap(),
            Arrival::New
        );
        assert_eq!(
            journal
                .receive("C-1", Some(&payload), Some(now), now)
                .await
                .unwrap(),
            Arrival::InProgress
        );
        journal.receive("C-2", None, None, now).await.unwrap();
        let next = journal.next_received().await.unwrap().unwrap();
        assert_eq!(next.command_id, "C-1", "oldest first");
        assert_eq!(next.payload.as_ref(), Some(&payload));

        let choice = Choice {
            bay_id: "A01".into(),
            item_id: Some("D-1".into()),
            item: None,
        };
        assert!(journal.start("C-1", Some(&choice)).await.unwrap());
        assert_eq!(journal.executing().await.unwrap()[0].choice, Some(choice));
        assert!(journal.finish(&result("C-1"), now).await.unwrap());
        assert!(
            !journal.finish(&result("C-1"), now).await.unwrap(),
            "done once"
        );
        assert!(
            !journal.start("C-1", None).await.unwrap(),
            "done never restarts"
        );
        assert_eq!(
            journal.last_finished_command_id().await.unwrap().as_deref(),
            Some("C-1")
        );

        // Its result waits in the outbox until receipted.
        let outbox = journal.outbox_after(0, 10).await.unwrap();
        assert_eq!(outbox.len(), 1);
        let message_id = outbox[0].request.message_id.clone();
        assert!(matches!(
            outbox[0].request.body,
            Some(pb::open_request::Body::Result(ref r)) if r.command_id == "C-1"
        ));
        // Resent while still in the outbox: no second message.
        assert_eq!(
            journal.receive("C-1", None, None, now).await.unwrap(),
            Arrival::Done
        );
        assert_eq!(journal.outbox_len().await.unwrap(), 1);
        // Receipted, then resent: the stored result is queued again under a new id.
        assert!(journal.remove_outbox(&message_id).await.unwrap());
        assert_eq!(
            journal.receive("C-1", None, None, now).await.unwrap(),
            Arrival::Done
        );
        let again = journal.outbox_after(0, 10).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_ne!(again[0].request.message_id, message_id);
        assert!(again[0].seq > outbox[0].seq, "seq never reused");
        drop(journal);

        // Everything survives reopening.
        let journal = Journal::open(dir.path()).await.unwrap();
        assert_eq!(
            journal.command("C-1").await.unwrap().unwrap().state,
            CommandState::Done
        );
        assert_eq!(journal.outbox_len().await.unwrap(), 1);
        assert_eq!(
            journal.next_received().await.unwrap().unwrap().command_id,
            "C-2"
        );
    }

    #[tokio::test]
    async fn a_command_is_started_once_and_only_recovery_resumes_it() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).await.unwrap();
        let now = Utc::now();
        journal.receive("C-1", None, None, now).await.unwrap();
        journal.receive("C-2", None, None, now).await.unwrap();
        assert!(
            !journal.resume("C-1", None).await.unwrap(),
            "not started yet"
        );
        assert!(journal.start("C-1", None).await.unwrap());
        // A second worker or process must not run it again.
        assert!(
            !journal.start("C-1", None).await.unwrap(),
            "executing -> executing refused"
        );
        let choice = Choice {
            bay_id: "A01".into(),
            item_id: None,
            item: None,
        };
        assert!(
            journal.resume("C-1", Some(&choice)).await.unwrap(),
            "recovery re-marks it"
        );
        assert_eq!(
            journal.command("C-1").await.unwrap().unwrap().choice,
            Some(choice)
        );
        assert!(journal.finish(&result("C-1"), now).await.unwrap());
        assert!(!journal.resume("C-1", None).await.unwrap(), "done is final");
        assert!(!journal.start("C-1", None).await.unwrap());
    }

    #[tokio::test]
    async fn a_message_queued_under_its_id_is_in_the_outbox_once() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).await.unwrap();
        let now = Utc::now();
        let id = uuid::Uuid::now_v7().to_string();
        let body = || {
            pb::open_request::Body::ItemReturned(pb::ItemReturned {
                bay_id: "A01".into(),
                item: None,
                returned_at: None,
            })
        };
        assert!(journal.enqueue_once(&id, body(), now).await.unwrap());
        assert!(
            !journal.enqueue_once(&id, body(), now).await.unwrap(),
            "no second copy"
        );
        let outbox = journal.outbox_after(0, 10).await.unwrap();
        assert_eq!(outbox.len(), 1);
        assert_eq!(outbox[0].request.message_id, id, "the caller's id");
        // Receipted, then queued again (a repeat after a crash): same id, for the gateway to
        // recognise.
        assert!(journal.remove_outbox(&id).await.unwrap());
        assert!(journal.enqueue_once(&id, body(), now).await.unwrap());
        assert_eq!(
            journal.outbox_after(0, 10).await.unwrap()[0]
                .request
                .message_id,
            id
        );
    }
}
