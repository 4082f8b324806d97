//! `accounts`: What orders keeps per user: the remembered card, the deposit, the one open order.

use sea_orm::entity::prelude::*;

/// One row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "accounts")]
pub struct Model {
    /// The user.
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: String,
    /// The remembered payment method; empty when none.
    pub card_token: String,
    /// The deposit HELD for the account, if any.
    pub deposit_id: Option<String>,
    /// The order that has an item out or on its way, if any: one at a time.
    pub open_order_id: Option<String>,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
