//! Who is calling: access-token claims, local verification, and the tower layer that puts the
//! verified [`Caller`] into each request's extensions.
//!
//! Verification is local: the [`TokenVerifier`] holds the auth service's public keys by key id
//! (`kid`), installed in-process when this process serves auth, or fetched from it and
//! refreshed otherwise ([`crate::keys`]). No request pays a call to auth.

use std::collections::HashMap;
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
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::User => "user",
            Role::Operator => "operator",
            Role::Kiosk => "kiosk",
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
            other => Err(format!("unknown role {other:?}")),
        }
    }
}

/// The claims of a Sneakernet access token.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Subject: a user id (UUID) for users and operators, the kiosk id for kiosks.
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

/// The verified identity behind a request. Handlers read it with [`CallerExt::caller`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The token's subject (user id or kiosk id).
    pub subject: String,
    /// The token's role.
    pub role: Role,
}

impl Caller {
    /// Passes if the caller has one of `roles`; otherwise PERMISSION_DENIED naming the roles.
    pub fn require(&self, roles: &[Role]) -> Result<&Self, ApiError> {
        if roles.contains(&self.role) {
            Ok(self)
        } else {
            let allowed = roles
                .iter()
                .map(Role::to_string)
                .collect::<Vec<_>>()
                .join(" or ");
            Err(ApiError::PermissionDenied(format!(
                "this call needs the {allowed} role; the caller is a {}",
                self.role
            )))
        }
    }
}

/// Reads the verified caller out of a request.
pub trait CallerExt {
    /// The caller, or UNAUTHENTICATED if the request carried no access token.
    fn caller(&self) -> Result<&Caller, ApiError>;
}

impl<T> CallerExt for tonic::Request<T> {
    fn caller(&self) -> Result<&Caller, ApiError> {
        self.extensions().get::<Caller>().ok_or_else(|| {
            ApiError::Unauthenticated(
                "this call needs an access token (authorization: Bearer ...)".into(),
            )
        })
    }
}

/// A public key that verifies access tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    /// Key id, as in the token header.
    pub kid: String,
    /// Raw 32-byte Ed25519 public key.
    pub ed25519: [u8; 32],
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
}

impl From<TokenError> for ApiError {
    fn from(error: TokenError) -> Self {
        ApiError::Unauthenticated(error.to_string())
    }
}

/// Verifies access tokens against a set of public keys, without I/O. Cheap to clone.
#[derive(Clone)]
pub struct TokenVerifier {
    inner: Arc<VerifierInner>,
}

struct VerifierInner {
    keys: RwLock<HashMap<String, DecodingKey>>,
    validation: Validation,
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
    pub fn new(audience: &str, issuer: &str, leeway: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[audience]);
        validation.set_issuer(&[issuer]);
        validation.validate_nbf = true;
        validation.leeway = leeway.as_secs();
        validation.required_spec_claims = ["exp", "nbf", "aud", "iss", "sub"]
            .into_iter()
            .map(String::from)
            .collect();
        Self {
            inner: Arc::new(VerifierInner {
                keys: RwLock::new(HashMap::new()),
                validation,
                unknown_key_seen: Notify::new(),
            }),
        }
    }

    /// Replaces the trusted key set.
    pub fn install_keys(&self, keys: &[PublicKey]) {
        let map = keys
            .iter()
            .map(|k| (k.kid.clone(), DecodingKey::from_ed_der(&k.ed25519)))
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
        let Some(key) = key else {
            self.inner.unknown_key_seen.notify_one();
            return Err(TokenError::UnknownKey);
        };
        jsonwebtoken::decode::<Claims>(token, &key, &self.inner.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidAudience => TokenError::WrongAudience,
                ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
                _ => TokenError::Malformed,
            })
    }
}

/// Tower layer: a request with `authorization: Bearer <token>` is verified; a valid token puts
/// a [`Caller`] into the request extensions, an invalid one is answered UNAUTHENTICATED before
/// any handler runs. A request without the header passes with no caller, so public RPCs work
/// and protected ones refuse it through [`CallerExt::caller`].
#[derive(Clone, Debug)]
pub struct AuthLayer {
    verifier: TokenVerifier,
}

impl AuthLayer {
    /// A layer verifying with `verifier`.
    pub fn new(verifier: TokenVerifier) -> Self {
        Self { verifier }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            verifier: self.verifier.clone(),
        }
    }
}

/// The service [`AuthLayer`] produces.
#[derive(Clone, Debug)]
pub struct AuthService<S> {
    inner: S,
    verifier: TokenVerifier,
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
            Ok(Some(caller)) => {
                request.extensions_mut().insert(caller);
            }
            Ok(None) => {}
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
) -> Result<Option<Caller>, TokenError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| TokenError::Malformed)?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or(TokenError::Malformed)?;
    let claims = verifier.verify(token.trim())?;
    Ok(Some(Caller {
        subject: claims.sub,
        role: claims.role,
    }))
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
            sub: "u1".into(),
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
        assert_eq!(verifier(&[public]).verify(&token).unwrap().sub, "u1");
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
        let caller = Caller {
            subject: "u".into(),
            role: Role::User,
        };
        assert!(caller.require(&[Role::User]).is_ok());
        let err = caller.require(&[Role::Operator]).unwrap_err();
        assert!(matches!(err, ApiError::PermissionDenied(ref m) if m.contains("operator")));
    }
}
