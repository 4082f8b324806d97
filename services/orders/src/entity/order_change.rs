//! `order_changes`: One change of an order, with the order after it, in version order (WatchOrder replays them).

use sea_orm::entity::prelude::*;

/// One row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "order_changes")]
pub struct Model {
    /// The order.
    #[sea_orm(primary_key, auto_increment = false)]
    pub order_id: String,
    /// The order's version after the change.
    #[sea_orm(primary_key, auto_increment = false)]
    pub version: i64,
    /// What happened, for the user.
    pub reason: String,
    /// When.
    pub at: DateTimeUtc,
    /// Encoded `orders.v1.Order` after the change.
    pub snapshot: Vec<u8>,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
