//! What a drive holds: the on-drive manifest, writing a package's files onto a drive while
//! hashing them, and verifying a drive against its manifest by reading it back.
//!
//! Guarantees:
//! - The manifest lives at [`MANIFEST_PATH`] on the drive, as JSON ([`DriveManifest`]): the
//!   package id and every file's path, size and BLAKE3 hash. It is written last, after every
//!   file was read back and matched, so a drive with a manifest was verified once.
//! - [`verify`] reads every file back through [`Drives::read_back`] (from the medium, not the
//!   page cache) and fails naming the first file whose size or hash differs.
//! - Everything here blocks on disk I/O and hashing: callers run it in `spawn_blocking`.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::bays::{DriveError, Drives, is_drive_path};

/// Where the manifest sits on a drive.
pub const MANIFEST_PATH: &str = ".sneakernet/manifest.json";
/// The on-drive manifest's format version.
pub const MANIFEST_FORMAT: u32 = 1;
/// Bytes read or written per step when copying or hashing.
const BLOCK: usize = 1 << 20;

/// The manifest written onto a drive: what the drive holds and how to check it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DriveManifest {
    /// Format version ([`MANIFEST_FORMAT`]).
    pub format: u32,
    /// The content package (the drive's `content_package_id`).
    pub package_id: String,
    /// Every file of the package.
    pub files: Vec<DriveManifestFile>,
}

/// One file of a drive's manifest.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DriveManifestFile {
    /// Path on the drive, relative, "/"-separated.
    pub path: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// BLAKE3 hash of the whole file, 64 lowercase hex digits.
    pub blake3: String,
}

impl DriveManifest {
    /// A manifest for `package_id` listing `files` as (path, size, hash).
    pub fn new(
        package_id: impl Into<String>,
        files: impl IntoIterator<Item = (String, u64, [u8; 32])>,
    ) -> Self {
        Self {
            format: MANIFEST_FORMAT,
            package_id: package_id.into(),
            files: files
                .into_iter()
                .map(|(path, size_bytes, hash)| DriveManifestFile {
                    path,
                    size_bytes,
                    blake3: blake3::Hash::from_bytes(hash).to_hex().to_string(),
                })
                .collect(),
        }
    }

    /// The sum of the files' sizes (saturating: a manifest that overflows fits no drive).
    pub fn total_bytes(&self) -> u64 {
        self.files
            .iter()
            .fold(0u64, |sum, f| sum.saturating_add(f.size_bytes))
    }

    /// Checks the format, every path and every hash; the error says which is wrong.
    pub fn check(&self) -> Result<(), String> {
        if self.format != MANIFEST_FORMAT {
            return Err(format!("unknown manifest format {}", self.format));
        }
        for file in &self.files {
            if !is_drive_path(&file.path) || file.path.starts_with(".sneakernet/") {
                return Err(format!("{:?} is not a content path", file.path));
            }
            if blake3::Hash::from_hex(&file.blake3).is_err() {
                return Err(format!("{}: blake3 is not 64 hex digits", file.path));
            }
        }
        Ok(())
    }
}

/// Why a drive does not hold what its manifest says.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The drive could not be read.
    #[error(transparent)]
    Drive(#[from] DriveError),
    /// A file's bytes differ from the manifest.
    #[error("{path}: {what}")]
    Mismatch {
        /// The file.
        path: String,
        /// What differs.
        what: String,
    },
    /// The manifest itself is unreadable or malformed.
    #[error("on-drive manifest: {0}")]
    Manifest(String),
}

/// Writes `manifest` onto drive `item_id` at [`MANIFEST_PATH`] (fsynced).
pub fn write_manifest<D: Drives + ?Sized>(
    drives: &D,
    item_id: &str,
    manifest: &DriveManifest,
) -> Result<(), DriveError> {
    let bytes = serde_json::to_vec_pretty(manifest).map_err(|e| DriveError::Io {
        item_id: item_id.to_owned(),
        message: format!("encode manifest: {e}"),
    })?;
    let mut file = drives.create_file(item_id, MANIFEST_PATH)?;
    file.write(&bytes)?;
    file.finish()?;
    Ok(())
}

/// The manifest on drive `item_id`; `Ok(None)` when the drive has none (blank or never
/// verified); an unreadable or malformed one is [`VerifyError::Manifest`].
pub fn read_manifest<D: Drives + ?Sized>(
    drives: &D,
    item_id: &str,
) -> Result<Option<DriveManifest>, VerifyError> {
    let mut reader = match drives.read_back(item_id, MANIFEST_PATH) {
        Ok(reader) => reader,
        Err(DriveError::Missing { .. }) => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    let mut bytes = Vec::new();
    reader
        .by_ref()
        .take(64 << 20)
        .read_to_end(&mut bytes)
        .map_err(|e| VerifyError::Manifest(e.to_string()))?;
    let manifest: DriveManifest =
        serde_json::from_slice(&bytes).map_err(|e| VerifyError::Manifest(e.to_string()))?;
    manifest.check().map_err(VerifyError::Manifest)?;
    Ok(Some(manifest))
}

/// Hashes the file at `path` as read back from drive `item_id`; returns (hash, size).
pub fn hash_back<D: Drives + ?Sized>(
    drives: &D,
    item_id: &str,
    path: &str,
    mut progress: impl FnMut(u64),
) -> Result<(blake3::Hash, u64), DriveError> {
    let mut reader = drives.read_back(item_id, path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; BLOCK];
    let mut size = 0u64;
    loop {
        let n = reader
            .read(&mut buffer)
            .map_err(|e| DriveError::from_io(item_id, &format!("read {path}"), &e))?;
        if n == 0 {
            break;
        }
        let chunk = buffer.get(..n).unwrap_or_default();
        hasher.update(chunk);
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        size = size.saturating_add(n);
        progress(n);
    }
    Ok((hasher.finalize(), size))
}

/// Reads every file of `manifest` back from drive `item_id` and checks its size and hash;
/// `progress` is told the bytes read as they go. Returns the bytes verified.
pub fn verify<D: Drives + ?Sized>(
    drives: &D,
    item_id: &str,
    manifest: &DriveManifest,
    mut progress: impl FnMut(u64),
) -> Result<u64, VerifyError> {
    let mut total = 0u64;
    for file in &manifest.files {
        let (hash, size) = hash_back(drives, item_id, &file.path, &mut progress)?;
        if size != file.size_bytes {
            return Err(VerifyError::Mismatch {
                path: file.path.clone(),
                what: format!("{size} bytes on the drive, {} expected", file.size_bytes),
            });
        }
        if hash.to_hex().as_str() != file.blake3 {
            return Err(VerifyError::Mismatch {
                path: file.path.clone(),
                what: format!(
                    "BLAKE3 {} on the drive, {} expected",
                    hash.to_hex(),
                    file.blake3
                ),
            });
        }
        total = total.saturating_add(size);
    }
    Ok(total)
}

/// Why stocking a drive from a directory failed.
#[derive(Debug, thiserror::Error)]
pub enum StockError {
    /// The manifest is malformed.
    #[error("manifest: {0}")]
    Manifest(String),
    /// A source file could not be read.
    #[error("source {path}: {message}")]
    Source {
        /// The file.
        path: String,
        /// What failed.
        message: String,
    },
    /// The drive refused a write.
    #[error(transparent)]
    Drive(#[from] DriveError),
    /// What was written does not match the manifest.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// The drive's state could not be changed (not in the kiosk, pinned, storage).
    #[error(transparent)]
    Bay(#[from] crate::bays::BayError),
}

/// Copies every file of `manifest` from `source_dir/<path>` onto drive `item_id`, reads it
/// all back and verifies it, then writes the manifest. The drive must be writable and should
/// be empty; the caller records its content package afterwards.
pub fn copy_from_dir<D: Drives + ?Sized>(
    drives: &D,
    item_id: &str,
    manifest: &DriveManifest,
    source_dir: &Path,
) -> Result<u64, StockError> {
    manifest.check().map_err(StockError::Manifest)?;
    for file in &manifest.files {
        let source = source_dir.join(&file.path);
        let source_error = |e: std::io::Error| StockError::Source {
            path: source.display().to_string(),
            message: e.to_string(),
        };
        let mut input = std::fs::File::open(&source).map_err(source_error)?;
        let mut output = drives.create_file(item_id, &file.path)?;
        let mut buffer = vec![0u8; BLOCK];
        loop {
            let n = input.read(&mut buffer).map_err(source_error)?;
            if n == 0 {
                break;
            }
            output.write(buffer.get(..n).unwrap_or_default())?;
        }
        output.finish()?;
    }
    let verified = verify(drives, item_id, manifest, |_| {})?;
    write_manifest(drives, item_id, manifest)?;
    Ok(verified)
}
