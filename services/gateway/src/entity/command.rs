//! `commands`: the durable command log. A command is written here before anything is sent.

use sea_orm::entity::prelude::*;

/// One command to one kiosk.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "commands")]
pub struct Model {
    /// Log order: commands to one kiosk are delivered in this order.
    #[sea_orm(primary_key)]
    pub seq: i64,
    /// The command's id (UUID v7), unique for ever; the kiosk's journal is keyed on it.
    #[sea_orm(unique)]
    pub command_id: String,
    /// The kiosk it is for.
    pub kiosk_id: String,
    /// Who asked (`operator:<id>`, ...); with `idempotency_key` it identifies a request.
    pub requested_by: String,
    /// The caller's idempotency key.
    pub idempotency_key: String,
    /// BLAKE3 of payload and deadline: the same key with other parameters is refused.
    pub request_hash: String,
    /// The kind's stored name (`lend`, `wipe`, ...).
    pub kind: String,
    /// Encoded `CommandPayload`.
    pub payload: Vec<u8>,
    /// Life-cycle state (`domain::command::CommandState`).
    pub state: String,
    /// How many times it was put on a link.
    pub attempts: i32,
    /// The kiosk must not start it after this.
    pub deadline: DateTimeUtc,
    /// When it was logged.
    pub created_at: DateTimeUtc,
    /// When its state last changed.
    pub updated_at: DateTimeUtc,
    /// Encoded `CommandResult`, once reported.
    pub result: Option<Vec<u8>>,
    /// Encoded latest `Progress`.
    pub progress: Option<Vec<u8>>,
    /// The result arrived after the command had expired.
    pub late_result: bool,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
