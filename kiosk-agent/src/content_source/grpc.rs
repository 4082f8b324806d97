//! [`ContentSource`] over the content service's gRPC API, authorised with the kiosk's own
//! access token.
//!
//! Guarantees:
//! - Every call carries `authorization: Bearer <token>` from an [`AccessTokens`]; a call
//!   refused UNAUTHENTICATED tells the provider to forget that token and is made once more
//!   with a fresh one (a token can expire between being handed out and being checked).
//! - Status codes map to [`SourceError`] in one place ([`source_error`]): UNAVAILABLE,
//!   DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED and transport failures are `Unavailable`; DATA_LOSS
//!   is `DataLoss` with the chunk its message names; the rest are `Refused`.
//! - Memory per call is bounded: a DownloadChunks message may be at most one piece
//!   ([`super::MAX_PIECE_BYTES`]) plus framing, a manifest at most [`MAX_MANIFEST_BYTES`].
//! - Tokens are never logged.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use futures::stream::BoxStream;
use sneakernet_proto::content::v1 as pb;
use sneakernet_proto::content::v1::content_service_client::ContentServiceClient;
use tokio::time::Instant;
use tonic::transport::Channel;

use super::manifest::hash_from;
use super::{ChunkHash, ContentSource, MAX_PIECE_BYTES, Manifest, Piece, SourceError};
use crate::config::AgentConfig;

/// The largest GetManifest answer accepted (100 000 files with long paths and many chunks).
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024 * 1024;
/// How long a GetManifest may take.
pub const MANIFEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A token is renewed this long before it expires (or at four fifths of a shorter life).
pub const TOKEN_MARGIN: Duration = Duration::from_secs(60);
/// The lifetime assumed for a token whose expiry the login did not say.
pub const ASSUMED_TOKEN_LIFETIME: Duration = Duration::from_secs(300);

/// Access tokens for calls to the content service.
pub trait AccessTokens: Send + Sync + 'static {
    /// A token valid for at least a short while.
    fn token(&self) -> impl Future<Output = Result<String, SourceError>> + Send;

    /// The service refused `token` as UNAUTHENTICATED: it must not be handed out again.
    fn refused(&self, token: &str) {
        let _ = token;
    }
}

/// The kiosk's own tokens: logs in with its credential (KioskLogin, as the link does, config
/// keys `kiosk_id`, `credential_file`, `auth_url`) and reuses a token until [`TOKEN_MARGIN`]
/// before its expiry. Two callers that both find no valid token may both log in; the later
/// token is kept. No lock is held while logging in.
pub struct KioskTokens {
    config: Arc<AgentConfig>,
    cached: Mutex<Option<CachedToken>>,
}

impl std::fmt::Debug for KioskTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KioskTokens")
            .field("kiosk_id", &self.config.kiosk_id)
            .finish_non_exhaustive()
    }
}

struct CachedToken {
    token: String,
    renew_at: Instant,
}

impl KioskTokens {
    /// Tokens for the kiosk `config` describes; nothing is fetched until asked.
    pub fn new(config: Arc<AgentConfig>) -> Self {
        KioskTokens {
            config,
            cached: Mutex::new(None),
        }
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, Option<CachedToken>> {
        self.cached.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl AccessTokens for KioskTokens {
    async fn token(&self) -> Result<String, SourceError> {
        if let Some(cached) = self.cached().as_ref()
            && Instant::now() < cached.renew_at
        {
            return Ok(cached.token.clone());
        }
        let (token, expires_at) = crate::link::kiosk_login(&self.config)
            .await
            .map_err(|status| source_error(&status))?;
        let lifetime = expires_at.and_then(|at| (at - Utc::now()).to_std().ok());
        *self.cached() = Some(CachedToken {
            token: token.clone(),
            renew_at: Instant::now() + use_for(lifetime),
        });
        Ok(token)
    }

    fn refused(&self, token: &str) {
        let mut cached = self.cached();
        if cached.as_ref().is_some_and(|c| c.token == token) {
            *cached = None;
        }
    }
}

/// How long a token that lives `lifetime` (unknown: [`ASSUMED_TOKEN_LIFETIME`]) is handed out:
/// until [`TOKEN_MARGIN`] before expiry, or four fifths of a short life; at least 2 s.
fn use_for(lifetime: Option<Duration>) -> Duration {
    let lifetime = lifetime.unwrap_or(ASSUMED_TOKEN_LIFETIME);
    let margin = TOKEN_MARGIN.min(lifetime / 5);
    lifetime.saturating_sub(margin).max(Duration::from_secs(2))
}

/// The content service over gRPC (see the module doc). Cheap to clone.
pub struct GrpcContentSource<T> {
    client: ContentServiceClient<Channel>,
    tokens: Arc<T>,
}

impl<T> Clone for GrpcContentSource<T> {
    fn clone(&self) -> Self {
        GrpcContentSource {
            client: self.client.clone(),
            tokens: Arc::clone(&self.tokens),
        }
    }
}

impl<T> std::fmt::Debug for GrpcContentSource<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcContentSource").finish_non_exhaustive()
    }
}

impl<T: AccessTokens> GrpcContentSource<T> {
    /// A source over `channel` to the content service (for example
    /// `link::endpoint(config.content_url())?.connect_lazy()`: `content.url`, by default the
    /// gateway's address, since a standalone node serves content on the gateway's listener).
    pub fn new(channel: Channel, tokens: T) -> Self {
        GrpcContentSource {
            client: ContentServiceClient::new(channel),
            tokens: Arc::new(tokens),
        }
    }

    /// Sends `message` with a token through `send`; once more with a fresh token when the
    /// first is refused as UNAUTHENTICATED.
    async fn call<M, R, F, Fut>(&self, message: M, send: F) -> Result<R, SourceError>
    where
        M: Clone,
        F: Fn(ContentServiceClient<Channel>, tonic::Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let mut fresh = false;
        loop {
            let token = self.tokens.token().await?;
            let mut request = tonic::Request::new(message.clone());
            let value = format!("Bearer {token}").parse().map_err(|_| {
                SourceError::Malformed("the access token is not a header value".into())
            })?;
            request.metadata_mut().insert("authorization", value);
            match send(self.client.clone(), request).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) if status.code() == tonic::Code::Unauthenticated && !fresh => {
                    tracing::info!("content service refused the access token; logging in again");
                    self.tokens.refused(&token);
                    fresh = true;
                }
                Err(status) => return Err(source_error(&status)),
            }
        }
    }
}

impl<T: AccessTokens> ContentSource for GrpcContentSource<T> {
    async fn manifest(&self, package_id: &str) -> Result<Manifest, SourceError> {
        let message = pb::GetManifestRequest {
            package_id: package_id.to_owned(),
        };
        let response = self
            .call(message, |client, mut request| async move {
                request.set_timeout(MANIFEST_TIMEOUT);
                client
                    .max_decoding_message_size(MAX_MANIFEST_BYTES)
                    .get_manifest(request)
                    .await
            })
            .await?;
        let manifest = Manifest::try_from(response.manifest.ok_or_else(|| {
            SourceError::Malformed("GetManifest answered without a manifest".into())
        })?)
        .map_err(|e| SourceError::Malformed(e.to_string()))?;
        if manifest.package_id != package_id {
            return Err(SourceError::Malformed(format!(
                "asked for package {package_id:?}, got the manifest of {:?}",
                manifest.package_id
            )));
        }
        Ok(manifest)
    }

    async fn chunks(
        &self,
        package_id: &str,
        hashes: Vec<ChunkHash>,
        first_chunk_offset: u64,
    ) -> Result<BoxStream<'static, Result<Piece, SourceError>>, SourceError> {
        let message = pb::DownloadChunksRequest {
            package_id: package_id.to_owned(),
            chunk_hashes: hashes.iter().map(|h| h.as_bytes().to_vec()).collect(),
            first_chunk_offset,
        };
        let stream = self
            .call(message, |client, request| async move {
                // One piece plus the message's framing.
                client
                    .max_decoding_message_size(MAX_PIECE_BYTES + 1024)
                    .download_chunks(request)
                    .await
            })
            .await?;
        Ok(stream
            .map(|item| match item {
                Ok(message) => piece(message),
                Err(status) => Err(source_error(&status)),
            })
            .boxed())
    }
}

/// A DownloadChunks message as a [`Piece`], if it keeps to the contract.
fn piece(message: pb::DownloadChunksResponse) -> Result<Piece, SourceError> {
    let hash = hash_from(&message.hash).ok_or_else(|| {
        SourceError::Malformed(format!("a piece's hash is {} bytes", message.hash.len()))
    })?;
    if message.data.len() > MAX_PIECE_BYTES {
        return Err(SourceError::Malformed(format!(
            "a piece of chunk {hash} holds {} bytes",
            message.data.len()
        )));
    }
    Ok(Piece {
        hash,
        offset: message.offset,
        data: message.data.into(),
        last: message.last,
    })
}

/// The one mapping of a gRPC status to a [`SourceError`] (see the module doc). A status with
/// a source error was made by the local transport (a reset stream, a dead connection), not
/// sent by the service, and counts as unavailable whatever its code.
pub fn source_error(status: &tonic::Status) -> SourceError {
    use tonic::Code;
    let message = status.message().to_owned();
    let from_transport = std::error::Error::source(status).is_some();
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted => {
            SourceError::Unavailable(format!("{:?}: {message}", status.code()))
        }
        Code::DataLoss => SourceError::DataLoss {
            hash: hash_in(&message),
            message,
        },
        code if from_transport => SourceError::Unavailable(format!("{code:?}: {message}")),
        code => SourceError::Refused { code, message },
    }
}

/// The first 64-hex-digit word in `message`, as a hash.
fn hash_in(message: &str) -> Option<ChunkHash> {
    message
        .split(|c: char| !c.is_ascii_hexdigit())
        .find(|word| word.len() == 64)
        .and_then(|word| blake3::Hash::from_hex(word).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_map_to_what_a_retry_can_fix() {
        let hash = blake3::hash(b"chunk");
        let cases = [
            (tonic::Status::unavailable("down"), "Unavailable"),
            (tonic::Status::deadline_exceeded("slow"), "Unavailable"),
            (tonic::Status::resource_exhausted("rate"), "Unavailable"),
            (tonic::Status::not_found("no package"), "Refused"),
            (tonic::Status::permission_denied("user"), "Refused"),
            (
                tonic::Status::failed_precondition("PACKAGE_NOT_READY"),
                "Refused",
            ),
            (tonic::Status::internal("server bug"), "Refused"),
        ];
        for (status, kind) in cases {
            let error = format!("{:?}", source_error(&status));
            assert!(error.starts_with(kind), "{status:?} -> {error}");
        }
        let reset = tonic::Status::from_error(Box::new(std::io::Error::other("connection reset")));
        assert!(
            matches!(source_error(&reset), SourceError::Unavailable(_)),
            "{reset:?}"
        );

        let loss = tonic::Status::data_loss(format!("chunk {hash} is corrupt in the store"));
        match source_error(&loss) {
            SourceError::DataLoss {
                hash: Some(named), ..
            } => assert_eq!(named, hash),
            other => panic!("{other:?}"),
        }
        let vague = tonic::Status::data_loss("something is corrupt");
        assert!(matches!(
            source_error(&vague),
            SourceError::DataLoss { hash: None, .. }
        ));
    }

    #[test]
    fn a_token_is_used_until_a_minute_before_expiry_or_four_fifths_of_a_short_life() {
        assert_eq!(
            use_for(Some(Duration::from_secs(3600))),
            Duration::from_secs(3540)
        );
        assert_eq!(
            use_for(Some(Duration::from_secs(100))),
            Duration::from_secs(80)
        );
        assert_eq!(use_for(None), Duration::from_secs(240));
        assert_eq!(use_for(Some(Duration::ZERO)), Duration::from_secs(2));
    }

    #[test]
    fn a_piece_with_a_short_hash_or_too_much_data_breaks_the_contract() {
        let good = pb::DownloadChunksResponse {
            hash: vec![7; 32],
            offset: 5,
            data: vec![1, 2, 3],
            last: true,
        };
        let piece = piece(good.clone()).unwrap();
        assert_eq!((piece.offset, piece.data.len(), piece.last), (5, 3, true));
        let short = pb::DownloadChunksResponse {
            hash: vec![7; 31],
            ..good.clone()
        };
        assert!(matches!(
            super::piece(short),
            Err(SourceError::Malformed(_))
        ));
        let big = pb::DownloadChunksResponse {
            data: vec![0; MAX_PIECE_BYTES + 1],
            ..good
        };
        assert!(matches!(super::piece(big), Err(SourceError::Malformed(_))));
    }
}
