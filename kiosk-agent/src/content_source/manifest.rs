//! The manifest of a content package, checked: what the kiosk downloads, writes onto a drive
//! and verifies, and the on-drive `.sneakernet/manifest.json`.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use sneakernet_proto::content::v1 as pb;
use sneakernet_proto::content_rules::{self, check_path};

use crate::cache::{ChunkHash, MAX_CHUNK_BYTES};

/// The smallest chunk size the contract allows.
pub const MIN_CHUNK_SIZE: u32 = 1024 * 1024;
/// The largest chunk size the contract allows ([`MAX_CHUNK_BYTES`]).
pub const MAX_CHUNK_SIZE: u32 = 64 * 1024 * 1024;
// Every chunk a valid manifest names fits the cache.
const _: () = assert!(MAX_CHUNK_SIZE as u64 <= MAX_CHUNK_BYTES);

/// The longest file path the contract allows, in bytes.
pub use sneakernet_proto::content_rules::MAX_PATH_BYTES;
/// The most files a package may have.
pub const MAX_FILES: usize = 100_000;
/// The longest package id accepted (the gateway's limit on a Provision's `package_id`).
pub const MAX_PACKAGE_ID_BYTES: usize = 128;

/// Why a manifest was refused: the field (`files[2].chunk_hashes[0]`) and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A field breaks the contract's rules.
    #[error("manifest {field}: {reason}")]
    Invalid {
        /// The field, as a path into the manifest.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The on-drive JSON does not parse.
    #[error("manifest json: {0}")]
    Json(#[from] serde_json::Error),
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ManifestError {
    ManifestError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A package's manifest, checked: a non-empty package id; a chunk size the contract allows (a
/// power of two, 1 MiB to 64 MiB); 1 to [`MAX_FILES`] files, in the source's order, with
/// unique paths that are safe to join under a drive root and never both a file and a
/// directory; every file's chunk count `ceil(size / chunk_size)`; one length per chunk hash
/// wherever it appears; `total_bytes` the sum of the sizes. `TryFrom<proto Manifest>` and
/// [`Manifest::from_json`] check all of that; code that builds one by hand must keep it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The package's id.
    pub package_id: String,
    /// Its title (shown to users; not checked).
    pub title: String,
    /// Size of every chunk but a file's last.
    pub chunk_size: u32,
    /// The files, in the manifest's order (the contract's: by path).
    pub files: Vec<ManifestFile>,
    /// Sum of the files' sizes: what a drive must hold at least.
    pub total_bytes: u64,
}

/// One file of a [`Manifest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// "/"-separated relative path: no empty, "." or ".." segment, no backslash or NUL, 1 to
    /// [`MAX_PATH_BYTES`] bytes. Joining it under a drive root stays under that root.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 hash of the whole file.
    #[serde(with = "hex_hash")]
    pub blake3: blake3::Hash,
    /// The file's chunks in order; concatenated they are the file.
    #[serde(with = "hex_hashes")]
    pub chunks: Vec<ChunkHash>,
}

impl Manifest {
    /// Every chunk hash of the package, in manifest order, each once.
    pub fn unique_chunks(&self) -> Vec<ChunkHash> {
        self.unique_chunks_with_len()
            .into_iter()
            .map(|(hash, _)| hash)
            .collect()
    }

    /// Every chunk hash of the package with its length in bytes, in manifest order, each once.
    pub fn unique_chunks_with_len(&self) -> Vec<(ChunkHash, u64)> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for file in &self.files {
            for (index, hash) in file.chunks.iter().enumerate() {
                if seen.insert(*hash) {
                    out.push((*hash, self.chunk_len(file, index)));
                }
            }
        }
        out
    }

    /// Length of chunk `index` of `file`: the chunk size, or what is left for a file's last
    /// chunk; 0 for an index past the file's chunks.
    pub fn chunk_len(&self, file: &ManifestFile, index: usize) -> u64 {
        let chunk_size = u64::from(self.chunk_size);
        let start = chunk_size.saturating_mul(index as u64);
        file.size.saturating_sub(start).min(chunk_size)
    }

    /// The manifest as the JSON written onto a drive (`.sneakernet/manifest.json`); hashes are
    /// lowercase hex. [`Manifest::from_json`] reads it back.
    pub fn to_json(&self) -> String {
        // Plain structs with string keys: serde_json cannot fail on them.
        serde_json::to_string_pretty(self).expect("a manifest always serializes to json")
    }

    /// Reads a manifest written by [`Manifest::to_json`] and checks it as strictly as one from
    /// the content service (a drive's file is outside input).
    pub fn from_json(json: &[u8]) -> Result<Self, ManifestError> {
        let manifest: Manifest = serde_json::from_slice(json)?;
        manifest.check()?;
        Ok(manifest)
    }

    /// Checks every rule of the type's doc.
    fn check(&self) -> Result<(), ManifestError> {
        if self.package_id.is_empty() || self.package_id.len() > MAX_PACKAGE_ID_BYTES {
            return Err(invalid(
                "package.package_id",
                format!("must be 1 to {MAX_PACKAGE_ID_BYTES} bytes"),
            ));
        }
        if !self.chunk_size.is_power_of_two()
            || !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size)
        {
            return Err(invalid(
                "chunk_size_bytes",
                format!(
                    "{} is not a power of two from {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE}",
                    self.chunk_size
                ),
            ));
        }
        if self.files.is_empty() || self.files.len() > MAX_FILES {
            return Err(invalid(
                "files",
                format!("must hold 1 to {MAX_FILES} files"),
            ));
        }
        let mut paths = HashSet::with_capacity(self.files.len());
        let mut lengths: HashMap<ChunkHash, u64> = HashMap::new();
        let mut total: u64 = 0;
        for (i, file) in self.files.iter().enumerate() {
            check_path(&file.path).map_err(|reason| invalid(format!("files[{i}].path"), reason))?;
            if !paths.insert(file.path.as_str()) {
                return Err(invalid(
                    format!("files[{i}].path"),
                    format!("{:?} appears twice", file.path),
                ));
            }
            let expected = file.size.div_ceil(u64::from(self.chunk_size));
            if file.chunks.len() as u64 != expected {
                return Err(invalid(
                    format!("files[{i}].chunk_hashes"),
                    format!(
                        "{} hashes for {} bytes; expected {expected}",
                        file.chunks.len(),
                        file.size
                    ),
                ));
            }
            for (j, hash) in file.chunks.iter().enumerate() {
                let len = self.chunk_len(file, j);
                if *lengths.entry(*hash).or_insert(len) != len {
                    return Err(invalid(
                        format!("files[{i}].chunk_hashes[{j}]"),
                        format!("chunk {hash} appears with two different lengths"),
                    ));
                }
            }
            total = total.checked_add(file.size).ok_or_else(|| {
                invalid(format!("files[{i}].size_bytes"), "sizes overflow 64 bits")
            })?;
        }
        // A path that is also another path's directory cannot be written onto a drive.
        let listed: Vec<&str> = self.files.iter().map(|f| f.path.as_str()).collect();
        if let Some((i, parent)) = content_rules::file_and_directory_clash(&listed) {
            return Err(invalid(
                format!("files[{i}].path"),
                format!("{parent:?} is both a file and a directory"),
            ));
        }
        if total != self.total_bytes {
            return Err(invalid(
                "package.total_size_bytes",
                format!("{} but the files add up to {total}", self.total_bytes),
            ));
        }
        Ok(())
    }
}

impl TryFrom<pb::Manifest> for Manifest {
    type Error = ManifestError;

    fn try_from(proto: pb::Manifest) -> Result<Self, ManifestError> {
        let package = proto.package.ok_or_else(|| invalid("package", "missing"))?;
        if package.state() != pb::PackageState::Ready {
            return Err(invalid(
                "package.state",
                format!("{:?}, not READY", package.state()),
            ));
        }
        if package.chunk_size_bytes != proto.chunk_size_bytes {
            return Err(invalid(
                "chunk_size_bytes",
                format!(
                    "{} differs from package.chunk_size_bytes {}",
                    proto.chunk_size_bytes, package.chunk_size_bytes
                ),
            ));
        }
        if package.file_count as usize != proto.files.len() {
            return Err(invalid(
                "package.file_count",
                format!("{} but {} files", package.file_count, proto.files.len()),
            ));
        }
        let files = proto
            .files
            .into_iter()
            .enumerate()
            .map(|(i, file)| {
                let blake3 = hash_from(&file.blake3).ok_or_else(|| {
                    invalid(format!("files[{i}].blake3"), not_a_hash(&file.blake3))
                })?;
                let chunks = file
                    .chunk_hashes
                    .iter()
                    .enumerate()
                    .map(|(j, bytes)| {
                        hash_from(bytes).ok_or_else(|| {
                            invalid(format!("files[{i}].chunk_hashes[{j}]"), not_a_hash(bytes))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(ManifestFile {
                    path: file.path,
                    size: file.size_bytes,
                    blake3,
                    chunks,
                })
            })
            .collect::<Result<Vec<_>, ManifestError>>()?;
        let manifest = Manifest {
            package_id: package.package_id,
            title: package.title,
            chunk_size: proto.chunk_size_bytes,
            files,
            total_bytes: package.total_size_bytes,
        };
        manifest.check()?;
        Ok(manifest)
    }
}

impl From<&Manifest> for pb::Manifest {
    /// The manifest as the contract carries it (a READY package), for fakes and tools.
    fn from(manifest: &Manifest) -> Self {
        pb::Manifest {
            package: Some(pb::Package {
                package_id: manifest.package_id.clone(),
                title: manifest.title.clone(),
                state: pb::PackageState::Ready.into(),
                total_size_bytes: manifest.total_bytes,
                file_count: u32::try_from(manifest.files.len()).unwrap_or(u32::MAX),
                chunk_size_bytes: manifest.chunk_size,
                ..pb::Package::default()
            }),
            chunk_size_bytes: manifest.chunk_size,
            files: manifest
                .files
                .iter()
                .map(|file| pb::ManifestFile {
                    path: file.path.clone(),
                    size_bytes: file.size,
                    blake3: file.blake3.as_bytes().to_vec(),
                    chunk_hashes: file.chunks.iter().map(|h| h.as_bytes().to_vec()).collect(),
                })
                .collect(),
        }
    }
}

/// A 32-byte hash from the wire, or `None`.
pub(crate) fn hash_from(bytes: &[u8]) -> Option<blake3::Hash> {
    blake3::Hash::from_slice(bytes).ok()
}

fn not_a_hash(bytes: &[u8]) -> String {
    format!("{} bytes, not a 32-byte BLAKE3 hash", bytes.len())
}

/// A hash as 64 lowercase hex digits in JSON.
mod hex_hash {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(hash: &blake3::Hash, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(hash.to_hex().as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<blake3::Hash, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        blake3::Hash::from_hex(text.as_bytes()).map_err(serde::de::Error::custom)
    }
}

/// A list of hashes as hex strings in JSON.
mod hex_hashes {
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(hashes: &[blake3::Hash], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(hashes.len()))?;
        for hash in hashes {
            seq.serialize_element(hash.to_hex().as_str())?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<blake3::Hash>, D::Error> {
        <Vec<std::borrow::Cow<'de, str>>>::deserialize(d)?
            .iter()
            .map(|text| blake3::Hash::from_hex(text.as_bytes()).map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A READY package of `files` cut into 1 MiB chunks, as the content service would send
    /// its manifest.
    pub(crate) fn proto_manifest(files: &[(&str, &[u8])]) -> pb::Manifest {
        let chunk = MIN_CHUNK_SIZE as usize;
        pb::Manifest {
            package: Some(pb::Package {
                package_id: "pkg-1".into(),
                title: "Demo".into(),
                state: pb::PackageState::Ready.into(),
                total_size_bytes: files.iter().map(|(_, b)| b.len() as u64).sum(),
                file_count: files.len() as u32,
                chunk_size_bytes: MIN_CHUNK_SIZE,
                ..pb::Package::default()
            }),
            chunk_size_bytes: MIN_CHUNK_SIZE,
            files: files
                .iter()
                .map(|(path, bytes)| pb::ManifestFile {
                    path: (*path).into(),
                    size_bytes: bytes.len() as u64,
                    blake3: blake3::hash(bytes).as_bytes().to_vec(),
                    chunk_hashes: bytes
                        .chunks(chunk)
                        .map(|c| blake3::hash(c).as_bytes().to_vec())
                        .collect(),
                })
                .collect(),
        }
    }

    fn refusal(proto: pb::Manifest) -> String {
        Manifest::try_from(proto).unwrap_err().to_string()
    }

    #[test]
    fn a_well_formed_manifest_is_accepted_with_its_chunks_deduplicated() {
        let big = vec![1u8; 2 * MIN_CHUNK_SIZE as usize + 10];
        let manifest = Manifest::try_from(proto_manifest(&[
            ("a/big.bin", &big),
            ("b.bin", &big[..10]),
            ("empty", b""),
        ]))
        .unwrap();
        assert_eq!(manifest.total_bytes, 2 * u64::from(MIN_CHUNK_SIZE) + 20);
        let first = &manifest.files[0];
        assert_eq!(first.chunks.len(), 3);
        assert_eq!(manifest.chunk_len(first, 0), u64::from(MIN_CHUNK_SIZE));
        assert_eq!(manifest.chunk_len(first, 2), 10);
        assert_eq!(manifest.chunk_len(first, 3), 0);
        // The two full chunks are equal, and b.bin is the big file's last chunk.
        assert_eq!(
            manifest.unique_chunks_with_len(),
            vec![
                (first.chunks[0], u64::from(MIN_CHUNK_SIZE)),
                (first.chunks[2], 10)
            ]
        );
        assert!(manifest.files[2].chunks.is_empty());
    }

    #[test]
    fn the_on_drive_json_round_trips_and_is_checked_when_read() {
        let manifest = Manifest::try_from(proto_manifest(&[("x/y.txt", b"hello")])).unwrap();
        let json = manifest.to_json();
        assert!(
            json.contains(blake3::hash(b"hello").to_hex().as_str()),
            "{json}"
        );
        assert_eq!(Manifest::from_json(json.as_bytes()).unwrap(), manifest);

        let tampered = json.replace("x/y.txt", "../y.txt");
        let error = Manifest::from_json(tampered.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("manifest files[0].path:"), "{error}");
        assert!(Manifest::from_json(b"{").is_err());
    }

    #[test]
    fn a_path_escaping_the_drive_root_is_refused() {
        for path in [
            "../x",
            "a/../x",
            "/etc/passwd",
            "a//b",
            "./a",
            "a\\b",
            "a\0b",
            "",
        ] {
            let error = refusal(proto_manifest(&[(path, b"x")]));
            assert!(
                error.starts_with("manifest files[0].path:"),
                "{path:?}: {error}"
            );
        }
        let long = "a".repeat(MAX_PATH_BYTES + 1);
        assert!(refusal(proto_manifest(&[(&long, b"x")])).contains("files[0].path"));
    }

    #[test]
    fn duplicate_paths_and_a_file_that_is_also_a_directory_are_refused() {
        let error = refusal(proto_manifest(&[("a", b"1"), ("a", b"2")]));
        assert!(
            error.contains("files[1].path") && error.contains("twice"),
            "{error}"
        );
        let error = refusal(proto_manifest(&[("a", b"1"), ("a/b", b"2")]));
        assert!(
            error.contains("files[1].path") && error.contains("both a file and a directory"),
            "{error}"
        );
    }

    #[test]
    fn a_wrong_chunk_count_is_refused() {
        let mut proto = proto_manifest(&[("a", b"abc")]);
        proto.files[0].chunk_hashes.push(vec![0; 32]);
        let error = refusal(proto);
        assert!(
            error.starts_with("manifest files[0].chunk_hashes:"),
            "{error}"
        );
        assert!(
            error.contains("2 hashes for 3 bytes; expected 1"),
            "{error}"
        );
    }

    #[test]
    fn a_hash_that_is_not_32_bytes_is_refused() {
        let mut proto = proto_manifest(&[("a", b"abc")]);
        proto.files[0].chunk_hashes[0].pop();
        assert_eq!(
            refusal(proto),
            "manifest files[0].chunk_hashes[0]: 31 bytes, not a 32-byte BLAKE3 hash"
        );
        let mut proto = proto_manifest(&[("a", b"abc")]);
        proto.files[0].blake3 = vec![0; 31];
        assert!(refusal(proto).starts_with("manifest files[0].blake3:"));
    }

    #[test]
    fn inconsistent_package_fields_are_refused_by_name() {
        let mut proto = proto_manifest(&[("a", b"abc")]);
        proto.chunk_size_bytes = 1000;
        assert!(refusal(proto).starts_with("manifest chunk_size_bytes:"));
        let mut proto = proto_manifest(&[("a", b"abc")]);
        proto.package.as_mut().unwrap().total_size_bytes = 4;
        assert!(refusal(proto).starts_with("manifest package.total_size_bytes:"));
        let mut proto = proto_manifest(&[("a", b"abc")]);
        proto.package.as_mut().unwrap().state = pb::PackageState::Uploading.into();
        assert!(refusal(proto).starts_with("manifest package.state:"));
        let mut proto = proto_manifest(&[("a", b"abc")]);
        proto.package = None;
        assert_eq!(refusal(proto), "manifest package: missing");
        // One hash claimed by a 3-byte chunk and a 1-byte chunk.
        let mut proto = proto_manifest(&[("a", b"abc"), ("b", b"d")]);
        proto.files[1].chunk_hashes[0] = proto.files[0].chunk_hashes[0].clone();
        assert!(refusal(proto).contains("two different lengths"));
    }
}
