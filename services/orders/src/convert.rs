//! Checking protobuf input into domain values at the edge, and back. Every error names the
//! field it is about.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_runtime::wire::{duration, from_duration};
use sneakernet_runtime::{ApiError, FieldViolation, KioskId, UserId};

use crate::deposits::DepositAsk;
use crate::domain::availability::TypeFilter;
use crate::domain::geo::SearchArea;
use crate::domain::money::{Currency, Money};
use crate::domain::pricing::Terms;
use crate::error::OrdersError;
use crate::fleet::{
    DEFAULT_PAGE, KioskAsk, KioskListAsk, MAX_PAGE, ParkedCursor, ParkedPageAsk, PricingAsk,
    RegisterAsk,
};
use crate::ids::{IdempotencyKey, OfferId, OrderId};
use crate::nearby::{self, NearbyAsk, PagePosition, search_key};
use crate::orders_list::{DEFAULT_ORDER_PAGE, ListOrdersAsk, MAX_ORDER_PAGE};
use crate::rentals::RentalAsk;
use crate::reservations::{CollectAsk, ReservationAsk};
use crate::scan::ScanAsk;
use crate::write_protect::WriteProtectAsk;
use sneakernet_proto::ids::PackageId;

/// A money field: a known currency, any amount.
pub fn money(field: &str, value: Option<&common::Money>) -> Result<Money, FieldViolation> {
    let value = value.ok_or_else(|| FieldViolation::new(field, "is required"))?;
    let currency = Currency::parse(&value.currency)
        .map_err(|e| FieldViolation::new(format!("{field}.currency"), e.to_string()))?;
    Ok(Money::new(value.minor_units, currency))
}

/// Money as protobuf.
pub fn money_proto(money: Money) -> common::Money {
    common::Money {
        minor_units: money.minor(),
        currency: money.currency().code().to_owned(),
    }
}

/// Checks price terms (`field` is the Pricing field's path).
pub fn terms(field: &str, pricing: Option<&pb::Pricing>) -> Result<Terms, ApiError> {
    let pricing = pricing.ok_or_else(|| ApiError::invalid(field, "is required"))?;
    let mut violations = Vec::new();
    let mut take = |name: &str, value: Option<&common::Money>| match money(
        &format!("{field}.{name}"),
        value,
    ) {
        Ok(money) => Some(money),
        Err(violation) => {
            violations.push(violation);
            None
        }
    };
    let base_price = take("base_price", pricing.base_price.as_ref());
    let price_per_extra_day = take("price_per_extra_day", pricing.price_per_extra_day.as_ref());
    let late_fee_per_day = take("late_fee_per_day", pricing.late_fee_per_day.as_ref());
    let late_fee_cap = take("late_fee_cap", pricing.late_fee_cap.as_ref());
    let lost_item_fee = take("lost_item_fee", pricing.lost_item_fee.as_ref());
    let grace_period = match pricing.grace_period.as_ref().map(from_duration) {
        Some(Some(d)) => chrono::Duration::from_std(d).ok(),
        Some(None) => None,
        None => Some(chrono::Duration::zero()),
    };
    if grace_period.is_none() {
        violations.push(FieldViolation::new(
            format!("{field}.grace_period"),
            "must be a non-negative duration",
        ));
    }
    if let Some(window) = pricing.pickup_window.as_ref() {
        let ok = from_duration(window).is_some_and(|d| {
            (std::time::Duration::from_secs(3600)..=std::time::Duration::from_secs(7 * 24 * 3600))
                .contains(&d)
        });
        if !ok {
            violations.push(FieldViolation::new(
                format!("{field}.pickup_window"),
                "must be 1 hour to 7 days",
            ));
        }
    }
    if !violations.is_empty() {
        return Err(ApiError::InvalidArgument(violations));
    }
    let (
        Some(base_price),
        Some(price_per_extra_day),
        Some(late_fee_per_day),
        Some(late_fee_cap),
        Some(lost_item_fee),
        Some(grace_period),
    ) = (
        base_price,
        price_per_extra_day,
        late_fee_per_day,
        late_fee_cap,
        lost_item_fee,
        grace_period,
    )
    else {
        return Err(ApiError::invalid(field, "is incomplete"));
    };
    let terms = Terms {
        base_price,
        price_per_extra_day,
        max_duration_days: pricing.max_duration_days,
        grace_period,
        late_fee_per_day,
        late_fee_cap,
        lost_item_fee,
        lost_after_days: pricing.lost_after_days,
    };
    terms
        .validate()
        .map_err(|e| ApiError::invalid(field, e.to_string()))?;
    Ok(terms)
}

/// Terms as protobuf (pickup window kept from the stored rule).
pub fn terms_proto(terms: &Terms, pickup_window: Option<prost_types::Duration>) -> pb::Pricing {
    pb::Pricing {
        base_price: Some(money_proto(terms.base_price)),
        price_per_extra_day: Some(money_proto(terms.price_per_extra_day)),
        max_duration_days: terms.max_duration_days,
        grace_period: terms.grace_period.to_std().ok().map(duration),
        late_fee_per_day: Some(money_proto(terms.late_fee_per_day)),
        late_fee_cap: Some(money_proto(terms.late_fee_cap)),
        lost_item_fee: Some(money_proto(terms.lost_item_fee)),
        lost_after_days: terms.lost_after_days,
        pickup_window,
    }
}

/// The rental lengths an offer lists: every day up to a week, then common longer lengths,
/// all within the terms' maximum.
pub fn offered_durations(max_days: u32) -> Vec<u32> {
    (1..=7u32)
        .chain([14, 21, 30, 60, 90, 180, 365])
        .filter(|d| *d <= max_days)
        .collect()
}

/// Checks an item type pattern or choice: kind required; power banks have no capacity or
/// content.
pub fn item_type(
    field: &str,
    value: Option<&common::ItemType>,
) -> Result<common::ItemType, ApiError> {
    let value = value.ok_or_else(|| ApiError::invalid(field, "is required"))?;
    match common::ItemKind::try_from(value.kind) {
        Ok(common::ItemKind::Drive) => {}
        Ok(common::ItemKind::PowerBank) => {
            if value.capacity_bytes != 0 || !value.content_package_id.is_empty() {
                return Err(ApiError::invalid(
                    field,
                    "a power bank has no capacity_bytes or content_package_id",
                ));
            }
        }
        _ => {
            return Err(ApiError::invalid(
                format!("{field}.kind"),
                "must be DRIVE or POWER_BANK",
            ));
        }
    }
    if value.content_package_id.len() > 128 {
        return Err(ApiError::invalid(
            format!("{field}.content_package_id"),
            "must be at most 128 characters",
        ));
    }
    Ok(value.clone())
}

/// Checks an idempotency key: 1 to 128 characters.
pub fn idempotency_key(value: &str) -> Result<IdempotencyKey, FieldViolation> {
    IdempotencyKey::parse(value).map_err(|why| FieldViolation::new("idempotency_key", why))
}

/// Collects the violations of one request's fields, so a client hears of all at once.
#[derive(Debug, Default)]
struct Violations(Vec<FieldViolation>);

impl Violations {
    /// The value, or `None` with its violation kept.
    fn check<T>(&mut self, checked: Result<T, FieldViolation>) -> Option<T> {
        checked.map_err(|v| self.0.push(v)).ok()
    }

    /// Like [`Self::check`], for checks that can fail on several fields.
    fn check_all<T>(&mut self, checked: Result<T, ApiError>) -> Result<Option<T>, OrdersError> {
        match checked {
            Ok(value) => Ok(Some(value)),
            Err(ApiError::InvalidArgument(v)) => {
                self.0.extend(v);
                Ok(None)
            }
            Err(other) => Err(OrdersError::Corrupt(other.to_string())),
        }
    }

    /// Whether nothing was wrong so far.
    fn none(&self) -> bool {
        self.0.is_empty()
    }

    /// INVALID_ARGUMENT naming every violation.
    fn refused(self) -> OrdersError {
        OrdersError::Invalid(self.0)
    }
}

impl TryFrom<pb::CreateRentalRequest> for RentalAsk {
    type Error = OrdersError;

    /// Every field of CreateRental checked, every violation named at once.
    fn try_from(body: pb::CreateRentalRequest) -> Result<Self, OrdersError> {
        let mut violations = Violations::default();
        let kiosk_id = violations.check(
            KioskId::parse(&body.kiosk_id).map_err(|why| FieldViolation::new("kiosk_id", why)),
        );
        let offer_id = violations.check(
            OfferId::parse(&body.offer_id).map_err(|why| FieldViolation::new("offer_id", why)),
        );
        let choice = body.choice.clone().unwrap_or_default();
        let spec = choice.spec.clone().unwrap_or_default();
        if body.choice.is_none() || choice.spec.is_none() {
            violations.check::<()>(Err(FieldViolation::new("choice.spec", "is required")));
        } else {
            violations.check_all(item_type("choice.spec.item_type", spec.item_type.as_ref()))?;
        }
        if choice.duration_days == 0 {
            violations.check::<()>(Err(FieldViolation::new(
                "choice.duration_days",
                "must be at least 1",
            )));
        }
        let card_token = violations.check_all(card_token(body.payment_method.as_ref()))?;
        let idempotency_key = violations.check(idempotency_key(&body.idempotency_key));
        match (kiosk_id, offer_id, card_token, idempotency_key) {
            (Some(kiosk_id), Some(offer_id), Some(card_token), Some(idempotency_key))
                if violations.none() =>
            {
                Ok(RentalAsk {
                    kiosk_id,
                    offer_id,
                    spec,
                    duration_days: choice.duration_days,
                    card_token,
                    idempotency_key,
                })
            }
            _ => Err(violations.refused()),
        }
    }
}

impl TryFrom<pb::CreateReservationRequest> for ReservationAsk {
    type Error = OrdersError;

    /// Every field of CreateReservation checked, every violation named at once: a drive of a
    /// positive capacity, its package (if any) a package id, a length of at least a day.
    fn try_from(body: pb::CreateReservationRequest) -> Result<Self, OrdersError> {
        let mut violations = Violations::default();
        let kiosk_id = violations.check(
            KioskId::parse(&body.kiosk_id).map_err(|why| FieldViolation::new("kiosk_id", why)),
        );
        let choice = body.choice.clone().unwrap_or_default();
        let spec = choice.spec.clone().unwrap_or_default();
        let item_type = spec.item_type.clone().unwrap_or_default();
        let mut package_id = None;
        if body.choice.is_none() || choice.spec.is_none() {
            violations.check::<()>(Err(FieldViolation::new("choice.spec", "is required")));
        } else if spec.item_type.is_none() {
            violations.check::<()>(Err(FieldViolation::new(
                "choice.spec.item_type",
                "is required",
            )));
        } else {
            if item_type.kind != i32::from(common::ItemKind::Drive) {
                violations.check::<()>(Err(FieldViolation::new(
                    "choice.spec.item_type.kind",
                    "must be DRIVE: only drives are reserved",
                )));
            }
            if item_type.capacity_bytes == 0 {
                violations.check::<()>(Err(FieldViolation::new(
                    "choice.spec.item_type.capacity_bytes",
                    "must be positive",
                )));
            }
            if !item_type.content_package_id.is_empty() {
                package_id =
                    violations.check(PackageId::parse(&item_type.content_package_id).map_err(
                        |why| FieldViolation::new("choice.spec.item_type.content_package_id", why),
                    ));
            }
        }
        if choice.duration_days == 0 {
            violations.check::<()>(Err(FieldViolation::new(
                "choice.duration_days",
                "must be at least 1",
            )));
        }
        let card_token = violations.check_all(card_token(body.payment_method.as_ref()))?;
        let idempotency_key = violations.check(idempotency_key(&body.idempotency_key));
        match (kiosk_id, card_token, idempotency_key) {
            (Some(kiosk_id), Some(card_token), Some(idempotency_key)) if violations.none() => {
                Ok(ReservationAsk {
                    kiosk_id,
                    package_id,
                    capacity_bytes: item_type.capacity_bytes,
                    write_protect: spec.write_protect,
                    duration_days: choice.duration_days,
                    card_token,
                    idempotency_key,
                })
            }
            _ => Err(violations.refused()),
        }
    }
}

impl TryFrom<pb::CancelReservationRequest> for OrderId {
    type Error = OrdersError;

    /// CancelReservation names one order.
    fn try_from(body: pb::CancelReservationRequest) -> Result<Self, OrdersError> {
        Ok(OrderId::parse(&body.order_id).map_err(|why| FieldViolation::new("order_id", why))?)
    }
}

impl TryFrom<pb::GetOrderRequest> for OrderId {
    type Error = OrdersError;

    /// GetOrder names one order.
    fn try_from(body: pb::GetOrderRequest) -> Result<Self, OrdersError> {
        Ok(OrderId::parse(&body.order_id).map_err(|why| FieldViolation::new("order_id", why))?)
    }
}

impl TryFrom<pb::WatchOrderRequest> for OrderId {
    type Error = OrdersError;

    /// WatchOrder names one order.
    fn try_from(body: pb::WatchOrderRequest) -> Result<Self, OrdersError> {
        Ok(OrderId::parse(&body.order_id).map_err(|why| FieldViolation::new("order_id", why))?)
    }
}

impl TryFrom<pb::RefundDepositRequest> for IdempotencyKey {
    type Error = OrdersError;

    /// RefundDeposit names only its idempotency key.
    fn try_from(body: pb::RefundDepositRequest) -> Result<Self, OrdersError> {
        Ok(idempotency_key(&body.idempotency_key)?)
    }
}

impl TryFrom<pb::SetWriteProtectRequest> for WriteProtectAsk {
    type Error = OrdersError;

    /// SetWriteProtect names one order; `on` is any bool.
    fn try_from(body: pb::SetWriteProtectRequest) -> Result<Self, OrdersError> {
        let order_id =
            OrderId::parse(&body.order_id).map_err(|why| FieldViolation::new("order_id", why))?;
        Ok(WriteProtectAsk {
            order_id,
            on: body.on,
        })
    }
}

impl TryFrom<pb::CollectReservationRequest> for CollectAsk {
    type Error = OrdersError;

    /// Every field of CollectReservation checked, every violation named at once.
    fn try_from(body: pb::CollectReservationRequest) -> Result<Self, OrdersError> {
        let mut violations = Violations::default();
        let order_id = violations.check(
            OrderId::parse(&body.order_id).map_err(|why| FieldViolation::new("order_id", why)),
        );
        let qr = violations.check(
            sneakernet_runtime::qr::parse(&body.qr_payload)
                .map_err(|why| FieldViolation::new("qr_payload", why)),
        );
        match (order_id, qr) {
            (Some(order_id), Some(qr)) if violations.none() => Ok(CollectAsk { order_id, qr }),
            _ => Err(violations.refused()),
        }
    }
}

impl TryFrom<pb::PayDepositRequest> for DepositAsk {
    type Error = OrdersError;

    /// Every field of PayDeposit checked, every violation named at once.
    fn try_from(body: pb::PayDepositRequest) -> Result<Self, OrdersError> {
        let mut violations = Violations::default();
        let amount = violations.check(money("amount", body.amount.as_ref()));
        let card = match violations.check_all(card_token(body.payment_method.as_ref()))? {
            Some(Some(card)) => Some(card),
            Some(None) => {
                violations.check(Err(FieldViolation::new("payment_method", "is required")))
            }
            None => None,
        };
        let idempotency_key = violations.check(idempotency_key(&body.idempotency_key));
        match (amount, card, idempotency_key) {
            (Some(amount), Some(card_token), Some(idempotency_key)) if violations.none() => {
                Ok(DepositAsk {
                    amount,
                    card_token,
                    idempotency_key,
                })
            }
            _ => Err(violations.refused()),
        }
    }
}

impl TryFrom<pb::FindKiosksRequest> for NearbyAsk {
    type Error = OrdersError;

    /// Every field of FindKiosks checked, every violation named at once.
    fn try_from(body: pb::FindKiosksRequest) -> Result<Self, OrdersError> {
        let mut violations = Violations::default();
        let area = SearchArea::new(body.latitude, body.longitude, body.radius_meters)
            .map_err(|errors| {
                for error in errors {
                    violations
                        .0
                        .push(FieldViolation::new(error.field(), error.to_string()));
                }
            })
            .ok();
        let filter = match &body.item_type {
            None => Some(None),
            Some(wanted) => violations.check_all(type_filter(wanted))?.map(Some),
        };
        let max_results = match body.max_results {
            0 => Some(nearby::DEFAULT_RESULTS),
            n if n <= nearby::MAX_RESULTS => Some(n),
            n => violations.check(Err(FieldViolation::new(
                "max_results",
                format!("must be at most {}, got {n}", nearby::MAX_RESULTS),
            ))),
        };
        let after = match (&area, &filter) {
            (Some(area), Some(filter)) if !body.page_token.is_empty() => violations.check(
                PagePosition::from_token(&body.page_token, &search_key(area, filter.as_ref()))
                    .map(Some)
                    .ok_or_else(|| {
                        FieldViolation::new(
                            "page_token",
                            "was not issued by FindKiosks for this position, radius and filter",
                        )
                    }),
            ),
            _ => Some(None),
        };
        match (area, filter, max_results, after) {
            (Some(area), Some(filter), Some(max_results), Some(after)) if violations.none() => {
                Ok(NearbyAsk {
                    area,
                    filter,
                    max_results,
                    after,
                })
            }
            _ => Err(violations.refused()),
        }
    }
}

/// A FindKiosks type filter: a valid item type whose content package, when named, is a
/// package id (a UUID).
fn type_filter(wanted: &common::ItemType) -> Result<TypeFilter, ApiError> {
    let wanted = item_type("item_type", Some(wanted))?;
    if !wanted.content_package_id.is_empty()
        && uuid::Uuid::parse_str(&wanted.content_package_id).is_err()
    {
        return Err(ApiError::invalid(
            "item_type.content_package_id",
            "must be a content package id (a UUID)",
        ));
    }
    Ok(TypeFilter {
        kind: wanted.kind,
        capacity_bytes: (wanted.capacity_bytes != 0)
            .then(|| i64::try_from(wanted.capacity_bytes).unwrap_or(i64::MAX)),
        content_package_id: (!wanted.content_package_id.is_empty())
            .then_some(wanted.content_package_id),
    })
}

/// The card token of an optional payment method (`None`: use the remembered one).
pub fn card_token(method: Option<&pb::PaymentMethod>) -> Result<Option<String>, ApiError> {
    let Some(method) = method else {
        return Ok(None);
    };
    match &method.method {
        Some(pb::payment_method::Method::CardToken(token)) => {
            if token.is_empty() || token.len() > 256 {
                Err(ApiError::invalid(
                    "payment_method.card_token",
                    "must be 1 to 256 characters",
                ))
            } else {
                Ok(Some(token.clone()))
            }
        }
        None => Err(ApiError::invalid("payment_method.method", "is required")),
    }
}

impl TryFrom<pb::ListOrdersRequest> for ListOrdersAsk {
    type Error = OrdersError;

    /// Every field of ListOrders checked, every violation named at once (the page token is
    /// checked against the caller's filter by [`crate::flows::Flows::list_orders`]).
    fn try_from(body: pb::ListOrdersRequest) -> Result<Self, OrdersError> {
        let mut violations = Violations::default();
        if body.page_size > MAX_ORDER_PAGE {
            violations.check::<()>(Err(FieldViolation::new(
                "page_size",
                format!("must be at most {MAX_ORDER_PAGE}"),
            )));
        }
        let user_id = if body.user_id.is_empty() {
            None
        } else {
            violations
                .check(
                    body.user_id
                        .parse::<UserId>()
                        .map(Some)
                        .map_err(|_| FieldViolation::new("user_id", "must be a UUID")),
                )
                .flatten()
        };
        let kind = violations.check(match pb::OrderKind::try_from(body.kind) {
            Ok(pb::OrderKind::Unspecified) => Ok(None),
            Ok(pb::OrderKind::Rental) => Ok(Some(crate::domain::order::OrderKind::Rental)),
            Ok(pb::OrderKind::Reservation) => {
                Ok(Some(crate::domain::order::OrderKind::Reservation))
            }
            Err(_) => Err(FieldViolation::new("kind", "is not an order kind")),
        });
        let mut states = Vec::with_capacity(body.states.len());
        for (i, state) in body.states.iter().enumerate() {
            if let Some(state) =
                violations.check(crate::store::orders::state_of_proto(*state).ok_or_else(|| {
                    FieldViolation::new(format!("states[{i}]"), "is not an order state")
                }))
            {
                states.push(state);
            }
        }
        match kind {
            Some(kind) if violations.none() => Ok(ListOrdersAsk {
                page_size: if body.page_size == 0 {
                    DEFAULT_ORDER_PAGE
                } else {
                    body.page_size
                },
                user_id,
                kind,
                states,
                page_token: body.page_token,
                fingerprint_of: (body.kind, body.states),
            }),
            _ => Err(violations.refused()),
        }
    }
}

impl TryFrom<pb::SetPricingRequest> for PricingAsk {
    type Error = OrdersError;

    /// Every field of SetPricing checked, every violation named at once.
    fn try_from(body: pb::SetPricingRequest) -> Result<Self, OrdersError> {
        let mut violations = Violations::default();
        let site_id = if body.site_id.is_empty() {
            Some(String::new())
        } else {
            violations.check(
                KioskId::parse(&body.site_id)
                    .map(|id| id.as_str().to_owned())
                    .map_err(|why| FieldViolation::new("site_id", why)),
            )
        };
        let item_type = violations.check_all(item_type("item_type", body.item_type.as_ref()))?;
        if let Some(item_type) = &item_type
            && i64::try_from(item_type.capacity_bytes).is_err()
        {
            violations.check::<()>(Err(FieldViolation::new(
                "item_type.capacity_bytes",
                "is too large",
            )));
        }
        let terms = violations.check_all(terms("pricing", body.pricing.as_ref()))?;
        if let Some(terms) = &terms
            && terms.base_price.minor() <= 0
        {
            // Every order is charged through the provider, which takes no zero amounts.
            violations.check::<()>(Err(FieldViolation::new(
                "pricing.base_price",
                "must be positive (free rentals are not supported)",
            )));
        }
        match (site_id, item_type, terms) {
            (Some(site_id), Some(item_type), Some(terms)) if violations.none() => Ok(PricingAsk {
                site_id,
                item_type,
                terms,
                pickup_window: body.pricing.and_then(|p| p.pickup_window),
            }),
            _ => Err(violations.refused()),
        }
    }
}

impl TryFrom<pb::ScanKioskRequest> for ScanAsk {
    type Error = OrdersError;

    /// The QR payload checked (its kiosk id and code; whether the code is current is the
    /// scan's own check).
    fn try_from(body: pb::ScanKioskRequest) -> Result<Self, OrdersError> {
        let qr = sneakernet_runtime::qr::parse(&body.qr_payload)
            .map_err(|why| FieldViolation::new("qr_payload", why))?;
        Ok(ScanAsk { qr })
    }
}

/// A site id: the kiosk-id character rules.
fn site_id(field: &str, raw: &str) -> Result<String, FieldViolation> {
    KioskId::parse(raw)
        .map(|id| id.as_str().to_owned())
        .map_err(|why| FieldViolation::new(field, why))
}

/// A FleetService page size: 0 means [`DEFAULT_PAGE`], at most [`MAX_PAGE`].
fn page_size(raw: u32) -> Result<u32, FieldViolation> {
    match raw {
        0 => Ok(DEFAULT_PAGE),
        1..=MAX_PAGE => Ok(raw),
        _ => Err(FieldViolation::new(
            "page_size",
            format!("must be at most {MAX_PAGE}"),
        )),
    }
}

impl TryFrom<pb::RegisterKioskRequest> for RegisterAsk {
    type Error = OrdersError;

    /// Every field of RegisterKiosk checked, every violation named at once.
    fn try_from(body: pb::RegisterKioskRequest) -> Result<Self, OrdersError> {
        let mut violations = Violations::default();
        let kiosk_id = violations.check(
            KioskId::parse(&body.kiosk_id).map_err(|why| FieldViolation::new("kiosk_id", why)),
        );
        let site_id = violations.check(site_id("site_id", &body.site_id));
        let name_len = body.site_name.chars().count();
        if name_len == 0 || name_len > 200 || body.site_name.trim().is_empty() {
            violations.check::<()>(Err(FieldViolation::new(
                "site_name",
                "must be 1 to 200 characters",
            )));
        }
        match &body.location {
            None => {
                violations.check::<()>(Err(FieldViolation::new("location", "is required")));
            }
            Some(location) => {
                if !(-90.0..=90.0).contains(&location.latitude) {
                    violations.check::<()>(Err(FieldViolation::new(
                        "location.latitude",
                        "must be -90 to 90",
                    )));
                }
                if !(-180.0..=180.0).contains(&location.longitude) {
                    violations.check::<()>(Err(FieldViolation::new(
                        "location.longitude",
                        "must be -180 to 180",
                    )));
                }
            }
        }
        if !sneakernet_runtime::qr::SECRET_LEN.contains(&body.qr_secret.len()) {
            violations.check::<()>(Err(FieldViolation::new(
                "qr_secret",
                "must be 20 to 64 bytes",
            )));
        }
        match (kiosk_id, site_id, body.location) {
            (Some(kiosk_id), Some(site_id), Some(location)) if violations.none() => {
                Ok(RegisterAsk {
                    kiosk_id,
                    site_id,
                    site_name: body.site_name.trim().to_owned(),
                    location,
                    qr_secret: body.qr_secret,
                    out_of_service: body.out_of_service,
                })
            }
            _ => Err(violations.refused()),
        }
    }
}

impl TryFrom<pb::ListKiosksRequest> for KioskListAsk {
    type Error = OrdersError;

    /// Every field of ListKiosks checked, every violation named at once.
    fn try_from(body: pb::ListKiosksRequest) -> Result<Self, OrdersError> {
        let mut violations = Violations::default();
        let size = violations.check(page_size(body.page_size));
        let after = if body.page_token.is_empty() {
            Some(String::new())
        } else {
            violations.check(
                URL_SAFE_NO_PAD
                    .decode(&body.page_token)
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .filter(|id| KioskId::parse(id).is_ok())
                    .ok_or_else(|| {
                        FieldViolation::new("page_token", "was not issued by ListKiosks")
                    }),
            )
        };
        if !body.site_id.is_empty() {
            violations.check(site_id("site_id", &body.site_id));
        }
        match (size, after) {
            (Some(size), Some(after)) if violations.none() => Ok(KioskListAsk {
                after,
                size,
                online_only: body.online_only,
                site_id: body.site_id,
            }),
            _ => Err(violations.refused()),
        }
    }
}

/// The page token ListKiosks answers after `last_kiosk_id`.
pub fn kiosk_page_token(last_kiosk_id: &str) -> String {
    URL_SAFE_NO_PAD.encode(last_kiosk_id)
}

impl TryFrom<pb::GetKioskRequest> for KioskAsk {
    type Error = OrdersError;

    /// The kiosk id checked.
    fn try_from(body: pb::GetKioskRequest) -> Result<Self, OrdersError> {
        KioskId::parse(&body.kiosk_id)
            .map(KioskAsk)
            .map_err(|why| FieldViolation::new("kiosk_id", why).into())
    }
}

impl TryFrom<pb::ListParkedEventsRequest> for ParkedPageAsk {
    type Error = OrdersError;

    /// Every field of ListParkedEvents checked, every violation named at once.
    fn try_from(body: pb::ListParkedEventsRequest) -> Result<Self, OrdersError> {
        let mut violations = Violations::default();
        let size = violations.check(page_size(body.page_size));
        let after = if body.page_token.is_empty() {
            Some(0)
        } else {
            violations.check(
                body.page_token
                    .parse::<i64>()
                    .ok()
                    .filter(|after| *after > 0)
                    .ok_or_else(|| {
                        FieldViolation::new("page_token", "is not a token this RPC issued")
                    }),
            )
        };
        match (size, after) {
            (Some(size), Some(after)) if violations.none() => Ok(ParkedPageAsk { after, size }),
            _ => Err(violations.refused()),
        }
    }
}

/// A parked event's cursor: positive and within what the store counts.
fn parked_cursor(raw: u64) -> Result<ParkedCursor, OrdersError> {
    i64::try_from(raw)
        .ok()
        .filter(|c| *c > 0)
        .map(ParkedCursor)
        .ok_or_else(|| OrdersError::invalid("cursor", "must be a parked event's cursor"))
}

impl TryFrom<pb::RetryParkedEventRequest> for ParkedCursor {
    type Error = OrdersError;

    /// The cursor checked.
    fn try_from(body: pb::RetryParkedEventRequest) -> Result<Self, OrdersError> {
        parked_cursor(body.cursor)
    }
}

impl TryFrom<pb::DropParkedEventRequest> for ParkedCursor {
    type Error = OrdersError;

    /// The cursor checked.
    fn try_from(body: pb::DropParkedEventRequest) -> Result<Self, OrdersError> {
        parked_cursor(body.cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur(minor: i64) -> Option<common::Money> {
        Some(common::Money {
            minor_units: minor,
            currency: "EUR".into(),
        })
    }

    fn pricing() -> pb::Pricing {
        pb::Pricing {
            base_price: eur(400),
            price_per_extra_day: eur(150),
            max_duration_days: 10,
            grace_period: Some(duration(std::time::Duration::from_secs(3600))),
            late_fee_per_day: eur(200),
            late_fee_cap: eur(2000),
            lost_item_fee: eur(6000),
            lost_after_days: 14,
            pickup_window: None,
        }
    }

    #[test]
    fn terms_round_trip_and_bad_fields_are_named() {
        let checked = terms("pricing", Some(&pricing())).unwrap();
        assert_eq!(checked.price_for_days(3).unwrap().minor(), 700);
        assert_eq!(terms_proto(&checked, None), pricing());

        let mut bad = pricing();
        bad.late_fee_per_day = Some(common::Money {
            minor_units: 1,
            currency: "XXX".into(),
        });
        bad.lost_item_fee = None;
        let ApiError::InvalidArgument(violations) = terms("pricing", Some(&bad)).unwrap_err()
        else {
            panic!("expected INVALID_ARGUMENT");
        };
        let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            ["pricing.late_fee_per_day.currency", "pricing.lost_item_fee"]
        );

        let mut mixed = pricing();
        mixed.late_fee_cap = Some(common::Money {
            minor_units: 1,
            currency: "USD".into(),
        });
        assert!(terms("pricing", Some(&mixed)).is_err());
        let mut long = pricing();
        long.max_duration_days = 400;
        assert!(terms("pricing", Some(&long)).is_err());
    }

    fn fields(error: OrdersError) -> Vec<String> {
        let OrdersError::Invalid(violations) = error else {
            panic!("expected INVALID_ARGUMENT, got {error}");
        };
        violations.into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn a_list_orders_request_names_every_bad_field_at_once() {
        let bad = pb::ListOrdersRequest {
            page_size: MAX_ORDER_PAGE + 1,
            user_id: "someone".into(),
            kind: 99,
            states: vec![pb::OrderState::Lent.into(), 77, 0],
            page_token: String::new(),
        };
        assert_eq!(
            fields(ListOrdersAsk::try_from(bad).unwrap_err()),
            ["page_size", "user_id", "kind", "states[1]", "states[2]"]
        );
        let user = uuid::Uuid::new_v4().to_string();
        let good = ListOrdersAsk::try_from(pb::ListOrdersRequest {
            page_size: 0,
            user_id: user.clone(),
            kind: pb::OrderKind::Reservation.into(),
            states: vec![pb::OrderState::Expired.into()],
            page_token: "t".into(),
        })
        .unwrap();
        assert_eq!(good.page_size, DEFAULT_ORDER_PAGE);
        assert_eq!(good.user_id.map(|u| u.to_string()), Some(user));
        assert_eq!(
            good.kind,
            Some(crate::domain::order::OrderKind::Reservation)
        );
        assert_eq!(good.states, [crate::domain::order::OrderState::Expired]);
    }

    #[test]
    fn a_set_pricing_request_names_every_bad_field_at_once() {
        let mut free = pricing();
        free.base_price = eur(0);
        free.lost_item_fee = None;
        let bad = pb::SetPricingRequest {
            site_id: "bad site id!".into(),
            item_type: Some(common::ItemType {
                kind: common::ItemKind::Unspecified.into(),
                ..Default::default()
            }),
            pricing: Some(free),
        };
        assert_eq!(
            fields(PricingAsk::try_from(bad).unwrap_err()),
            ["site_id", "item_type.kind", "pricing.lost_item_fee"]
        );
        let mut zero = pricing();
        zero.base_price = eur(0);
        let huge = pb::SetPricingRequest {
            site_id: String::new(),
            item_type: Some(common::ItemType {
                kind: common::ItemKind::Drive.into(),
                capacity_bytes: u64::MAX,
                content_package_id: String::new(),
            }),
            pricing: Some(zero),
        };
        assert_eq!(
            fields(PricingAsk::try_from(huge).unwrap_err()),
            ["item_type.capacity_bytes", "pricing.base_price"]
        );
        let ask = PricingAsk::try_from(pb::SetPricingRequest {
            site_id: "K-1".into(),
            item_type: Some(common::ItemType {
                kind: common::ItemKind::Drive.into(),
                capacity_bytes: 1000,
                content_package_id: String::new(),
            }),
            pricing: Some(pricing()),
        })
        .unwrap();
        assert_eq!(ask.site_id, "K-1");
        assert_eq!(ask.terms.base_price.minor(), 400);
    }

    #[test]
    fn a_refund_deposit_request_needs_its_key() {
        assert_eq!(
            fields(IdempotencyKey::try_from(pb::RefundDepositRequest::default()).unwrap_err()),
            ["idempotency_key"]
        );
        assert!(
            IdempotencyKey::try_from(pb::RefundDepositRequest {
                idempotency_key: "r-1".into()
            })
            .is_ok()
        );
    }

    #[test]
    fn get_and_watch_name_a_bad_order_id() {
        assert_eq!(
            fields(OrderId::try_from(pb::GetOrderRequest::default()).unwrap_err()),
            ["order_id"]
        );
        assert_eq!(
            fields(
                OrderId::try_from(pb::WatchOrderRequest {
                    order_id: "not-a-uuid".into()
                })
                .unwrap_err()
            ),
            ["order_id"]
        );
        let id = uuid::Uuid::new_v4().to_string();
        let parsed = OrderId::try_from(pb::GetOrderRequest {
            order_id: id.clone(),
        })
        .unwrap();
        assert_eq!(parsed.to_string(), id);
    }

    #[test]
    fn a_create_rental_request_names_every_bad_field_at_once() {
        let empty = RentalAsk::try_from(pb::CreateRentalRequest::default()).unwrap_err();
        assert_eq!(
            fields(empty),
            [
                "kiosk_id",
                "offer_id",
                "choice.spec",
                "choice.duration_days",
                "idempotency_key"
            ]
        );
        let bad_card = pb::CreateRentalRequest {
            kiosk_id: "K-1".into(),
            offer_id: "o".into(),
            choice: Some(pb::ItemChoice {
                spec: Some(common::ItemSpec {
                    item_type: Some(common::ItemType {
                        kind: common::ItemKind::Drive.into(),
                        ..Default::default()
                    }),
                    write_protect: true,
                }),
                duration_days: 1,
            }),
            payment_method: Some(pb::PaymentMethod { method: None }),
            idempotency_key: "k".into(),
        };
        assert_eq!(
            fields(RentalAsk::try_from(bad_card.clone()).unwrap_err()),
            ["payment_method.method"]
        );
        let good = pb::CreateRentalRequest {
            payment_method: None,
            ..bad_card
        };
        let ask = RentalAsk::try_from(good).unwrap();
        assert_eq!(ask.kiosk_id.as_str(), "K-1");
        assert_eq!(ask.card_token, None, "the remembered card");
    }

    #[test]
    fn a_create_reservation_request_names_every_bad_field_at_once() {
        let empty = ReservationAsk::try_from(pb::CreateReservationRequest::default()).unwrap_err();
        assert_eq!(
            fields(empty),
            [
                "kiosk_id",
                "choice.spec",
                "choice.duration_days",
                "idempotency_key"
            ]
        );
        let power_bank = pb::CreateReservationRequest {
            kiosk_id: "K-1".into(),
            choice: Some(pb::ItemChoice {
                spec: Some(common::ItemSpec {
                    item_type: Some(common::ItemType {
                        kind: common::ItemKind::PowerBank.into(),
                        capacity_bytes: 0,
                        content_package_id: "bad package".into(),
                    }),
                    write_protect: false,
                }),
                duration_days: 1,
            }),
            payment_method: None,
            idempotency_key: "k".into(),
        };
        assert_eq!(
            fields(ReservationAsk::try_from(power_bank).unwrap_err()),
            [
                "choice.spec.item_type.kind",
                "choice.spec.item_type.capacity_bytes",
                "choice.spec.item_type.content_package_id"
            ]
        );
        let blank = pb::CreateReservationRequest {
            kiosk_id: "K-1".into(),
            choice: Some(pb::ItemChoice {
                spec: Some(common::ItemSpec {
                    item_type: Some(common::ItemType {
                        kind: common::ItemKind::Drive.into(),
                        capacity_bytes: 1000,
                        content_package_id: String::new(),
                    }),
                    write_protect: true,
                }),
                duration_days: 2,
            }),
            payment_method: None,
            idempotency_key: "k".into(),
        };
        let ask = ReservationAsk::try_from(blank).unwrap();
        assert_eq!((ask.package_id, ask.capacity_bytes), (None, 1000));
    }

    #[test]
    fn a_collect_request_names_a_bad_order_and_payload_at_once() {
        let bad = CollectAsk::try_from(pb::CollectReservationRequest {
            order_id: "x".into(),
            qr_payload: "http://nope".into(),
        })
        .unwrap_err();
        assert_eq!(fields(bad), ["order_id", "qr_payload"]);
    }

    #[test]
    fn a_pay_deposit_request_needs_amount_card_and_key() {
        let empty = DepositAsk::try_from(pb::PayDepositRequest::default()).unwrap_err();
        assert_eq!(
            fields(empty),
            ["amount", "payment_method", "idempotency_key"]
        );
    }

    #[test]
    fn a_find_kiosks_request_names_every_bad_field_at_once() {
        let bad = pb::FindKiosksRequest {
            latitude: 91.0,
            longitude: f64::NAN,
            radius_meters: 0,
            item_type: Some(common::ItemType {
                kind: common::ItemKind::Drive.into(),
                capacity_bytes: 0,
                content_package_id: "films".into(),
            }),
            max_results: 101,
            page_token: "junk".into(),
        };
        assert_eq!(
            fields(NearbyAsk::try_from(bad).unwrap_err()),
            [
                "latitude",
                "longitude",
                "radius_meters",
                "item_type.content_package_id",
                "max_results"
            ]
        );
        let kindless = pb::FindKiosksRequest {
            latitude: 52.5,
            longitude: 13.4,
            radius_meters: 50_001,
            item_type: Some(common::ItemType::default()),
            ..Default::default()
        };
        assert_eq!(
            fields(NearbyAsk::try_from(kindless).unwrap_err()),
            ["radius_meters", "item_type.kind"]
        );
        let good = pb::FindKiosksRequest {
            latitude: 52.5,
            longitude: 13.4,
            radius_meters: 50_000,
            ..Default::default()
        };
        let ask = NearbyAsk::try_from(good.clone()).unwrap();
        assert_eq!((ask.max_results, ask.filter, ask.after), (20, None, None));
        let stale = pb::FindKiosksRequest {
            page_token: "junk".into(),
            ..good
        };
        assert_eq!(
            fields(NearbyAsk::try_from(stale).unwrap_err()),
            ["page_token"]
        );
    }

    #[test]
    fn offered_lengths_stay_within_the_maximum() {
        assert_eq!(offered_durations(1), [1]);
        assert_eq!(offered_durations(14), [1, 2, 3, 4, 5, 6, 7, 14]);
        assert_eq!(offered_durations(365).last(), Some(&365));
    }
}
