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
}

impl From<GatewayError> for ApiError {
    fn from(error: GatewayError) -> Self {
        match error {
            GatewayError::Invalid(violations) => ApiError::InvalidArgument(violations),
            GatewayError::CommandNotFound(_) => ApiError::NotFound(error.to_string()),
            GatewayError::Illegal(_) => {
                ApiError::precondition("ILLEGAL_TRANSITION", "command", error.to_string())
            }
            GatewayError::CursorOutOfRange { .. } => ApiError::OutOfRange(error.to_string()),
            GatewayError::Corrupt { .. } | GatewayError::Store(_) => {
                ApiError::Internal(error.to_string())
            }
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
