//! `pricing_rules`: A price rule for a site (or the network, site "") and an item type pattern.

use sea_orm::entity::prelude::*;

/// One row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "pricing_rules")]
pub struct Model {
    /// `<site>|<kind>|<capacity>|<package>`: one rule per site and pattern.
    #[sea_orm(primary_key, auto_increment = false)]
    pub rule_key: String,
    /// The site; empty for the network-wide default.
    pub site_id: String,
    /// `common.v1.ItemKind`.
    pub kind: i32,
    /// 0 matches any capacity.
    pub capacity_bytes: i64,
    /// Empty matches any content.
    pub content_package_id: String,
    /// Encoded `orders.v1.Pricing`, validated.
    pub pricing: Vec<u8>,
    /// When it was last set.
    pub updated_at: DateTimeUtc,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
