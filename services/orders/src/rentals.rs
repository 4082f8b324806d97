//! The user-facing flows of seed flow 1 around the store and the payment provider: scanning a
//! kiosk (first instruction), deposits, and renting (second instruction; the lend itself, the
//! third, leaves through the outbox). Each store step is one transaction; the provider is
//! asked between them, never inside one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prost::Message;
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::gateway::v1 as gateway;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_runtime::clock::SharedClock;
use sneakernet_runtime::qr::QrPayload;
use sneakernet_runtime::wire::timestamp;
use sneakernet_runtime::{ApiError, ErrorInfo, PreconditionViolation, UserId};
use tokio::sync::Notify;

use crate::convert;
use crate::domain::money::{Currency, Money};
use crate::entity::{deposit, order, pricing_rule};
use crate::payments::{ChargeRequest, PaymentError, PaymentProvider};
use crate::sealing::SealingKey;
use crate::store::fleet::TypeKey;
use crate::store::money::{Abandon, DepositCharge, DepositStart, RefundStart};
use crate::store::orders::{PaidRental, RentalRequest, RentalStart};
use crate::store::{Store, StoreError};

/// The domain of ErrorInfo details.
const DOMAIN: &str = "orders.sneakernet";
/// How often a charge that timed out is asked again before the caller is told UNAVAILABLE.
const CHARGE_TRIES: u32 = 3;

/// What the flows need.
#[derive(Clone, Debug)]
pub struct Rentals {
    /// The database.
    pub store: Store,
    /// The card processor.
    pub provider: Arc<dyn PaymentProvider>,
    /// Now.
    pub clock: SharedClock,
    /// Seals QR secrets.
    pub sealing: SealingKey,
    /// The deposit asked of every account.
    pub deposit: Money,
    /// How long offers last.
    pub offer_ttl: Duration,
    /// How long a kiosk has to lend.
    pub lend_deadline: Duration,
    /// Wakes the settling worker (an outbox row or a refund is waiting).
    pub wake: Arc<Notify>,
}

/// How a charge ended.
enum ChargeOutcome {
    Yes(crate::payments::Charge),
    Declined,
    NothingCharged,
    Unknown,
    Invalid(String),
}

/// A fingerprint of a request's parameters, to refuse a reused idempotency key.
pub fn fingerprint(parts: &[&str]) -> String {
    let mut hasher = blake3::Hasher::new();
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.finalize().to_hex().to_string()
}

fn violation(kind: &str, subject: String, description: &str) -> PreconditionViolation {
    PreconditionViolation {
        kind: kind.into(),
        subject,
        description: description.into(),
    }
}

fn refuse(violations: Vec<PreconditionViolation>, info: Option<ErrorInfo>) -> ApiError {
    let message = violations
        .iter()
        .map(|v| v.description.clone())
        .collect::<Vec<_>>()
        .join(" ");
    ApiError::FailedPrecondition {
        message,
        violations,
        info: info.map(Box::new),
    }
}

fn unavailable(message: &str) -> ApiError {
    ApiError::Unavailable {
        message: message.into(),
        retry_after: Some(Duration::from_secs(2)),
    }
}

/// The best price rule for a type at a site: the site's over the network's; within those, one
/// naming a content package over one naming a capacity over one naming only the kind.
pub fn best_rule<'a>(
    rules: &'a [pricing_rule::Model],
    site_id: &str,
    wanted: &TypeKey,
) -> Option<&'a pricing_rule::Model> {
    rules
        .iter()
        .filter(|r| r.site_id.is_empty() || r.site_id == site_id)
        .filter(|r| r.kind == wanted.kind)
        .filter(|r| r.capacity_bytes == 0 || r.capacity_bytes == wanted.capacity_bytes)
        .filter(|r| {
            r.content_package_id.is_empty() || r.content_package_id == wanted.content_package_id
        })
        .max_by_key(|r| {
            (
                !r.site_id.is_empty(),
                !r.content_package_id.is_empty(),
                r.capacity_bytes != 0,
            )
        })
}

impl Rentals {
    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    fn deposit_info(&self, reason: &str) -> ErrorInfo {
        let mut metadata = HashMap::new();
        metadata.insert(
            "deposit_minor_units".to_owned(),
            self.deposit.minor().to_string(),
        );
        metadata.insert(
            "deposit_currency".to_owned(),
            self.deposit.currency().code().to_owned(),
        );
        ErrorInfo {
            reason: reason.into(),
            domain: DOMAIN.into(),
            metadata,
        }
    }

    fn no_deposit(&self, user: &UserId) -> (PreconditionViolation, ErrorInfo) {
        (
            violation(
                "NO_DEPOSIT",
                format!("users/{user}"),
                &format!("Pay the deposit of {} to rent.", self.deposit),
            ),
            self.deposit_info("NO_DEPOSIT"),
        )
    }

    fn deposit_changed(&self) -> ApiError {
        let info = self.deposit_info("DEPOSIT_AMOUNT_CHANGED");
        refuse(
            vec![violation(
                "DEPOSIT_AMOUNT_CHANGED",
                String::new(),
                &format!("The deposit is now {}.", self.deposit),
            )],
            Some(info),
        )
    }

    /// The offer lines of a kiosk now: each type with free units and a price rule.
    async fn offer_lines(
        &self,
        site_id: &str,
        kiosk_id: &str,
    ) -> Result<Vec<pb::OfferLine>, ApiError> {
        let available = self.store.available(kiosk_id).await?;
        let rules = self.store.pricing_rules(site_id).await?;
        let mut lines = Vec::new();
        for (key, count) in available {
            let Some(rule) = best_rule(&rules, site_id, &key) else {
                continue;
            };
            let Ok(pricing) = pb::Pricing::decode(rule.pricing.as_slice()) else {
                continue;
            };
            let Ok(terms) = convert::terms("pricing", Some(&pricing)) else {
                continue;
            };
            let prices = convert::offered_durations(terms.max_duration_days)
                .into_iter()
                .filter_map(|days| {
                    terms
                        .rental_price(days)
                        .ok()
                        .map(|price| pb::DurationPrice {
                            duration_days: days,
                            price: Some(convert::money_proto(price)),
                        })
                })
                .collect();
            let write_protect = if key.kind == i32::from(common::ItemKind::Drive) {
                pb::WriteProtectOption::Choosable
            } else {
                pb::WriteProtectOption::NotApplicable
            };
            lines.push(pb::OfferLine {
                item_type: Some(key.to_proto()),
                content_title: String::new(),
                available: count,
                write_protect: write_protect.into(),
                prices,
                pricing: Some(pricing),
            });
        }
        Ok(lines)
    }

    /// First instruction: checks the account and the kiosk and answers the offer.
    pub async fn scan(&self, user: UserId, qr: QrPayload) -> Result<pb::Offer, ApiError> {
        let now = self.now();
        let kiosk_id = qr.kiosk_id.as_str();
        let Some(profile) = self.store.kiosk_profile(kiosk_id).await? else {
            return Err(ApiError::NotFound(format!(
                "kiosk {kiosk_id} is not registered"
            )));
        };
        let secret = self
            .sealing
            .open(kiosk_id, &profile.qr_secret)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let mut violations = Vec::new();
        let mut info = None;
        let kiosk_subject = format!("kiosks/{kiosk_id}");
        let fresh = qr
            .code
            .as_deref()
            .is_some_and(|code| sneakernet_runtime::qr::verify(&secret, code, now));
        if !fresh {
            violations.push(violation(
                "QR_CODE_STALE",
                kiosk_subject.clone(),
                "The code is missing or too old; scan the code on the kiosk's screen again.",
            ));
        }
        let user_key = user.to_string();
        let deposit = self.store.held_deposit(&user_key).await?;
        let account = self.store.account(&user_key).await?;
        if deposit.is_none() {
            let (v, i) = self.no_deposit(&user);
            violations.push(v);
            info = Some(i);
        } else if account.as_ref().is_none_or(|a| a.card_token.is_empty()) {
            violations.push(violation(
                "NO_PAYMENT_METHOD",
                format!("users/{user}"),
                "Add a payment method to rent.",
            ));
        }
        if let Some(open) = account.as_ref().and_then(|a| a.open_order_id.clone()) {
            violations.push(violation(
                "ITEM_OUT",
                format!("orders/{open}"),
                "Return the item you have before renting another.",
            ));
        }
        let online = self
            .store
            .kiosk(kiosk_id)
            .await?
            .is_some_and(|view| view.online);
        if profile.out_of_service {
            violations.push(violation(
                "KIOSK_DISABLED",
                kiosk_subject.clone(),
                "This kiosk is out of service.",
            ));
        } else if !online {
            violations.push(violation(
                "KIOSK_OFFLINE",
                kiosk_subject.clone(),
                "This kiosk is not connected right now; try again shortly.",
            ));
        }
        let lines = self.offer_lines(&profile.site_id, kiosk_id).await?;
        if lines.is_empty() && online && !profile.out_of_service {
            violations.push(violation(
                "NOTHING_AVAILABLE",
                kiosk_subject,
                "This kiosk has nothing to rent right now.",
            ));
        }
        if !violations.is_empty() {
            return Err(refuse(violations, info));
        }
        let expires_at = now
            + chrono::Duration::from_std(self.offer_ttl).unwrap_or(chrono::Duration::minutes(5));
        let offer = pb::Offer {
            offer_id: uuid::Uuid::new_v4().to_string(),
            kiosk_id: kiosk_id.to_owned(),
            site_name: profile.site_name.clone(),
            expires_at: Some(timestamp(expires_at)),
            lines,
            ready_reservations: vec![],
        };
        self.store.save_offer(&offer, &user_key, expires_at).await?;
        Ok(offer)
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
    async fn orphan_on_race<T>(
        &self,
        booked: Result<T, StoreError>,
        payment_key: &str,
        charge_id: &str,
    ) -> Result<T, ApiError> {
        match booked {
            Err(StoreError::Raced(message)) => {
                tracing::warn!(
                    payment_key,
                    "a charge lost its booking race; it will be paid back unless retried"
                );
                self.store
                    .orphan_attempt(payment_key, charge_id, self.now())
                    .await?;
                Err(ApiError::Aborted(message))
            }
            other => Ok(other?),
        }
    }

    /// PayDeposit.
    pub async fn pay_deposit(
        &self,
        user: UserId,
        amount: Money,
        card_token: String,
        idempotency_key: String,
    ) -> Result<deposit::Model, ApiError> {
        let user_key = user.to_string();
        let hash = fingerprint(&[&amount.to_string(), &card_token]);
        // A key that already paid is answered as it was, even if the deposit asked changed
        // since.
        if let Some(paid) = self
            .store
            .payment_attempt(&format!("deposit:{user_key}:{idempotency_key}"))
            .await?
            .filter(|a| a.state == crate::store::money::attempt_state::CHARGED)
        {
            if paid.request_hash != hash {
                return Err(ApiError::invalid(
                    "idempotency_key",
                    "was used for another PayDeposit request",
                ));
            }
            if let Some(deposit) = self.store.deposit(&paid.subject_id).await? {
                return Ok(deposit);
            }
        }
        if amount != self.deposit {
            return Err(self.deposit_changed());
        }
        let now = self.now();
        let start = self
            .store
            .begin_deposit(&user_key, &idempotency_key, &hash, amount, &card_token, now)
            .await?;
        let (payment_key, deposit_id) = match start {
            DepositStart::Existing(deposit) => return Ok(deposit),
            DepositStart::KeyReused => {
                return Err(ApiError::invalid(
                    "idempotency_key",
                    "was used for another PayDeposit request",
                ));
            }
            DepositStart::AlreadyHeld => {
                return Err(ApiError::AlreadyExists(
                    "the account already holds a deposit".into(),
                ));
            }
            DepositStart::Declined => return Err(declined()),
            DepositStart::Abandoned => return Err(abandoned()),
            DepositStart::Resolving => return Err(resolving()),
            DepositStart::Charge {
                payment_key,
                deposit_id,
            } => (payment_key, deposit_id),
        };
        let outcome = self
            .charge(ChargeRequest {
                idempotency_key: payment_key.clone(),
                card_token: card_token.clone(),
                amount,
            })
            .await;
        let abandon = |outcome| {
            self.store
                .abandon_deposit(&user_key, &payment_key, &deposit_id, outcome, self.now())
        };
        match outcome {
            ChargeOutcome::Yes(charge) => {
                let charge_id = charge.charge_id.clone();
                let booked = self
                    .store
                    .finish_deposit(
                        DepositCharge {
                            user_id: user_key.clone(),
                            deposit_id: deposit_id.clone(),
                            payment_key: payment_key.clone(),
                            charge_id: charge.charge_id,
                            amount,
                            card_token,
                            idempotency_key,
                        },
                        self.now(),
                    )
                    .await;
                Ok(self
                    .orphan_on_race(booked, &payment_key, &charge_id)
                    .await?)
            }
            ChargeOutcome::Declined => {
                abandon(Abandon::Declined).await?;
                Err(declined())
            }
            ChargeOutcome::NothingCharged => {
                abandon(Abandon::NothingCharged).await?;
                Err(unavailable(
                    "the payment processor failed; nothing was charged; retry",
                ))
            }
            ChargeOutcome::Invalid(why) => {
                abandon(Abandon::NothingCharged).await?;
                Err(ApiError::invalid("payment_method.card_token", why))
            }
            ChargeOutcome::Unknown => {
                abandon(Abandon::Unknown).await?;
                Err(unavailable(
                    "the payment provider did not answer; retry with the same idempotency key",
                ))
            }
        }
    }

    /// RefundDeposit: the refund itself is paid by the settling worker, at once.
    pub async fn refund_deposit(
        &self,
        user: UserId,
        idempotency_key: String,
    ) -> Result<deposit::Model, ApiError> {
        match self
            .store
            .begin_deposit_refund(&user.to_string(), &idempotency_key, self.now())
            .await?
        {
            RefundStart::Existing(deposit) => Ok(deposit),
            RefundStart::NoDeposit => {
                Err(ApiError::NotFound("the account holds no deposit".into()))
            }
            RefundStart::Busy(order_id) => {
                let open = self.store.order(&order_id).await?;
                let kind = match open.as_ref().map(|o| o.state.as_str()) {
                    Some("lent") => "ITEM_OUT",
                    _ => "ORDER_IN_FLIGHT",
                };
                Err(refuse(
                    vec![violation(
                        kind,
                        format!("orders/{order_id}"),
                        "The deposit can be refunded once every order is settled and nothing is out.",
                    )],
                    None,
                ))
            }
            RefundStart::Refund(deposit) => {
                self.wake.notify_one();
                Ok(deposit)
            }
        }
    }

    /// Second instruction: holds a unit, charges, books the order and queues the lend.
    pub async fn create_rental(
        &self,
        user: UserId,
        request: RentalAsk,
    ) -> Result<order::Model, ApiError> {
        let user_key = user.to_string();
        let spec = &request.spec;
        let item_type = spec.item_type.clone().unwrap_or_default();
        let hash = fingerprint(&[
            &request.kiosk_id,
            &item_type.kind.to_string(),
            &item_type.capacity_bytes.to_string(),
            &item_type.content_package_id,
            &spec.write_protect.to_string(),
            &request.duration_days.to_string(),
            request.card_token.as_deref().unwrap_or("-"),
        ]);
        // The price is part of the request too: a retry after a price change must not reuse
        // a key whose charge was for the old amount (checked once the price is known).
        let priced_hash = |price: &Money| fingerprint(&[&hash, &price.to_string()]);
        if let Some(existing) = self
            .store
            .order_by_key(&user_key, &request.idempotency_key)
            .await?
        {
            if existing.request_hash == hash {
                return Ok(existing);
            }
            return Err(key_reused());
        }
        let now = self.now();
        let offer = self
            .store
            .offer(&request.offer_id)
            .await?
            .filter(|o| o.user_id == user_key && o.kiosk_id == request.kiosk_id)
            .ok_or_else(|| {
                ApiError::invalid("offer_id", "is not an offer made to you at this kiosk")
            })?;
        let body = pb::Offer::decode(offer.body.as_slice())
            .map_err(|e| ApiError::Internal(format!("stored offer: {e}")))?;
        let wanted = TypeKey::from_proto(&item_type);
        let line = body
            .lines
            .iter()
            .find(|l| l.item_type.as_ref().map(TypeKey::from_proto).as_ref() == Some(&wanted))
            .ok_or_else(|| ApiError::invalid("choice.spec.item_type", "is not in the offer"))?;
        let price = line
            .prices
            .iter()
            .find(|p| p.duration_days == request.duration_days)
            .and_then(|p| p.price.as_ref())
            .ok_or_else(|| {
                ApiError::invalid("choice.duration_days", "is not a length the offer lists")
            })?;
        let price =
            convert::money("price", Some(price)).map_err(|v| ApiError::Internal(v.description))?;
        // An expired offer is still honoured for a retry of this key whose payment outcome is
        // not known yet (the contract says: retry with the same key).
        let retrying = self
            .store
            .payment_attempt(&format!("rental:{user_key}:{}", request.idempotency_key))
            .await?
            .is_some_and(|a| {
                a.request_hash == priced_hash(&price)
                    && a.state == crate::store::money::attempt_state::PENDING
            });
        if offer.expires_at <= now && !retrying {
            return Err(refuse(
                vec![violation(
                    "OFFER_EXPIRED",
                    format!("kiosks/{}", request.kiosk_id),
                    "The offer expired; scan the kiosk again.",
                )],
                None,
            ));
        }
        match pb::WriteProtectOption::try_from(line.write_protect).unwrap_or_default() {
            pb::WriteProtectOption::AlwaysOn if !spec.write_protect => {
                return Err(ApiError::invalid(
                    "choice.spec.write_protect",
                    "must be true for this type",
                ));
            }
            pb::WriteProtectOption::NotApplicable if spec.write_protect => {
                return Err(ApiError::invalid(
                    "choice.spec.write_protect",
                    "must be false: not a drive",
                ));
            }
            _ => {}
        }
        let Some(profile) = self.store.kiosk_profile(&request.kiosk_id).await? else {
            return Err(ApiError::NotFound(format!(
                "kiosk {} is not registered",
                request.kiosk_id
            )));
        };
        let kiosk_subject = format!("kiosks/{}", request.kiosk_id);
        if profile.out_of_service {
            return Err(refuse(
                vec![violation(
                    "KIOSK_DISABLED",
                    kiosk_subject,
                    "This kiosk is out of service.",
                )],
                None,
            ));
        }
        let online = self
            .store
            .kiosk(&request.kiosk_id)
            .await?
            .is_some_and(|v| v.online);
        if !online {
            return Err(refuse(
                vec![violation(
                    "KIOSK_OFFLINE",
                    kiosk_subject,
                    "This kiosk is not connected right now; try again shortly.",
                )],
                None,
            ));
        }
        let remembered = self
            .store
            .account(&user_key)
            .await?
            .map(|a| a.card_token)
            .filter(|t| !t.is_empty());
        let Some(card_token) = request.card_token.clone().or(remembered) else {
            return Err(refuse(
                vec![violation(
                    "NO_PAYMENT_METHOD",
                    format!("users/{user}"),
                    "Add a payment method to rent.",
                )],
                None,
            ));
        };
        let ask = RentalRequest {
            user_id: user_key.clone(),
            idempotency_key: request.idempotency_key.clone(),
            request_hash: hash.clone(),
            attempt_hash: priced_hash(&price),
            kiosk_id: request.kiosk_id.clone(),
            wanted: wanted.clone(),
            card_token: card_token.clone(),
            price,
        };
        let (payment_key, order_id) = match self.store.begin_rental(&ask, now).await? {
            RentalStart::Existing(order) => return Ok(*order),
            RentalStart::KeyReused => return Err(key_reused()),
            RentalStart::Declined => return Err(declined()),
            RentalStart::Abandoned => return Err(abandoned()),
            RentalStart::Resolving => return Err(resolving()),
            RentalStart::NoDeposit => {
                let (v, i) = self.no_deposit(&user);
                return Err(refuse(vec![v], Some(i)));
            }
            RentalStart::ItemOut(open) => {
                return Err(refuse(
                    vec![violation(
                        "ITEM_OUT",
                        format!("orders/{open}"),
                        "Return the item you have (or wait for your last rental to finish) before renting another.",
                    )],
                    None,
                ));
            }
            RentalStart::TypeUnavailable => {
                return Err(refuse(
                    vec![violation(
                        "TYPE_UNAVAILABLE",
                        wanted.subject(),
                        "The last one was just taken; scan again to see what is left.",
                    )],
                    None,
                ));
            }
            RentalStart::Charge {
                payment_key,
                order_id,
            } => (payment_key, order_id),
        };
        let outcome = self
            .charge(ChargeRequest {
                idempotency_key: payment_key.clone(),
                card_token: card_token.clone(),
                amount: price,
            })
            .await;
        let abandon = |outcome| {
            self.store
                .abandon_rental(&payment_key, &order_id, outcome, self.now())
        };
        let charge = match outcome {
            ChargeOutcome::Yes(charge) => charge,
            ChargeOutcome::Declined => {
                abandon(Abandon::Declined).await?;
                return Err(declined());
            }
            ChargeOutcome::NothingCharged => {
                abandon(Abandon::NothingCharged).await?;
                return Err(unavailable(
                    "the payment processor failed; nothing was charged; retry",
                ));
            }
            ChargeOutcome::Invalid(why) => {
                abandon(Abandon::NothingCharged).await?;
                return Err(ApiError::invalid("payment_method.card_token", why));
            }
            ChargeOutcome::Unknown => {
                abandon(Abandon::Unknown).await?;
                return Err(unavailable(
                    "the payment provider did not answer; nothing is held; retry with the same idempotency key",
                ));
            }
        };
        let now = self.now();
        let deadline = now
            + chrono::Duration::from_std(self.lend_deadline)
                .unwrap_or(chrono::Duration::minutes(2));
        let choice = pb::ItemChoice {
            spec: Some(spec.clone()),
            duration_days: request.duration_days,
        };
        let row = order::Model {
            order_id: order_id.clone(),
            user_id: user_key,
            kind: crate::domain::order::OrderKind::Rental.as_str().into(),
            state: crate::domain::order::OrderState::Paid.as_str().into(),
            state_reason: String::new(),
            kiosk_id: request.kiosk_id.clone(),
            choice: choice.encode_to_vec(),
            item_id: String::new(),
            returned_kiosk_id: String::new(),
            write_protected: false,
            pricing: line.pricing.clone().unwrap_or_default().encode_to_vec(),
            price: price.minor(),
            currency: price.currency().code().to_owned(),
            amount_charged: price.minor(),
            amount_refunded: 0,
            idempotency_key: request.idempotency_key.clone(),
            request_hash: hash,
            charge_id: charge.charge_id,
            card_token,
            command_id: None,
            late_item_id: None,
            lost_fee_charged: false,
            version: 0,
            deadline,
            created_at: now,
            updated_at: now,
            lent_at: None,
            due_at: None,
            returned_at: None,
            closed_at: None,
        };
        let lend = gateway::CommandPayload {
            kind: Some(gateway::command_payload::Kind::Lend(gateway::LendCommand {
                target: Some(gateway::lend_command::Target::Spec(spec.clone())),
                order_id: order_id.clone(),
            })),
        };
        let charge_id = row.charge_id.clone();
        let booked = self
            .store
            .finish_rental(
                PaidRental {
                    order: row,
                    payment_key: payment_key.clone(),
                    lend,
                },
                now,
            )
            .await;
        let order = self
            .orphan_on_race(booked, &payment_key, &charge_id)
            .await?;
        self.wake.notify_one();
        Ok(order)
    }
}

/// CreateRental's input, checked at the edge.
#[derive(Clone, Debug)]
pub struct RentalAsk {
    /// The kiosk.
    pub kiosk_id: String,
    /// The offer accepted.
    pub offer_id: String,
    /// The type and write protection.
    pub spec: common::ItemSpec,
    /// Days.
    pub duration_days: u32,
    /// The card, or `None` for the remembered one.
    pub card_token: Option<String>,
    /// The key.
    pub idempotency_key: String,
}

fn declined() -> ApiError {
    refuse(
        vec![violation(
            "PAYMENT_DECLINED",
            String::new(),
            "The card was declined; nothing was charged.",
        )],
        None,
    )
}

fn abandoned() -> ApiError {
    ApiError::Aborted(
        "this request's payment never completed and was paid back; retry with a new idempotency key"
            .into(),
    )
}

fn resolving() -> ApiError {
    unavailable(
        "this request's payment is being checked with the provider; retry with the same idempotency key shortly",
    )
}

fn key_reused() -> ApiError {
    ApiError::invalid(
        "idempotency_key",
        "was used for another request with other parameters",
    )
}

/// The deposit asked, from the configuration.
pub fn configured_deposit(minor: i64, currency: &str) -> Result<Money, String> {
    let currency = Currency::parse(currency).map_err(|e| e.to_string())?;
    Ok(Money::new(minor, currency))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(site: &str, kind: i32, capacity: i64, package: &str) -> pricing_rule::Model {
        pricing_rule::Model {
            rule_key: format!("{site}|{kind}|{capacity}|{package}"),
            site_id: site.into(),
            kind,
            capacity_bytes: capacity,
            content_package_id: package.into(),
            pricing: vec![],
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn the_most_specific_rule_wins_and_a_site_rule_beats_the_network() {
        let drive = i32::from(common::ItemKind::Drive);
        let rules = vec![
            rule("", drive, 0, ""),
            rule("", drive, 1000, ""),
            rule("", drive, 0, "films"),
            rule("s1", drive, 0, ""),
            rule("s2", drive, 0, "films"),
        ];
        let films_1000 = TypeKey {
            kind: drive,
            capacity_bytes: 1000,
            content_package_id: "films".into(),
        };
        let blank_1000 = TypeKey {
            content_package_id: String::new(),
            ..films_1000.clone()
        };
        let key = |site, wanted| best_rule(&rules, site, wanted).map(|r| r.rule_key.clone());
        assert_eq!(key("s1", &films_1000).as_deref(), Some("s1|1|0|"));
        assert_eq!(key("s2", &films_1000).as_deref(), Some("s2|1|0|films"));
        assert_eq!(key("s3", &films_1000).as_deref(), Some("|1|0|films"));
        assert_eq!(key("s3", &blank_1000).as_deref(), Some("|1|1000|"));
        let bank = TypeKey {
            kind: i32::from(common::ItemKind::PowerBank),
            capacity_bytes: 0,
            content_package_id: String::new(),
        };
        assert_eq!(key("s1", &bank), None, "no rule, no offer");
    }

    #[test]
    fn fingerprints_separate_their_parts() {
        assert_ne!(fingerprint(&["ab", "c"]), fingerprint(&["a", "bc"]));
        assert_eq!(fingerprint(&["a", "b"]), fingerprint(&["a", "b"]));
    }
}
