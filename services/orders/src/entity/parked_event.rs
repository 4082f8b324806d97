//! `parked_events`: gateway events a consumer could not apply, set aside so the events after
//! them still flow (FleetService.ListParkedEvents, RetryParkedEvent, DropParkedEvent).

use sea_orm::entity::prelude::*;

/// One parked event.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "parked_events")]
pub struct Model {
    /// The event's cursor in the gateway's log.
    #[sea_orm(primary_key, auto_increment = false)]
    pub cursor: i64,
    /// The consumer that parked it.
    pub consumer: String,
    /// The kiosk it is about.
    pub kiosk_id: String,
    /// The encoded gateway `Event`.
    pub event: Vec<u8>,
    /// Why it could not be applied, the last time.
    pub error: String,
    /// How many times applying it failed.
    pub attempts: i32,
    /// When it was first parked.
    pub parked_at: DateTimeUtc,
}

/// No relations are navigated through sea-orm.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
