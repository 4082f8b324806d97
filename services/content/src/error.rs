//! What can go wrong in the content service, and how each case reaches the client.

use sneakernet_proto::ids::PackageId;
use sneakernet_runtime::{ApiError, FieldViolation};

use crate::domain::ContentHash;

/// A content-service failure. Converted to a gRPC status once, at the edge.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// Request fields are wrong.
    #[error("invalid request")]
    Invalid(Vec<FieldViolation>),
    /// No package with this id.
    #[error("package {0} not found")]
    PackageNotFound(PackageId),
    /// The package is still UPLOADING: no manifest, no download.
    #[error("package {0} is not ready: some file is not yet uploaded and verified")]
    NotReady(PackageId),
    /// An upload names a file a READY (immutable) package does not have as declared.
    #[error("package {package} is ready and immutable; it has no file {path:?} as given")]
    PackageReady {
        /// The package.
        package: PackageId,
        /// The path the upload named.
        path: String,
    },
    /// A download asked for a chunk that is not part of the package.
    #[error("chunk {hash} is not a chunk of package {package}")]
    ChunkNotInPackage {
        /// The package.
        package: PackageId,
        /// The first such hash asked.
        hash: ContentHash,
    },
    /// An upload header's offset is past what is stored.
    #[error("offset {offset} is beyond the {stored} bytes stored for {path:?}; resume at {stored}")]
    OffsetBeyondStored {
        /// The file.
        path: String,
        /// The header's offset.
        offset: u64,
        /// Bytes stored.
        stored: u64,
    },
    /// The uploaded file is complete but its hash is not the declared one. Its stored bytes
    /// were discarded.
    #[error(
        "file {path:?} hashes to {actual}, not the declared {declared}; its stored bytes were discarded, upload it again from offset 0"
    )]
    FileHashMismatch {
        /// The file.
        path: String,
        /// The declared hash.
        declared: ContentHash,
        /// The hash of the bytes received.
        actual: ContentHash,
    },
    /// A stored chunk no longer matches its hash (or is gone): its bytes are never served.
    #[error("stored chunk {hash} is corrupt or missing in the object store")]
    CorruptChunk {
        /// The chunk.
        hash: ContentHash,
    },
    /// Another upload stream holds the file.
    #[error(
        "another upload of {path:?} is in progress; retry once it ends (a broken one lapses after {lease_secs}s)"
    )]
    UploadInProgress {
        /// The file.
        path: String,
        /// How long an abandoned claim lasts.
        lease_secs: u64,
    },
    /// This upload stream lost its claim on the file (it stalled past the lease and another
    /// upload took over).
    #[error(
        "this upload of {path:?} lost its claim to another upload; check GetUploadStatus and resume"
    )]
    LeaseLost {
        /// The file.
        path: String,
    },
    /// The client's stream broke.
    #[error("upload stream broke: {0}")]
    StreamBroken(String),
    /// The object store failed.
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// A stored row cannot be decoded (a bug or a tampered database).
    #[error("stored {what} is corrupt: {detail}")]
    Corrupt {
        /// Which value.
        what: &'static str,
        /// The decoder's complaint.
        detail: String,
    },
    /// A blocking or background task died.
    #[error("task failed: {0}")]
    Task(String),
    /// The database failed.
    #[error("database: {0}")]
    Store(#[from] sea_orm::DbErr),
    /// The server stops while a stream is open; the message says how to carry on elsewhere.
    #[error("the server is shutting down; {0}")]
    ShuttingDown(&'static str),
}

impl From<ContentError> for ApiError {
    fn from(error: ContentError) -> Self {
        match error {
            ContentError::Invalid(violations) => ApiError::InvalidArgument(violations),
            ContentError::PackageNotFound(_) | ContentError::ChunkNotInPackage { .. } => {
                ApiError::NotFound(error.to_string())
            }
            ContentError::NotReady(ref package) => ApiError::precondition(
                "PACKAGE_NOT_READY",
                format!("package/{package}"),
                error.to_string(),
            ),
            ContentError::PackageReady { ref package, .. } => ApiError::precondition(
                "PACKAGE_READY",
                format!("package/{package}"),
                error.to_string(),
            ),
            ContentError::OffsetBeyondStored { .. } => ApiError::OutOfRange(error.to_string()),
            ContentError::FileHashMismatch { .. } | ContentError::CorruptChunk { .. } => {
                ApiError::DataLoss(error.to_string())
            }
            ContentError::UploadInProgress { .. }
            | ContentError::LeaseLost { .. }
            | ContentError::StreamBroken(_) => ApiError::Aborted(error.to_string()),
            ContentError::ObjectStore(_) => {
                tracing::warn!(%error, "object store call failed");
                ApiError::Unavailable {
                    message: "the content object store failed; retry later".into(),
                    retry_after: None,
                }
            }
            ContentError::ShuttingDown(_) => ApiError::Unavailable {
                message: error.to_string(),
                retry_after: None,
            },
            ContentError::Corrupt { .. } | ContentError::Task(_) => {
                ApiError::Internal(error.to_string())
            }
            ContentError::Store(error) => ApiError::from(error),
        }
    }
}

impl From<ContentError> for tonic::Status {
    fn from(error: ContentError) -> Self {
        ApiError::from(error).into()
    }
}

impl From<FieldViolation> for ContentError {
    fn from(violation: FieldViolation) -> Self {
        ContentError::Invalid(vec![violation])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn each_error_has_its_documented_code() {
        let package = PackageId::parse("0190f5a4-0000-7000-8000-000000000001").unwrap();
        let hash = ContentHash::of(b"x");
        let cases = [
            (
                ContentError::PackageNotFound(package.clone()),
                Code::NotFound,
            ),
            (
                ContentError::ChunkNotInPackage {
                    package: package.clone(),
                    hash,
                },
                Code::NotFound,
            ),
            (
                ContentError::NotReady(package.clone()),
                Code::FailedPrecondition,
            ),
            (
                ContentError::OffsetBeyondStored {
                    path: "a".into(),
                    offset: 9,
                    stored: 4,
                },
                Code::OutOfRange,
            ),
            (
                ContentError::FileHashMismatch {
                    path: "a".into(),
                    declared: hash,
                    actual: hash,
                },
                Code::DataLoss,
            ),
            (ContentError::CorruptChunk { hash }, Code::DataLoss),
            (
                ContentError::UploadInProgress {
                    path: "a".into(),
                    lease_secs: 30,
                },
                Code::Aborted,
            ),
            (ContentError::ShuttingDown("retry"), Code::Unavailable),
        ];
        for (error, code) in cases {
            assert_eq!(tonic::Status::from(error).code(), code);
        }
        let status = tonic::Status::from(ContentError::NotReady(package));
        let failure = tonic_types::StatusExt::get_details_precondition_failure(&status)
            .expect("precondition details");
        assert_eq!(failure.violations[0].r#type, "PACKAGE_NOT_READY");
    }
}
