//! `kiosks`: what the gateway last knew of each kiosk that ever connected.

use sea_orm::entity::prelude::*;

/// One kiosk.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "kiosks")]
pub struct Model {
    /// The kiosk's id (its token's subject).
    #[sea_orm(primary_key, auto_increment = false)]
    pub kiosk_id: String,
    /// Whether a link is open.
    pub online: bool,
    /// The open (or last) link's session id.
    pub session_id: String,
    /// The agent version from the last Hello.
    pub agent_version: String,
    /// When the gateway last heard from it.
    pub last_seen_at: DateTimeUtc,
    /// Encoded `Inventory`, as last reported (partial reports merged).
    pub inventory: Vec<u8>,
    /// From the last Hello.
    pub last_finished_command_id: String,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
