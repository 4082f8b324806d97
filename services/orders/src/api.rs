//! The orders service's gRPC surface: decode, check the caller, call the flow, map errors.
//! OrderService: scan, deposits, rentals, finding kiosks nearby, reservations (create, cancel,
//! collect), write protection of the order's drive, reading and watching orders. FleetService:
//! kiosk profiles, the fleet view, price rules, the audit.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use prost::Message;
use sneakernet_proto::gateway::v1 as gateway;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_proto::orders::v1::fleet_service_server::FleetService;
use sneakernet_proto::orders::v1::order_service_server::OrderService;
use sneakernet_runtime::caller::CallerExt;
use sneakernet_runtime::wire::timestamp;
use sneakernet_runtime::{ApiError, FieldViolation, KioskId, Role, Shutdown, UserId};
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use crate::deposits::DepositAsk;
use crate::domain::deposit::DepositState;
use crate::entity::{deposit, kiosk, order};
use crate::fleet::{PricingAsk, kiosk_proto};
use crate::flows::Flows;
use crate::ids::{IdempotencyKey, OrderId};
use crate::nearby::NearbyAsk;
use crate::orders_list::{ListOrdersAsk, Lister};
use crate::rentals::RentalAsk;
use crate::reservations::{CollectAsk, ReservationAsk};
use crate::store::parked::Retried;
use crate::write_protect::WriteProtectAsk;

/// Kiosks per page when the caller does not say.
const DEFAULT_PAGE: u32 = 50;
/// Most kiosks per page.
const MAX_PAGE: u32 = 500;

/// The OrderService and FleetService implementation.
#[derive(Clone, Debug)]
pub struct OrdersApi {
    pub(crate) flows: Flows,
    pub(crate) shutdown: Shutdown,
    /// Orders counted unsettled this long after a step's deadline (the sweeper's lag).
    pub(crate) audit_grace: chrono::Duration,
    /// Orders and deposits created per account.
    pub(crate) creations: sneakernet_runtime::rate_limit::KeyedLimiter<UserId>,
    /// WatchOrder's polling and its per-account cap.
    pub(crate) watches: crate::watch::Watches,
}

fn deposit_proto(row: &deposit::Model) -> pb::Deposit {
    let money = |minor| sneakernet_proto::common::v1::Money {
        minor_units: minor,
        currency: row.currency.clone(),
    };
    let state = match DepositState::parse(&row.state) {
        Some(DepositState::Held) => pb::DepositState::Held,
        Some(DepositState::Refunding) => pb::DepositState::Refunding,
        Some(DepositState::Refunded) => pb::DepositState::Refunded,
        None => pb::DepositState::Unspecified,
    };
    pb::Deposit {
        deposit_id: row.deposit_id.clone(),
        user_id: row.user_id.clone(),
        amount: Some(money(row.amount)),
        state: state.into(),
        refunded: Some(money(row.refunded)),
        paid_at: Some(timestamp(row.paid_at)),
        refunded_at: row.refunded_at.map(timestamp),
    }
}

fn internal(error: sea_orm::DbErr) -> Status {
    ApiError::from(error).into()
}

/// Who may read an order: its user, or any operator.
enum Reader {
    User(UserId),
    Operator,
}

impl Reader {
    fn of<T>(request: &Request<T>) -> Result<Self, Status> {
        let caller = request.caller()?;
        let account = caller.require_account(&[Role::User, Role::Operator])?;
        Ok(if caller.role() == Role::Operator {
            Reader::Operator
        } else {
            Reader::User(account)
        })
    }

    fn may_read(&self, order: &order::Model) -> bool {
        match self {
            Reader::Operator => true,
            Reader::User(user) => order.user_id == user.to_string(),
        }
    }
}

impl OrdersApi {
    fn renter<T>(request: &Request<T>) -> Result<UserId, Status> {
        Ok(request.caller()?.require_account(&[Role::User])?)
    }

    /// The order if `reader` may see it; NOT_FOUND for unknown and other users' orders alike.
    async fn readable(&self, reader: &Reader, id: &OrderId) -> Result<order::Model, Status> {
        match self
            .flows
            .store
            .order(&id.to_string())
            .await
            .map_err(internal)?
        {
            Some(order) if reader.may_read(&order) => Ok(order),
            _ => Err(crate::error::OrdersError::OrderNotFound(id.to_string()).into()),
        }
    }

    async fn order_proto(&self, row: &order::Model) -> Result<pb::Order, Status> {
        self.flows.store.order_proto(row).await.map_err(internal)
    }
}

#[tonic::async_trait]
impl OrderService for OrdersApi {
    async fn scan_kiosk(
        &self,
        request: Request<pb::ScanKioskRequest>,
    ) -> Result<Response<pb::ScanKioskResponse>, Status> {
        let user = Self::renter(&request)?;
        let body = request.into_inner();
        let qr = sneakernet_runtime::qr::parse(&body.qr_payload)
            .map_err(|why| ApiError::invalid("qr_payload", why))?;
        let offer = self.flows.scan(user, qr).await?;
        Ok(Response::new(pb::ScanKioskResponse { offer: Some(offer) }))
    }

    async fn pay_deposit(
        &self,
        request: Request<pb::PayDepositRequest>,
    ) -> Result<Response<pb::PayDepositResponse>, Status> {
        let user = Self::renter(&request)?;
        self.creations.check(&user)?;
        let ask = DepositAsk::try_from(request.into_inner())?;
        let deposit = self.flows.pay_deposit(user, ask).await?;
        Ok(Response::new(pb::PayDepositResponse {
            deposit: Some(deposit_proto(&deposit)),
        }))
    }

    async fn refund_deposit(
        &self,
        request: Request<pb::RefundDepositRequest>,
    ) -> Result<Response<pb::RefundDepositResponse>, Status> {
        let user = Self::renter(&request)?;
        let key = IdempotencyKey::try_from(request.into_inner())?;
        let deposit = self.flows.refund_deposit(user, key).await?;
        Ok(Response::new(pb::RefundDepositResponse {
            deposit: Some(deposit_proto(&deposit)),
        }))
    }

    async fn create_rental(
        &self,
        request: Request<pb::CreateRentalRequest>,
    ) -> Result<Response<pb::CreateRentalResponse>, Status> {
        let user = Self::renter(&request)?;
        self.creations.check(&user)?;
        let ask = RentalAsk::try_from(request.into_inner())?;
        let order = self.flows.create_rental(user, ask).await?;
        Ok(Response::new(pb::CreateRentalResponse {
            order: Some(self.order_proto(&order).await?),
        }))
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderResponse>, Status> {
        let reader = Reader::of(&request)?;
        let order_id = OrderId::try_from(request.get_ref().clone())?;
        let order = self.readable(&reader, &order_id).await?;
        Ok(Response::new(pb::GetOrderResponse {
            order: Some(self.order_proto(&order).await?),
        }))
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let lister = match Reader::of(&request)? {
            Reader::User(user) => Lister::User(user),
            Reader::Operator => Lister::Operator,
        };
        let ask = ListOrdersAsk::try_from(request.into_inner())?;
        Ok(Response::new(self.flows.list_orders(&lister, ask).await?))
    }

    async fn find_kiosks(
        &self,
        request: Request<pb::FindKiosksRequest>,
    ) -> Result<Response<pb::FindKiosksResponse>, Status> {
        Reader::of(&request)?;
        let ask = NearbyAsk::try_from(request.into_inner())?;
        Ok(Response::new(self.flows.find_kiosks(ask).await?))
    }

    async fn create_reservation(
        &self,
        request: Request<pb::CreateReservationRequest>,
    ) -> Result<Response<pb::CreateReservationResponse>, Status> {
        let user = Self::renter(&request)?;
        self.creations.check(&user)?;
        let ask = ReservationAsk::try_from(request.into_inner())?;
        let order = self.flows.create_reservation(user, ask).await?;
        Ok(Response::new(pb::CreateReservationResponse {
            order: Some(self.order_proto(&order).await?),
        }))
    }

    async fn cancel_reservation(
        &self,
        request: Request<pb::CancelReservationRequest>,
    ) -> Result<Response<pb::CancelReservationResponse>, Status> {
        let user = Self::renter(&request)?;
        let order_id = OrderId::try_from(request.into_inner())?;
        let order = self.flows.cancel_reservation(user, order_id).await?;
        Ok(Response::new(pb::CancelReservationResponse {
            order: Some(self.order_proto(&order).await?),
        }))
    }

    async fn collect_reservation(
        &self,
        request: Request<pb::CollectReservationRequest>,
    ) -> Result<Response<pb::CollectReservationResponse>, Status> {
        let user = Self::renter(&request)?;
        let ask = CollectAsk::try_from(request.into_inner())?;
        let order = self.flows.collect_reservation(user, ask).await?;
        Ok(Response::new(pb::CollectReservationResponse {
            order: Some(self.order_proto(&order).await?),
        }))
    }

    async fn set_write_protect(
        &self,
        request: Request<pb::SetWriteProtectRequest>,
    ) -> Result<Response<pb::SetWriteProtectResponse>, Status> {
        let owner = match Reader::of(&request)? {
            Reader::User(user) => Some(user),
            Reader::Operator => None,
        };
        let ask = WriteProtectAsk::try_from(request.into_inner())?;
        let (order, applied) = self.flows.set_write_protect(owner, ask).await?;
        Ok(Response::new(pb::SetWriteProtectResponse {
            order: Some(self.order_proto(&order).await?),
            applied,
        }))
    }

    async fn watch_order(
        &self,
        request: Request<pb::WatchOrderRequest>,
    ) -> Result<Response<BoxStream<pb::WatchOrderResponse>>, Status> {
        let reader = Reader::of(&request)?;
        let account = request
            .caller()?
            .require_account(&[Role::User, Role::Operator])?;
        let order_id = OrderId::try_from(request.get_ref().clone())?;
        let order = self.readable(&reader, &order_id).await?;
        // Taken before anything is read, so a refused watch costs no database work after
        // the order's.
        let slot = self.watches.take_slot(&account.to_string())?;
        let first = self.order_proto(&order).await?;
        let expires_at = sneakernet_runtime::caller::TokenExpiry::of(&request);
        let rx = self.flows.watch(
            order,
            first,
            expires_at,
            &self.watches,
            slot,
            &self.shutdown,
        );
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

fn site_id(field: &str, raw: &str) -> Result<String, FieldViolation> {
    KioskId::parse(raw)
        .map(|id| id.as_str().to_owned())
        .map_err(|why| FieldViolation::new(field, why))
}

#[tonic::async_trait]
impl FleetService for OrdersApi {
    async fn register_kiosk(
        &self,
        request: Request<pb::RegisterKioskRequest>,
    ) -> Result<Response<pb::RegisterKioskResponse>, Status> {
        request.caller()?.require(&[Role::Operator])?;
        let body = request.into_inner();
        let mut violations = Vec::new();
        let kiosk_id = KioskId::parse(&body.kiosk_id)
            .map_err(|why| violations.push(FieldViolation::new("kiosk_id", why)))
            .ok();
        let site = site_id("site_id", &body.site_id)
            .map_err(|v| violations.push(v))
            .ok();
        let name_len = body.site_name.chars().count();
        if name_len == 0 || name_len > 200 || body.site_name.trim().is_empty() {
            violations.push(FieldViolation::new(
                "site_name",
                "must be 1 to 200 characters",
            ));
        }
        match &body.location {
            None => violations.push(FieldViolation::new("location", "is required")),
            Some(location) => {
                if !(-90.0..=90.0).contains(&location.latitude) {
                    violations.push(FieldViolation::new(
                        "location.latitude",
                        "must be -90 to 90",
                    ));
                }
                if !(-180.0..=180.0).contains(&location.longitude) {
                    violations.push(FieldViolation::new(
                        "location.longitude",
                        "must be -180 to 180",
                    ));
                }
            }
        }
        if !sneakernet_runtime::qr::SECRET_LEN.contains(&body.qr_secret.len()) {
            violations.push(FieldViolation::new("qr_secret", "must be 20 to 64 bytes"));
        }
        let (Some(kiosk_id), Some(site), true) = (kiosk_id, site, violations.is_empty()) else {
            return Err(ApiError::InvalidArgument(violations).into());
        };
        let location = body.location.unwrap_or_default();
        let now = self.flows.clock.now();
        let stored = self
            .flows
            .store
            .register_kiosk(kiosk::Model {
                kiosk_id: kiosk_id.as_str().to_owned(),
                site_id: site,
                site_name: body.site_name.trim().to_owned(),
                latitude: location.latitude,
                longitude: location.longitude,
                qr_secret: self.flows.sealing.seal(kiosk_id.as_str(), &body.qr_secret),
                out_of_service: body.out_of_service,
                registered_at: now,
                updated_at: now,
            })
            .await
            .map_err(internal)?;
        let view = self
            .flows
            .store
            .kiosk(kiosk_id.as_str())
            .await
            .map_err(internal)?;
        tracing::info!(kiosk_id = %kiosk_id, site_id = %stored.site_id, "kiosk registered");
        Ok(Response::new(pb::RegisterKioskResponse {
            kiosk: Some(kiosk_proto(view.as_ref(), Some(&stored))),
        }))
    }

    async fn list_kiosks(
        &self,
        request: Request<pb::ListKiosksRequest>,
    ) -> Result<Response<pb::ListKiosksResponse>, Status> {
        request.caller()?.require(&[Role::Operator])?;
        let body = request.into_inner();
        let size = page_size(body.page_size)?;
        let after = if body.page_token.is_empty() {
            String::new()
        } else {
            URL_SAFE_NO_PAD
                .decode(&body.page_token)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .filter(|id| KioskId::parse(id).is_ok())
                .ok_or_else(|| ApiError::invalid("page_token", "was not issued by ListKiosks"))?
        };
        if !body.site_id.is_empty() {
            site_id("site_id", &body.site_id).map_err(|v| ApiError::InvalidArgument(vec![v]))?;
        }
        let page = self
            .flows
            .list_kiosks(&after, size, body.online_only, &body.site_id)
            .await?;
        let next_page_token = page
            .next_after
            .map(|last| URL_SAFE_NO_PAD.encode(last))
            .unwrap_or_default();
        Ok(Response::new(pb::ListKiosksResponse {
            kiosks: page.kiosks,
            next_page_token,
        }))
    }

    async fn get_kiosk(
        &self,
        request: Request<pb::GetKioskRequest>,
    ) -> Result<Response<pb::GetKioskResponse>, Status> {
        request.caller()?.require(&[Role::Operator])?;
        let body = request.into_inner();
        let id = KioskId::parse(&body.kiosk_id)
            .map_err(|why| ApiError::InvalidArgument(vec![FieldViolation::new("kiosk_id", why)]))?;
        let store = &self.flows.store;
        let view = store.kiosk(id.as_str()).await.map_err(internal)?;
        let profile = store.kiosk_profile(id.as_str()).await.map_err(internal)?;
        if view.is_none() && profile.is_none() {
            return Err(ApiError::NotFound(format!("kiosk {id} is unknown")).into());
        }
        Ok(Response::new(pb::GetKioskResponse {
            kiosk: Some(kiosk_proto(view.as_ref(), profile.as_ref())),
        }))
    }

    async fn set_pricing(
        &self,
        request: Request<pb::SetPricingRequest>,
    ) -> Result<Response<pb::SetPricingResponse>, Status> {
        request.caller()?.require(&[Role::Operator])?;
        let ask = PricingAsk::try_from(request.into_inner())?;
        Ok(Response::new(pb::SetPricingResponse {
            rule: Some(self.flows.set_pricing(ask).await?),
        }))
    }

    async fn audit(
        &self,
        request: Request<pb::AuditRequest>,
    ) -> Result<Response<pb::AuditResponse>, Status> {
        request.caller()?.require(&[Role::Operator])?;
        let now = self.flows.clock.now();
        let report = self
            .flows
            .store
            .audit(now, self.audit_grace)
            .await
            .map_err(internal)?;
        Ok(Response::new(pb::AuditResponse {
            ledger_balanced: report.ledger_balanced,
            violations: report.violations,
            checked_at: Some(timestamp(now)),
            orders_checked: report.orders_checked,
            transactions_checked: report.transactions_checked,
        }))
    }

    async fn list_parked_events(
        &self,
        request: Request<pb::ListParkedEventsRequest>,
    ) -> Result<Response<pb::ListParkedEventsResponse>, Status> {
        request.caller()?.require(&[Role::Operator])?;
        let body = request.into_inner();
        let size = page_size(body.page_size)?;
        let after = if body.page_token.is_empty() {
            0
        } else {
            body.page_token
                .parse::<i64>()
                .map_err(|_| ApiError::invalid("page_token", "is not a token this RPC issued"))?
        };
        let rows = self
            .flows
            .store
            .parked(after, u64::from(size))
            .await
            .map_err(internal)?;
        let next_page_token = match rows.last() {
            Some(last) if rows.len() == size as usize => last.cursor.to_string(),
            _ => String::new(),
        };
        let events = rows
            .into_iter()
            .map(|row| pb::ParkedEvent {
                cursor: u64::try_from(row.cursor).unwrap_or(0),
                kiosk_id: row.kiosk_id,
                error: row.error,
                parked_at: Some(timestamp(row.parked_at)),
                attempts: u32::try_from(row.attempts).unwrap_or(0),
                event: gateway::Event::decode(row.event.as_slice()).ok(),
            })
            .collect();
        Ok(Response::new(pb::ListParkedEventsResponse {
            events,
            next_page_token,
        }))
    }

    async fn retry_parked_event(
        &self,
        request: Request<pb::RetryParkedEventRequest>,
    ) -> Result<Response<pb::RetryParkedEventResponse>, Status> {
        request.caller()?.require(&[Role::Operator])?;
        let cursor = parked_cursor(request.get_ref().cursor)?;
        let now = self.flows.clock.now();
        match self.flows.store.retry_parked(cursor, now).await {
            Ok(Retried::Applied) => {
                self.flows.wake.notify_one();
                Ok(Response::new(pb::RetryParkedEventResponse {}))
            }
            Ok(Retried::NotFound) => {
                Err(ApiError::NotFound(format!("no parked event with cursor {cursor}")).into())
            }
            Ok(Retried::StillFailing(error)) => Err(ApiError::precondition(
                "STILL_FAILING",
                format!("parked_events/{cursor}"),
                error,
            )
            .into()),
            Err(error) => Err(ApiError::from(error).into()),
        }
    }

    async fn drop_parked_event(
        &self,
        request: Request<pb::DropParkedEventRequest>,
    ) -> Result<Response<pb::DropParkedEventResponse>, Status> {
        request.caller()?.require(&[Role::Operator])?;
        let cursor = parked_cursor(request.get_ref().cursor)?;
        if !self
            .flows
            .store
            .drop_parked(cursor)
            .await
            .map_err(internal)?
        {
            return Err(ApiError::NotFound(format!("no parked event with cursor {cursor}")).into());
        }
        tracing::warn!(cursor, "parked event dropped by an operator");
        Ok(Response::new(pb::DropParkedEventResponse {}))
    }
}

/// A FleetService page size: 0 means [`DEFAULT_PAGE`], at most [`MAX_PAGE`].
fn page_size(raw: u32) -> Result<u32, ApiError> {
    match raw {
        0 => Ok(DEFAULT_PAGE),
        1..=MAX_PAGE => Ok(raw),
        _ => Err(ApiError::invalid(
            "page_size",
            format!("must be at most {MAX_PAGE}"),
        )),
    }
}

fn parked_cursor(raw: u64) -> Result<i64, ApiError> {
    i64::try_from(raw)
        .ok()
        .filter(|c| *c > 0)
        .ok_or_else(|| ApiError::invalid("cursor", "must be a parked event's cursor"))
}
