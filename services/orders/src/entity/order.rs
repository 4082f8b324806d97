//! `orders`: A rental or reservation: its state, terms and money.

use sea_orm::entity::prelude::*;

/// One row.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "orders")]
pub struct Model {
    /// Its id (UUID).
    #[sea_orm(primary_key, auto_increment = false)]
    pub order_id: String,
    /// The account owning it.
    pub user_id: String,
    /// `rental` or `reservation`.
    pub kind: String,
    /// `domain::order::OrderState` as stored.
    pub state: String,
    /// Why it is in that state, for the user.
    pub state_reason: String,
    /// Where it is lent.
    pub kiosk_id: String,
    /// Encoded `orders.v1.ItemChoice`.
    pub choice: Vec<u8>,
    /// The item lent; empty until known.
    pub item_id: String,
    /// Where it came back; empty until then.
    pub returned_kiosk_id: String,
    /// Write protection confirmed on.
    pub write_protected: bool,
    /// Encoded `orders.v1.Pricing`: the terms it was made under.
    pub pricing: Vec<u8>,
    /// The up-front price, minor units.
    pub price: i64,
    /// ISO 4217 of every amount of the order.
    pub currency: String,
    /// Charged so far.
    pub amount_charged: i64,
    /// Paid back so far.
    pub amount_refunded: i64,
    /// The key it was created with (unique per user).
    pub idempotency_key: String,
    /// Fingerprint of the creating request, to refuse a reused key.
    pub request_hash: String,
    /// The provider's charge of the price.
    pub charge_id: String,
    /// The card charged (fees go to it too).
    pub card_token: String,
    /// The gateway command the order waits for, once sent: the provision of a reservation,
    /// then the lend.
    pub command_id: Option<String>,
    /// An item the kiosk reported lent after the order had failed.
    pub late_item_id: Option<String>,
    /// Whether the lost-item fee was charged.
    pub lost_fee_charged: bool,
    /// Bumped by every change; `order_changes` keeps each.
    pub version: i64,
    /// When the current step must be over (lend or provision deadline, pickup deadline,
    /// refund due).
    pub deadline: DateTimeUtc,
    /// Created (and charged).
    pub created_at: DateTimeUtc,
    /// Last change.
    pub updated_at: DateTimeUtc,
    /// When the item left the kiosk.
    pub lent_at: Option<DateTimeUtc>,
    /// When it is due back.
    pub due_at: Option<DateTimeUtc>,
    /// When it came back.
    pub returned_at: Option<DateTimeUtc>,
    /// When it reached a terminal state.
    pub closed_at: Option<DateTimeUtc>,
    /// Reservations: until when the ready drive waits; unset before READY_FOR_PICKUP.
    pub pickup_deadline: Option<DateTimeUtc>,
    /// Title of the content chosen, for display; empty when none.
    pub content_title: String,
    /// True when the drive lent or pinned has its own remote link (as the kiosk reported it),
    /// so its write protection can be changed while it is lent.
    pub remote_link: bool,
    /// The write protection the user asked (SetWriteProtect) and the drive has not confirmed
    /// yet; `None` when nothing is on its way.
    pub write_protect_wanted: Option<bool>,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
