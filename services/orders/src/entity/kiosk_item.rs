//! `kiosk_items`: One item in a kiosk as its reports and the orders' own bookkeeping tell; a hold marks a unit promised to an order.

use sea_orm::entity::prelude::*;

/// One row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "kiosk_items")]
pub struct Model {
    /// The item's id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub item_id: String,
    /// The kiosk holding it.
    pub kiosk_id: String,
    /// `common.v1.ItemKind`.
    pub kind: i32,
    /// Drives: capacity; 0 for power banks.
    pub capacity_bytes: i64,
    /// Drives: content; empty when blank or a power bank.
    pub content_package_id: String,
    /// Lendable now (its bay is READY).
    pub ready: bool,
    /// The order this unit is promised to, if any. Holds count units, not this exact item: the kiosk chooses.
    pub held_by: Option<String>,
    /// When the item last came back into this kiosk by a return, by the kiosk's clock (kept
    /// until the unit leaves): a lend result for it that finished before then arrived late,
    /// and the item is still here.
    pub returned_at: Option<DateTimeUtc>,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
