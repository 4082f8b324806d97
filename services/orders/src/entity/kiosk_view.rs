//! `kiosk_views`: what orders knows of each kiosk's link and inventory, built from the
//! gateway's event log (never from the gateway's tables).

use sea_orm::entity::prelude::*;

/// One kiosk as the events describe it.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "kiosk_views")]
pub struct Model {
    /// The kiosk's id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub kiosk_id: String,
    /// Whether its link is open, as of `cursor`.
    pub online: bool,
    /// The agent version from its last KioskOnline.
    pub agent_version: String,
    /// When the gateway last heard from it, as far as events tell.
    pub last_seen_at: DateTimeUtc,
    /// Encoded `Inventory` from its last InventoryChanged; empty if none.
    pub inventory: Vec<u8>,
    /// The event that last changed this row (later events win; replays change nothing).
    pub cursor: i64,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
