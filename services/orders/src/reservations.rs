//! Seed flow 2 after FindKiosks: CreateReservation (the fourth instruction; the provision, the
//! fifth, leaves through the outbox), CancelReservation and CollectReservation (the lend of the
//! pinned drive, the third instruction naming it). Built from the steps of [`crate::checkout`];
//! what the kiosk's provision result means is in [`crate::lending`], the no-show expiry in
//! [`crate::settle`].

use sneakernet_proto::common::v1 as common;
use sneakernet_proto::gateway::v1 as gateway;
use sneakernet_proto::ids::PackageId;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_runtime::qr::QrPayload;
use sneakernet_runtime::{KioskId, PreconditionViolation, UserId};

use crate::checkout::{Holding, NewOrder, attempt_fingerprint};
use crate::domain::offer::{TypeKey, check_write_protect, write_protect_option};
use crate::domain::order::{OrderKind, OrderState};
use crate::domain::reservable::DriveAsk;
use crate::entity::order;
use crate::error::OrdersError;
use crate::flows::{Flows, fingerprint, violation};
use crate::ids::{IdempotencyKey, OrderId};
use crate::lending;
use crate::store::StoreError;
use crate::store::orders::{OrderOpening, PaidOrder, kind_and_state};
use crate::store::reservations::Pickup;

/// How often a step decided on a read that a concurrent change overtook is decided again.
const TRIES: u32 = 3;

/// CreateReservation's input, checked at the edge.
#[derive(Clone, Debug)]
pub struct ReservationAsk {
    /// The kiosk.
    pub kiosk_id: KioskId,
    /// The content package; `None` for a blank drive.
    pub package_id: Option<PackageId>,
    /// The drive's capacity, exactly.
    pub capacity_bytes: u64,
    /// Write protection asked.
    pub write_protect: bool,
    /// Days.
    pub duration_days: u32,
    /// The card, or `None` for the remembered one.
    pub card_token: Option<String>,
    /// The key.
    pub idempotency_key: IdempotencyKey,
}

impl ReservationAsk {
    /// The request's fingerprint.
    fn fingerprint(&self) -> String {
        fingerprint(&[
            "reservation",
            self.kiosk_id.as_str(),
            &self.capacity_bytes.to_string(),
            self.package_id.as_ref().map_or("", |p| p.as_str()),
            &self.write_protect.to_string(),
            &self.duration_days.to_string(),
            self.card_token.as_deref().unwrap_or("-"),
        ])
    }

    /// The type reserved.
    fn wanted(&self) -> TypeKey {
        TypeKey {
            kind: common::ItemKind::Drive.into(),
            capacity_bytes: i64::try_from(self.capacity_bytes).unwrap_or(i64::MAX),
            content_package_id: self
                .package_id
                .as_ref()
                .map_or_else(String::new, |p| p.to_string()),
        }
    }
}

/// CollectReservation's input, checked at the edge.
#[derive(Clone, Debug)]
pub struct CollectAsk {
    /// The reservation.
    pub order_id: OrderId,
    /// The QR code scanned at the kiosk.
    pub qr: QrPayload,
}

/// The package field of a choice, for violations.
const PACKAGE_FIELD: &str = "choice.spec.item_type.content_package_id";

impl Flows {
    /// Fourth instruction: checks the package and the price, holds a drive that can take the
    /// package, charges, books the order and queues the provision.
    pub async fn create_reservation(
        &self,
        user: UserId,
        request: ReservationAsk,
    ) -> Result<order::Model, OrdersError> {
        let hash = request.fingerprint();
        if let Some(existing) = self
            .same_key_order(&user, &request.idempotency_key, &hash)
            .await?
        {
            return Ok(existing);
        }
        let Some(profile) = self.store.kiosk_profile(request.kiosk_id.as_str()).await? else {
            return Err(OrdersError::KioskNotRegistered(
                request.kiosk_id.to_string(),
            ));
        };
        // The package as the catalog has it, never as the request says.
        let package = match &request.package_id {
            None => None,
            Some(id) => Some(
                self.content
                    .ready_package(id)
                    .await
                    .map_err(|status| OrdersError::content_unavailable(&status))?
                    .ok_or_else(|| {
                        OrdersError::invalid(PACKAGE_FIELD, "is not a READY content package")
                    })?,
            ),
        };
        let ask = DriveAsk {
            capacity_bytes: request.capacity_bytes,
            package_bytes: package.as_ref().map_or(0, |p| p.total_bytes),
        };
        if !ask.fits() {
            return Err(OrdersError::invalid(
                "choice.spec.item_type.capacity_bytes",
                format!("is smaller than the content ({} bytes)", ask.package_bytes),
            ));
        }
        let wanted = request.wanted();
        check_write_protect(write_protect_option(wanted.kind), request.write_protect)?;
        let Some((pricing, terms)) = self.site_terms(&profile.site_id, &wanted).await? else {
            return Err(OrdersError::refused_one(
                "TYPE_UNAVAILABLE",
                wanted.subject(),
                "This kiosk does not offer that type.",
            ));
        };
        let price = terms.price_for_days(request.duration_days).map_err(|_| {
            OrdersError::invalid(
                "choice.duration_days",
                format!(
                    "must be 1 to {} days at this kiosk",
                    terms.max_duration_days
                ),
            )
        })?;
        self.check_kiosk_open(&request.kiosk_id).await?;
        let card_token = self
            .card_to_charge(&user, request.card_token.clone())
            .await?;
        let opening = OrderOpening {
            kind: OrderKind::Reservation,
            user_id: user.to_string(),
            idempotency_key: request.idempotency_key.to_string(),
            request_hash: hash.clone(),
            attempt_hash: attempt_fingerprint(&hash, price),
            kiosk_id: request.kiosk_id.to_string(),
            wanted: wanted.clone(),
            reservable: Some(ask),
            card_token: card_token.clone(),
            price,
        };
        let held = match self.hold(&user, &opening).await? {
            Holding::Answered(order) => return Ok(*order),
            Holding::Held(held) => held,
        };
        let charge = self.charge_held(&held, &card_token, price).await?;
        let row = NewOrder {
            kind: OrderKind::Reservation,
            order_id: held.order_id.clone(),
            user_id: user.to_string(),
            kiosk_id: request.kiosk_id.to_string(),
            choice: pb::ItemChoice {
                spec: Some(common::ItemSpec {
                    item_type: Some(wanted.to_proto()),
                    write_protect: request.write_protect,
                }),
                duration_days: request.duration_days,
            },
            pricing,
            price,
            idempotency_key: request.idempotency_key.to_string(),
            request_hash: hash,
            charge_id: charge.charge_id,
            card_token,
            deadline: self.deadline_in(self.provision_deadline),
            content_title: package.map(|p| p.title).unwrap_or_default(),
        }
        .paid_row(self.now());
        self.book(PaidOrder {
            command: provision_command(&request, &held.order_id),
            command_key: format!("provision:{}", held.order_id),
            order: row,
            payment_key: held.payment_key,
            reason: lending::PREPARING.into(),
        })
        .await
    }

    /// The caller's reservation cancelled before its drive left the kiosk: CANCELLED, its
    /// pinned drive released, everything paid back by the settling worker. Again on a
    /// CANCELLED or REFUNDED one answers it unchanged.
    pub async fn cancel_reservation(
        &self,
        user: UserId,
        order_id: OrderId,
    ) -> Result<order::Model, OrdersError> {
        for _ in 0..TRIES {
            let current = self.own_order(&user, &order_id).await?;
            let (kind, state) = kind_and_state(&current)?;
            let subject = format!("orders/{order_id}");
            if kind != OrderKind::Reservation {
                return Err(OrdersError::refused_one(
                    "NOT_CANCELLABLE",
                    subject,
                    "A rental cannot be cancelled; only reservations can.",
                ));
            }
            let expired = current.pickup_deadline.is_some_and(|at| at <= self.now());
            match state {
                OrderState::Cancelled | OrderState::Refunded => return Ok(current),
                OrderState::Paid | OrderState::Provisioning | OrderState::ReadyForPickup
                    if !expired => {}
                OrderState::ReadyForPickup => {
                    return Err(OrdersError::refused_one(
                        "NOT_CANCELLABLE",
                        subject,
                        "The pickup window has passed; the reservation expires as a no-show.",
                    ));
                }
                _ => {
                    return Err(OrdersError::refused_one(
                        "NOT_CANCELLABLE",
                        subject,
                        "The drive has left the kiosk; the reservation can no longer be cancelled.",
                    ));
                }
            }
            // A pinned drive goes back to the kiosk's stock, wiped; a provision still running
            // is released when its result comes (see `lending::CommandEffect::Provisioned`).
            let follow_ups: Vec<lending::FollowUp> = (!current.item_id.is_empty())
                .then(|| lending::release(&current.kiosk_id, &current.order_id, &current.item_id))
                .into_iter()
                .collect();
            match self
                .store
                .cancel_reservation(
                    &current.order_id,
                    current.version,
                    lending::CANCELLED,
                    &follow_ups,
                    self.now(),
                )
                .await
            {
                Ok(cancelled) => {
                    self.wake.notify_one();
                    return Ok(cancelled);
                }
                Err(StoreError::Raced(_)) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        Err(OrdersError::Raced(
            "the reservation kept changing; try again".into(),
        ))
    }

    /// The user at the reservation's kiosk: the kiosk is told to lend the pinned drive; the
    /// order becomes DISPENSING. Again while DISPENSING or later answers the order, lending
    /// nothing twice.
    pub async fn collect_reservation(
        &self,
        user: UserId,
        request: CollectAsk,
    ) -> Result<order::Model, OrdersError> {
        for _ in 0..TRIES {
            let current = self.own_order(&user, &request.order_id).await?;
            let (kind, state) = kind_and_state(&current)?;
            if kind != OrderKind::Reservation {
                return Err(OrdersError::invalid(
                    "order_id",
                    "is a rental, not a reservation",
                ));
            }
            if matches!(
                state,
                OrderState::Dispensing
                    | OrderState::Lent
                    | OrderState::Returned
                    | OrderState::Closed
                    | OrderState::Failed
            ) {
                return Ok(current);
            }
            let violations = self
                .pickup_refusals(&user, &current, state, &request.qr)
                .await?;
            if !violations.is_empty() {
                return Err(OrdersError::refused(violations, None));
            }
            let pickup = Pickup {
                command: lend_pinned(&current.item_id, &current.order_id),
                command_key: format!("lend:{}", current.order_id),
                reason: lending::COLLECTING.into(),
                deadline: self.deadline_in(self.lend_deadline),
            };
            match self
                .store
                .collect_reservation(&current.order_id, current.version, &pickup, self.now())
                .await
            {
                Ok(collecting) => {
                    self.wake.notify_one();
                    return Ok(collecting);
                }
                Err(StoreError::Raced(_)) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        Err(OrdersError::Raced(
            "the reservation kept changing; try again".into(),
        ))
    }

    /// Every reason the reservation cannot be collected now with `qr`.
    async fn pickup_refusals(
        &self,
        user: &UserId,
        current: &order::Model,
        state: OrderState,
        qr: &QrPayload,
    ) -> Result<Vec<PreconditionViolation>, OrdersError> {
        let mut violations = Vec::new();
        let kiosk_subject = format!("kiosks/{}", qr.kiosk_id);
        let order_subject = format!("orders/{}", current.order_id);
        match self.store.kiosk_profile(qr.kiosk_id.as_str()).await? {
            None => return Err(OrdersError::KioskNotRegistered(qr.kiosk_id.to_string())),
            Some(profile) => violations.extend(self.stale_qr(&profile, qr)?),
        }
        if qr.kiosk_id.as_str() != current.kiosk_id {
            violations.push(violation(
                "WRONG_KIOSK",
                kiosk_subject,
                &format!(
                    "Your reservation waits at kiosk {}, not this one.",
                    current.kiosk_id
                ),
            ));
        }
        let expired = state == OrderState::Expired
            || current.pickup_deadline.is_some_and(|at| at <= self.now());
        if expired {
            violations.push(violation(
                "PICKUP_EXPIRED",
                order_subject.clone(),
                "The pickup window has passed.",
            ));
        } else if state != OrderState::ReadyForPickup {
            violations.push(violation(
                "NOT_READY",
                order_subject,
                match state {
                    OrderState::Cancelled | OrderState::Refunded => {
                        "The reservation was cancelled."
                    }
                    _ => "Your drive is not ready yet; follow the order to see when it is.",
                },
            ));
        }
        let open = self
            .store
            .account(&user.to_string())
            .await?
            .and_then(|a| a.open_order_id)
            .filter(|open| *open != current.order_id);
        if let Some(open) = open {
            violations.push(violation(
                "ITEM_OUT",
                format!("orders/{open}"),
                "Return the item you have before collecting another.",
            ));
        }
        if qr.kiosk_id.as_str() == current.kiosk_id
            && let Err(OrdersError::Refused {
                violations: more, ..
            }) = self.check_kiosk_open(&qr.kiosk_id).await
        {
            violations.extend(more);
        }
        Ok(violations)
    }

    /// The caller's order; NOT_FOUND for an unknown order and another user's alike.
    pub(crate) async fn own_order(
        &self,
        user: &UserId,
        id: &OrderId,
    ) -> Result<order::Model, OrdersError> {
        self.store
            .order(&id.to_string())
            .await?
            .filter(|o| o.user_id == user.to_string())
            .ok_or_else(|| OrdersError::OrderNotFound(id.to_string()))
    }
}

/// The fifth instruction for a reservation: its package (none for a blank drive) onto a drive
/// of the capacity, pinned to the order.
fn provision_command(request: &ReservationAsk, order_id: &str) -> gateway::CommandPayload {
    gateway::CommandPayload {
        kind: Some(gateway::command_payload::Kind::Provision(
            gateway::ProvisionCommand {
                order_id: order_id.to_owned(),
                package_id: request
                    .package_id
                    .as_ref()
                    .map_or_else(String::new, |p| p.to_string()),
                capacity_bytes: request.capacity_bytes,
                write_protect: request.write_protect,
            },
        )),
    }
}

/// The third instruction at pickup: the drive pinned to the order, by name.
fn lend_pinned(item_id: &str, order_id: &str) -> gateway::CommandPayload {
    gateway::CommandPayload {
        kind: Some(gateway::command_payload::Kind::Lend(gateway::LendCommand {
            target: Some(gateway::lend_command::Target::ItemId(item_id.to_owned())),
            order_id: order_id.to_owned(),
        })),
    }
}
