//! `sneakernet content upload|list`: a directory becomes a content package, uploaded through
//! ContentService as an operator, resuming where the server stopped after any break.
//!
//! Guarantees of [`upload_dir`]:
//! - The package is declared from what the directory holds (every regular file below it,
//!   sorted by path, with size and BLAKE3 hash), under an idempotency key derived from that
//!   declaration: running the same upload again, after a crash or Ctrl-C, finds the same
//!   package and sends only what the server lacks (GetUploadStatus says how much it has).
//! - A broken stream is resumed from the server's count after a backoff, a bounded number of
//!   times in a row; a refusal that retrying cannot cure (a file changed under the upload, a
//!   bad path) ends the upload with the server's reason.
//! - Memory stays bounded whatever the file sizes: a reader task sends 1 MiB pieces into a
//!   channel of [`PIECES_IN_FLIGHT`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use sneakernet_proto::content::v1 as pb;
use sneakernet_proto::content::v1::content_service_client::ContentServiceClient;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tonic::transport::Channel;

use crate::client::{self, authed};
use crate::operator::OperatorArgs;

/// Bytes per upload message (the contract's limit).
pub const PIECE_BYTES: usize = 1 << 20;
/// Pieces read ahead of the stream: when the channel is full the reader waits for the network.
pub const PIECES_IN_FLIGHT: usize = 4;
/// Breaks in a row an upload survives before it gives up (progress resets the count).
pub const MAX_BREAKS_IN_A_ROW: u32 = 8;

/// Content subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ContentAction {
    /// Upload every file below DIR as one package (paths relative to DIR); prints the
    /// package's id. Run it again after a break: it resumes where the server stopped.
    Upload {
        /// The package's title, shown to users.
        #[arg(long)]
        title: String,
        /// A longer description shown to users.
        #[arg(long, default_value = "")]
        description: String,
        /// The directory to upload.
        dir: PathBuf,
        /// Where and as whom.
        #[command(flatten)]
        operator: OperatorArgs,
    },
    /// List packages, newest first.
    List {
        /// Only READY or only UPLOADING packages.
        #[arg(long, value_parser = ["ready", "uploading"])]
        state: Option<String>,
        /// Where and as whom.
        #[command(flatten)]
        operator: OperatorArgs,
    },
}

/// Runs a content subcommand.
pub async fn run(
    action: ContentAction,
    config: &sneakernet_runtime::config::Config,
    client: &crate::cmd::connect::ClientFlags,
) -> anyhow::Result<()> {
    match action {
        ContentAction::Upload {
            title,
            description,
            dir,
            operator,
        } => {
            let session = operator.login(config, client).await?;
            let files = scan_dir(&dir).await?;
            let bar = progress_bar(files.iter().map(|f| f.size).sum());
            let package = upload_dir(
                &session.channel,
                &session.token,
                &Upload {
                    title,
                    description,
                    dir,
                    files,
                },
                |stored| bar.set_position(stored),
            )
            .await;
            bar.finish_and_clear();
            let package = package?;
            println!("{}", package.package_id);
            Ok(())
        }
        ContentAction::List { state, operator } => {
            let session = operator.login(config, client).await?;
            let state = match state.as_deref() {
                Some("ready") => pb::PackageState::Ready,
                Some("uploading") => pb::PackageState::Uploading,
                _ => pb::PackageState::Unspecified,
            };
            for package in list(&session.channel, &session.token, state).await? {
                println!("{}", describe_package(&package));
            }
            Ok(())
        }
    }
}

/// One file of a directory being uploaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalFile {
    /// Path below the directory, "/"-separated.
    pub path: String,
    /// Size in bytes when it was hashed.
    pub size: u64,
    /// Its BLAKE3 hash.
    pub blake3: [u8; 32],
}

/// A directory to upload as a package.
#[derive(Clone, Debug)]
pub struct Upload {
    /// Title shown to users.
    pub title: String,
    /// Description shown to users.
    pub description: String,
    /// The directory.
    pub dir: PathBuf,
    /// Its files, from [`scan_dir`].
    pub files: Vec<LocalFile>,
}

/// Every regular file below `dir`, sorted by path, hashed. Symbolic links and other special
/// files are refused by name (a package holds plain files), as are names that are not UTF-8.
pub async fn scan_dir(dir: &Path) -> anyhow::Result<Vec<LocalFile>> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut files = Vec::new();
        walk(&dir, &dir, &mut files)?;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        if files.is_empty() {
            bail!("{} holds no files to upload", dir.display());
        }
        Ok(files)
    })
    .await
    .context("hashing the files stopped")?
}

fn walk(root: &Path, dir: &Path, files: &mut Vec<LocalFile>) -> anyhow::Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .with_context(|| format!("cannot stat {}", path.display()))?;
        if kind.is_dir() {
            walk(root, &path, files)?;
        } else if kind.is_file() {
            let relative = path
                .strip_prefix(root)
                .expect("walk only descends below its root");
            let parts: Option<Vec<&str>> = relative.iter().map(|part| part.to_str()).collect();
            let Some(parts) = parts else {
                bail!("{} has a name that is not UTF-8", path.display());
            };
            let (size, blake3) =
                hash_file(&path).with_context(|| format!("cannot read {}", path.display()))?;
            files.push(LocalFile {
                path: parts.join("/"),
                size,
                blake3,
            });
        } else {
            bail!(
                "{} is not a regular file or directory (links are not followed)",
                path.display()
            );
        }
    }
    Ok(())
}

/// Size and BLAKE3 hash of one file, read in pieces (each hashed on several threads).
fn hash_file(path: &Path) -> std::io::Result<(u64, [u8; 32])> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0; PIECE_BYTES];
    let mut size = 0u64;
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            return Ok((size, *hasher.finalize().as_bytes()));
        }
        hasher.update_rayon(&buffer[..read]);
        size += read as u64;
    }
}

/// The idempotency key of a package declared from `upload`: equal declarations, equal keys.
pub fn idempotency_key(upload: &Upload) -> String {
    let mut hasher = blake3::Hasher::new();
    for part in [upload.title.as_bytes(), upload.description.as_bytes()] {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    for file in &upload.files {
        hasher.update(&(file.path.len() as u64).to_le_bytes());
        hasher.update(file.path.as_bytes());
        hasher.update(&file.size.to_le_bytes());
        hasher.update(&file.blake3);
    }
    format!("upload-{}", &hasher.finalize().to_hex()[..48])
}

/// The CreatePackage request declaring `upload`, under [`idempotency_key`].
pub fn declaration(upload: &Upload) -> pb::CreatePackageRequest {
    pb::CreatePackageRequest {
        title: upload.title.clone(),
        description: upload.description.clone(),
        files: upload
            .files
            .iter()
            .map(|file| pb::FileDeclaration {
                path: file.path.clone(),
                size_bytes: file.size,
                blake3: file.blake3.to_vec(),
            })
            .collect(),
        idempotency_key: idempotency_key(upload),
    }
}

/// Declares the package and uploads every file the server lacks, resuming after breaks;
/// `on_stored(bytes)` hears how many bytes of the whole package the server has. Returns the
/// package once READY.
pub async fn upload_dir(
    channel: &Channel,
    operator: &str,
    upload: &Upload,
    mut on_stored: impl FnMut(u64),
) -> anyhow::Result<pb::Package> {
    let mut content = ContentServiceClient::new(channel.clone());
    let created = client::call(
        &format!("declare package {:?}", upload.title),
        content.create_package(authed(declaration(upload), operator)?),
    )
    .await?;
    let package = created
        .package
        .context("CreatePackage answered no package")?;
    let mut breaks = 0;
    loop {
        let status = upload_status(&mut content, operator, &package.package_id).await?;
        on_stored(status.files.iter().map(|f| f.bytes_received).sum());
        let state = status.package.as_ref().map(|p| p.state());
        if state == Some(pb::PackageState::Ready) {
            return status
                .package
                .context("GetUploadStatus answered no package");
        }
        let Some(next) = status.files.iter().find(|f| !f.complete) else {
            bail!(
                "package {} has every file complete but is not READY",
                package.package_id
            );
        };
        let Some(file) = upload.files.iter().find(|f| f.path == next.path) else {
            bail!(
                "package {} declares {:?}, which {} does not hold",
                package.package_id,
                next.path,
                upload.dir.display()
            );
        };
        let before = next.bytes_received;
        match send_file(
            &mut content,
            operator,
            &package.package_id,
            &upload.dir,
            file,
            before,
        )
        .await
        {
            Ok(answer) if !answer.complete && answer.bytes_stored <= before => bail!(
                "uploading {:?}: the server holds {} of its {} bytes and this stream added none; the file changed since it was hashed (start again)",
                file.path,
                answer.bytes_stored,
                file.size
            ),
            Ok(_) => breaks = 0,
            Err(status) if retryable(&status) => {
                breaks += 1;
                if breaks > MAX_BREAKS_IN_A_ROW {
                    bail!(
                        "uploading {:?} broke {breaks} times in a row; last: {}",
                        file.path,
                        client::describe(&status)
                    );
                }
                let wait = Duration::from_millis(200 << breaks.min(6));
                tracing::warn!(path = %file.path, error = %client::describe(&status), retry_in_ms = wait.as_millis() as u64, "upload broke; resuming");
                tokio::time::sleep(wait).await;
            }
            Err(status) => bail!("uploading {:?}: {}", file.path, client::describe(&status)),
        }
    }
}

/// Breaks a new stream may cure: the network, a restarting server, a concurrent writer that
/// is going away.
fn retryable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Aborted
            | tonic::Code::Internal
    )
}

async fn upload_status(
    content: &mut ContentServiceClient<Channel>,
    operator: &str,
    package_id: &str,
) -> anyhow::Result<pb::GetUploadStatusResponse> {
    client::call(
        "GetUploadStatus",
        content.get_upload_status(authed(
            pb::GetUploadStatusRequest {
                package_id: package_id.to_owned(),
            },
            operator,
        )?),
    )
    .await
}

/// One upload stream of `file` from `offset` to its end.
async fn send_file(
    content: &mut ContentServiceClient<Channel>,
    operator: &str,
    package_id: &str,
    dir: &Path,
    file: &LocalFile,
    offset: u64,
) -> Result<pb::UploadFileResponse, tonic::Status> {
    let path = dir.join(&file.path);
    let mut reader = tokio::fs::File::open(&path)
        .await
        .map_err(|e| tonic::Status::failed_precondition(format!("{}: {e}", path.display())))?;
    reader
        .seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(|e| tonic::Status::failed_precondition(format!("{}: {e}", path.display())))?;
    // Full channel: the reader waits until the stream took a piece.
    let (pieces, stream) = tokio::sync::mpsc::channel(PIECES_IN_FLIGHT);
    let header = pb::UploadFileRequest {
        part: Some(pb::upload_file_request::Part::Header(pb::UploadHeader {
            package_id: package_id.to_owned(),
            path: file.path.clone(),
            size_bytes: file.size,
            blake3: file.blake3.to_vec(),
            offset,
        })),
    };
    let remaining = file.size.saturating_sub(offset);
    let reading = tokio::spawn(async move {
        if pieces.send(header).await.is_err() {
            return;
        }
        let mut left = remaining;
        while left > 0 {
            let mut buffer = vec![0; PIECE_BYTES.min(usize::try_from(left).unwrap_or(PIECE_BYTES))];
            if let Err(error) = reader.read_exact(&mut buffer).await {
                // The file shrank under the upload: the server sees a short stream and keeps
                // what it has; the next stream adds nothing, which `upload_dir` reports.
                tracing::warn!(%error, "cannot read the file being uploaded");
                return;
            }
            left -= buffer.len() as u64;
            let piece = pb::UploadFileRequest {
                part: Some(pb::upload_file_request::Part::Data(buffer)),
            };
            if pieces.send(piece).await.is_err() {
                return;
            }
        }
    });
    let request = authed(
        tokio_stream::wrappers::ReceiverStream::new(stream),
        operator,
    )
    .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
    let answer = content.upload_file(request).await;
    reading.abort();
    answer.map(tonic::Response::into_inner)
}

/// Every package in `state` (or all), newest first, page by page.
pub async fn list(
    channel: &Channel,
    operator: &str,
    state: pb::PackageState,
) -> anyhow::Result<Vec<pb::Package>> {
    let mut content = ContentServiceClient::new(channel.clone());
    let mut packages = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client::call(
            "ListPackages",
            content.list_packages(authed(
                pb::ListPackagesRequest {
                    page_size: 200,
                    page_token,
                    state: state.into(),
                },
                operator,
            )?),
        )
        .await?;
        packages.extend(page.packages);
        if page.next_page_token.is_empty() {
            return Ok(packages);
        }
        page_token = page.next_page_token;
    }
}

/// One line for a person: id, state, size, files, title.
pub fn describe_package(package: &pb::Package) -> String {
    let state = match package.state() {
        pb::PackageState::Ready => "READY",
        pb::PackageState::Uploading => "UPLOADING",
        pb::PackageState::Unspecified => "?",
    };
    format!(
        "{}  {state:<9}  {:>10}  {:>5} files  {}",
        package.package_id,
        indicatif::HumanBytes(package.total_size_bytes).to_string(),
        package.file_count,
        package.title
    )
}

fn progress_bar(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
    ) {
        bar.set_style(style);
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_directory_is_scanned_sorted_with_hashes_and_links_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("b/c")).unwrap();
        std::fs::write(dir.path().join("b/c/z.bin"), b"zzz").unwrap();
        std::fs::write(dir.path().join("a.txt"), b"").unwrap();
        let files = scan_dir(dir.path()).await.unwrap();
        assert_eq!(
            files,
            vec![
                LocalFile {
                    path: "a.txt".into(),
                    size: 0,
                    blake3: *blake3::hash(b"").as_bytes()
                },
                LocalFile {
                    path: "b/c/z.bin".into(),
                    size: 3,
                    blake3: *blake3::hash(b"zzz").as_bytes()
                },
            ]
        );
        std::os::unix::fs::symlink(dir.path().join("a.txt"), dir.path().join("link")).unwrap();
        let refused = scan_dir(dir.path()).await.unwrap_err().to_string();
        assert!(refused.contains("link"), "{refused}");
    }

    #[tokio::test]
    async fn an_empty_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let refused = scan_dir(dir.path()).await.unwrap_err().to_string();
        assert!(refused.contains("no files"), "{refused}");
    }

    #[test]
    fn the_same_declaration_has_the_same_key_and_any_change_another() {
        let upload = |title: &str, size: u64| Upload {
            title: title.into(),
            description: String::new(),
            dir: PathBuf::from("/x"),
            files: vec![LocalFile {
                path: "f".into(),
                size,
                blake3: [7; 32],
            }],
        };
        assert_eq!(
            idempotency_key(&upload("T", 1)),
            idempotency_key(&upload("T", 1))
        );
        assert_ne!(
            idempotency_key(&upload("T", 1)),
            idempotency_key(&upload("T", 2))
        );
        assert_ne!(
            idempotency_key(&upload("T", 1)),
            idempotency_key(&upload("U", 1))
        );
        assert!(idempotency_key(&upload("T", 1)).len() <= 128);
    }
}
