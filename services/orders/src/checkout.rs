//! The steps of selling an order, shared by every flow that takes money for one (rentals and
//! reservations). A flow runs them in this order, each a transaction of its own or a call to
//! the provider, never the provider inside a transaction:
//!
//! 1. [`Flows::same_key_order`]: a retried request is answered with its order.
//! 2. The price: [`Flows::check_offer_line`] (a rental: the offer, its line and price, write
//!    protection) or [`Flows::site_terms`] (a reservation: the site's price rule for the
//!    type); either way [`attempt_fingerprint`] binds the payment attempt to that price.
//! 3. [`Flows::check_kiosk_open`], [`Flows::card_to_charge`].
//! 4. [`Flows::hold`]: a unit and the account's slot held under a pending payment attempt.
//! 5. [`Flows::charge_or_give_up`]: the charge, or everything held freed.
//! 6. [`Flows::book`]: order, ledger postings and outbox command in one transaction.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prost::Message;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_runtime::{KioskId, UserId};

use crate::convert;
use crate::domain::money::Money;
use crate::domain::offer::{TypeKey, check_write_protect, priced_line};
use crate::domain::order::{OrderKind, OrderState};
use crate::domain::payment_attempt::AttemptState;
use crate::domain::pricing::Terms;
use crate::entity::order;
use crate::error::OrdersError;
use crate::flows::{Flows, declined, fingerprint, key_reused};
use crate::ids::{IdempotencyKey, OfferId};
use crate::payments::{Charge, ChargeRequest, PaymentError, ProviderKey};
use crate::store::StoreError;
use crate::store::money::Abandon;
use crate::store::orders::{Opening, OrderOpening, PaidOrder, payment_key};

/// How often a charge that timed out is asked again before the caller is told UNAVAILABLE.
const CHARGE_TRIES: u32 = 3;

/// The fingerprint a payment attempt is kept under: the request's with its price, so a retry
/// at another price is another charge.
pub fn attempt_fingerprint(request_hash: &str, price: Money) -> String {
    fingerprint(&[request_hash, &price.to_string()])
}

/// How a charge ended.
enum ChargeOutcome {
    Yes(Charge),
    Declined,
    NothingCharged,
    Unknown,
    Invalid(String),
}

/// A choice from an offer, as the user made it.
#[derive(Clone, Copy, Debug)]
pub struct OfferChoice<'a> {
    /// What the order will be.
    pub kind: OrderKind,
    /// The account.
    pub user_id: &'a UserId,
    /// The kiosk the offer is for.
    pub kiosk_id: &'a KioskId,
    /// The offer.
    pub offer_id: &'a OfferId,
    /// The type chosen.
    pub wanted: &'a TypeKey,
    /// Days.
    pub duration_days: u32,
    /// Write protection asked.
    pub write_protect: bool,
    /// The request's idempotency key.
    pub idempotency_key: &'a IdempotencyKey,
    /// The request's fingerprint.
    pub request_hash: &'a str,
}

/// An offer line checked for a choice, with its price.
#[derive(Clone, Debug)]
pub struct OfferedLine {
    /// The line chosen.
    pub line: pb::OfferLine,
    /// The price of the length chosen.
    pub price: Money,
    /// The request's fingerprint with the price: a retry at another price is another charge.
    pub attempt_hash: String,
}

/// What [`Flows::hold`] got: the order this key already made, or a hold to charge for.
#[derive(Clone, Debug)]
pub enum Holding {
    /// This key already made this order: answer it.
    Answered(Box<order::Model>),
    /// A unit and the slot are held.
    Held(Held),
}

/// A unit and the account's slot held for an order about to be charged.
#[derive(Clone, Debug)]
pub struct Held {
    /// The provider key to charge under.
    pub payment_key: String,
    /// The order the charge pays for.
    pub order_id: String,
}

/// A new order, paid: what is stored at its first version.
#[derive(Clone, Debug)]
pub struct NewOrder {
    /// Rental or reservation.
    pub kind: OrderKind,
    /// The order id the unit is held for.
    pub order_id: String,
    /// The account.
    pub user_id: String,
    /// The kiosk.
    pub kiosk_id: String,
    /// What was chosen.
    pub choice: pb::ItemChoice,
    /// The terms it was sold under.
    pub pricing: pb::Pricing,
    /// The price charged.
    pub price: Money,
    /// The request's idempotency key and fingerprint.
    pub idempotency_key: String,
    /// See `idempotency_key`.
    pub request_hash: String,
    /// The provider's charge.
    pub charge_id: String,
    /// The card charged (fees go to it).
    pub card_token: String,
    /// When the order's next step is due.
    pub deadline: DateTime<Utc>,
    /// Title of the content chosen (empty when none or not known).
    pub content_title: String,
}

impl NewOrder {
    /// The order row, PAID, at version 0 (booking saves it as version 1).
    pub fn paid_row(self, now: DateTime<Utc>) -> order::Model {
        order::Model {
            order_id: self.order_id,
            user_id: self.user_id,
            kind: self.kind.as_str().into(),
            state: OrderState::Paid.as_str().into(),
            state_reason: String::new(),
            kiosk_id: self.kiosk_id,
            choice: self.choice.encode_to_vec(),
            item_id: String::new(),
            returned_kiosk_id: String::new(),
            write_protected: false,
            pricing: self.pricing.encode_to_vec(),
            price: self.price.minor(),
            currency: self.price.currency().code().to_owned(),
            amount_charged: self.price.minor(),
            amount_refunded: 0,
            idempotency_key: self.idempotency_key,
            request_hash: self.request_hash,
            charge_id: self.charge_id,
            card_token: self.card_token,
            command_id: None,
            late_item_id: None,
            lost_fee_charged: false,
            version: 0,
            deadline: self.deadline,
            created_at: now,
            updated_at: now,
            lent_at: None,
            due_at: None,
            returned_at: None,
            closed_at: None,
            pickup_deadline: None,
            content_title: self.content_title,
            remote_link: false,
            write_protect_wanted: None,
        }
    }
}

impl Flows {
    /// The order this user already made with this key: `Some` when the request is the same
    /// (answer it again), INVALID_ARGUMENT when the key came with other parameters.
    pub async fn same_key_order(
        &self,
        user: &UserId,
        idempotency_key: &IdempotencyKey,
        request_hash: &str,
    ) -> Result<Option<order::Model>, OrdersError> {
        match self
            .store
            .order_by_key(&user.to_string(), idempotency_key.as_str())
            .await?
        {
            Some(existing) if existing.request_hash == request_hash => Ok(Some(existing)),
            Some(_) => Err(key_reused()),
            None => Ok(None),
        }
    }

    /// Checks a choice against the offer it names: the offer was made to this user at this
    /// kiosk, offers the type, prices the length, and the write protection fits the type. An
    /// expired offer is refused, except for a retry of a key whose payment outcome is not
    /// known yet (the contract says: retry with the same key).
    pub async fn check_offer_line(
        &self,
        choice: &OfferChoice<'_>,
    ) -> Result<OfferedLine, OrdersError> {
        let user_key = choice.user_id.to_string();
        let offer = self
            .store
            .offer(choice.offer_id.as_str())
            .await?
            .filter(|o| o.user_id == user_key && o.kiosk_id == choice.kiosk_id.as_str())
            .ok_or_else(|| {
                OrdersError::invalid("offer_id", "is not an offer made to you at this kiosk")
            })?;
        let body = pb::Offer::decode(offer.body.as_slice())
            .map_err(|e| OrdersError::Corrupt(format!("stored offer: {e}")))?;
        let (line, price) = priced_line(&body, choice.wanted, choice.duration_days)?;
        let price = convert::money("price", Some(price))
            .map_err(|v| OrdersError::Corrupt(v.description))?;
        let attempt_hash = attempt_fingerprint(choice.request_hash, price);
        let retrying = self
            .store
            .payment_attempt(&payment_key(
                choice.kind,
                &user_key,
                choice.idempotency_key.as_str(),
            ))
            .await?
            .is_some_and(|a| {
                a.request_hash == attempt_hash
                    && AttemptState::parse(&a.state) == Some(AttemptState::Pending)
            });
        if offer.expires_at <= self.now() && !retrying {
            return Err(OrdersError::refused_one(
                "OFFER_EXPIRED",
                format!("kiosks/{}", choice.kiosk_id),
                "The offer expired; scan the kiosk again.",
            ));
        }
        let option = pb::WriteProtectOption::try_from(line.write_protect).unwrap_or_default();
        check_write_protect(option, choice.write_protect)?;
        Ok(OfferedLine {
            line: line.clone(),
            price,
            attempt_hash,
        })
    }

    /// The terms of the most specific price rule for `wanted` at `site_id` (see
    /// [`best_rule`]), `None` when no rule applies or the stored one cannot be read (the type
    /// is not sold there).
    pub async fn site_terms(
        &self,
        site_id: &str,
        wanted: &TypeKey,
    ) -> Result<Option<(pb::Pricing, Terms)>, OrdersError> {
        let rules = self.store.pricing_rules(site_id).await?;
        Ok(crate::prices::site_terms(&rules, site_id, wanted))
    }

    /// The kiosk is registered, in service and connected now.
    pub async fn check_kiosk_open(&self, kiosk_id: &KioskId) -> Result<(), OrdersError> {
        let Some(profile) = self.store.kiosk_profile(kiosk_id.as_str()).await? else {
            return Err(OrdersError::KioskNotRegistered(kiosk_id.to_string()));
        };
        let kiosk_subject = format!("kiosks/{kiosk_id}");
        if profile.out_of_service {
            return Err(OrdersError::refused_one(
                "KIOSK_DISABLED",
                kiosk_subject,
                "This kiosk is out of service.",
            ));
        }
        let online = self
            .store
            .kiosk(kiosk_id.as_str())
            .await?
            .is_some_and(|v| v.online);
        if !online {
            return Err(OrdersError::refused_one(
                "KIOSK_OFFLINE",
                kiosk_subject,
                "This kiosk is not connected right now; try again shortly.",
            ));
        }
        Ok(())
    }

    /// The card to charge: the one given, else the account's remembered one; refused when
    /// there is neither.
    pub async fn card_to_charge(
        &self,
        user: &UserId,
        given: Option<String>,
    ) -> Result<String, OrdersError> {
        let remembered = self
            .store
            .account(&user.to_string())
            .await?
            .map(|a| a.card_token)
            .filter(|t| !t.is_empty());
        given.or(remembered).ok_or_else(|| {
            OrdersError::refused_one(
                "NO_PAYMENT_METHOD",
                format!("users/{user}"),
                "Add a payment method to rent.",
            )
        })
    }

    /// Holds a unit of the wanted type and the account's one open-order slot for the order,
    /// under a pending payment attempt ([`crate::store::Store::open_order`]), or finds the order
    /// this key already made; every refusal leaves nothing held.
    pub async fn hold(
        &self,
        user: &UserId,
        opening: &OrderOpening,
    ) -> Result<Holding, OrdersError> {
        match self.store.open_order(opening, self.now()).await? {
            Opening::Existing(order) => Ok(Holding::Answered(order)),
            Opening::KeyReused => Err(key_reused()),
            Opening::Declined => Err(declined()),
            Opening::Abandoned => Err(OrdersError::PaymentAbandoned),
            Opening::Resolving => Err(OrdersError::PaymentResolving),
            Opening::NoDeposit => {
                let (v, i) = self.no_deposit(user);
                Err(OrdersError::refused(vec![v], Some(i)))
            }
            Opening::ItemOut(open) => Err(OrdersError::refused_one(
                "ITEM_OUT",
                format!("orders/{open}"),
                "Return the item you have (or wait for your last rental to finish) before renting another.",
            )),
            Opening::TypeUnavailable => Err(OrdersError::refused_one(
                "TYPE_UNAVAILABLE",
                opening.wanted.subject(),
                match opening.kind {
                    OrderKind::Rental => {
                        "The last one was just taken; scan again to see what is left."
                    }
                    OrderKind::Reservation => {
                        "No drive of that capacity is free at this kiosk now; nothing was charged. Try another kiosk or capacity."
                    }
                },
            )),
            Opening::Charge {
                payment_key,
                order_id,
            } => Ok(Holding::Held(Held {
                payment_key,
                order_id,
            })),
        }
    }

    /// Charges under the payment attempt's key (asked again after a timeout). Whatever did
    /// not end in a charge is given up through `give_up` (which frees what was held and ends
    /// the attempt) and answered: a decline, UNAVAILABLE to retry (`unknown` is the message
    /// when the outcome is not known), or a bad card.
    pub async fn charge_or_give_up<F, Fut>(
        &self,
        request: ChargeRequest,
        give_up: F,
        unknown: &'static str,
    ) -> Result<Charge, OrdersError>
    where
        F: FnOnce(Abandon) -> Fut,
        Fut: Future<Output = Result<(), StoreError>>,
    {
        match self.charge(request).await {
            ChargeOutcome::Yes(charge) => Ok(charge),
            ChargeOutcome::Declined => {
                give_up(Abandon::Declined).await?;
                Err(declined())
            }
            ChargeOutcome::NothingCharged => {
                give_up(Abandon::NothingCharged).await?;
                Err(OrdersError::ProcessorFailed)
            }
            ChargeOutcome::Invalid(why) => {
                give_up(Abandon::NothingCharged).await?;
                Err(OrdersError::invalid("payment_method.card_token", why))
            }
            ChargeOutcome::Unknown => {
                give_up(Abandon::Unknown).await?;
                Err(OrdersError::ProviderSilent(unknown))
            }
        }
    }

    /// Charges for a held order; on failure the unit and the slot are freed.
    pub async fn charge_held(
        &self,
        held: &Held,
        card_token: &str,
        amount: Money,
    ) -> Result<Charge, OrdersError> {
        self.charge_or_give_up(
            ChargeRequest {
                idempotency_key: ProviderKey::derive(&held.payment_key),
                card_token: card_token.to_owned(),
                amount,
            },
            |outcome| {
                self.store
                    .abandon_order(&held.payment_key, &held.order_id, outcome, self.now())
            },
            "the payment provider did not answer; nothing is held; retry with the same idempotency key",
        )
        .await
    }

    /// Books a paid order: its attempt charged, the order with its price postings, and its
    /// kiosk command in the outbox, in one transaction; the settling worker is woken to send
    /// the command. A charge that lost a booking race is left to be paid back (ABORTED).
    pub async fn book(&self, paid: PaidOrder) -> Result<order::Model, OrdersError> {
        let payment_key = paid.payment_key.clone();
        let charge_id = paid.order.charge_id.clone();
        let booked = self.store.book_paid_order(paid, self.now()).await;
        let order = self
            .orphan_on_race(booked, &payment_key, &charge_id)
            .await?;
        self.wake.notify_one();
        Ok(order)
    }

    /// The deadline of a step `within` from now (two minutes if it does not fit).
    pub(crate) fn deadline_in(&self, within: Duration) -> DateTime<Utc> {
        self.now() + chrono::Duration::from_std(within).unwrap_or(chrono::Duration::minutes(2))
    }

    async fn charge(&self, request: ChargeRequest) -> ChargeOutcome {
        let mut wait = Duration::from_millis(100);
        for attempt in 0..CHARGE_TRIES {
            // After a timeout a charge may exist under the key: only a success or a decline
            // is a definite answer then; anything else stays unknown.
            let unsure = attempt > 0;
            match self.provider.charge(request.clone()).await {
                Ok(charge) => return ChargeOutcome::Yes(charge),
                Err(PaymentError::Declined(_)) => return ChargeOutcome::Declined,
                Err(PaymentError::Processor) if !unsure => return ChargeOutcome::NothingCharged,
                Err(PaymentError::Invalid(why)) if !unsure => return ChargeOutcome::Invalid(why),
                Err(PaymentError::Timeout | PaymentError::Unavailable(_)) => {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                // The key was used for another charge (which may have gone through), or an
                // error after a timeout: leave it to the settling worker.
                Err(_) => return ChargeOutcome::Unknown,
            }
        }
        ChargeOutcome::Unknown
    }

    /// A booking that lost a race leaves its charge to be found by a retry or paid back.
    pub(crate) async fn orphan_on_race<T>(
        &self,
        booked: Result<T, StoreError>,
        payment_key: &str,
        charge_id: &str,
    ) -> Result<T, OrdersError> {
        match booked {
            Err(StoreError::Raced(message)) => {
                tracing::warn!(
                    payment_key,
                    "a charge lost its booking race; it will be paid back unless retried"
                );
                self.store
                    .orphan_attempt(payment_key, charge_id, self.now())
                    .await?;
                Err(OrdersError::Raced(message))
            }
            other => Ok(other?),
        }
    }
}
