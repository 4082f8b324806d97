//! `ledger_transactions`: One balanced movement of money; its entries are in `ledger_entries`.

use sea_orm::entity::prelude::*;

/// One row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "ledger_transactions")]
pub struct Model {
    /// Its id (UUID).
    #[sea_orm(primary_key, auto_increment = false)]
    pub txn_id: String,
    /// The order it belongs to; empty if none.
    pub order_id: String,
    /// The deposit it belongs to; empty if none.
    pub deposit_id: String,
    /// For statements: `price`, `late_fee`, `lost_item_fee`, `refund`, or an internal kind.
    pub movement: String,
    /// The amount moved (positive), minor units.
    pub amount: i64,
    /// ISO 4217.
    pub currency: String,
    /// The provider key of the charge or refund behind it; empty for internal moves.
    pub payment_key: String,
    /// When it was booked.
    pub created_at: DateTimeUtc,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
