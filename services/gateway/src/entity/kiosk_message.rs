//! `kiosk_messages`: every outbox message a kiosk delivered, by id, so a message replayed after
//! a reconnect is recognised and takes effect once.

use sea_orm::entity::prelude::*;

/// One delivered kiosk message.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "kiosk_messages")]
pub struct Model {
    /// The kiosk that sent it.
    #[sea_orm(primary_key, auto_increment = false)]
    pub kiosk_id: String,
    /// The kiosk's message id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub message_id: String,
    /// When the gateway recorded it.
    pub received_at: DateTimeUtc,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
