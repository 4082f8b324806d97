//! `ledger_entries`: One leg of a ledger transaction.

use sea_orm::entity::prelude::*;

/// One row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "ledger_entries")]
pub struct Model {
    /// Its id.
    #[sea_orm(primary_key, auto_increment = true)]
    pub entry_id: i64,
    /// Its transaction.
    pub txn_id: String,
    /// `ledger::Account` as stored.
    pub account: String,
    /// Signed minor units: positive flows into the account.
    pub amount: i64,
    /// ISO 4217.
    pub currency: String,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
