//! `sandbox_charges` and refunds: the built-in sandbox payment provider's own records, kept in
//! the orders database so they survive a restart like a real processor's would.

use sea_orm::entity::prelude::*;

/// One charge or refund the sandbox processed, by idempotency key.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sandbox_payments")]
pub struct Model {
    /// The caller's idempotency key (charges and refunds share the key space).
    #[sea_orm(primary_key, auto_increment = false)]
    pub idempotency_key: String,
    /// `charge` or `refund`.
    pub kind: String,
    /// The payment's id (`ch_...` or `re_...`).
    pub payment_id: String,
    /// The card token charged (charges), or the charge refunded (refunds).
    pub subject: String,
    /// Amount in minor units.
    pub amount: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// `succeeded` or the decline reason.
    pub outcome: String,
    /// When it was processed.
    pub created_at: DateTimeUtc,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
