//! `payment_attempts`: One charge asked of the provider, by its provider idempotency key: the record that lets a crash or a timeout be resolved without charging twice.

use sea_orm::entity::prelude::*;

/// One row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "payment_attempts")]
pub struct Model {
    /// The provider idempotency key.
    #[sea_orm(primary_key, auto_increment = false)]
    pub payment_key: String,
    /// Whose card.
    pub user_id: String,
    /// `rental`, `deposit` or `fee`.
    pub purpose: String,
    /// The order or deposit it pays for.
    pub subject_id: String,
    /// Fingerprint of the request it came from.
    pub request_hash: String,
    /// Minor units.
    pub amount: i64,
    /// ISO 4217.
    pub currency: String,
    /// The card.
    pub card_token: String,
    /// `pending` (asked, outcome unknown), `charged`, `declined`, `resolving`, `refunded`.
    pub state: String,
    /// The provider's charge once known.
    pub charge_id: String,
    /// Rentals: the unit held while charging; empty otherwise.
    pub held_item: String,
    /// First asked.
    pub created_at: DateTimeUtc,
    /// Last touched (a retry claims it by moving this).
    pub updated_at: DateTimeUtc,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
