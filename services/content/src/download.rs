//! DownloadChunks: the chunks a kiosk asks for, each verified whole against its hash before its
//! first byte is sent, streamed in pieces through a small bounded channel.
//!
//! Memory per stream is bounded whatever the package size: one task reads one chunk at a
//! time (at most [`crate::domain::CHUNK_SIZE`]), and the channel to the client holds at most
//! [`PIECES_IN_FLIGHT`] pieces of at most 1 MiB. When the client reads slowly the channel is
//! full and the task waits at `send` before reading anything more from the store; when the
//! client goes away the send fails and the task ends.

use std::sync::Arc;

use sneakernet_proto::content::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::Context;
use crate::domain::request::{ChunkRequest, MAX_PIECE};
use crate::domain::{ContentHash, PackageState};
use crate::error::ContentError;

/// Pieces queued for the client at most, per stream.
pub const PIECES_IN_FLIGHT: usize = 2;

/// The stream DownloadChunks answers with.
pub type ChunkStream = ReceiverStream<Result<pb::DownloadChunksResponse, Status>>;

/// Checks everything about the request (package READY, every hash a chunk of it, the resume
/// offset inside the first chunk) before anything is sent, then starts the stream.
pub async fn download(
    ctx: Arc<Context>,
    request: ChunkRequest,
) -> Result<ChunkStream, ContentError> {
    let id = request.package_id.as_str();
    let Some(package) = ctx.store.package(id).await? else {
        return Err(ContentError::PackageNotFound(request.package_id));
    };
    if crate::api::state_of(&package)? != PackageState::Ready {
        return Err(ContentError::NotReady(request.package_id));
    }
    let sizes = ctx.store.chunk_sizes(id, &request.hashes).await?;
    if let Some(missing) = request.hashes.iter().find(|hash| !sizes.contains_key(hash)) {
        return Err(ContentError::ChunkNotInPackage {
            package: request.package_id.clone(),
            hash: *missing,
        });
    }
    let first = request.hashes.first().copied();
    if let Some(first) = first
        && sizes
            .get(&first)
            .is_some_and(|size| request.first_chunk_offset >= *size)
    {
        return Err(sneakernet_runtime::FieldViolation::new(
            "first_chunk_offset",
            format!(
                "must be below the first chunk's size ({} bytes)",
                sizes.get(&first).copied().unwrap_or(0)
            ),
        )
        .into());
    }
    // Full: the task waits at `send` (see the module comment).
    let (tx, rx) = mpsc::channel(PIECES_IN_FLIGHT);
    let shutdown = ctx.shutdown.token();
    let task_ctx = ctx.clone();
    ctx.shutdown.spawn(async move {
        tokio::select! {
            () = send_chunks(&task_ctx, request, &tx) => {}
            () = shutdown.cancelled() => {
                let _ = tx.send(Err(ContentError::ShuttingDown("ask again for the chunks not yet complete").into())).await;
            }
        }
    });
    Ok(ReceiverStream::new(rx))
}

async fn send_chunks(
    ctx: &Context,
    request: ChunkRequest,
    tx: &mpsc::Sender<Result<pb::DownloadChunksResponse, Status>>,
) {
    let package = request.package_id.clone();
    let mut offset = request.first_chunk_offset;
    for hash in request.hashes {
        let bytes = match verified_chunk(ctx, hash).await {
            Ok(bytes) => bytes,
            Err(error) => {
                if matches!(error, ContentError::CorruptChunk { .. }) {
                    tracing::error!(package_id = %package, chunk = %hash, "stored chunk is corrupt or missing; refusing to send it");
                }
                let _ = tx.send(Err(error.into())).await;
                return;
            }
        };
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        offset = 0;
        let mut at = start;
        while at < bytes.len() {
            let end = (at + MAX_PIECE).min(bytes.len());
            let piece = pb::DownloadChunksResponse {
                hash: hash.to_wire(),
                offset: at as u64,
                data: bytes[at..end].to_vec(),
                last: end == bytes.len(),
            };
            if tx.send(Ok(piece)).await.is_err() {
                // The client went away.
                return;
            }
            at = end;
        }
    }
}

/// Reads a chunk and checks it against its hash (on the blocking pool). A chunk whose bytes
/// do not match, or that is gone, is [`ContentError::CorruptChunk`].
async fn verified_chunk(ctx: &Context, hash: ContentHash) -> Result<bytes::Bytes, ContentError> {
    let bytes = ctx
        .objects
        .chunk(hash)
        .await?
        .ok_or(ContentError::CorruptChunk { hash })?;
    let checked = bytes.clone();
    let actual = tokio::task::spawn_blocking(move || ContentHash::of(&checked))
        .await
        .map_err(|e| ContentError::Task(e.to_string()))?;
    if actual == hash {
        Ok(bytes)
    } else {
        Err(ContentError::CorruptChunk { hash })
    }
}
