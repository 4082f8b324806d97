//! `event_cursors`: how far each consumer of the gateway's event log has got.

use sea_orm::entity::prelude::*;

/// One consumer's position.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "event_cursors")]
pub struct Model {
    /// The consumer's name.
    #[sea_orm(primary_key, auto_increment = false)]
    pub consumer: String,
    /// The cursor of the last event it handled.
    pub cursor: i64,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
