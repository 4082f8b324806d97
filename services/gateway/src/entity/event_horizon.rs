//! `event_horizon`: how far the event log was pruned (one row, id 1).

use sea_orm::entity::prelude::*;

/// The pruning watermark.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "event_horizon")]
pub struct Model {
    /// Always 1.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i32,
    /// The newest cursor deleted by retention (0 before any): every event at or below it is
    /// gone, every event above it is kept.
    pub pruned_through: i64,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
