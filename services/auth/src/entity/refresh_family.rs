//! `refresh_families`: one row per session. Rotation and revocation both update this row, so
//! on Postgres they queue on its lock and a token minted by a rotation racing a revocation is
//! revoked with its family (tokens are checked against the family, not one by one).

use sea_orm::entity::prelude::*;

/// A session.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "refresh_families")]
pub struct Model {
    /// The session's id (UUID v7).
    #[sea_orm(primary_key, auto_increment = false)]
    pub family_id: String,
    /// The account it belongs to.
    pub user_id: String,
    /// When it started (Register or Login).
    pub created_at: DateTimeUtc,
    /// When a token of it was last rotated.
    pub last_used_at: DateTimeUtc,
    /// When it was revoked (logout or reuse detected); its tokens are refused from then on.
    pub revoked_at: Option<DateTimeUtc>,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
