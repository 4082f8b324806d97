//! The gateway's gRPC surface: decode and check each request, check the caller, call the store
//! or the session layer, map errors once.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::gateway::v1::device_command_service_server::DeviceCommandService;
use sneakernet_proto::gateway::v1::device_event_service_server::DeviceEventService;
use sneakernet_proto::gateway::v1::kiosk_link_service_server::KioskLinkService;
use sneakernet_runtime::caller::{CallerExt, TokenExpiry};
use sneakernet_runtime::{ApiError, DeviceId, FieldViolation, ItemId, KioskId, Role};
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use crate::commands;
use crate::error::GatewayError;
use crate::grants::{self, COMMANDERS};
use crate::session::{self, LinkContext};
use crate::store::{self, Logged, NewCommand};
use crate::subscribe;

/// Longest a command may be scheduled ahead.
const MAX_DEADLINE_AHEAD: chrono::Duration = chrono::Duration::days(7);
/// Deadline of the operator shortcuts (ForceEject, RequestInventory).
const SHORTCUT_DEADLINE: Duration = Duration::from_secs(5 * 60);
/// Longest idempotency key.
const MAX_IDEMPOTENCY_KEY: usize = 128;

/// The three gateway services. Cheap to clone.
#[derive(Clone, Debug)]
pub struct GatewayApi {
    pub(crate) link: Arc<LinkContext>,
}

fn kiosk_field(field: &str, raw: &str) -> Result<KioskId, GatewayError> {
    KioskId::parse(raw).map_err(|why| FieldViolation::new(field, why).into())
}

/// The device a request addresses: a kiosk (`kiosk_id`) or a drive's own link (`drive_id`),
/// exactly one of them.
fn device_field(kiosk_raw: &str, drive_raw: &str) -> Result<DeviceId, GatewayError> {
    match (kiosk_raw.is_empty(), drive_raw.is_empty()) {
        (false, true) => kiosk_field("kiosk_id", kiosk_raw).map(DeviceId::Kiosk),
        (true, false) => ItemId::parse(drive_raw)
            .map(DeviceId::Drive)
            .map_err(|why| FieldViolation::new("drive_id", why).into()),
        (true, true) => {
            Err(FieldViolation::new("kiosk_id", "must name a kiosk (or drive_id a drive)").into())
        }
        (false, false) => {
            Err(FieldViolation::new("drive_id", "must be empty when kiosk_id is set").into())
        }
    }
}

fn deadline(
    raw: Option<&prost_types::Timestamp>,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, GatewayError> {
    let Some(raw) = raw else {
        return Err(FieldViolation::new("deadline", "must be set").into());
    };
    let at = sneakernet_runtime::wire::from_timestamp(raw)
        .ok_or_else(|| FieldViolation::new("deadline", "is not a valid time"))?;
    if at <= now {
        return Err(FieldViolation::new("deadline", "must be in the future").into());
    }
    if at > now + MAX_DEADLINE_AHEAD {
        return Err(FieldViolation::new("deadline", "must be at most 7 days ahead").into());
    }
    Ok(at)
}

fn idempotency_key(raw: &str, required: bool) -> Result<String, GatewayError> {
    if raw.is_empty() {
        if required {
            return Err(FieldViolation::new("idempotency_key", "must not be empty").into());
        }
        return Ok(format!("auto:{}", uuid::Uuid::new_v4()));
    }
    if raw.len() > MAX_IDEMPOTENCY_KEY {
        return Err(
            FieldViolation::new("idempotency_key", "must be at most 128 characters").into(),
        );
    }
    Ok(raw.to_owned())
}

impl GatewayApi {
    /// Logs a command and wakes the device's session, wherever it is.
    async fn log_and_wake(&self, new: NewCommand) -> Result<pb::CommandRecord, GatewayError> {
        let now = self.link.clock.now();
        let device = new.device.clone();
        let logged = self.link.store.log_command(new, now).await?;
        let row = match logged {
            Logged::Created(row) => {
                tracing::info!(device = %device, command_id = %row.command_id, kind = %row.kind, "command queued");
                metrics::counter!("gateway_commands_total", "kind" => row.kind.clone())
                    .increment(1);
                self.link.presence.wake(&device.stored());

                row
            }
            Logged::Existing(row) => row,
        };
        store::record(&row)
    }

    async fn shortcut(
        &self,
        caller: &sneakernet_runtime::Caller,
        kiosk: &str,
        key: &str,
        payload: pb::CommandPayload,
    ) -> Result<pb::CommandRecord, GatewayError> {
        if let Some(kind) = payload.kind.as_ref() {
            grants::may_send(caller, commands::kind_name(kind))?;
        }
        let kiosk = kiosk_field("kiosk_id", kiosk)?;
        let kind = commands::validate(Some(&payload)).map_err(GatewayError::Invalid)?;
        let deadline = self.link.clock.now()
            + chrono::Duration::from_std(SHORTCUT_DEADLINE).unwrap_or(chrono::Duration::minutes(5));
        self.log_and_wake(NewCommand {
            device: DeviceId::Kiosk(kiosk),
            requested_by: caller.audit_name(),
            idempotency_key: idempotency_key(key, false)?,
            kind,
            payload,
            deadline,
            deadline_chosen_by_caller: false,
        })
        .await
    }
}

#[tonic::async_trait]
impl KioskLinkService for GatewayApi {
    async fn open(
        &self,
        request: Request<Streaming<pb::OpenRequest>>,
    ) -> Result<Response<BoxStream<pb::OpenResponse>>, Status> {
        let caller = request.caller()?.require(&[Role::Kiosk, Role::Drive])?;
        // The device's identity is its token's subject and nothing else: a kiosk token opens
        // that kiosk's link, a drive token that drive's.
        let Some(device) = caller.device() else {
            return Err(
                ApiError::PermissionDenied("only kiosks and drives open links".into()).into(),
            );
        };
        let expires_at = TokenExpiry::of(&request);
        let stream =
            session::open(self.link.clone(), device, expires_at, request.into_inner()).await?;
        Ok(Response::new(Box::pin(stream)))
    }
}

#[tonic::async_trait]
impl DeviceCommandService for GatewayApi {
    async fn send_command(
        &self,
        request: Request<pb::SendCommandRequest>,
    ) -> Result<Response<pb::SendCommandResponse>, Status> {
        let caller = request.caller()?.require(COMMANDERS)?.clone();
        grants::may_command(&caller)?;
        let body = request.into_inner();
        if let Some(kind) = body.payload.as_ref().and_then(|p| p.kind.as_ref()) {
            grants::may_send(&caller, commands::kind_name(kind))?;
        }
        let now = self.link.clock.now();
        let mut violations = Vec::new();
        let device = device_field(&body.kiosk_id, &body.drive_id)
            .map_err(|e| collect(e, &mut violations))
            .ok();
        let kind = commands::validate(body.payload.as_ref())
            .map_err(|v| violations.extend(v))
            .ok();
        if let (Some(device), Some(_), Some(payload)) = (&device, kind, &body.payload) {
            violations.extend(commands::fits_device(device, payload));
        }
        let key = idempotency_key(&body.idempotency_key, true)
            .map_err(|e| collect(e, &mut violations))
            .ok();
        let at = deadline(body.deadline.as_ref(), now)
            .map_err(|e| collect(e, &mut violations))
            .ok();
        let (Some(device), Some(kind), Some(key), Some(at), Some(payload), true) =
            (device, kind, key, at, body.payload, violations.is_empty())
        else {
            return Err(GatewayError::Invalid(violations).into());
        };
        let command = self
            .log_and_wake(NewCommand {
                device,
                requested_by: caller.audit_name(),
                idempotency_key: key,
                kind,
                payload,
                deadline: at,
                deadline_chosen_by_caller: true,
            })
            .await?;
        Ok(Response::new(pb::SendCommandResponse {
            command: Some(command),
        }))
    }

    async fn get_command(
        &self,
        request: Request<pb::GetCommandRequest>,
    ) -> Result<Response<pb::GetCommandResponse>, Status> {
        grants::may_read(request.caller()?.require(COMMANDERS)?)?;
        let body = request.into_inner();
        if body.command_id.is_empty() || body.command_id.len() > 64 {
            return Err(GatewayError::from(FieldViolation::new(
                "command_id",
                "must be 1 to 64 characters",
            ))
            .into());
        }
        let Some(row) = self.link.store.command(&body.command_id).await? else {
            return Err(GatewayError::CommandNotFound(body.command_id).into());
        };
        Ok(Response::new(pb::GetCommandResponse {
            command: Some(store::record(&row)?),
        }))
    }

    async fn force_eject(
        &self,
        request: Request<pb::ForceEjectRequest>,
    ) -> Result<Response<pb::ForceEjectResponse>, Status> {
        let caller = request.caller()?.require(COMMANDERS)?.clone();
        let body = request.into_inner();
        let payload = pb::CommandPayload {
            kind: Some(pb::command_payload::Kind::ForceEject(
                pb::ForceEjectCommand {
                    bay_id: body.bay_id,
                },
            )),
        };
        let command = self
            .shortcut(&caller, &body.kiosk_id, &body.idempotency_key, payload)
            .await?;
        Ok(Response::new(pb::ForceEjectResponse {
            command: Some(command),
        }))
    }

    async fn request_inventory(
        &self,
        request: Request<pb::RequestInventoryRequest>,
    ) -> Result<Response<pb::RequestInventoryResponse>, Status> {
        let caller = request.caller()?.require(COMMANDERS)?.clone();
        let body = request.into_inner();
        let payload = pb::CommandPayload {
            kind: Some(pb::command_payload::Kind::RequestInventory(
                pb::RequestInventoryCommand {},
            )),
        };
        let command = self
            .shortcut(&caller, &body.kiosk_id, &body.idempotency_key, payload)
            .await?;
        Ok(Response::new(pb::RequestInventoryResponse {
            command: Some(command),
        }))
    }
}

fn collect(error: GatewayError, violations: &mut Vec<FieldViolation>) {
    if let GatewayError::Invalid(v) = error {
        violations.extend(v);
    }
}

#[tonic::async_trait]
impl DeviceEventService for GatewayApi {
    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<BoxStream<pb::SubscribeResponse>>, Status> {
        grants::may_read(request.caller()?.require(COMMANDERS)?)?;
        let filter = subscribe::Filter::try_from(request.get_ref())?;
        let expires_at = TokenExpiry::of(&request);
        let after = request.into_inner().after_cursor;
        let stream = subscribe::start(self.link.clone(), after, filter, expires_at).await?;
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_refused_messages(
        &self,
        request: Request<pb::ListRefusedMessagesRequest>,
    ) -> Result<Response<pb::ListRefusedMessagesResponse>, Status> {
        grants::may_read(request.caller()?.require(COMMANDERS)?)?;
        let body = request.into_inner();
        let mut violations = Vec::new();
        let kiosk = if body.kiosk_id.is_empty() {
            None
        } else {
            kiosk_field("kiosk_id", &body.kiosk_id)
                .map_err(|e| collect(e, &mut violations))
                .ok()
        };
        let size = match body.page_size {
            0 => 50,
            n @ 1..=500 => u64::from(n),
            _ => {
                violations.push(FieldViolation::new("page_size", "must be 0 to 500"));
                0
            }
        };
        let before = if body.page_token.is_empty() {
            i64::MAX
        } else {
            body.page_token.parse::<i64>().unwrap_or_else(|_| {
                violations.push(FieldViolation::new(
                    "page_token",
                    "is not a token this RPC issued",
                ));
                0
            })
        };
        if !violations.is_empty() {
            return Err(GatewayError::Invalid(violations).into());
        }
        let rows = self
            .link
            .store
            .refused_messages(kiosk.as_ref().map(KioskId::as_str), before, size)
            .await?;
        let next_page_token = match rows.last() {
            Some(last) if rows.len() as u64 == size => last.id.to_string(),
            _ => String::new(),
        };
        let messages = rows
            .into_iter()
            .map(|row| {
                let (kiosk_id, drive_id) = store::wire_device(&row.kiosk_id);
                pb::RefusedMessage {
                    message: prost::Message::decode(row.body.as_slice()).ok(),
                    kiosk_id,
                    drive_id,
                    message_id: row.message_id,
                    received_at: Some(sneakernet_runtime::wire::timestamp(row.received_at)),
                    field: row.field,
                    reason: row.reason,
                }
            })
            .collect();
        Ok(Response::new(pb::ListRefusedMessagesResponse {
            messages,
            next_page_token,
        }))
    }
}
