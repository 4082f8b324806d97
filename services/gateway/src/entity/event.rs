//! `events`: the kiosk event log that `DeviceEventService.Subscribe` streams. Written in the
//! same transaction as the change that caused each event.

use sea_orm::entity::prelude::*;

/// One event.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "events")]
pub struct Model {
    /// Position in the log; strictly increasing in commit order (see `store::append_event`).
    #[sea_orm(primary_key)]
    pub cursor: i64,
    /// The kiosk it is about.
    pub kiosk_id: String,
    /// The event kind's stored name, for filtering.
    pub kind: String,
    /// When it happened.
    pub occurred_at: DateTimeUtc,
    /// Encoded `Event` (its cursor field left 0; the column is the truth).
    pub body: Vec<u8>,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
