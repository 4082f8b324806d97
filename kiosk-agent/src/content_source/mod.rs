//! Where content comes from: package manifests and chunk bytes from the content service, and
//! the download step that fills the [`ChunkCache`](crate::cache::ChunkCache) with what a
//! package needs.
//!
//! Map: [`manifest`] (the checked [`Manifest`] and its on-drive JSON), [`ContentSource`] (the
//! trait the download step reads from; fakes implement it in tests), [`grpc`] (the
//! implementation over `ContentService`, with [`AccessTokens`]), [`download`]
//! ([`download_missing`]).

pub mod download;
pub mod grpc;
pub mod manifest;

use std::future::Future;

use bytes::Bytes;
use futures::stream::BoxStream;

pub use crate::cache::ChunkHash;
pub use download::{DownloadError, DownloadReport, download_missing};
pub use grpc::{AccessTokens, GrpcContentSource, KioskTokens};
pub use manifest::{Manifest, ManifestError, ManifestFile};

/// The most chunk hashes one DownloadChunks call may ask for (the contract's limit).
pub const MAX_HASHES_PER_CALL: usize = 4096;
/// The largest piece the contract sends (1 MiB).
pub const MAX_PIECE_BYTES: usize = 1024 * 1024;

/// Where manifests and chunk bytes come from. [`GrpcContentSource`] is the content service;
/// tests use fakes.
pub trait ContentSource: Send + Sync + 'static {
    /// The checked manifest of a READY package.
    fn manifest(
        &self,
        package_id: &str,
    ) -> impl Future<Output = Result<Manifest, SourceError>> + Send;

    /// Pieces of the chunks `hashes` (1 to [`MAX_HASHES_PER_CALL`]), as DownloadChunks sends
    /// them: chunks in the order asked, each once, each in pieces of at most
    /// [`MAX_PIECE_BYTES`] at increasing offsets, the first chunk starting at
    /// `first_chunk_offset`. A piece's hash is checked to be 32 bytes; its bytes are not
    /// checked here (the caller hashes the whole chunk).
    fn chunks(
        &self,
        package_id: &str,
        hashes: Vec<ChunkHash>,
        first_chunk_offset: u64,
    ) -> impl Future<Output = Result<BoxStream<'static, Result<Piece, SourceError>>, SourceError>> + Send;
}

/// One piece of one chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    /// The chunk it belongs to.
    pub hash: ChunkHash,
    /// Where `data` starts within the chunk.
    pub offset: u64,
    /// The bytes (at most [`MAX_PIECE_BYTES`]).
    pub data: Bytes,
    /// True on the chunk's last piece: the chunk is then `offset + data.len()` bytes long.
    pub last: bool,
}

/// Why a source could not answer. [`SourceError::Unavailable`] is the only kind worth
/// retrying as is.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The service could not be reached or answered in time (transport errors, UNAVAILABLE,
    /// DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, a stream that broke or stalled). Worth a retry.
    #[error("content service unavailable: {0}")]
    Unavailable(String),
    /// The service refused (NOT_FOUND, PERMISSION_DENIED, FAILED_PRECONDITION, ...): asking
    /// again will not help.
    #[error("content service refused ({code:?}): {message}")]
    Refused {
        /// The gRPC code.
        code: tonic::Code,
        /// The service's message.
        message: String,
    },
    /// The service's answer breaks the contract (a bad manifest, a hash not 32 bytes, pieces
    /// out of order).
    #[error("content service answered out of contract: {0}")]
    Malformed(String),
    /// The service found stored bytes corrupt (DATA_LOSS), naming the chunk when it could.
    #[error("content service lost data{}: {message}", hash.map(|h| format!(" of chunk {h}")).unwrap_or_default())]
    DataLoss {
        /// The chunk, when the message names one.
        hash: Option<ChunkHash>,
        /// The service's message.
        message: String,
    },
}
