//! CreateRental, the second instruction: the steps of [`crate::checkout`] for a walk-up
//! rental (the lend itself, the third instruction, leaves through the outbox).

use sneakernet_proto::common::v1 as common;
use sneakernet_proto::gateway::v1 as gateway;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_runtime::{KioskId, UserId};

use crate::checkout::{Holding, NewOrder, OfferChoice};
use crate::domain::offer::TypeKey;
use crate::domain::order::OrderKind;
use crate::entity::order;
use crate::error::OrdersError;
use crate::flows::{Flows, fingerprint};
use crate::ids::{IdempotencyKey, OfferId};
use crate::store::orders::{OrderOpening, PaidOrder};

/// CreateRental's input, checked at the edge.
#[derive(Clone, Debug)]
pub struct RentalAsk {
    /// The kiosk.
    pub kiosk_id: KioskId,
    /// The offer accepted.
    pub offer_id: OfferId,
    /// The type and write protection.
    pub spec: common::ItemSpec,
    /// Days.
    pub duration_days: u32,
    /// The card, or `None` for the remembered one.
    pub card_token: Option<String>,
    /// The key.
    pub idempotency_key: IdempotencyKey,
}

impl RentalAsk {
    /// The request's fingerprint (without the price: see [`crate::checkout::OfferedLine`]).
    fn fingerprint(&self) -> String {
        let item_type = self.spec.item_type.clone().unwrap_or_default();
        fingerprint(&[
            self.kiosk_id.as_str(),
            &item_type.kind.to_string(),
            &item_type.capacity_bytes.to_string(),
            &item_type.content_package_id,
            &self.spec.write_protect.to_string(),
            &self.duration_days.to_string(),
            self.card_token.as_deref().unwrap_or("-"),
        ])
    }
}

impl Flows {
    /// Second instruction: holds a unit, charges, books the order and queues the lend.
    pub async fn create_rental(
        &self,
        user: UserId,
        request: RentalAsk,
    ) -> Result<order::Model, OrdersError> {
        let hash = request.fingerprint();
        if let Some(existing) = self
            .same_key_order(&user, &request.idempotency_key, &hash)
            .await?
        {
            return Ok(existing);
        }
        let spec = &request.spec;
        let wanted = TypeKey::from_proto(&spec.item_type.clone().unwrap_or_default());
        let offered = self
            .check_offer_line(&OfferChoice {
                kind: OrderKind::Rental,
                user_id: &user,
                kiosk_id: &request.kiosk_id,
                offer_id: &request.offer_id,
                wanted: &wanted,
                duration_days: request.duration_days,
                write_protect: spec.write_protect,
                idempotency_key: &request.idempotency_key,
                request_hash: &hash,
            })
            .await?;
        self.check_kiosk_open(&request.kiosk_id).await?;
        let card_token = self
            .card_to_charge(&user, request.card_token.clone())
            .await?;
        let opening = OrderOpening {
            kind: OrderKind::Rental,
            user_id: user.to_string(),
            idempotency_key: request.idempotency_key.to_string(),
            request_hash: hash.clone(),
            attempt_hash: offered.attempt_hash.clone(),
            kiosk_id: request.kiosk_id.to_string(),
            wanted,
            reservable: None,
            card_token: card_token.clone(),
            price: offered.price,
        };
        let held = match self.hold(&user, &opening).await? {
            Holding::Answered(order) => return Ok(*order),
            Holding::Held(held) => held,
        };
        let charge = self.charge_held(&held, &card_token, offered.price).await?;
        let row = NewOrder {
            kind: OrderKind::Rental,
            order_id: held.order_id.clone(),
            user_id: user.to_string(),
            kiosk_id: request.kiosk_id.to_string(),
            choice: pb::ItemChoice {
                spec: Some(spec.clone()),
                duration_days: request.duration_days,
            },
            pricing: offered.line.pricing.clone().unwrap_or_default(),
            price: offered.price,
            idempotency_key: request.idempotency_key.to_string(),
            request_hash: hash,
            charge_id: charge.charge_id,
            card_token,
            deadline: self.deadline_in(self.lend_deadline),
            content_title: offered.line.content_title.clone(),
        }
        .paid_row(self.now());
        self.book(PaidOrder {
            command: lend_command(spec, &held.order_id),
            command_key: format!("lend:{}", held.order_id),
            order: row,
            payment_key: held.payment_key,
            reason: "Paid. Asking the kiosk to hand out your item.".into(),
        })
        .await
    }
}

/// The lend a rental waits for: any ready unit of the spec, for the order.
fn lend_command(spec: &common::ItemSpec, order_id: &str) -> gateway::CommandPayload {
    gateway::CommandPayload {
        kind: Some(gateway::command_payload::Kind::Lend(gateway::LendCommand {
            target: Some(gateway::lend_command::Target::Spec(spec.clone())),
            order_id: order_id.to_owned(),
        })),
    }
}
