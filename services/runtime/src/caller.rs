//! Who is calling: access-token claims, local verification, and the tower layer that puts the
//! verified [`Caller`] (or why the presented token was refused) into each request's extensions.
//!
//! Verification is local: the [`TokenVerifier`] holds the auth service's public keys by key id
//! (`kid`), installed in-process when this process serves auth, or fetched from it and
//! refreshed otherwise ([`crate::keys`]). No request pays a call to auth.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::clock::{SharedClock, SystemClock};
use crate::error::ApiError;

/// What a caller may do; the `role` claim of an access token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A person renting items: acts only on their own orders.
    User,
    /// Runs the fleet.
    Operator,
    /// A kiosk agent: speaks only as itself on its link.
    Kiosk,
    /// Another Sneakernet service calling on its own behalf.
    Service,
    /// A drive's remote link module: speaks only as its drive, on its own link.
    Drive,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::User => "user",
            Role::Operator => "operator",
            Role::Kiosk => "kiosk",
            Role::Service => "service",
            Role::Drive => "drive",
        })
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user" => Ok(Role::User),
            "operator" => Ok(Role::Operator),
            "kiosk" => Ok(Role::Kiosk),
            "service" => Ok(Role::Service),
            "drive" => Ok(Role::Drive),
            other => Err(format!("unknown role {other:?}")),
        }
    }
}

/// The claims of a Sneakernet access token.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Subject: a user id (UUID) for users and operators, the kiosk id for kiosks, the item id
    /// for drives.
    pub sub: String,
    /// What the subject may do.
    pub role: Role,
    /// Audience; must equal the configured `auth.audience`.
    pub aud: String,
    /// Issuer; must equal the configured `auth.issuer`.
    pub iss: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// Not valid before, seconds since the Unix epoch.
    pub nbf: i64,
    /// Issued at, seconds since the Unix epoch.
    pub iat: i64,
    /// Unique token id, for logs and revocation lists.
    pub jti: String,
}

/// An account's id (users and operators): a UUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub uuid::Uuid);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for UserId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s).map(UserId)
    }
}

pub use sneakernet_proto::ids::{DeviceId, ItemId, KioskId};

/// A Sneakernet service that may hold a service credential.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceName(&'static str);

impl ServiceName {
    /// The services that call others on their own behalf.
    pub const KNOWN: [&'static str; 2] = ["orders", "content"];

    /// One of [`ServiceName::KNOWN`], or an error listing them.
    pub fn parse(raw: &str) -> Result<Self, String> {
        Self::KNOWN
            .into_iter()
            .find(|known| *known == raw)
            .map(ServiceName)
            .ok_or_else(|| format!("must be one of {}", Self::KNOWN.join(", ")))
    }

    /// The name.
    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// The verified identity behind a request. Handlers read it with [`CallerExt::caller`].
///
/// Typed per role so a kiosk id can never be mistaken for a user id: code that needs an
/// account asks [`Caller::account`], code that needs a kiosk asks [`Caller::kiosk`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A person renting items.
    User(UserId),
    /// A fleet operator (also an account).
    Operator(UserId),
    /// A kiosk agent.
    Kiosk(KioskId),
    /// Another Sneakernet service.
    Service(ServiceName),
    /// A drive's remote link module, as its drive.
    Drive(ItemId),
}

impl Caller {
    /// Builds the caller a token's claims describe, or refuses a subject that does not fit its
    /// role (a user token whose subject is not a UUID, a kiosk token with a malformed id).
    pub fn from_claims(claims: &Claims) -> Result<Self, TokenError> {
        match claims.role {
            Role::User => claims
                .sub
                .parse()
                .map(Caller::User)
                .map_err(|_| TokenError::Malformed),
            Role::Operator => claims
                .sub
                .parse()
                .map(Caller::Operator)
                .map_err(|_| TokenError::Malformed),
            Role::Kiosk => KioskId::parse(&claims.sub)
                .map(Caller::Kiosk)
                .map_err(|_| TokenError::Malformed),
            Role::Service => ServiceName::parse(&claims.sub)
                .map(Caller::Service)
                .map_err(|_| TokenError::Malformed),
            Role::Drive => ItemId::parse(&claims.sub)
                .map(Caller::Drive)
                .map_err(|_| TokenError::Malformed),
        }
    }

    /// The caller's role.
    pub fn role(&self) -> Role {
        match self {
            Caller::User(_) => Role::User,
            Caller::Operator(_) => Role::Operator,
            Caller::Kiosk(_) => Role::Kiosk,
            Caller::Service(_) => Role::Service,
            Caller::Drive(_) => Role::Drive,
        }
    }

    /// The account id of a user or operator; `None` for a kiosk.
    pub fn account(&self) -> Option<UserId> {
        match self {
            Caller::User(id) | Caller::Operator(id) => Some(*id),
            Caller::Kiosk(_) | Caller::Service(_) | Caller::Drive(_) => None,
        }
    }

    /// The kiosk id of a kiosk; `None` for people.
    pub fn kiosk(&self) -> Option<&KioskId> {
        match self {
            Caller::Kiosk(id) => Some(id),
            _ => None,
        }
    }

    /// The device a kiosk or drive caller speaks as; `None` for people and services.
    pub fn device(&self) -> Option<DeviceId> {
        match self {
            Caller::Kiosk(id) => Some(DeviceId::Kiosk(id.clone())),
            Caller::Drive(id) => Some(DeviceId::Drive(id.clone())),
            _ => None,
        }
    }

    /// Passes if the caller has one of `roles`; otherwise PERMISSION_DENIED naming the roles.
    pub fn require(&self, roles: &[Role]) -> Result<&Self, ApiError> {
        if roles.contains(&self.role()) {
            Ok(self)
        } else {
            let allowed = roles
                .iter()
                .map(Role::to_string)
                .collect::<Vec<_>>()
                .join(" or ");
            Err(ApiError::PermissionDenied(format!(
                "this call needs the {allowed} role; the caller is a {}",
                self.role()
            )))
        }
    }

    /// The account id of a caller with one of `roles` (which must not include kiosk).
    pub fn require_account(&self, roles: &[Role]) -> Result<UserId, ApiError> {
        self.require(roles)?.account().ok_or_else(|| {
            ApiError::PermissionDenied("this call needs an account, not a kiosk".into())
        })
    }

    /// Who this is, for logs and audit columns (`user:<id>`, `operator:<id>`, `kiosk:<id>`).
    pub fn audit_name(&self) -> String {
        match self {
            Caller::User(id) => format!("user:{id}"),
            Caller::Operator(id) => format!("operator:{id}"),
            Caller::Kiosk(id) => format!("kiosk:{id}"),
            Caller::Service(name) => format!("service:{name}"),
            Caller::Drive(id) => format!("drive:{id}"),
        }
    }
}

/// Put into a request's extensions beside the [`Caller`]: when the presented token expires
/// (Unix seconds). Long-lived streams end then, so identity is never older than a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenExpiry(pub i64);

impl TokenExpiry {
    /// When the token `request` was verified with expires; `None` for a request that carried
    /// no verified token (a public RPC).
    pub fn of<T>(request: &tonic::Request<T>) -> Option<chrono::DateTime<chrono::Utc>> {
        request
            .extensions()
            .get::<TokenExpiry>()
            .and_then(|expiry| chrono::DateTime::from_timestamp(expiry.0, 0))
    }
}

/// Put into a request's extensions when it carried an access token that failed verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusedToken(pub TokenError);

/// Reads the verified caller out of a request.
pub trait CallerExt {
    /// The caller; UNAUTHENTICATED if the request carried no token or one that failed
    /// verification (the message says why).
    fn caller(&self) -> Result<&Caller, ApiError>;
}

impl<T> CallerExt for tonic::Request<T> {
    fn caller(&self) -> Result<&Caller, ApiError> {
        if let Some(caller) = self.extensions().get::<Caller>() {
            return Ok(caller);
        }
        if let Some(RefusedToken(error)) = self.extensions().get::<RefusedToken>() {
            return Err(error.clone().into());
        }
        Err(ApiError::Unauthenticated(
            "this call needs an access token (authorization: Bearer ...)".into(),
        ))
    }
}

/// A public key that verifies access tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    /// Key id, as in the token header.
    pub kid: String,
    /// Raw 32-byte Ed25519 public key.
    pub ed25519: [u8; 32],
    /// When the key stopped signing (Unix seconds); a token it verifies must have been issued
    /// before then, so a retired (possibly leaked) key cannot mint new tokens.
    pub retired_at: Option<i64>,
}

/// Why a token was refused. Shown to the client: says what is wrong, never the key material.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not a JWT, or not one of ours.
    #[error("access token is malformed")]
    Malformed,
    /// Signed with a key id we do not know.
    #[error("access token is signed with an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("access token signature is invalid")]
    BadSignature,
    /// Past `exp`.
    #[error("access token has expired")]
    Expired,
    /// Before `nbf`.
    #[error("access token is not valid yet")]
    NotYetValid,
    /// Meant for another audience.
    #[error("access token is for another audience")]
    WrongAudience,
    /// Issued by someone else.
    #[error("access token has the wrong issuer")]
    WrongIssuer,
    /// Signed with a key after that key was retired: issued after the retirement, or expiring
    /// later than any token signed before it could (a backdated `iat`).
    #[error("access token was signed with a retired key")]
    IssuedAfterRetirement,
}

impl From<TokenError> for ApiError {
    fn from(error: TokenError) -> Self {
        ApiError::Unauthenticated(error.to_string())
    }
}

/// The longest access token lifetime the configuration accepts (`auth.access_token_ttl`).
const MAX_TOKEN_LIFETIME_SECS: i64 = 24 * 3600;

/// Verifies access tokens against a set of public keys, without I/O. Cheap to clone.
#[derive(Clone)]
pub struct TokenVerifier {
    inner: Arc<VerifierInner>,
}

struct VerifierInner {
    keys: RwLock<HashMap<String, (DecodingKey, Option<i64>)>>,
    validation: Validation,
    /// "Now" for `exp` and `nbf`: the clock the issuing auth service uses too, so a process
    /// whose time is moved (tests) judges tokens by the time it issues them at.
    clock: SharedClock,
    /// Seconds a token may be past `exp` or before `nbf` (clock skew between processes).
    leeway: i64,
    /// The longest an access token lives (seconds): a retired key's tokens must expire within
    /// this of its retirement, whatever `iat` they claim.
    max_lifetime: std::sync::atomic::AtomicI64,
    /// Woken when a token names an unknown key, so a remote key refresher fetches early.
    unknown_key_seen: Notify,
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kids: Vec<String> = self
            .inner
            .keys
            .read()
            .map(|k| k.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("TokenVerifier")
            .field("kids", &kids)
            .finish()
    }
}

impl TokenVerifier {
    /// A verifier with no keys yet: it refuses every token until [`Self::install_keys`].
    /// Expiry and not-before are judged by the system clock.
    pub fn new(audience: &str, issuer: &str, leeway: Duration) -> Self {
        Self::with_clock(audience, issuer, leeway, Arc::new(SystemClock))
    }

    /// [`Self::new`], judging expiry and not-before by `clock`.
    pub fn with_clock(audience: &str, issuer: &str, leeway: Duration, clock: SharedClock) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[audience]);
        validation.set_issuer(&[issuer]);
        // Checked below against `clock` (jsonwebtoken would read the system clock); the
        // claims must still be present.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        validation.required_spec_claims = ["exp", "nbf", "aud", "iss", "sub"]
            .into_iter()
            .map(String::from)
            .collect();
        Self {
            inner: Arc::new(VerifierInner {
                keys: RwLock::new(HashMap::new()),
                validation,
                clock,
                leeway: i64::try_from(leeway.as_secs()).unwrap_or(i64::MAX),
                max_lifetime: std::sync::atomic::AtomicI64::new(MAX_TOKEN_LIFETIME_SECS),
                unknown_key_seen: Notify::new(),
            }),
        }
    }

    /// Sets the longest an access token lives (the issuer's `auth.access_token_ttl`; 24 hours,
    /// the most it may be, until set): a token of a retired key must expire within this of the
    /// key's retirement, so a leaked retired key cannot mint backdated long-lived tokens.
    pub fn set_max_lifetime(&self, max: Duration) {
        let secs = i64::try_from(max.as_secs()).unwrap_or(i64::MAX);
        self.inner
            .max_lifetime
            .store(secs, std::sync::atomic::Ordering::Relaxed);
    }

    /// Replaces the trusted key set with exactly `keys`.
    pub fn install_keys(&self, keys: &[PublicKey]) {
        let map = keys
            .iter()
            .map(|k| {
                let key = DecodingKey::from_ed_der(&k.ed25519);
                (k.kid.clone(), (key, k.retired_at))
            })
            .collect();
        *self
            .inner
            .keys
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = map;
    }

    /// The key ids currently trusted.
    pub fn key_ids(&self) -> Vec<String> {
        let keys = self
            .inner
            .keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        keys.keys().cloned().collect()
    }

    /// Resolves when a token with an unknown key id was presented.
    pub async fn unknown_key_seen(&self) {
        self.inner.unknown_key_seen.notified().await;
    }

    /// Checks signature, key id, expiry, not-before, audience and issuer.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        use jsonwebtoken::errors::ErrorKind;
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Malformed);
        }
        let kid = header.kid.ok_or(TokenError::Malformed)?;
        let key = {
            let keys = self
                .inner
                .keys
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            keys.get(&kid).cloned()
        };
        let Some((key, retired_at)) = key else {
            self.inner.unknown_key_seen.notify_one();
            return Err(TokenError::UnknownKey);
        };
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &self.inner.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => {
                    // The key under this kid may have been replaced (a reset auth database):
                    // let a remote refresher look again, as for an unknown kid.
                    self.inner.unknown_key_seen.notify_one();
                    TokenError::BadSignature
                }
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidAudience => TokenError::WrongAudience,
                ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
                _ => TokenError::Malformed,
            })?;
        let now = self.inner.clock.now().timestamp();
        if claims.exp.saturating_add(self.inner.leeway) < now {
            return Err(TokenError::Expired);
        }
        if claims.nbf.saturating_sub(self.inner.leeway) > now {
            return Err(TokenError::NotYetValid);
        }
        if let Some(retired) = retired_at {
            // `iat` is the signer's word: a leaked key can claim any. A token truly signed
            // before the retirement expires within one lifetime of it.
            let max_lifetime = self
                .inner
                .max_lifetime
                .load(std::sync::atomic::Ordering::Relaxed);
            let latest_exp = retired
                .saturating_add(max_lifetime)
                .saturating_add(self.inner.leeway);
            if claims.iat > retired || claims.exp > latest_exp {
                return Err(TokenError::IssuedAfterRetirement);
            }
        }
        Ok(claims)
    }
}

/// Tower layer: a request with `authorization: Bearer <token>` is verified, and a valid token
/// puts a [`Caller`] into the request extensions. An invalid token is answered UNAUTHENTICATED
/// before any handler runs, except on the RPCs declared public (Login, Refresh, health, ...):
/// there it is only noted as a [`RefusedToken`], so a client whose stale token rides along on
/// every call can still log in again. Handlers check the caller themselves too, through
/// [`CallerExt::caller`] (UNAUTHENTICATED for a missing or refused token): two locks, not one.
#[derive(Clone, Debug)]
pub struct AuthLayer {
    verifier: TokenVerifier,
    public: Arc<HashSet<String>>,
}

impl AuthLayer {
    /// A layer verifying with `verifier`; `public` lists the gRPC paths
    /// (`/package.Service/Method`) and whole services (`/package.Service/`) callable without
    /// a valid token.
    pub fn new(verifier: TokenVerifier, public: impl IntoIterator<Item = String>) -> Self {
        Self {
            verifier,
            public: Arc::new(public.into_iter().collect()),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            verifier: self.verifier.clone(),
            public: self.public.clone(),
        }
    }
}

/// The service [`AuthLayer`] produces.
#[derive(Clone, Debug)]
pub struct AuthService<S> {
    inner: S,
    verifier: TokenVerifier,
    public: Arc<HashSet<String>>,
}

fn is_public(public: &HashSet<String>, path: &str) -> bool {
    public.contains(path)
        || path
            .rfind('/')
            .is_some_and(|slash| slash > 0 && public.contains(&path[..=slash]))
}

impl<S> Service<http::Request<Body>> for AuthService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        match authenticate(&self.verifier, request.headers()) {
            Ok(Some((caller, expiry))) => {
                request.extensions_mut().insert(caller);
                request.extensions_mut().insert(expiry);
            }

            Ok(None) => {}
            Err(error) if is_public(&self.public, request.uri().path()) => {
                request.extensions_mut().insert(RefusedToken(error));
            }
            Err(error) => {
                let status = tonic::Status::from(ApiError::from(error));
                return Box::pin(async move { Ok(status.into_http()) });
            }
        }
        // The clone is ready-checked by tower's contract only for `self.inner`; swap so the
        // ready one serves this request (tower's "clone and swap" idiom).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move { inner.call(request).await })
    }
}

fn authenticate(
    verifier: &TokenVerifier,
    headers: &http::HeaderMap,
) -> Result<Option<(Caller, TokenExpiry)>, TokenError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| TokenError::Malformed)?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or(TokenError::Malformed)?;
    let claims = verifier.verify(token.trim())?;
    Caller::from_claims(&claims).map(|caller| Some((caller, TokenExpiry(claims.exp))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    use jsonwebtoken::{EncodingKey, Header};

    fn key(seed: u8) -> (SigningKey, PublicKey) {
        let signing = SigningKey::from_bytes(&[seed; 32]);
        let public = PublicKey {
            kid: format!("k{seed}"),
            ed25519: signing.verifying_key().to_bytes(),
            retired_at: None,
        };
        (signing, public)
    }

    fn sign(signing: &SigningKey, kid: &str, claims: &Claims) -> String {
        let der = signing.to_pkcs8_der().unwrap();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(der.as_bytes())).unwrap()
    }

    fn claims(offset_exp: i64, offset_nbf: i64) -> Claims {
        let now = chrono::Utc::now().timestamp();
        Claims {
            sub: "00000000-0000-0000-0000-000000000001".into(),
            role: Role::User,
            aud: "sneakernet".into(),
            iss: "sneakernet-auth".into(),
            exp: now + offset_exp,
            nbf: now + offset_nbf,
            iat: now,
            jti: "j".into(),
        }
    }

    fn verifier(keys: &[PublicKey]) -> TokenVerifier {
        let v = TokenVerifier::new("sneakernet", "sneakernet-auth", Duration::from_secs(5));
        v.install_keys(keys);
        v
    }

    #[test]
    fn valid_token_verifies() {
        let (signing, public) = key(1);
        let token = sign(&signing, "k1", &claims(60, 0));
        assert_eq!(
            verifier(&[public]).verify(&token).unwrap().sub,
            "00000000-0000-0000-0000-000000000001"
        );
    }

    #[test]
    fn expiry_and_not_before_are_judged_by_the_injected_clock() {
        let (signing, public) = key(1);
        let clock = Arc::new(crate::clock::OffsetClock::new());
        let v = TokenVerifier::with_clock(
            "sneakernet",
            "sneakernet-auth",
            Duration::from_secs(5),
            clock.clone(),
        );
        v.install_keys(&[public]);
        let now = sign(&signing, "k1", &claims(60, 0));
        // Issued by an auth service whose clock is two hours ahead.
        let later = sign(&signing, "k1", &claims(7260, 7200));
        assert!(v.verify(&now).is_ok());
        assert_eq!(v.verify(&later), Err(TokenError::NotYetValid));
        clock.advance(chrono::Duration::hours(2));
        assert_eq!(v.verify(&now), Err(TokenError::Expired));
        assert!(v.verify(&later).is_ok());
        // The leeway holds both ways.
        let edge = sign(&signing, "k1", &claims(7200 - 4, 0));
        assert!(
            v.verify(&edge).is_ok(),
            "4 s past exp is within 5 s of leeway"
        );
        let past = sign(&signing, "k1", &claims(7200 - 6, 0));
        assert_eq!(v.verify(&past), Err(TokenError::Expired));
    }

    #[test]
    fn each_defect_has_its_own_error() {
        let (signing, public) = key(1);
        let (other, _) = key(2);
        let v = verifier(&[public]);
        assert_eq!(
            v.verify(&sign(&signing, "k1", &claims(-60, -120))),
            Err(TokenError::Expired)
        );
        assert_eq!(
            v.verify(&sign(&signing, "k1", &claims(600, 300))),
            Err(TokenError::NotYetValid)
        );
        let mut aud = claims(60, 0);
        aud.aud = "elsewhere".into();
        assert_eq!(
            v.verify(&sign(&signing, "k1", &aud)),
            Err(TokenError::WrongAudience)
        );
        let mut iss = claims(60, 0);
        iss.iss = "mallory".into();
        assert_eq!(
            v.verify(&sign(&signing, "k1", &iss)),
            Err(TokenError::WrongIssuer)
        );
        assert_eq!(
            v.verify(&sign(&other, "k1", &claims(60, 0))),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            v.verify(&sign(&signing, "k9", &claims(60, 0))),
            Err(TokenError::UnknownKey)
        );
        assert_eq!(v.verify("not.a.token"), Err(TokenError::Malformed));
    }

    #[test]
    fn caller_role_check_names_roles() {
        let caller = Caller::User(UserId(uuid::Uuid::nil()));
        assert!(caller.require(&[Role::User]).is_ok());
        let err = caller.require(&[Role::Operator]).unwrap_err();
        assert!(matches!(err, ApiError::PermissionDenied(ref m) if m.contains("operator")));
    }

    #[test]
    fn retired_key_verifies_only_tokens_issued_before_its_retirement() {
        let (signing, mut public) = key(1);
        let old = claims(60, -5);
        let token_before = sign(&signing, "k1", &old);
        public.retired_at = Some(old.iat);
        let v = verifier(&[public]);
        assert!(v.verify(&token_before).is_ok());
        let mut minted_later = claims(60, -5);
        minted_later.iat = old.iat + 10;
        assert_eq!(
            v.verify(&sign(&signing, "k1", &minted_later)),
            Err(TokenError::IssuedAfterRetirement)
        );
    }

    #[test]
    fn a_retired_keys_token_must_expire_within_one_lifetime_of_the_retirement_whatever_its_iat() {
        let (signing, mut public) = key(1);
        let now = chrono::Utc::now().timestamp();
        public.retired_at = Some(now - 10);
        let v = verifier(&[public]);
        v.set_max_lifetime(Duration::from_secs(60));
        // Signed before the retirement with the usual lifetime: still good.
        let mut honest = claims(0, -20);
        honest.iat = now - 20;
        honest.exp = now + 40;
        assert!(v.verify(&sign(&signing, "k1", &honest)).is_ok());
        // Minted with the leaked key, backdated, living a day: refused.
        let mut backdated = claims(24 * 3600, -3600);
        backdated.iat = now - 3600;
        assert_eq!(
            v.verify(&sign(&signing, "k1", &backdated)),
            Err(TokenError::IssuedAfterRetirement)
        );
    }

    #[test]
    fn subjects_must_fit_their_role() {
        let mut user = claims(60, 0);
        assert!(matches!(Caller::from_claims(&user), Ok(Caller::User(_))));
        user.sub = "K-0001".into();
        assert_eq!(Caller::from_claims(&user), Err(TokenError::Malformed));
        user.role = Role::Kiosk;
        let kiosk = Caller::from_claims(&user).unwrap();
        assert_eq!(kiosk.kiosk().map(KioskId::as_str), Some("K-0001"));
        assert_eq!(kiosk.account(), None, "a kiosk is never an account");
        user.sub = "not a kiosk/id".into();
        assert_eq!(Caller::from_claims(&user), Err(TokenError::Malformed));
        user.role = Role::Drive;
        user.sub = "D-0001".into();
        let drive = Caller::from_claims(&user).unwrap();
        assert_eq!(drive.role(), Role::Drive);
        assert_eq!(drive.kiosk(), None, "a drive is never a kiosk");
        assert_eq!(drive.account(), None, "a drive is never an account");
        assert_eq!(
            drive.device().map(|d| d.stored()),
            Some("drive:D-0001".to_owned())
        );
        assert!(drive.require(&[Role::Kiosk, Role::Operator]).is_err());
        user.sub = "D 1".into();
        assert_eq!(Caller::from_claims(&user), Err(TokenError::Malformed));
    }

    #[test]
    fn public_paths_match_methods_and_whole_services_only() {
        let public: HashSet<String> = [
            "/a.S/Login".to_owned(),
            "/grpc.health.v1.Health/".to_owned(),
        ]
        .into();
        assert!(is_public(&public, "/a.S/Login"));
        assert!(is_public(&public, "/grpc.health.v1.Health/Check"));
        assert!(!is_public(&public, "/a.S/Logout"));
        assert!(!is_public(&public, "/a.S/"));
        assert!(!is_public(&public, "/"));
        assert!(!is_public(&public, ""));
    }
}
