//! The orders service's gRPC surface. So far FleetService.ListKiosks and GetKiosk (operator
//! only), from the kiosk view; the rest of OrderService and FleetService answer UNIMPLEMENTED
//! until the rentals issue.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use prost::Message;
use sneakernet_proto::gateway::v1 as gateway;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_proto::orders::v1::fleet_service_server::FleetService;
use sneakernet_proto::orders::v1::order_service_server::OrderService;
use sneakernet_runtime::caller::CallerExt;
use sneakernet_runtime::wire::timestamp;
use sneakernet_runtime::{ApiError, FieldViolation, KioskId, Role};
use tonic::{Request, Response, Status};

use crate::entity::kiosk_view;
use crate::inventory;
use crate::store::Store;

/// Kiosks per page when the caller does not say.
const DEFAULT_PAGE: u32 = 50;
/// Most kiosks per page.
const MAX_PAGE: u32 = 500;

/// The OrderService and FleetService implementation.
#[derive(Clone, Debug)]
pub struct OrdersApi {
    pub(crate) store: Store,
}

fn kiosk(row: &kiosk_view::Model) -> pb::Kiosk {
    let inventory = (!row.inventory.is_empty())
        .then(|| gateway::Inventory::decode(row.inventory.as_slice()).ok())
        .flatten()
        .map(|inventory| inventory::summarize(&inventory));
    pb::Kiosk {
        // Profiles (site, location) arrive with RegisterKiosk in the rentals issue.
        profile: None,
        online: row.online,
        last_seen_at: Some(timestamp(row.last_seen_at)),
        agent_version: row.agent_version.clone(),
        inventory,
    }
}

fn internal(error: sea_orm::DbErr) -> Status {
    ApiError::from(error).into()
}

#[tonic::async_trait]
impl OrderService for OrdersApi {}

#[tonic::async_trait]
impl FleetService for OrdersApi {
    async fn list_kiosks(
        &self,
        request: Request<pb::ListKiosksRequest>,
    ) -> Result<Response<pb::ListKiosksResponse>, Status> {
        request.caller()?.require(&[Role::Operator])?;
        let body = request.into_inner();
        if body.page_size > MAX_PAGE {
            return Err(
                ApiError::invalid("page_size", format!("must be at most {MAX_PAGE}")).into(),
            );
        }
        let size = if body.page_size == 0 {
            DEFAULT_PAGE
        } else {
            body.page_size
        };
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
            // No kiosk has a site until RegisterKiosk exists: a site filter matches nothing.
            return Ok(Response::new(pb::ListKiosksResponse::default()));
        }
        let rows = self
            .store
            .kiosks(&after, u64::from(size) + 1, body.online_only)
            .await
            .map_err(internal)?;
        let more = rows.len() > size as usize;
        let page: Vec<&kiosk_view::Model> = rows.iter().take(size as usize).collect();
        let next_page_token = match (more, page.last()) {
            (true, Some(last)) => URL_SAFE_NO_PAD.encode(&last.kiosk_id),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListKiosksResponse {
            kiosks: page.into_iter().map(kiosk).collect(),
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
        let Some(row) = self.store.kiosk(id.as_str()).await.map_err(internal)? else {
            return Err(ApiError::NotFound(format!("kiosk {id} is unknown")).into());
        };
        Ok(Response::new(pb::GetKioskResponse {
            kiosk: Some(kiosk(&row)),
        }))
    }
}
