//! What can go wrong in the auth service, and how each case reaches the client.

use sneakernet_runtime::{ApiError, FieldViolation};

use crate::credentials::HashError;
use crate::tokens::KeyError;

/// An auth failure. Converted to a gRPC status once, at the edge.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Request fields are wrong.
    #[error("invalid request")]
    Invalid(Vec<FieldViolation>),
    /// Register with an email that has an account.
    #[error("an account with this email exists")]
    EmailTaken,
    /// Login with a wrong email/password pair (never says which half).
    #[error("wrong email or password")]
    BadCredentials,
    /// A refresh token we never issued.
    #[error("unknown refresh token")]
    RefreshUnknown,
    /// A refresh token presented a second time: the whole session is revoked.
    #[error("refresh token was already used; the session has been revoked")]
    RefreshReused,
    /// A refresh token of a revoked session (logout or earlier reuse).
    #[error("the session has been revoked")]
    SessionRevoked,
    /// A refresh token past its lifetime.
    #[error("refresh token has expired")]
    RefreshExpired,
    /// Logout of a session that belongs to someone else.
    #[error("this refresh token belongs to another account")]
    NotYourSession,
    /// An account an access token names no longer exists.
    #[error("account no longer exists")]
    AccountGone,
    /// No credential for this kiosk.
    #[error("kiosk {0} has no credential")]
    KioskUnknown(String),
    /// Wrong service/secret pair.
    #[error("wrong service name or secret")]
    ServiceBadCredentials,
    /// Wrong kiosk id/secret pair, or a revoked credential.
    #[error("wrong kiosk id or secret, or the credential was revoked")]
    KioskBadCredentials,
    /// No live credential for this drive's module.
    #[error("drive {0} has no credential")]
    DriveUnknown(String),
    /// Wrong drive id/secret pair, or a revoked credential.
    #[error("wrong drive id or secret, or the credential was revoked")]
    DriveBadCredentials,
    /// The database failed.
    #[error("database: {0}")]
    Store(#[from] sea_orm::DbErr),
    /// Signing failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Hashing failed.
    #[error(transparent)]
    Hash(#[from] HashError),
    /// A configured lifetime does not fit a timestamp (config validation bounds it).
    #[error("time arithmetic: {0}")]
    Time(String),
    /// The random generator failed.
    #[error("random generator: {0}")]
    Random(#[from] getrandom::Error),
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Invalid(violations) => ApiError::InvalidArgument(violations),
            AuthError::EmailTaken => ApiError::AlreadyExists(error.to_string()),
            AuthError::BadCredentials
            | AuthError::RefreshUnknown
            | AuthError::RefreshReused
            | AuthError::SessionRevoked
            | AuthError::RefreshExpired
            | AuthError::AccountGone
            | AuthError::KioskBadCredentials
            | AuthError::DriveBadCredentials
            | AuthError::ServiceBadCredentials => ApiError::Unauthenticated(error.to_string()),

            AuthError::NotYourSession => ApiError::PermissionDenied(error.to_string()),
            AuthError::KioskUnknown(_) | AuthError::DriveUnknown(_) => {
                ApiError::NotFound(error.to_string())
            }
            AuthError::Store(error) => ApiError::from(error),
            AuthError::Key(_) | AuthError::Hash(_) | AuthError::Random(_) | AuthError::Time(_) => {
                ApiError::Internal(error.to_string())
            }
        }
    }
}

impl From<AuthError> for tonic::Status {
    fn from(error: AuthError) -> Self {
        ApiError::from(error).into()
    }
}

impl From<FieldViolation> for AuthError {
    fn from(violation: FieldViolation) -> Self {
        AuthError::Invalid(vec![violation])
    }
}
