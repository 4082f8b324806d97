//! UploadFile's header and DownloadChunks' request, checked into domain types at the edge.

use sneakernet_proto::content::v1 as pb;
use sneakernet_proto::ids::PackageId;
use sneakernet_runtime::FieldViolation;

use super::ContentHash;
use super::package::{check_path, package_id};

/// Most chunks one DownloadChunks call may ask for.
pub const MAX_CHUNKS_PER_DOWNLOAD: usize = 4096;
/// Largest piece of a chunk in one DownloadChunks message, and largest data message of an
/// upload.
pub const MAX_PIECE: usize = 1024 * 1024;

/// An upload's header, checked (not yet against the declared file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadHeader {
    /// The package.
    pub package_id: PackageId,
    /// The file's path.
    pub path: String,
    /// The file's size, as the client believes it was declared.
    pub size: u64,
    /// The file's hash, as the client believes it was declared.
    pub hash: ContentHash,
    /// Where the data that follows starts.
    pub offset: u64,
}

impl UploadHeader {
    /// Checks the header's fields; each bad one is named (`header.<field>`).
    pub fn from_wire(header: pb::UploadHeader) -> Result<Self, Vec<FieldViolation>> {
        let mut violations = Vec::new();
        let package = package_id("header.package_id", &header.package_id)
            .map_err(|v| violations.push(v))
            .ok();
        if let Err(why) = check_path(&header.path) {
            violations.push(FieldViolation::new("header.path", why));
        }
        let hash = ContentHash::from_wire(&header.blake3)
            .map_err(|why| violations.push(FieldViolation::new("header.blake3", why)))
            .ok();
        match (package, hash) {
            (Some(package_id), Some(hash)) if violations.is_empty() => Ok(Self {
                package_id,
                path: header.path,
                size: header.size_bytes,
                hash,
                offset: header.offset,
            }),
            _ => Err(violations),
        }
    }
}

/// A DownloadChunks request, checked: 1 to 4096 hashes, each 32 bytes, repeats dropped (the
/// first occurrence keeps its place).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkRequest {
    /// The package the chunks must belong to.
    pub package_id: PackageId,
    /// The chunks, in the order asked, each once.
    pub hashes: Vec<ContentHash>,
    /// Bytes of the first chunk the caller already holds.
    pub first_chunk_offset: u64,
}

impl ChunkRequest {
    /// Checks the request; each bad field is named.
    pub fn from_wire(request: pb::DownloadChunksRequest) -> Result<Self, Vec<FieldViolation>> {
        let mut violations = Vec::new();
        let package = package_id("package_id", &request.package_id)
            .map_err(|v| violations.push(v))
            .ok();
        let asked = request.chunk_hashes.len();
        if asked == 0 || asked > MAX_CHUNKS_PER_DOWNLOAD {
            violations.push(FieldViolation::new(
                "chunk_hashes",
                format!("must hold 1 to {MAX_CHUNKS_PER_DOWNLOAD} hashes, got {asked}"),
            ));
        }
        let mut hashes = Vec::with_capacity(asked.min(MAX_CHUNKS_PER_DOWNLOAD));
        let mut seen = std::collections::HashSet::with_capacity(hashes.capacity());
        for (i, raw) in request.chunk_hashes.iter().enumerate() {
            match ContentHash::from_wire(raw) {
                Ok(hash) => {
                    if seen.insert(hash) {
                        hashes.push(hash);
                    }
                }
                Err(why) => violations.push(FieldViolation::new(format!("chunk_hashes[{i}]"), why)),
            }
        }
        match package {
            Some(package_id) if violations.is_empty() => Ok(Self {
                package_id,
                hashes,
                first_chunk_offset: request.first_chunk_offset,
            }),
            _ => Err(violations),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACKAGE: &str = "0190f5a4-0000-7000-8000-000000000001";

    #[test]
    fn repeated_hashes_are_asked_once_in_first_order() {
        let (a, b) = (ContentHash::of(b"a"), ContentHash::of(b"b"));
        let request = ChunkRequest::from_wire(pb::DownloadChunksRequest {
            package_id: PACKAGE.into(),
            chunk_hashes: vec![b.to_wire(), a.to_wire(), b.to_wire()],
            first_chunk_offset: 3,
        })
        .unwrap();
        assert_eq!(request.hashes, [b, a]);
    }

    #[test]
    fn bad_requests_name_their_fields() {
        let too_many = ChunkRequest::from_wire(pb::DownloadChunksRequest {
            package_id: "nope".into(),
            chunk_hashes: vec![vec![0; 32]; MAX_CHUNKS_PER_DOWNLOAD + 1],
            first_chunk_offset: 0,
        })
        .unwrap_err();
        let fields: Vec<_> = too_many.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["package_id", "chunk_hashes"]);
        let short = ChunkRequest::from_wire(pb::DownloadChunksRequest {
            package_id: PACKAGE.into(),
            chunk_hashes: vec![vec![0; 32], vec![1; 31]],
            first_chunk_offset: 0,
        })
        .unwrap_err();
        assert_eq!(short[0].field, "chunk_hashes[1]");
    }
}
