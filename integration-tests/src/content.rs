//! Content for whole-system tests: packages generated on disk, uploaded through ContentService
//! (also with a break in the middle), their manifests and chunks read back as a kiosk would.

use std::path::{Path, PathBuf};

use std::time::Duration;

use sneakernet::content::{self as upload, LocalFile, Upload};
use sneakernet_content::domain::ContentHash;
use sneakernet_proto::content::v1 as pb;
use sneakernet_proto::content::v1::content_service_client::ContentServiceClient;
use sneakernet_runtime::config::Config;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use crate::{authed, eventually};

/// One MiB.
pub const MIB: u64 = 1 << 20;

/// Writes files of these sizes under `dir` (bytes differ per seed and path:
/// [`sneakernet::demo_content::generated_bytes`]) and returns the package to upload.
pub fn generate(dir: &Path, seed: &str, title: &str, files: &[(&str, u64)]) -> Upload {
    let mut local = Vec::new();
    for (path, size) in files {
        let bytes = sneakernet::demo_content::generated_bytes(seed, path, *size);
        let file = dir.join(path);
        std::fs::create_dir_all(file.parent().expect("a file has a parent")).expect("mkdir");
        std::fs::write(&file, &bytes).expect("write test file");
        local.push(LocalFile {
            path: (*path).to_owned(),
            size: *size,
            blake3: *blake3::hash(&bytes).as_bytes(),
        });
    }
    local.sort_by(|a, b| a.path.cmp(&b.path));
    Upload {
        title: title.to_owned(),
        description: format!("generated for a test ({seed})"),
        dir: dir.to_owned(),
        files: local,
    }
}

/// Declares `package` as `sneakernet content upload` would (same request, same key);
/// returns its id.
pub async fn declare(channel: &Channel, operator: &str, package: &Upload) -> String {
    ContentServiceClient::new(channel.clone())
        .create_package(authed(upload::declaration(package), operator))
        .await
        .expect("create package")
        .into_inner()
        .package
        .expect("package")
        .package_id
}

/// Declares `package`, streams the first `send` bytes of its first file, waits until the
/// server holds at least `stored_before_break` bytes durably, and then cuts the stream (the
/// call is aborted with its sender still open, as a dropped connection would); returns the
/// package id and how many bytes the server held at the break.
pub async fn upload_with_a_break(
    channel: &Channel,
    operator: &str,
    package: &Upload,
    send: u64,
    stored_before_break: u64,
) -> (String, u64) {
    let package_id = declare(channel, operator, package).await;
    let content = ContentServiceClient::new(channel.clone());
    let file = &package.files[0];
    let bytes = std::fs::read(package.dir.join(&file.path)).expect("read test file");
    let sent = usize::try_from(send).expect("small");
    let (pieces, stream) = tokio::sync::mpsc::channel(4);
    pieces
        .send(pb::UploadFileRequest {
            part: Some(pb::upload_file_request::Part::Header(pb::UploadHeader {
                package_id: package_id.clone(),
                path: file.path.clone(),
                size_bytes: file.size,
                blake3: file.blake3.to_vec(),
                offset: 0,
            })),
        })
        .await
        .expect("header queued");
    let call = {
        let mut content = content.clone();
        let request = authed(
            tokio_stream::wrappers::ReceiverStream::new(stream),
            operator,
        );
        tokio::spawn(async move { content.upload_file(request).await })
    };
    for piece in bytes[..sent].chunks(usize::try_from(MIB).expect("small")) {
        pieces
            .send(pb::UploadFileRequest {
                part: Some(pb::upload_file_request::Part::Data(piece.to_vec())),
            })
            .await
            .expect("piece queued");
    }
    let held = || {
        let content = content.clone();
        let id = package_id.clone();
        async move { stored(content, operator, &id).await }
    };
    eventually(
        Duration::from_secs(30),
        "part of the upload to be stored",
        || async { held().await >= stored_before_break },
    )
    .await;
    let at_break = held().await;
    call.abort();
    drop(pieces);
    (package_id, at_break)
}

async fn stored(mut content: ContentServiceClient<Channel>, operator: &str, id: &str) -> u64 {
    content
        .get_upload_status(authed(
            pb::GetUploadStatusRequest {
                package_id: id.to_owned(),
            },
            operator,
        ))
        .await
        .expect("upload status")
        .into_inner()
        .files
        .iter()
        .map(|f| f.bytes_received)
        .sum()
}

/// The manifest of a READY package, as `token` reads it.
pub async fn manifest(channel: &Channel, token: &str, package_id: &str) -> pb::Manifest {
    ContentServiceClient::new(channel.clone())
        .get_manifest(authed(
            pb::GetManifestRequest {
                package_id: package_id.to_owned(),
            },
            token,
        ))
        .await
        .expect("manifest")
        .into_inner()
        .manifest
        .expect("a manifest")
}

/// Every byte of `file` rebuilt from DownloadChunks, as `token` downloads it.
pub async fn download_file(
    channel: &Channel,
    token: &str,
    package_id: &str,
    file: &pb::ManifestFile,
) -> Result<Vec<u8>, tonic::Status> {
    if file.chunk_hashes.is_empty() {
        // An empty file has no chunks, and DownloadChunks asks for at least one.
        return Ok(Vec::new());
    }
    let mut stream = ContentServiceClient::new(channel.clone())
        .download_chunks(authed(
            pb::DownloadChunksRequest {
                package_id: package_id.to_owned(),
                chunk_hashes: file.chunk_hashes.clone(),
                first_chunk_offset: 0,
            },
            token,
        ))
        .await?
        .into_inner();
    let mut chunks: std::collections::HashMap<Vec<u8>, Vec<u8>> = Default::default();
    while let Some(piece) = stream.next().await {
        let piece = piece?;
        chunks.entry(piece.hash).or_default().extend(piece.data);
    }
    let mut bytes = Vec::new();
    for hash in &file.chunk_hashes {
        bytes.extend(chunks.get(hash).cloned().unwrap_or_default());
    }
    Ok(bytes)
}

/// The local store's file for chunk `hash` of the node configured by `config` (the content
/// service's own layout, so a test corrupts exactly the object the service reads).
pub fn local_chunk_path(config: &Config, hash: &[u8]) -> PathBuf {
    let hash = ContentHash::from_wire(hash).expect("a 32-byte chunk hash");
    config
        .content
        .local_dir(&config.data_dir)
        .join(sneakernet_content::objects::chunk_key(hash))
}
