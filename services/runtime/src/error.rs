//! The one place a service error becomes a gRPC status.
//!
//! Each service keeps its own typed errors (`thiserror`) and converts them into [`ApiError`];
//! `From<ApiError> for tonic::Status` picks the code and attaches google.rpc details
//! (`BadRequest` field violations, `PreconditionFailure`, `RetryInfo`) so clients can act on
//! them without parsing text.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// One field of a request that is wrong, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field's path in the request message, e.g. `email` or `spec.capacity_bytes`.
    pub field: String,
    /// What is wrong with it, for a developer.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// One unmet precondition: a machine-readable `kind` (documented per RPC in the .proto), the
/// subject it concerns, and a description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreconditionViolation {
    /// Documented reason code, e.g. `NO_DEPOSIT`.
    pub kind: String,
    /// What the precondition is about, e.g. `user/<id>` or `kiosk/<id>`.
    pub subject: String,
    /// Human-readable explanation.
    pub description: String,
}

/// A machine-readable reason for an error, with values the client acts on
/// (google.rpc.ErrorInfo).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorInfo {
    /// UPPER_SNAKE_CASE reason.
    pub reason: String,
    /// The service's domain, e.g. "orders.sneakernet".
    pub domain: String,
    /// Values that explain the reason.
    pub metadata: std::collections::HashMap<String, String>,
}

/// What a request failed with, in the categories a client acts on.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ApiError {
    /// The request itself is wrong; each violation names a field.
    #[error("invalid argument: {}", describe_fields(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// The named thing does not exist (or the caller may not know it exists).
    #[error("not found: {0}")]
    NotFound(String),
    /// The thing to create exists already.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The system is not in a state that allows this request.
    #[error("{message}")]
    FailedPrecondition {
        /// Summary for humans.
        message: String,
        /// Each unmet precondition.
        violations: Vec<PreconditionViolation>,
        /// A machine-readable reason with values the client needs to act (google.rpc.ErrorInfo).
        /// Boxed: it is rare and would make every `Result<_, ApiError>` larger.
        info: Option<Box<ErrorInfo>>,
    },
    /// A concurrent request got in the way (for example one with the same idempotency key is
    /// still running); retrying later can succeed.
    #[error("aborted: {0}")]
    Aborted(String),
    /// No valid credentials were presented.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The caller is known but may not do this.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// Too many requests; try again after `retry_after`.
    #[error("{message}")]
    ResourceExhausted {
        /// Which budget ran out.
        message: String,
        /// When a retry can succeed.
        retry_after: Duration,
    },
    /// A position or range outside what exists (e.g. a cursor past the end of a log).
    #[error("out of range: {0}")]
    OutOfRange(String),
    /// A dependency is down; the request may be retried.
    #[error("unavailable: {message}")]
    Unavailable {
        /// What is unavailable.
        message: String,
        /// When to retry, if known.
        retry_after: Option<Duration>,
    },
    /// Stored data is lost or corrupt (for example a stored chunk no longer matches its hash,
    /// or uploaded bytes do not match their declared hash). The message names what is lost.
    #[error("data loss: {0}")]
    DataLoss(String),
    /// A bug or an unexpected failure. The detail is logged, the client sees a generic message.
    #[error("internal error: {0}")]
    Internal(String),
}

fn describe_fields(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ApiError {
    /// One invalid field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    /// One unmet precondition; the message is its description.
    pub fn precondition(
        kind: impl Into<String>,
        subject: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        let description = description.into();
        Self::FailedPrecondition {
            message: description.clone(),
            violations: vec![PreconditionViolation {
                kind: kind.into(),
                subject: subject.into(),
                description,
            }],
            info: None,
        }
    }

    /// The gRPC code this error maps to.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::NotFound(_) => Code::NotFound,
            Self::AlreadyExists(_) => Code::AlreadyExists,
            Self::FailedPrecondition { .. } => Code::FailedPrecondition,
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::ResourceExhausted { .. } => Code::ResourceExhausted,
            Self::OutOfRange(_) => Code::OutOfRange,
            Self::Unavailable { .. } => Code::Unavailable,
            Self::Aborted(_) => Code::Aborted,
            Self::DataLoss(_) => Code::DataLoss,
            Self::Internal(_) => Code::Internal,
        }
    }
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(error: sea_orm::DbErr) -> Self {
        match crate::db::DbFailure::of(&error) {
            crate::db::DbFailure::Unreachable => {
                tracing::warn!(%error, "database unavailable; answering UNAVAILABLE");
                Self::Unavailable {
                    message: "the database is unavailable; retry with the same request".into(),
                    retry_after: None,
                }
            }
            crate::db::DbFailure::Conflict => {
                tracing::info!(%error, "database conflict; answering ABORTED");
                Self::Aborted("a concurrent request got in the way; retry".into())
            }
            crate::db::DbFailure::Other => Self::Internal(format!("database: {error}")),
        }
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        let code = error.code();
        let mut details = ErrorDetails::new();
        let message = match error {
            ApiError::InvalidArgument(violations) => {
                let message = format!("invalid argument: {}", describe_fields(&violations));
                for v in violations {
                    details.add_bad_request_violation(v.field, v.description);
                }
                message
            }
            ApiError::FailedPrecondition {
                message,
                violations,
                info,
            } => {
                for v in violations {
                    details.add_precondition_failure_violation(v.kind, v.subject, v.description);
                }
                if let Some(info) = info {
                    let ErrorInfo {
                        reason,
                        domain,
                        metadata,
                    } = *info;
                    details.set_error_info(reason, domain, metadata);
                }
                message
            }
            ApiError::ResourceExhausted {
                message,
                retry_after,
            } => {
                details.set_retry_info(Some(retry_after));
                message
            }
            ApiError::Unavailable {
                message,
                retry_after,
            } => {
                if let Some(after) = retry_after {
                    details.set_retry_info(Some(after));
                }
                message
            }
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                "internal error".to_owned()
            }
            ApiError::NotFound(m)
            | ApiError::AlreadyExists(m)
            | ApiError::Unauthenticated(m)
            | ApiError::PermissionDenied(m)
            | ApiError::OutOfRange(m)
            | ApiError::Aborted(m)
            | ApiError::DataLoss(m) => m,
        };
        Status::with_error_details(code, message, details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_carries_every_field() {
        let status = Status::from(ApiError::InvalidArgument(vec![
            FieldViolation::new("email", "not an email address"),
            FieldViolation::new("password", "shorter than 10 characters"),
        ]));
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad = status
            .get_details_bad_request()
            .expect("bad request details");
        let fields: Vec<_> = bad
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(fields, ["email", "password"]);
        assert!(status.message().contains("email"));
    }

    #[test]
    fn precondition_failure_round_trips() {
        let status = Status::from(ApiError::precondition(
            "NO_DEPOSIT",
            "user/u1",
            "pay a deposit first",
        ));
        assert_eq!(status.code(), Code::FailedPrecondition);
        let failure = status.get_details_precondition_failure().expect("details");
        assert_eq!(failure.violations[0].r#type, "NO_DEPOSIT");
        assert_eq!(failure.violations[0].subject, "user/u1");
    }

    #[test]
    fn resource_exhausted_says_when_to_retry() {
        let status = Status::from(ApiError::ResourceExhausted {
            message: "too many login attempts".into(),
            retry_after: Duration::from_secs(7),
        });
        assert_eq!(status.code(), Code::ResourceExhausted);
        let retry = status.get_details_retry_info().expect("retry info");
        assert_eq!(retry.retry_delay, Some(Duration::from_secs(7)));
    }

    #[test]
    fn internal_detail_is_not_shown_to_clients() {
        let status = Status::from(ApiError::Internal("db password wrong at 10.0.0.3".into()));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn every_variant_has_its_code() {
        let cases = [
            (ApiError::invalid("f", "d"), Code::InvalidArgument),
            (ApiError::NotFound("x".into()), Code::NotFound),
            (ApiError::AlreadyExists("x".into()), Code::AlreadyExists),
            (
                ApiError::precondition("K", "s", "d"),
                Code::FailedPrecondition,
            ),
            (ApiError::Unauthenticated("x".into()), Code::Unauthenticated),
            (
                ApiError::PermissionDenied("x".into()),
                Code::PermissionDenied,
            ),
            (
                ApiError::ResourceExhausted {
                    message: "x".into(),
                    retry_after: Duration::ZERO,
                },
                Code::ResourceExhausted,
            ),
            (
                ApiError::Unavailable {
                    message: "x".into(),
                    retry_after: None,
                },
                Code::Unavailable,
            ),
            (ApiError::OutOfRange("x".into()), Code::OutOfRange),
            (ApiError::DataLoss("x".into()), Code::DataLoss),
            (ApiError::Internal("x".into()), Code::Internal),
        ];
        for (error, code) in cases {
            assert_eq!(error.code(), code);
            assert_eq!(Status::from(error).code(), code);
        }
    }
}
