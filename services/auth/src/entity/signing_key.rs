//! `signing_keys`: Ed25519 keys that sign access tokens, by key id.

use sea_orm::entity::prelude::*;

/// One signing key.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "signing_keys")]
pub struct Model {
    /// Key id, carried in each token's header.
    #[sea_orm(primary_key, auto_increment = false)]
    pub kid: String,
    /// The 32-byte private seed, base64url. Protected by the database's access control.
    pub private_key: String,
    /// The 32-byte public key, base64url.
    pub public_key: String,
    /// Tokens are signed with this key from this time on (the newest such key signs). A
    /// rotated-in key is published before this time, so verifiers know it before they see it.
    pub not_before: DateTimeUtc,
    /// When it stopped signing; it still verifies until tokens it signed have expired.
    pub retired_at: Option<DateTimeUtc>,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
