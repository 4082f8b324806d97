//! The AuthService gRPC surface: decode and check each request, check the caller, call the
//! store and token issuer, map errors once. No rule lives here that the types elsewhere could
//! hold.

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sneakernet_proto::auth::v1 as pb;
use sneakernet_proto::auth::v1::auth_service_server::AuthService;
use sneakernet_runtime::caller::CallerExt;
use sneakernet_runtime::clock::SharedClock;
use sneakernet_runtime::rate_limit::{ClientAddress, KeyedLimiter};
use sneakernet_runtime::wire::timestamp;
use sneakernet_runtime::{DeviceId, FieldViolation, ItemId, KioskId, Role, ServiceName};
use tonic::{Request, Response, Status};

use crate::credentials::{self, Email, Password};
use crate::entity::{kiosk_credential, service_credential, user};

use crate::error::AuthError;
use crate::store::{NewRefreshToken, Store};
use crate::tokens::TokenIssuer;

/// The AuthService implementation.
#[derive(Clone, Debug)]
pub struct AuthApi {
    pub(crate) store: Store,
    pub(crate) issuer: TokenIssuer,
    pub(crate) clock: SharedClock,
    pub(crate) refresh_ttl: Duration,
    pub(crate) keys_cache: Duration,
    /// Login attempts per account (email) and client address: an attacker spends their own
    /// budget, and the owner logging in from elsewhere keeps theirs.
    pub(crate) login_per_account: KeyedLimiter<(String, Option<IpAddr>)>,
    /// Login attempts per account from all addresses together, [`ACCOUNT_CEILING`] times the
    /// per-address budget: guessing from many addresses is bounded too.
    pub(crate) login_per_account_total: KeyedLimiter<String>,
    /// Registration attempts per email.
    pub(crate) register_per_account: KeyedLimiter<String>,
}

/// How many times the per-address login budget an account has from all addresses together.
pub(crate) const ACCOUNT_CEILING: u32 = 10;

fn proto_role(role: Role) -> pb::Role {
    match role {
        Role::User => pb::Role::User,
        Role::Operator => pb::Role::Operator,
        Role::Kiosk => pb::Role::Kiosk,
        Role::Service => pb::Role::Service,
        Role::Drive => pb::Role::Drive,
    }
}

fn stored_role(account: &user::Model) -> Result<Role, AuthError> {
    account.role.parse().map_err(|e: String| {
        AuthError::Store(sea_orm::DbErr::Custom(format!("user {}: {e}", account.id)))
    })
}

/// Both fields of an email/password pair, every violation reported at once.
fn email_and_password(email: &str, password: &str) -> Result<(Email, Password), AuthError> {
    let email = Email::parse("email", email);
    let password = Password::parse("password", password);
    match (email, password) {
        (Ok(e), Ok(p)) => Ok((e, p)),
        (e, p) => Err(AuthError::Invalid(
            e.err().into_iter().chain(p.err()).collect(),
        )),
    }
}

/// A required text field of at most `max` characters. Bounding every input keeps one request
/// from costing the server memory or hashing work out of proportion.
fn bounded(field: &str, value: &str, max: usize) -> Result<(), AuthError> {
    if value.is_empty() {
        return Err(FieldViolation::new(field, "must not be empty").into());
    }
    if value.chars().count() > max {
        return Err(FieldViolation::new(field, format!("must be at most {max} characters")).into());
    }
    Ok(())
}

/// Opaque secrets we issue are 43 characters; anything much longer is not one of ours.
const MAX_SECRET_CHARS: usize = 128;

fn service_name(raw: &str) -> Result<ServiceName, AuthError> {
    ServiceName::parse(raw).map_err(|why| FieldViolation::new("service", why).into())
}

fn kiosk_id(raw: &str) -> Result<KioskId, AuthError> {
    KioskId::parse(raw).map_err(|why| FieldViolation::new("kiosk_id", why).into())
}

fn drive_id(raw: &str) -> Result<ItemId, AuthError> {
    ItemId::parse(raw).map_err(|why| FieldViolation::new("item_id", why).into())
}

/// A device's role in its access token.
fn device_role(device: &DeviceId) -> Role {
    match device {
        DeviceId::Kiosk(_) => Role::Kiosk,
        DeviceId::Drive(_) => Role::Drive,
    }
}

/// A device's access token: its subject is the device's own id (kiosk id or item id).
fn device_subject(device: &DeviceId) -> &str {
    match device {
        DeviceId::Kiosk(kiosk) => kiosk.as_str(),
        DeviceId::Drive(item) => item.as_str(),
    }
}

fn lifetime(ttl: Duration) -> Result<chrono::Duration, AuthError> {
    chrono::Duration::from_std(ttl).map_err(|e| AuthError::Time(e.to_string()))
}

impl AuthApi {
    /// Issues `device` a new credential (the earlier one stops working); returns the secret
    /// and when it was issued. Kiosks and drive modules alike.
    async fn issue_device_credential(
        &self,
        caller: &sneakernet_runtime::Caller,
        device: &DeviceId,
    ) -> Result<(String, DateTime<Utc>), AuthError> {
        let secret = credentials::random_secret()?;
        let now = self.clock.now();
        self.store
            .put_device_credential(kiosk_credential::Model {
                kiosk_id: device.stored(),
                secret_hash: credentials::secret_hash(&secret),
                issued_at: now,
                issued_by: caller.audit_name(),
                revoked_at: None,
            })
            .await?;
        tracing::info!(device = %device, issued_by = %caller.audit_name(), "device credential issued");
        Ok((secret, now))
    }

    /// Revokes `device`'s credential; `false` when it had no live one.
    async fn revoke_device_credential(
        &self,
        caller: &sneakernet_runtime::Caller,
        device: &DeviceId,
    ) -> Result<bool, AuthError> {
        let revoked = self
            .store
            .revoke_device_credential(device, self.clock.now())
            .await?;
        if revoked {
            tracing::info!(device = %device, revoked_by = %caller.audit_name(), "device credential revoked");
        }
        Ok(revoked)
    }

    /// Checks `device`'s secret (`refused` when wrong or revoked) and issues its access token.
    async fn device_login(
        &self,
        device: &DeviceId,
        secret: &str,
        refused: AuthError,
    ) -> Result<crate::tokens::AccessToken, AuthError> {
        bounded("secret", secret, MAX_SECRET_CHARS)?;
        let credential = self.store.device_credential(device).await?;
        let valid = credential.is_some_and(|c| {
            c.revoked_at.is_none() && credentials::secret_matches(&c.secret_hash, secret)
        });
        if !valid {
            return Err(refused);
        }
        Ok(self
            .issuer
            .issue(device_subject(device), device_role(device))?)
    }

    /// A new refresh token for `family_id`: the secret for the client and the row to store.
    fn refresh_token(
        &self,
        family_id: String,
        now: DateTime<Utc>,
    ) -> Result<(String, NewRefreshToken), AuthError> {
        let secret = credentials::random_secret()?;
        let expires_at = now + lifetime(self.refresh_ttl)?;
        let token = NewRefreshToken {
            token_hash: credentials::secret_hash(&secret),
            family_id,
            expires_at,
        };
        Ok((secret, token))
    }

    fn session(
        &self,
        account: &user::Model,
        refresh: &str,
        refresh_expires: DateTime<Utc>,
    ) -> Result<pb::Session, AuthError> {
        let role = stored_role(account)?;
        let access = self.issuer.issue(&account.id, role)?;
        Ok(pb::Session {
            access_token: access.token,
            access_token_expires_at: Some(timestamp(access.expires_at)),
            refresh_token: refresh.to_owned(),
            refresh_token_expires_at: Some(timestamp(refresh_expires)),
            user_id: account.id.clone(),
            role: proto_role(role).into(),
        })
    }

    /// Creates an account with `role`; with `start_session`, its first session in the same
    /// transaction.
    pub(crate) async fn create_account(
        &self,
        email: &Email,
        password: Password,
        role: Role,
        start_session: bool,
    ) -> Result<(user::Model, Option<pb::Session>), AuthError> {
        let hash = credentials::hash_password(password).await?;
        let now = self.clock.now();
        let refresh = if start_session {
            Some(self.refresh_token(uuid::Uuid::now_v7().to_string(), now)?)
        } else {
            None
        };
        let account = self
            .store
            .create_account(
                email.as_str(),
                hash,
                role,
                now,
                refresh.as_ref().map(|(_, row)| row.clone()),
            )
            .await?;
        let session = match refresh {
            Some((secret, row)) => Some(self.session(&account, &secret, row.expires_at)?),
            None => None,
        };
        Ok((account, session))
    }
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let body = request.into_inner();
        let (email, password) = email_and_password(&body.email, &body.password)?;
        self.register_per_account
            .check(&email.as_str().to_owned())?;
        let (account, session) = self
            .create_account(&email, password, Role::User, true)
            .await?;
        tracing::info!(user_id = %account.id, "account registered");
        Ok(Response::new(pb::RegisterResponse { session }))
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let client = ClientAddress::of(request.extensions());
        let body = request.into_inner();
        bounded("email", &body.email, credentials::MAX_EMAIL_CHARS)?;
        bounded("password", &body.password, credentials::MAX_PASSWORD_CHARS)?;
        let key = body.email.trim().to_lowercase();
        self.login_per_account
            .check(&(key.clone(), client.map(ClientAddress::budget_key)))?;
        self.login_per_account_total.check(&key)?;
        let account = self.store.user_by_email(&key).await?;
        let matches = credentials::verify_password(
            body.password,
            account.as_ref().map(|a| a.password_hash.clone()),
        )
        .await;
        let Some(account) = account.filter(|_| matches) else {
            return Err(AuthError::BadCredentials.into());
        };
        let now = self.clock.now();
        let (secret, row) = self.refresh_token(uuid::Uuid::now_v7().to_string(), now)?;
        let expires = row.expires_at;
        self.store.start_session(&account.id, row, now).await?;
        Ok(Response::new(pb::LoginResponse {
            session: Some(self.session(&account, &secret, expires)?),
        }))
    }

    async fn refresh(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::RefreshResponse>, Status> {
        let body = request.into_inner();
        bounded("refresh_token", &body.refresh_token, MAX_SECRET_CHARS)?;
        let now = self.clock.now();
        let (secret, next) = self.refresh_token(String::new(), now)?;
        let rotated = self
            .store
            .rotate_refresh(
                &credentials::secret_hash(&body.refresh_token),
                next.token_hash,
                next.expires_at,
                now,
            )
            .await?;
        Ok(Response::new(pb::RefreshResponse {
            session: Some(self.session(&rotated.user, &secret, next.expires_at)?),
        }))
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        let account = request
            .caller()?
            .require_account(&[Role::User, Role::Operator])?;
        let body = request.into_inner();
        bounded("refresh_token", &body.refresh_token, MAX_SECRET_CHARS)?;
        let Some(token) = self
            .store
            .refresh_token(&credentials::secret_hash(&body.refresh_token))
            .await?
        else {
            return Err(AuthError::RefreshUnknown.into());
        };
        if token.user_id != account.to_string() {
            return Err(AuthError::NotYourSession.into());
        }
        self.store
            .revoke_family(&token.family_id, self.clock.now())
            .await?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn get_signing_keys(
        &self,
        _request: Request<pb::GetSigningKeysRequest>,
    ) -> Result<Response<pb::GetSigningKeysResponse>, Status> {
        let keys = self
            .issuer
            .published_keys()
            .into_iter()
            .map(|k| pb::SigningKey {
                public_key: k.public_key().to_vec(),
                kid: k.kid,
                algorithm: "EdDSA".into(),
                not_before: Some(timestamp(k.not_before)),
                retired_at: k.retired_at.map(timestamp),
            })
            .collect();
        Ok(Response::new(pb::GetSigningKeysResponse {
            keys,
            cache_seconds: self.keys_cache.as_secs() as i64,
            audience: self.issuer.audience().to_owned(),
            issuer: self.issuer.issuer().to_owned(),
        }))
    }

    async fn create_operator(
        &self,
        request: Request<pb::CreateOperatorRequest>,
    ) -> Result<Response<pb::CreateOperatorResponse>, Status> {
        let caller = request.caller()?.require(&[Role::Operator])?.clone();
        let body = request.into_inner();
        let (email, password) = email_and_password(&body.email, &body.password)?;
        let (account, _) = self
            .create_account(&email, password, Role::Operator, false)
            .await?;
        tracing::info!(user_id = %account.id, created_by = %caller.audit_name(), "operator created");
        Ok(Response::new(pb::CreateOperatorResponse {
            user_id: account.id,
        }))
    }

    async fn issue_kiosk_credential(
        &self,
        request: Request<pb::IssueKioskCredentialRequest>,
    ) -> Result<Response<pb::IssueKioskCredentialResponse>, Status> {
        let caller = request.caller()?.require(&[Role::Operator])?.clone();
        let kiosk = kiosk_id(&request.into_inner().kiosk_id)?;
        let (secret, issued_at) = self
            .issue_device_credential(&caller, &DeviceId::Kiosk(kiosk.clone()))
            .await?;
        Ok(Response::new(pb::IssueKioskCredentialResponse {
            kiosk_id: kiosk.as_str().to_owned(),
            secret,
            issued_at: Some(timestamp(issued_at)),
        }))
    }

    async fn revoke_kiosk_credential(
        &self,
        request: Request<pb::RevokeKioskCredentialRequest>,
    ) -> Result<Response<pb::RevokeKioskCredentialResponse>, Status> {
        let caller = request.caller()?.require(&[Role::Operator])?.clone();
        let kiosk = kiosk_id(&request.into_inner().kiosk_id)?;
        if !self
            .revoke_device_credential(&caller, &DeviceId::Kiosk(kiosk.clone()))
            .await?
        {
            return Err(AuthError::KioskUnknown(kiosk.as_str().to_owned()).into());
        }
        Ok(Response::new(pb::RevokeKioskCredentialResponse {}))
    }

    async fn kiosk_login(
        &self,
        request: Request<pb::KioskLoginRequest>,
    ) -> Result<Response<pb::KioskLoginResponse>, Status> {
        let body = request.into_inner();
        let kiosk = kiosk_id(&body.kiosk_id)?;
        let access = self
            .device_login(
                &DeviceId::Kiosk(kiosk),
                &body.secret,
                AuthError::KioskBadCredentials,
            )
            .await?;
        Ok(Response::new(pb::KioskLoginResponse {
            access_token: access.token,
            access_token_expires_at: Some(timestamp(access.expires_at)),
        }))
    }

    async fn issue_drive_credential(
        &self,
        request: Request<pb::IssueDriveCredentialRequest>,
    ) -> Result<Response<pb::IssueDriveCredentialResponse>, Status> {
        let caller = request.caller()?.require(&[Role::Operator])?.clone();
        let drive = drive_id(&request.into_inner().item_id)?;
        let (secret, issued_at) = self
            .issue_device_credential(&caller, &DeviceId::Drive(drive.clone()))
            .await?;
        Ok(Response::new(pb::IssueDriveCredentialResponse {
            item_id: drive.as_str().to_owned(),
            secret,
            issued_at: Some(timestamp(issued_at)),
        }))
    }

    async fn revoke_drive_credential(
        &self,
        request: Request<pb::RevokeDriveCredentialRequest>,
    ) -> Result<Response<pb::RevokeDriveCredentialResponse>, Status> {
        let caller = request.caller()?.require(&[Role::Operator])?.clone();
        let drive = drive_id(&request.into_inner().item_id)?;
        if !self
            .revoke_device_credential(&caller, &DeviceId::Drive(drive.clone()))
            .await?
        {
            return Err(AuthError::DriveUnknown(drive.as_str().to_owned()).into());
        }
        Ok(Response::new(pb::RevokeDriveCredentialResponse {}))
    }

    async fn drive_login(
        &self,
        request: Request<pb::DriveLoginRequest>,
    ) -> Result<Response<pb::DriveLoginResponse>, Status> {
        let body = request.into_inner();
        let drive = drive_id(&body.item_id)?;
        let access = self
            .device_login(
                &DeviceId::Drive(drive),
                &body.secret,
                AuthError::DriveBadCredentials,
            )
            .await?;
        Ok(Response::new(pb::DriveLoginResponse {
            access_token: access.token,
            access_token_expires_at: Some(timestamp(access.expires_at)),
        }))
    }

    async fn issue_service_credential(
        &self,
        request: Request<pb::IssueServiceCredentialRequest>,
    ) -> Result<Response<pb::IssueServiceCredentialResponse>, Status> {
        let caller = request.caller()?.require(&[Role::Operator])?.clone();
        let body = request.into_inner();
        let service = service_name(&body.service)?;
        let secret = credentials::random_secret().map_err(AuthError::from)?;
        let now = self.clock.now();
        self.store
            .put_service_credential(service_credential::Model {
                service: service.as_str().to_owned(),
                secret_hash: credentials::secret_hash(&secret),
                issued_at: now,
                issued_by: caller.audit_name(),
            })
            .await?;
        tracing::info!(service = %service, issued_by = %caller.audit_name(), "service credential issued");
        Ok(Response::new(pb::IssueServiceCredentialResponse {
            service: service.as_str().to_owned(),
            secret,
            issued_at: Some(timestamp(now)),
        }))
    }

    async fn service_login(
        &self,
        request: Request<pb::ServiceLoginRequest>,
    ) -> Result<Response<pb::ServiceLoginResponse>, Status> {
        let body = request.into_inner();
        let service = service_name(&body.service)?;
        bounded("secret", &body.secret, MAX_SECRET_CHARS)?;
        let credential = self.store.service_credential(service.as_str()).await?;
        let valid =
            credential.is_some_and(|c| credentials::secret_matches(&c.secret_hash, &body.secret));
        if !valid {
            return Err(AuthError::ServiceBadCredentials.into());
        }
        let access = self
            .issuer
            .issue(service.as_str(), Role::Service)
            .map_err(AuthError::from)?;
        Ok(Response::new(pb::ServiceLoginResponse {
            access_token: access.token,
            access_token_expires_at: Some(timestamp(access.expires_at)),
        }))
    }
}
