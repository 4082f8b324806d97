//! Access tokens: Ed25519-signed JWTs with `kid`, `aud`, `iss`, `exp`, `nbf`, `iat`, `jti`,
//! `sub` and `role`.
//!
//! Key rotation without a gap: a new key is stored with `not_before` in the future and
//! published at once; the keys it replaces get `retired_at` = that same instant. Until then the
//! old key signs while every verifier fetches the new one; after it, the new key signs and the
//! old one still verifies until the tokens it signed have expired.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sneakernet_runtime::caller::{Claims, PublicKey};
use sneakernet_runtime::clock::SharedClock;
use sneakernet_runtime::{Role, TokenVerifier};

use crate::entity::signing_key;

/// A signing key as loaded from the store.
#[derive(Clone)]
pub struct KeyMaterial {
    /// Key id.
    pub kid: String,
    /// The private seed.
    pub seed: [u8; 32],
    /// When it starts signing.
    pub not_before: DateTime<Utc>,
    /// When it stopped signing, if it did.
    pub retired_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Why key material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The stored key is not 32 bytes of base64url.
    #[error("signing key {kid} is corrupt in the store")]
    Corrupt {
        /// The key's id.
        kid: String,
    },
    /// No key signs now (all retired, or the only ones start later).
    #[error("no signing key is active")]
    NoActiveKey,
    /// The system random generator failed.
    #[error("cannot generate a signing key: {0}")]
    Random(String),
    /// Encoding or signing failed.
    #[error("cannot sign token: {0}")]
    Sign(String),
}

impl KeyMaterial {
    /// A fresh key from the system's random generator that signs from `not_before` on.
    pub fn generate(not_before: DateTime<Utc>) -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self {
            kid: uuid::Uuid::now_v7().simple().to_string(),
            seed,
            not_before,
            retired_at: None,
        })
    }

    /// Whether this key signs at `now`.
    pub fn signs_at(&self, now: DateTime<Utc>) -> bool {
        self.not_before <= now && self.retired_at.is_none_or(|retired| retired > now)
    }

    /// The verifying half.
    pub fn public_key(&self) -> [u8; 32] {
        SigningKey::from_bytes(&self.seed)
            .verifying_key()
            .to_bytes()
    }

    /// Reads a stored row.
    pub fn from_row(row: &signing_key::Model) -> Result<Self, KeyError> {
        let corrupt = || KeyError::Corrupt {
            kid: row.kid.clone(),
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(&row.private_key)
            .map_err(|_| corrupt())?;
        let seed = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| corrupt())?;
        Ok(Self {
            kid: row.kid.clone(),
            seed,
            not_before: row.not_before,
            retired_at: row.retired_at,
        })
    }

    /// The row to store.
    pub fn to_row(&self) -> signing_key::Model {
        signing_key::Model {
            kid: self.kid.clone(),
            private_key: URL_SAFE_NO_PAD.encode(self.seed),
            public_key: URL_SAFE_NO_PAD.encode(self.public_key()),
            not_before: self.not_before,
            retired_at: self.retired_at,
        }
    }
}

/// Signs access tokens and publishes the keys that verify them. Cheap to clone.
#[derive(Clone)]
pub struct TokenIssuer {
    inner: Arc<IssuerInner>,
}

struct IssuerInner {
    audience: String,
    issuer: String,
    ttl: Duration,
    clock: SharedClock,
    keys: RwLock<Vec<KeyMaterial>>,
    /// The in-process verifier (this process's own auth layer), kept in step with `keys`.
    verifier: TokenVerifier,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("issuer", &self.inner.issuer)
            .finish_non_exhaustive()
    }
}

/// A freshly signed access token.
#[derive(Clone, Debug)]
pub struct AccessToken {
    /// The compact JWT.
    pub token: String,
    /// Its `exp`.
    pub expires_at: DateTime<Utc>,
}

impl TokenIssuer {
    /// An issuer signing with the newest key of `keys` that signs now; all of `keys` are also
    /// installed into `verifier`.
    pub fn new(
        audience: String,
        issuer: String,
        ttl: Duration,
        clock: SharedClock,
        keys: Vec<KeyMaterial>,
        verifier: TokenVerifier,
    ) -> Self {
        let this = Self {
            inner: Arc::new(IssuerInner {
                audience,
                issuer,
                ttl,
                clock,
                keys: RwLock::new(Vec::new()),
                verifier,
            }),
        };
        this.replace_keys(keys);
        this
    }

    /// Replaces the key set (after a rotation or a reload) and trusts exactly the published
    /// keys in the in-process verifier, with their retirement times.
    pub fn replace_keys(&self, mut keys: Vec<KeyMaterial>) {
        keys.sort_by_key(|k| std::cmp::Reverse(k.not_before));
        *self.inner.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        let public: Vec<PublicKey> = self
            .published_keys()
            .iter()
            .map(|k| PublicKey {
                kid: k.kid.clone(),
                ed25519: k.public_key(),
                retired_at: k.retired_at.map(|t| t.timestamp()),
            })
            .collect();
        self.inner.verifier.install_keys(&public);
    }

    /// Every key that may verify a live token now or soon (rotated-in keys before they sign),
    /// newest first.
    pub fn published_keys(&self) -> Vec<KeyMaterial> {
        let horizon =
            self.inner.clock.now() - chrono::Duration::from_std(self.inner.ttl).unwrap_or_default();
        self.inner
            .keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|k| k.retired_at.is_none_or(|retired| retired > horizon))
            .cloned()
            .collect()
    }

    /// The configured audience.
    pub fn audience(&self) -> &str {
        &self.inner.audience
    }

    /// The configured issuer.
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// Signs a token for `subject` with `role`, valid from now for the configured lifetime.
    pub fn issue(&self, subject: &str, role: Role) -> Result<AccessToken, KeyError> {
        let now = self.inner.clock.now();
        let key = {
            let keys = self.inner.keys.read().unwrap_or_else(|p| p.into_inner());
            // Sorted newest first, so this is the newest key that signs now.
            keys.iter()
                .find(|k| k.signs_at(now))
                .cloned()
                .ok_or(KeyError::NoActiveKey)?
        };
        let expires_at = now
            + chrono::Duration::from_std(self.inner.ttl)
                .map_err(|e| KeyError::Sign(e.to_string()))?;
        let claims = Claims {
            sub: subject.to_owned(),
            role,
            aud: self.inner.audience.clone(),
            iss: self.inner.issuer.clone(),
            exp: expires_at.timestamp(),
            nbf: now.timestamp(),
            iat: now.timestamp(),
            jti: uuid::Uuid::new_v4().simple().to_string(),
        };
        let der = SigningKey::from_bytes(&key.seed)
            .to_pkcs8_der()
            .map_err(|e| KeyError::Sign(e.to_string()))?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        let token =
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(der.as_bytes()))
                .map_err(|e| KeyError::Sign(e.to_string()))?;
        Ok(AccessToken { token, expires_at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sneakernet_runtime::clock::SystemClock;

    fn issuer(keys: Vec<KeyMaterial>, verifier: TokenVerifier) -> TokenIssuer {
        TokenIssuer::new(
            "sneakernet".into(),
            "sneakernet-auth".into(),
            Duration::from_secs(900),
            Arc::new(SystemClock),
            keys,
            verifier,
        )
    }

    #[test]
    fn issued_tokens_verify_with_the_published_keys() {
        let verifier = TokenVerifier::new("sneakernet", "sneakernet-auth", Duration::from_secs(5));
        let key = KeyMaterial::generate(Utc::now()).unwrap();
        let issuer = issuer(vec![key.clone()], verifier.clone());
        let token = issuer.issue("user-1", Role::Operator).unwrap();
        let claims = verifier.verify(&token.token).unwrap();
        assert_eq!(
            (claims.sub.as_str(), claims.role),
            ("user-1", Role::Operator)
        );
        assert_eq!(issuer.published_keys()[0].kid, key.kid);
    }

    #[test]
    fn newest_active_key_signs_and_old_tokens_still_verify() {
        let verifier = TokenVerifier::new("sneakernet", "sneakernet-auth", Duration::from_secs(5));
        let old = KeyMaterial::generate(Utc::now() - chrono::Duration::hours(1)).unwrap();
        let issuer = issuer(vec![old.clone()], verifier.clone());
        let old_token = issuer.issue("u", Role::User).unwrap();

        let kid_of = |token: &AccessToken| {
            jsonwebtoken::decode_header(&token.token)
                .unwrap()
                .kid
                .unwrap()
        };

        // Rotated in for one minute from now: published at once, the old key still signs.
        let switch = Utc::now() + chrono::Duration::minutes(1);
        let mut retiring = old.clone();
        retiring.retired_at = Some(switch);
        let new = KeyMaterial::generate(switch).unwrap();
        issuer.replace_keys(vec![retiring, new.clone()]);
        assert_eq!(
            issuer.published_keys().len(),
            2,
            "published before it signs"
        );
        assert_eq!(kid_of(&issuer.issue("u", Role::User).unwrap()), old.kid);

        // After the switch the new key signs and the old token still verifies.
        let mut retired = old.clone();
        retired.retired_at = Some(Utc::now());
        let mut active = new.clone();
        active.not_before = Utc::now() - chrono::Duration::seconds(1);
        issuer.replace_keys(vec![retired, active]);
        assert_eq!(kid_of(&issuer.issue("u", Role::User).unwrap()), new.kid);
        assert!(
            verifier.verify(&old_token.token).is_ok(),
            "rotation must not cut live tokens"
        );
    }

    #[test]
    fn stored_rows_round_trip() {
        let key = KeyMaterial::generate(Utc::now()).unwrap();
        let back = KeyMaterial::from_row(&key.to_row()).unwrap();
        assert_eq!(back.seed, key.seed);
        let mut row = key.to_row();
        row.private_key = "short".into();
        assert!(matches!(
            KeyMaterial::from_row(&row),
            Err(KeyError::Corrupt { .. })
        ));
    }
}
