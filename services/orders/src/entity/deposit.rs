//! `deposits`: A deposit paid by a user.

use sea_orm::entity::prelude::*;

/// One row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "deposits")]
pub struct Model {
    /// Its id (UUID).
    #[sea_orm(primary_key, auto_increment = false)]
    pub deposit_id: String,
    /// Who paid it.
    pub user_id: String,
    /// What was paid, minor units.
    pub amount: i64,
    /// ISO 4217.
    pub currency: String,
    /// `held`, `refunding` or `refunded`.
    pub state: String,
    /// Unpaid fees taken from it, minor units.
    pub withheld: i64,
    /// Paid back, minor units.
    pub refunded: i64,
    /// The provider's charge.
    pub charge_id: String,
    /// The key PayDeposit came with.
    pub idempotency_key: String,
    /// The key RefundDeposit came with.
    pub refund_key: Option<String>,
    /// When it was paid.
    pub paid_at: DateTimeUtc,
    /// When the refund completed.
    pub refunded_at: Option<DateTimeUtc>,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
