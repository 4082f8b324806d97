//! What can go wrong in the gateway, and how each case reaches the client.

use sneakernet_runtime::{ApiError, FieldViolation};

use crate::domain::command::IllegalTransition;

/// A gateway failure. Converted to a gRPC status once, at the edge.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Request fields are wrong.
    #[error("invalid request")]
    Invalid(Vec<FieldViolation>),
    /// No such command (for this caller or kiosk).
    #[error("command {0} not found")]
    CommandNotFound(String),
    /// The event does not fit the command's state.
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    /// The subscription cursor is outside the log.
    #[error("cursor {requested} is beyond the end of the event log ({last}); resume from {last}")]
    CursorOutOfRange {
        /// What was asked.
        requested: u64,
        /// The log's last cursor.
        last: u64,
    },
    /// The subscription cursor is older than the log keeps: events after it were deleted by
    /// retention. The message ends with the cursor to resume from (the contract says so).
    #[error(
        "cursor {requested} is older than the event log keeps (events up to cursor {pruned_through} were deleted after the retention period); resynchronise (GetCommand, RequestInventory) and resume from {pruned_through}"
    )]
    CursorPruned {
        /// What was asked.
        requested: u64,
        /// The newest cursor deleted: resuming after it misses nothing more.
        pruned_through: u64,
    },
    /// A stored row cannot be decoded (a bug or a tampered database).
    #[error("stored {what} is corrupt: {detail}")]
    Corrupt {
        /// Which value.
        what: &'static str,
        /// The decoder's complaint.
        detail: String,
    },
    /// The database failed.
    #[error("database: {0}")]
    Store(#[from] sea_orm::DbErr),
    /// The caller's role or service may not do this (see `grants`).
    #[error("{0}")]
    NotAllowed(String),
    /// A link did not open with Hello; says what came instead.
    #[error("the link's first message must be Hello; {0}")]
    NoHello(&'static str),
    /// The access token a stream (a device's link, a subscription) was opened with expired
    /// while it was open.
    #[error("access token expired; log in again and open the stream again")]
    TokenExpired,
    /// The gateway cannot go on with a stream now (shutting down, storage failing); says how
    /// the client carries on.
    #[error("{0}")]
    Unavailable(&'static str),
}

impl From<GatewayError> for ApiError {
    fn from(error: GatewayError) -> Self {
        match error {
            GatewayError::Invalid(violations) => ApiError::InvalidArgument(violations),
            GatewayError::CommandNotFound(_) => ApiError::NotFound(error.to_string()),
            GatewayError::Illegal(_) => {
                ApiError::precondition("ILLEGAL_TRANSITION", "command", error.to_string())
            }
            GatewayError::CursorOutOfRange { .. } | GatewayError::CursorPruned { .. } => {
                ApiError::OutOfRange(error.to_string())
            }
            GatewayError::Corrupt { .. } => ApiError::Internal(error.to_string()),
            GatewayError::Store(error) => ApiError::from(error),
            GatewayError::NoHello(_) => {
                ApiError::precondition("HELLO_FIRST", "link", error.to_string())
            }
            GatewayError::TokenExpired => ApiError::Unauthenticated(error.to_string()),
            GatewayError::NotAllowed(why) => ApiError::PermissionDenied(why),
            GatewayError::Unavailable(_) => ApiError::Unavailable {
                message: error.to_string(),
                retry_after: None,
            },
        }
    }
}

impl From<GatewayError> for tonic::Status {
    fn from(error: GatewayError) -> Self {
        ApiError::from(error).into()
    }
}

impl From<FieldViolation> for GatewayError {
    fn from(violation: FieldViolation) -> Self {
        GatewayError::Invalid(vec![violation])
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn every_gateway_error_leaves_with_its_code() {
        let cases = [
            (
                GatewayError::from(FieldViolation::new("kiosk_id", "bad")),
                Code::InvalidArgument,
            ),
            (GatewayError::CommandNotFound("c".into()), Code::NotFound),
            (
                GatewayError::CursorOutOfRange {
                    requested: 9,
                    last: 4,
                },
                Code::OutOfRange,
            ),
            (
                GatewayError::CursorPruned {
                    requested: 3,
                    pruned_through: 7,
                },
                Code::OutOfRange,
            ),
            (
                GatewayError::Corrupt {
                    what: "payload",
                    detail: "x".into(),
                },
                Code::Internal,
            ),
            (GatewayError::NoHello("none came"), Code::FailedPrecondition),
            (GatewayError::TokenExpired, Code::Unauthenticated),
            (GatewayError::Unavailable("retry"), Code::Unavailable),
        ];
        for (error, code) in cases {
            let shown = error.to_string();
            assert_eq!(tonic::Status::from(error).code(), code, "{shown}");
        }
    }
}
