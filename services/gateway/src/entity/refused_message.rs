//! `refused_messages`: kiosk messages the gateway refused at its edge, kept for operators
//! (`DeviceEventService.ListRefusedMessages`) and never applied.

use sea_orm::entity::prelude::*;

/// One refused message.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "refused_messages")]
pub struct Model {
    /// Insertion order: pages run newest first by it.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The kiosk that sent it.
    pub kiosk_id: String,
    /// The kiosk's message id; unique per kiosk, so a replay is kept once.
    pub message_id: String,
    /// When the gateway received it.
    pub received_at: DateTimeUtc,
    /// The field that was wrong.
    pub field: String,
    /// What was wrong.
    pub reason: String,
    /// The encoded `OpenRequest` as the kiosk sent it.
    pub body: Vec<u8>,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
