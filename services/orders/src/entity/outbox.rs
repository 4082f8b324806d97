//! `outbox`: A kiosk's (or a drive's) command decided in a transaction and not yet handed to the gateway.

use sea_orm::entity::prelude::*;

/// One row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "outbox")]
pub struct Model {
    /// Order of writing.
    #[sea_orm(primary_key, auto_increment = true)]
    pub outbox_id: i64,
    /// The kiosk; empty for a command to a drive's own link (`drive_id`).
    pub kiosk_id: String,
    /// The drive whose own remote link the command goes over; empty for a kiosk's command.
    pub drive_id: String,
    /// The key it is sent with (the gateway keeps it once).
    pub idempotency_key: String,
    /// The order it serves; empty if none.
    pub order_id: String,
    /// Encoded `gateway.v1.CommandPayload`.
    pub payload: Vec<u8>,
    /// The command's deadline.
    pub deadline: DateTimeUtc,
    /// When it was decided.
    pub created_at: DateTimeUtc,
    /// When the gateway accepted it.
    pub sent_at: Option<DateTimeUtc>,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
