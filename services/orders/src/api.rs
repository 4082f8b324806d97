//! The orders service's gRPC surface: decode, check the caller, call the flow, map errors.
//! OrderService: scan, deposits, rentals, finding kiosks nearby, reservations (create, cancel,
//! collect), write protection of the order's drive, reading and watching orders. FleetService:
//! kiosk profiles, the fleet view, price rules, the audit.

use sneakernet_proto::orders::v1 as pb;
use sneakernet_proto::orders::v1::fleet_service_server::FleetService;
use sneakernet_proto::orders::v1::order_service_server::OrderService;
use sneakernet_runtime::caller::CallerExt;
use sneakernet_runtime::wire::timestamp;
use sneakernet_runtime::{ApiError, Role, Shutdown, UserId};
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use crate::convert::kiosk_page_token;
use crate::deposits::DepositAsk;
use crate::domain::deposit::DepositState;
use crate::entity::{deposit, order};
use crate::fleet::{KioskAsk, KioskListAsk, ParkedCursor, ParkedPageAsk, PricingAsk, RegisterAsk};
use crate::flows::Flows;
use crate::ids::{IdempotencyKey, OrderId};
use crate::nearby::NearbyAsk;
use crate::orders_list::{ListOrdersAsk, Lister};
use crate::rentals::RentalAsk;
use crate::reservations::{CollectAsk, ReservationAsk};
use crate::scan::ScanAsk;
use crate::write_protect::WriteProtectAsk;

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
        let ask = ScanAsk::try_from(request.into_inner())?;
        let offer = self.flows.scan(user, ask).await?;
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

#[tonic::async_trait]
impl FleetService for OrdersApi {
    async fn register_kiosk(
        &self,
        request: Request<pb::RegisterKioskRequest>,
    ) -> Result<Response<pb::RegisterKioskResponse>, Status> {
        request.caller()?.require(&[Role::Operator])?;
        let ask = RegisterAsk::try_from(request.into_inner())?;
        let kiosk = self.flows.register_kiosk(ask).await?;
        Ok(Response::new(pb::RegisterKioskResponse {
            kiosk: Some(kiosk),
        }))
    }

    async fn list_kiosks(
        &self,
        request: Request<pb::ListKiosksRequest>,
    ) -> Result<Response<pb::ListKiosksResponse>, Status> {
        request.caller()?.require(&[Role::Operator])?;
        let ask = KioskListAsk::try_from(request.into_inner())?;
        let page = self.flows.list_kiosks(ask).await?;
        Ok(Response::new(pb::ListKiosksResponse {
            kiosks: page.kiosks,
            next_page_token: page
                .next_after
                .as_deref()
                .map(kiosk_page_token)
                .unwrap_or_default(),
        }))
    }

    async fn get_kiosk(
        &self,
        request: Request<pb::GetKioskRequest>,
    ) -> Result<Response<pb::GetKioskResponse>, Status> {
        request.caller()?.require(&[Role::Operator])?;
        let ask = KioskAsk::try_from(request.into_inner())?;
        Ok(Response::new(pb::GetKioskResponse {
            kiosk: Some(self.flows.kiosk(ask).await?),
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
        Ok(Response::new(self.flows.audit(self.audit_grace).await?))
    }

    async fn list_parked_events(
        &self,
        request: Request<pb::ListParkedEventsRequest>,
    ) -> Result<Response<pb::ListParkedEventsResponse>, Status> {
        request.caller()?.require(&[Role::Operator])?;
        let ask = ParkedPageAsk::try_from(request.into_inner())?;
        let (events, next_page_token) = self.flows.parked_events(ask).await?;
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
        let cursor = ParkedCursor::try_from(request.into_inner())?;
        self.flows.retry_parked_event(cursor).await?;
        Ok(Response::new(pb::RetryParkedEventResponse {}))
    }

    async fn drop_parked_event(
        &self,
        request: Request<pb::DropParkedEventRequest>,
    ) -> Result<Response<pb::DropParkedEventResponse>, Status> {
        request.caller()?.require(&[Role::Operator])?;
        let cursor = ParkedCursor::try_from(request.into_inner())?;
        self.flows.drop_parked_event(cursor).await?;
        Ok(Response::new(pb::DropParkedEventResponse {}))
    }
}
