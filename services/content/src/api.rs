//! The content service's gRPC surface: check the caller, decode the request into domain types,
//! call the store or a flow ([`crate::upload`], [`crate::download`]), map errors once.
//!
//! Who may call what (the proto's service comment says the same): operators everything;
//! kiosks GetManifest, ListPackages, GetPackage and DownloadChunks, READY packages only;
//! users and services ListPackages and GetPackage only, READY packages only (the app's catalog
//! of what can be reserved; orders checking a reservation). A call
//! without a token is UNAUTHENTICATED, a caller without the role PERMISSION_DENIED.

use std::sync::Arc;

use sneakernet_proto::content::v1 as pb;
use sneakernet_proto::content::v1::content_service_server::ContentService;
use sneakernet_proto::ids::PackageId;
use sneakernet_runtime::caller::CallerExt;
use sneakernet_runtime::{Caller, FieldViolation, Role};
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use crate::Context;
use crate::domain::package::package_id;
use crate::domain::request::ChunkRequest;
use crate::domain::{CHUNK_SIZE, ContentHash, NewPackage, PackageState, page_token};
use crate::entity::package;
use crate::error::ContentError;
use crate::store::Created;
use crate::{download, upload};

/// Who declares and uploads packages.
const OPERATORS: &[Role] = &[Role::Operator];
/// Who reads manifests and downloads chunks.
const READERS: &[Role] = &[Role::Operator, Role::Kiosk];
/// Who lists and reads packages (all but operators: READY ones only).
const CATALOG: &[Role] = &[Role::Operator, Role::Kiosk, Role::User, Role::Service];

/// ListPackages' page size when the request says 0.
const DEFAULT_PAGE: u32 = 50;
/// ListPackages' largest page.
const MAX_PAGE: u32 = 500;

/// The ContentService implementation. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ContentApi {
    pub(crate) ctx: Arc<Context>,
}

/// A stored package's state, or a corrupt-row error.
pub(crate) fn state_of(row: &package::Model) -> Result<PackageState, ContentError> {
    PackageState::parse(&row.state).ok_or_else(|| ContentError::Corrupt {
        what: "package state",
        detail: row.state.clone(),
    })
}

fn package_proto(row: &package::Model) -> Result<pb::Package, ContentError> {
    let corrupt = |what: &'static str, value: i64| ContentError::Corrupt {
        what,
        detail: value.to_string(),
    };
    Ok(pb::Package {
        package_id: row.package_id.clone(),
        title: row.title.clone(),
        description: row.description.clone(),
        state: state_of(row)?.to_wire().into(),
        total_size_bytes: u64::try_from(row.total_size)
            .map_err(|_| corrupt("total size", row.total_size))?,
        file_count: u32::try_from(row.file_count)
            .map_err(|_| corrupt("file count", i64::from(row.file_count)))?,
        chunk_size_bytes: u32::try_from(row.chunk_size)
            .map_err(|_| corrupt("chunk size", row.chunk_size))?,
        created_at: Some(sneakernet_runtime::wire::timestamp(row.created_at)),
        ready_at: row.ready_at.map(sneakernet_runtime::wire::timestamp),
    })
}

fn hash_of(hex: &str) -> Result<ContentHash, ContentError> {
    ContentHash::from_hex(hex).ok_or_else(|| ContentError::Corrupt {
        what: "hash",
        detail: hex.to_owned(),
    })
}

impl ContentApi {
    /// The package a request names, with its checked id; NOT_FOUND if there is none.
    async fn package(&self, raw_id: &str) -> Result<(PackageId, package::Model), ContentError> {
        let id = package_id("package_id", raw_id)?;
        match self.ctx.store.package(id.as_str()).await? {
            Some(row) => Ok((id, row)),
            None => Err(ContentError::PackageNotFound(id)),
        }
    }
}

#[tonic::async_trait]
impl ContentService for ContentApi {
    async fn create_package(
        &self,
        request: Request<pb::CreatePackageRequest>,
    ) -> Result<Response<pb::CreatePackageResponse>, Status> {
        let caller = request.caller()?.require(OPERATORS)?.audit_name();
        let body = request.into_inner();
        let new = tokio::task::spawn_blocking(move || NewPackage::from_request(body))
            .await
            .map_err(|e| ContentError::Task(e.to_string()))?
            .map_err(ContentError::Invalid)?;
        let now = self.ctx.clock.now();
        let row = match self
            .ctx
            .store
            .create_package(&new, &caller, CHUNK_SIZE, now)
            .await?
        {
            Created::New(row) => {
                tracing::info!(package_id = %row.package_id, files = row.file_count, total_size = row.total_size, state = %row.state, "package declared");
                row
            }
            Created::Existing(row) => row,
        };
        Ok(Response::new(pb::CreatePackageResponse {
            package: Some(package_proto(&row)?),
        }))
    }

    async fn upload_file(
        &self,
        request: Request<Streaming<pb::UploadFileRequest>>,
    ) -> Result<Response<pb::UploadFileResponse>, Status> {
        request.caller()?.require(OPERATORS)?;
        let ctx = self.ctx.clone();
        let stream = request.into_inner();
        // Its own task: if the client goes away and this handler is dropped, the upload still
        // sees the broken stream and saves the bytes it holds.
        let task = self.ctx.shutdown.spawn(upload::upload(ctx, stream));
        let answer = task
            .await
            .map_err(|e| ContentError::Task(e.to_string()))??;
        Ok(Response::new(answer))
    }

    async fn get_upload_status(
        &self,
        request: Request<pb::GetUploadStatusRequest>,
    ) -> Result<Response<pb::GetUploadStatusResponse>, Status> {
        request.caller()?.require(OPERATORS)?;
        let (_, row) = self.package(&request.get_ref().package_id).await?;
        let files = self.ctx.store.files(&row.package_id).await?;
        let files = files
            .into_iter()
            .map(|file| pb::FileUploadStatus {
                path: file.path,
                size_bytes: u64::try_from(file.size).unwrap_or(0),
                bytes_received: u64::try_from(file.bytes_stored).unwrap_or(0),
                complete: file.complete,
            })
            .collect();
        Ok(Response::new(pb::GetUploadStatusResponse {
            package: Some(package_proto(&row)?),
            files,
        }))
    }

    async fn get_manifest(
        &self,
        request: Request<pb::GetManifestRequest>,
    ) -> Result<Response<pb::GetManifestResponse>, Status> {
        request.caller()?.require(READERS)?;
        let (id, row) = self.package(&request.get_ref().package_id).await?;
        if state_of(&row)? != PackageState::Ready {
            return Err(ContentError::NotReady(id).into());
        }
        let files = self.ctx.store.files(&row.package_id).await?;
        let chunks = self.ctx.store.file_chunks(&row.package_id, None).await?;
        let mut manifest_files: Vec<pb::ManifestFile> = Vec::with_capacity(files.len());
        for file in &files {
            manifest_files.push(pb::ManifestFile {
                path: file.path.clone(),
                size_bytes: u64::try_from(file.size).unwrap_or(0),
                blake3: hash_of(&file.blake3)?.to_wire(),
                chunk_hashes: Vec::new(),
            });
        }
        for chunk in chunks {
            let file = usize::try_from(chunk.file_index)
                .ok()
                .and_then(|index| manifest_files.get_mut(index))
                .ok_or_else(|| ContentError::Corrupt {
                    what: "chunk's file index",
                    detail: chunk.file_index.to_string(),
                })?;
            file.chunk_hashes.push(hash_of(&chunk.hash)?.to_wire());
        }
        let package = package_proto(&row)?;
        Ok(Response::new(pb::GetManifestResponse {
            manifest: Some(pb::Manifest {
                chunk_size_bytes: package.chunk_size_bytes,
                package: Some(package),
                files: manifest_files,
            }),
        }))
    }

    async fn list_packages(
        &self,
        request: Request<pb::ListPackagesRequest>,
    ) -> Result<Response<pb::ListPackagesResponse>, Status> {
        let caller = request.caller()?.require(CATALOG)?.clone();
        let body = request.into_inner();
        let size = match body.page_size {
            0 => DEFAULT_PAGE,
            size if size <= MAX_PAGE => size,
            _ => {
                return Err(ContentError::from(FieldViolation::new(
                    "page_size",
                    format!("must be at most {MAX_PAGE}"),
                ))
                .into());
            }
        };
        let asked = match pb::PackageState::try_from(body.state) {
            Ok(pb::PackageState::Unspecified) => None,
            Ok(pb::PackageState::Uploading) => Some(PackageState::Uploading),
            Ok(pb::PackageState::Ready) => Some(PackageState::Ready),
            Err(_) => {
                return Err(ContentError::from(FieldViolation::new(
                    "state",
                    "is not a PackageState",
                ))
                .into());
            }
        };
        // Operators see every package; kiosks and users READY ones only, whatever they ask.
        let state = match (&caller, asked) {
            (Caller::Operator(_), asked) => asked,
            (_, None | Some(PackageState::Ready)) => Some(PackageState::Ready),
            (_, Some(PackageState::Uploading)) => {
                return Ok(Response::new(pb::ListPackagesResponse::default()));
            }
        };
        let filter = state.map_or("ANY", PackageState::as_str);
        let before = if body.page_token.is_empty() {
            None
        } else {
            Some(page_token::decode(&body.page_token, filter).ok_or_else(|| {
                ContentError::from(FieldViolation::new(
                    "page_token",
                    "was not issued by ListPackages with this filter",
                ))
            })?)
        };
        let rows = self
            .ctx
            .store
            .list_packages(state, before, u64::from(size) + 1)
            .await?;
        let more = rows.len() > size as usize;
        let page = &rows[..rows.len().min(size as usize)];
        let next_page_token = match (more, page.last()) {
            (true, Some(last)) => page_token::encode(last.seq, filter),
            _ => String::new(),
        };
        let packages = page
            .iter()
            .map(package_proto)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(pb::ListPackagesResponse {
            packages,
            next_page_token,
        }))
    }

    async fn get_package(
        &self,
        request: Request<pb::GetPackageRequest>,
    ) -> Result<Response<pb::GetPackageResponse>, Status> {
        let caller = request.caller()?.require(CATALOG)?.clone();
        let (id, row) = self.package(&request.get_ref().package_id).await?;
        // Only operators learn that a package is still uploading; to everyone else it does
        // not exist yet.
        if !matches!(caller, Caller::Operator(_)) && state_of(&row)? != PackageState::Ready {
            return Err(ContentError::PackageNotFound(id).into());
        }
        Ok(Response::new(pb::GetPackageResponse {
            package: Some(package_proto(&row)?),
        }))
    }

    async fn download_chunks(
        &self,
        request: Request<pb::DownloadChunksRequest>,
    ) -> Result<Response<BoxStream<pb::DownloadChunksResponse>>, Status> {
        request.caller()?.require(READERS)?;
        let chunks =
            ChunkRequest::from_wire(request.into_inner()).map_err(ContentError::Invalid)?;
        let stream = download::download(self.ctx.clone(), chunks).await?;
        Ok(Response::new(Box::pin(stream)))
    }
}
