//! What can go wrong in the orders flows, and how each case reaches the client: every flow
//! returns [`OrdersError`], and [`From<OrdersError> for ApiError`] is the one place that
//! chooses the gRPC code.

use std::time::Duration;

use sneakernet_runtime::{ApiError, ErrorInfo, FieldViolation, PreconditionViolation};

use crate::store::StoreError;

/// How long a client waits before retrying an UNAVAILABLE answer.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// An orders failure. Converted to a gRPC status once, at the edge.
#[derive(Debug, thiserror::Error)]
pub enum OrdersError {
    /// Request fields are wrong (INVALID_ARGUMENT).
    #[error("invalid request")]
    Invalid(Vec<FieldViolation>),
    /// The kiosk has no profile (NOT_FOUND).
    #[error("kiosk {0} is not registered")]
    KioskNotRegistered(String),
    /// The kiosk was never registered nor ever connected (NOT_FOUND).
    #[error("kiosk {0} is unknown")]
    KioskUnknown(String),
    /// No parked event has this cursor (NOT_FOUND).
    #[error("no parked event with cursor {0}")]
    ParkedEventNotFound(i64),
    /// The order does not exist, or belongs to someone else (NOT_FOUND).
    #[error("order {0} does not exist")]
    OrderNotFound(String),
    /// RefundDeposit with no deposit held (NOT_FOUND).
    #[error("the account holds no deposit")]
    NoDepositHeld,
    /// PayDeposit while a deposit is held (ALREADY_EXISTS).
    #[error("the account already holds a deposit")]
    DepositAlreadyHeld,
    /// The account, the kiosk or the offer does not allow this now; each violation names
    /// one reason (FAILED_PRECONDITION).
    #[error("{}", describe(.violations))]
    Refused {
        /// Each unmet precondition.
        violations: Vec<PreconditionViolation>,
        /// Values the client needs to act (the deposit to pay).
        info: Option<Box<ErrorInfo>>,
    },
    /// This key's payment never completed and was paid back (ABORTED: a new key is needed).
    #[error(
        "this request's payment never completed and was paid back; retry with a new idempotency key"
    )]
    PaymentAbandoned,
    /// A concurrent request got in the way; nothing this request wanted was kept (ABORTED).
    #[error("{0}")]
    Raced(String),
    /// The key's payment is being checked with the provider (UNAVAILABLE: retry with it).
    #[error(
        "this request's payment is being checked with the provider; retry with the same idempotency key shortly"
    )]
    PaymentResolving,
    /// The processor failed before charging (UNAVAILABLE: retry).
    #[error("the payment processor failed; nothing was charged; retry")]
    ProcessorFailed,
    /// The provider did not answer; the message says what is held (UNAVAILABLE: retry with
    /// the same key).
    #[error("{0}")]
    ProviderSilent(&'static str),
    /// The content service cannot say what a package is now (UNAVAILABLE: retry).
    #[error("the content catalog cannot be read now ({0}); retry")]
    ContentUnavailable(String),
    /// The server is shutting down or a stream must be opened again (UNAVAILABLE).
    #[error("{0}")]
    GoingAway(&'static str),
    /// The access token a stream was opened with expired (UNAUTHENTICATED).
    #[error("access token expired; log in again and watch again")]
    TokenExpired,
    /// A stored value cannot be read or a secret cannot be opened (INTERNAL).
    #[error("{0}")]
    Corrupt(String),
    /// The store failed (ABORTED for races and lock conflicts, else INTERNAL).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The database failed (INTERNAL).
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
}

fn describe(violations: &[PreconditionViolation]) -> String {
    violations
        .iter()
        .map(|v| v.description.clone())
        .collect::<Vec<_>>()
        .join(" ")
}

impl OrdersError {
    /// The content service failed a look-up (logged here, once for every caller).
    pub fn content_unavailable(status: &tonic::Status) -> Self {
        tracing::warn!(code = ?status.code(), detail = status.message(), "content service failed a package look-up");
        OrdersError::ContentUnavailable(status.message().to_owned())
    }

    /// One field is wrong.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        OrdersError::Invalid(vec![FieldViolation::new(field, description)])
    }

    /// Refused for these reasons.
    pub fn refused(violations: Vec<PreconditionViolation>, info: Option<ErrorInfo>) -> Self {
        OrdersError::Refused {
            violations,
            info: info.map(Box::new),
        }
    }

    /// Refused for one reason.
    pub fn refused_one(kind: &str, subject: String, description: &str) -> Self {
        Self::refused(
            vec![PreconditionViolation {
                kind: kind.into(),
                subject,
                description: description.into(),
            }],
            None,
        )
    }
}

impl From<OrdersError> for ApiError {
    fn from(error: OrdersError) -> Self {
        let message = error.to_string();
        match error {
            OrdersError::Invalid(violations) => ApiError::InvalidArgument(violations),
            OrdersError::KioskNotRegistered(_)
            | OrdersError::KioskUnknown(_)
            | OrdersError::ParkedEventNotFound(_)
            | OrdersError::OrderNotFound(_)
            | OrdersError::NoDepositHeld => ApiError::NotFound(message),
            OrdersError::DepositAlreadyHeld => ApiError::AlreadyExists(message),
            OrdersError::Refused { violations, info } => ApiError::FailedPrecondition {
                message,
                violations,
                info,
            },
            OrdersError::PaymentAbandoned | OrdersError::Raced(_) => ApiError::Aborted(message),
            OrdersError::TokenExpired => ApiError::Unauthenticated(message),
            OrdersError::PaymentResolving
            | OrdersError::ProcessorFailed
            | OrdersError::ProviderSilent(_)
            | OrdersError::ContentUnavailable(_)
            | OrdersError::GoingAway(_) => ApiError::Unavailable {
                message,
                retry_after: Some(RETRY_AFTER),
            },
            OrdersError::Corrupt(_) => ApiError::Internal(message),
            OrdersError::Store(error) => ApiError::from(error),
            OrdersError::Db(error) => ApiError::from(error),
        }
    }
}

impl From<OrdersError> for tonic::Status {
    fn from(error: OrdersError) -> Self {
        ApiError::from(error).into()
    }
}

impl From<FieldViolation> for OrdersError {
    fn from(violation: FieldViolation) -> Self {
        OrdersError::Invalid(vec![violation])
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn each_error_gets_its_documented_code() {
        let cases = [
            (
                OrdersError::invalid("offer_id", "is wrong"),
                Code::InvalidArgument,
            ),
            (
                OrdersError::KioskNotRegistered("K-1".into()),
                Code::NotFound,
            ),
            (OrdersError::KioskUnknown("K-1".into()), Code::NotFound),
            (OrdersError::ParkedEventNotFound(7), Code::NotFound),
            (OrdersError::OrderNotFound("o".into()), Code::NotFound),
            (OrdersError::NoDepositHeld, Code::NotFound),
            (OrdersError::DepositAlreadyHeld, Code::AlreadyExists),
            (
                OrdersError::refused_one("ITEM_OUT", "orders/o".into(), "Return it."),
                Code::FailedPrecondition,
            ),
            (OrdersError::PaymentAbandoned, Code::Aborted),
            (OrdersError::Raced("raced".into()), Code::Aborted),
            (OrdersError::PaymentResolving, Code::Unavailable),
            (OrdersError::ProcessorFailed, Code::Unavailable),
            (OrdersError::ProviderSilent("silent"), Code::Unavailable),
            (OrdersError::GoingAway("watch again"), Code::Unavailable),
            (OrdersError::TokenExpired, Code::Unauthenticated),
            (
                OrdersError::ContentUnavailable("down".into()),
                Code::Unavailable,
            ),
            (OrdersError::Corrupt("stored offer".into()), Code::Internal),
            (
                OrdersError::Store(StoreError::Raced("raced".into())),
                Code::Aborted,
            ),
            (
                OrdersError::Db(sea_orm::DbErr::Custom("down".into())),
                Code::Internal,
            ),
        ];
        for (error, code) in cases {
            let shown = error.to_string();
            assert_eq!(tonic::Status::from(error).code(), code, "{shown}");
        }
    }

    #[test]
    fn a_refusal_says_every_reason_and_keeps_its_details() {
        let error = OrdersError::refused(
            vec![
                PreconditionViolation {
                    kind: "QR_CODE_STALE".into(),
                    subject: "kiosks/K-1".into(),
                    description: "Scan again.".into(),
                },
                PreconditionViolation {
                    kind: "KIOSK_OFFLINE".into(),
                    subject: "kiosks/K-1".into(),
                    description: "Try shortly.".into(),
                },
            ],
            None,
        );
        let ApiError::FailedPrecondition {
            message,
            violations,
            ..
        } = ApiError::from(error)
        else {
            panic!("not a refusal");
        };
        assert_eq!(message, "Scan again. Try shortly.");
        assert_eq!(violations.len(), 2);
    }
}
