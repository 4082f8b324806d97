//! `refresh_tokens`: every refresh token ever issued, by hash. A session (family, see
//! `refresh_family`) is a chain of tokens, each spent once; reuse of a spent one revokes the
//! family.

use sea_orm::entity::prelude::*;

/// One refresh token.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "refresh_tokens")]
pub struct Model {
    /// BLAKE3 hash (hex) of the opaque token; the token itself is never stored.
    #[sea_orm(primary_key, auto_increment = false)]
    pub token_hash: String,
    /// The session: every rotation keeps the family id.
    pub family_id: String,
    /// The account the session belongs to.
    pub user_id: String,
    /// When it was issued.
    pub created_at: DateTimeUtc,
    /// After this it is refused even if unused.
    pub expires_at: DateTimeUtc,
    /// When it was spent by a Refresh; set once.
    pub used_at: Option<DateTimeUtc>,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
