//! What a drive holds: the on-drive manifest, writing a package's files onto a drive while
//! hashing them, and verifying a drive against its manifest by reading it back.
//!
//! Guarantees:
//! - The manifest lives at [`MANIFEST_PATH`] on the drive, as [`Manifest::to_json`] writes it
//!   (the package id and every file's path, size, BLAKE3 hash and chunks). It is written last,
//!   after every file was read back and matched, so a drive with a manifest was verified once.
//! - [`verify`] reads every file back through [`Drives::read_back`] (from the medium, not the
//!   page cache) and fails naming the first file whose size or hash differs.
//! - Everything here blocks on disk I/O and hashing: callers run it in `spawn_blocking`.

use std::io::Read;
use std::path::Path;

use crate::bays::{DriveError, Drives};
use crate::content_source::Manifest;

/// Where the manifest sits on a drive.
pub const MANIFEST_PATH: &str = ".sneakernet/manifest.json";
/// Bytes read or written per step when copying or hashing.
const BLOCK: usize = 1 << 20;

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
    manifest: &Manifest,
) -> Result<(), DriveError> {
    let mut file = drives.create_file(item_id, MANIFEST_PATH)?;
    file.write(manifest.to_json().as_bytes())?;
    file.finish()?;
    Ok(())
}

/// The manifest on drive `item_id`; `Ok(None)` when the drive has none (blank or never
/// verified); an unreadable or malformed one is [`VerifyError::Manifest`].
pub fn read_manifest<D: Drives + ?Sized>(
    drives: &D,
    item_id: &str,
) -> Result<Option<Manifest>, VerifyError> {
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
    Manifest::from_json(&bytes)
        .map(Some)
        .map_err(|e| VerifyError::Manifest(e.to_string()))
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

/// The manifest of drive `item_id` when the drive holds package `package_id` in full: its
/// on-drive manifest names that package and every file it lists reads back matching. The
/// error says why not (no manifest, another package, a file that differs, a read failure).
pub fn holds<D: Drives + ?Sized>(
    drives: &D,
    item_id: &str,
    package_id: &str,
) -> Result<Manifest, VerifyError> {
    let manifest = read_manifest(drives, item_id)?
        .ok_or_else(|| VerifyError::Manifest("no on-drive manifest".into()))?;
    if manifest.package_id != package_id {
        return Err(VerifyError::Manifest(format!(
            "names package {}, the drive should hold {package_id}",
            manifest.package_id
        )));
    }
    verify(drives, item_id, &manifest, |_| {})?;
    Ok(manifest)
}

/// Reads every file of `manifest` back from drive `item_id` and checks its size and hash;
/// `progress` is told the bytes read as they go. Returns the bytes verified.
pub fn verify<D: Drives + ?Sized>(
    drives: &D,
    item_id: &str,
    manifest: &Manifest,
    mut progress: impl FnMut(u64),
) -> Result<u64, VerifyError> {
    let mut total = 0u64;
    for file in &manifest.files {
        let (hash, size) = hash_back(drives, item_id, &file.path, &mut progress)?;
        if size != file.size {
            return Err(VerifyError::Mismatch {
                path: file.path.clone(),
                what: format!("{size} bytes on the drive, {} expected", file.size),
            });
        }
        if hash != file.blake3 {
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
    manifest: &Manifest,
    source_dir: &Path,
) -> Result<u64, StockError> {
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
