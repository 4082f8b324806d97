//! A package declaration (CreatePackage) checked into domain types, and the chunk layout every
//! file follows.

use sneakernet_proto::content::v1 as pb;
use sneakernet_proto::ids::PackageId;
use sneakernet_runtime::FieldViolation;

use super::ContentHash;

/// The chunk size of every package this server creates: 4 MiB.
///
/// Why 4 MiB (a power of two, as the contract wants, within its 1 to 64 MiB):
/// - Download granularity and resume cost: a kiosk that loses its link re-asks for the chunk
///   it was in; with `first_chunk_offset` it loses nothing, and without it at most 4 MiB,
///   a second or two on a slow kiosk line.
/// - Per-chunk overhead: each chunk costs one object-store request, one index row, one hash
///   check and one message header. A few-GB film is about 1,500 chunks: per-request latency
///   stays small against transfer time, where 1 MiB chunks would mean 6,000 requests.
/// - The kiosk cache's bookkeeping: one entry per chunk; 1,500 entries per film keeps the LRU
///   index tiny while still sharing equal chunks between packages.
/// - Memory: the server holds one chunk per upload stream and per download stream (every
///   chunk is verified whole before its first byte is sent), so 4 MiB bounds that too.
pub const CHUNK_SIZE: u32 = 4 * 1024 * 1024;

/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 4000;
/// Most files in one package.
pub const MAX_FILES: usize = 100_000;
/// Longest file path, in bytes.
pub use sneakernet_proto::content_rules::MAX_PATH_BYTES;
/// Longest idempotency key, in characters.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;

/// Where a package is in its life; stored as its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackageState {
    /// Some file is not yet uploaded and verified.
    Uploading,
    /// Every file is stored and verified; immutable.
    Ready,
}

impl PackageState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            PackageState::Uploading => "UPLOADING",
            PackageState::Ready => "READY",
        }
    }

    /// Reads a stored name.
    pub fn parse(stored: &str) -> Option<Self> {
        match stored {
            "UPLOADING" => Some(PackageState::Uploading),
            "READY" => Some(PackageState::Ready),
            _ => None,
        }
    }

    /// The contract's enum value.
    pub fn to_wire(self) -> pb::PackageState {
        match self {
            PackageState::Uploading => pb::PackageState::Uploading,
            PackageState::Ready => pb::PackageState::Ready,
        }
    }
}

/// A package id from a request: a UUID, as this service issues them.
pub fn package_id(field: &str, raw: &str) -> Result<PackageId, FieldViolation> {
    uuid::Uuid::parse_str(raw)
        .map_err(|_| FieldViolation::new(field, "must be a package id (a UUID)"))?;
    PackageId::parse(raw).map_err(|why| FieldViolation::new(field, why))
}

pub use sneakernet_proto::content_rules::check_path;

/// How many chunks a file of `size` bytes has: ceil(size / chunk_size); 0 for an empty file.
pub fn chunk_count(size: u64, chunk_size: u32) -> u64 {
    size.div_ceil(u64::from(chunk_size))
}

/// One declared file, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeclaredFile {
    /// Its path (checked by [`check_path`]).
    pub path: String,
    /// Its exact size in bytes (at most `i64::MAX`, so it fits every database).
    pub size: u64,
    /// The BLAKE3 hash of the whole file.
    pub hash: ContentHash,
}

/// A CreatePackage request, checked: every field within the contract's limits, files unique
/// by path and sorted by path (the order manifests list them in).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPackage {
    /// 1 to 200 characters.
    pub title: String,
    /// At most 4000 characters.
    pub description: String,
    /// 1 to 100,000 files, sorted by path, unique.
    pub files: Vec<DeclaredFile>,
    /// 1 to 128 characters.
    pub idempotency_key: String,
    /// Sum of the file sizes (at most `i64::MAX`).
    pub total_size: u64,
    /// A fingerprint of everything but the idempotency key: the same key with another
    /// fingerprint is another request.
    pub fingerprint: String,
}

impl NewPackage {
    /// Checks a request; on failure every bad field is named. CPU work proportional to the
    /// declaration (up to 100,000 paths, hashed): callers on the async runtime run it on the
    /// blocking pool.
    pub fn from_request(request: pb::CreatePackageRequest) -> Result<Self, Vec<FieldViolation>> {
        let mut violations = Vec::new();
        let title_chars = request.title.chars().count();
        if title_chars == 0 || title_chars > MAX_TITLE_CHARS || request.title.trim().is_empty() {
            violations.push(FieldViolation::new(
                "title",
                format!("must be 1 to {MAX_TITLE_CHARS} characters, not all blank"),
            ));
        }
        if request.description.chars().count() > MAX_DESCRIPTION_CHARS {
            violations.push(FieldViolation::new(
                "description",
                format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
            ));
        }
        let key_chars = request.idempotency_key.chars().count();
        if key_chars == 0 || key_chars > MAX_IDEMPOTENCY_KEY {
            violations.push(FieldViolation::new(
                "idempotency_key",
                format!("must be 1 to {MAX_IDEMPOTENCY_KEY} characters"),
            ));
        }
        if request.files.is_empty() || request.files.len() > MAX_FILES {
            violations.push(FieldViolation::new(
                "files",
                format!("must hold 1 to {MAX_FILES} files"),
            ));
        }
        let mut files = Vec::with_capacity(request.files.len());
        let mut total_size: u64 = 0;
        let empty_hash = ContentHash::of(&[]);
        for (i, file) in request.files.into_iter().enumerate() {
            let field = |name: &str| format!("files[{i}].{name}");
            let mut ok = true;
            if let Err(why) = check_path(&file.path) {
                violations.push(FieldViolation::new(field("path"), why));
                ok = false;
            }
            if i64::try_from(file.size_bytes).is_err() {
                violations.push(FieldViolation::new(
                    field("size_bytes"),
                    "must be at most 2^63 - 1",
                ));
                ok = false;
            }
            let hash = match ContentHash::from_wire(&file.blake3) {
                Ok(hash) => hash,
                Err(why) => {
                    violations.push(FieldViolation::new(field("blake3"), why));
                    continue;
                }
            };
            if file.size_bytes == 0 && hash != empty_hash {
                violations.push(FieldViolation::new(
                    field("blake3"),
                    format!("an empty file's hash is the hash of no bytes ({empty_hash})"),
                ));
                ok = false;
            }
            match total_size.checked_add(file.size_bytes) {
                Some(sum) if i64::try_from(sum).is_ok() => total_size = sum,
                _ => {
                    violations.push(FieldViolation::new(
                        field("size_bytes"),
                        "makes the package larger than 2^63 - 1 bytes",
                    ));
                    ok = false;
                }
            }
            if ok {
                files.push((
                    i,
                    DeclaredFile {
                        path: file.path,
                        size: file.size_bytes,
                        hash,
                    },
                ));
            }
        }
        files.sort_by(|a, b| a.1.path.cmp(&b.1.path));
        for pair in files.windows(2) {
            if pair[0].1.path == pair[1].1.path {
                violations.push(FieldViolation::new(
                    format!("files[{}].path", pair[1].0.max(pair[0].0)),
                    format!("{:?} is declared twice", pair[1].1.path),
                ));
            }
        }
        let paths: Vec<&str> = files.iter().map(|(_, f)| f.path.as_str()).collect();
        if let Some((at, parent)) =
            sneakernet_proto::content_rules::file_and_directory_clash(&paths)
        {
            violations.push(FieldViolation::new(
                format!("files[{}].path", files[at].0),
                format!("{parent:?} is declared as a file and used as a directory"),
            ));
        }
        if !violations.is_empty() {
            return Err(violations);
        }
        let files: Vec<DeclaredFile> = files.into_iter().map(|(_, file)| file).collect();
        Ok(Self {
            fingerprint: fingerprint(&request.title, &request.description, &files),
            title: request.title,
            description: request.description,
            files,
            idempotency_key: request.idempotency_key,
            total_size,
        })
    }

    /// Whether every file is empty: such a package is READY at once.
    pub fn is_empty(&self) -> bool {
        self.total_size == 0
    }
}

fn fingerprint(title: &str, description: &str, files: &[DeclaredFile]) -> String {
    let mut hasher = blake3::Hasher::new();
    let mut field = |bytes: &[u8]| {
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    field(title.as_bytes());
    field(description.as_bytes());
    for file in files {
        field(file.path.as_bytes());
        field(&file.size.to_le_bytes());
        field(&file.hash.to_wire());
    }
    hasher.finalize().to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, bytes: &[u8]) -> pb::FileDeclaration {
        pb::FileDeclaration {
            path: path.into(),
            size_bytes: bytes.len() as u64,
            blake3: ContentHash::of(bytes).to_wire(),
        }
    }

    fn request(files: Vec<pb::FileDeclaration>) -> pb::CreatePackageRequest {
        pb::CreatePackageRequest {
            title: "Film".into(),
            description: String::new(),
            files,
            idempotency_key: "k".into(),
        }
    }

    fn fields(violations: &[FieldViolation]) -> Vec<&str> {
        violations.iter().map(|v| v.field.as_str()).collect()
    }

    #[test]
    fn paths_follow_the_contract() {
        for good in ["a", "a/b.mkv", "films/été/x", &"x".repeat(1024)] {
            assert_eq!(check_path(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "/a",
            "a//b",
            "a/./b",
            "../a",
            "a/..",
            "a\\b",
            "a\0b",
            "a/",
            &"x".repeat(1025),
        ] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn files_are_sorted_and_summed() {
        let package =
            NewPackage::from_request(request(vec![file("b", b"12"), file("a", b"345")])).unwrap();
        let paths: Vec<_> = package.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["a", "b"]);
        assert_eq!(package.total_size, 5);
        assert!(!package.is_empty());
    }

    #[test]
    fn a_package_no_drive_could_hold_is_refused() {
        let clash = NewPackage::from_request(request(vec![file("a", b"1"), file("a/b", b"2")]));
        assert_eq!(fields(&clash.unwrap_err()), ["files[1].path"]);
        let reserved =
            NewPackage::from_request(request(vec![file(".sneakernet/manifest.json", b"{}")]));
        assert_eq!(fields(&reserved.unwrap_err()), ["files[0].path"]);
    }

    #[test]
    fn every_bad_field_is_named() {
        let mut bad = request(vec![
            file("a", b"1"),
            file("a", b"2"),
            pb::FileDeclaration {
                path: "/abs".into(),
                size_bytes: 1,
                blake3: vec![0; 5],
            },
            pb::FileDeclaration {
                path: "empty".into(),
                size_bytes: 0,
                blake3: vec![0; 32],
            },
        ]);
        bad.title = String::new();
        bad.idempotency_key = "k".repeat(129);
        let violations = NewPackage::from_request(bad).unwrap_err();
        assert_eq!(
            fields(&violations),
            [
                "title",
                "idempotency_key",
                "files[2].path",
                "files[2].blake3",
                "files[3].blake3",
                "files[1].path"
            ]
        );
        let none = NewPackage::from_request(request(vec![])).unwrap_err();
        assert_eq!(fields(&none), ["files"]);
    }

    #[test]
    fn fingerprint_ignores_declaration_order_only() {
        let one = NewPackage::from_request(request(vec![file("a", b"1"), file("b", b"2")]));
        let two = NewPackage::from_request(request(vec![file("b", b"2"), file("a", b"1")]));
        let other = NewPackage::from_request(request(vec![file("a", b"1"), file("b", b"3")]));
        assert_eq!(one.unwrap().fingerprint, two.clone().unwrap().fingerprint);
        assert_ne!(two.unwrap().fingerprint, other.unwrap().fingerprint);
    }

    #[test]
    fn chunk_counts_round_up() {
        assert_eq!(chunk_count(0, CHUNK_SIZE), 0);
        assert_eq!(chunk_count(1, CHUNK_SIZE), 1);
        assert_eq!(chunk_count(u64::from(CHUNK_SIZE), CHUNK_SIZE), 1);
        assert_eq!(chunk_count(u64::from(CHUNK_SIZE) + 1, CHUNK_SIZE), 2);
        const { assert!(CHUNK_SIZE.is_power_of_two()) };
    }
}
