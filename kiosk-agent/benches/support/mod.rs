//! What the agent's benches share: a generated content package (bytes that neither repeat nor
//! compress), its checked-shape [`Manifest`], its chunks in a [`ChunkCache`] and, when asked,
//! its files in a plain directory; and a simulated kiosk whose bays hold blank drives.

#![allow(dead_code)] // each bench uses part of it

use std::path::Path;

use sneakernet_kiosk_agent::cache::ChunkCache;
use sneakernet_kiosk_agent::config::{SimBayConfig, SimItemConfig, SimItemKind, SimulationConfig};
use sneakernet_kiosk_agent::content_source::{Manifest, ManifestFile};
use sneakernet_kiosk_agent::simulated::SimulatedBays;

/// The content service's chunk size (`sneakernet_content::domain::CHUNK_SIZE`), which every
/// package the agent sees is cut into.
pub const CHUNK_SIZE: u32 = 4 * 1024 * 1024;
/// One MiB.
pub const MIB: u64 = 1024 * 1024;

/// Fills `out` with the BLAKE3 output stream of `seed`: reproducible bytes that do not
/// repeat, so no layer below (compression, deduplication) can make a copy cheaper.
pub fn fill(seed: &[u8], out: &mut [u8]) {
    blake3::Hasher::new().update(seed).finalize_xof().fill(out);
}

/// Where a generated package goes.
pub struct Sinks<'a> {
    /// The chunk cache to insert every chunk into.
    pub cache: Option<&'a ChunkCache>,
    /// A directory to write the package's files into (`<dir>/<path>`).
    pub files_dir: Option<&'a Path>,
}

/// Generates package `package_id` of `total` bytes in files of at most `file_bytes` (at least
/// `min_files` files), chunked at [`CHUNK_SIZE`]; returns its manifest. One chunk is in memory
/// at a time.
pub async fn generate(
    package_id: &str,
    total: u64,
    file_bytes: u64,
    min_files: u64,
    sinks: &Sinks<'_>,
) -> anyhow::Result<Manifest> {
    let count = total.div_ceil(file_bytes).max(min_files).max(1);
    let per_file = total.div_ceil(count);
    let mut files = Vec::new();
    let mut left = total;
    let mut buffer = vec![0u8; CHUNK_SIZE as usize];
    for index in 0..count {
        let size = per_file.min(left);
        left -= size;
        let path = format!("{package_id}/part-{index:03}.bin");
        let mut output = match sinks.files_dir {
            Some(dir) => {
                let file = dir.join(&path);
                std::fs::create_dir_all(file.parent().unwrap_or(dir))?;
                Some(std::fs::File::create(file)?)
            }
            None => None,
        };
        let mut whole = blake3::Hasher::new();
        let mut chunks = Vec::new();
        let mut done = 0u64;
        while done < size {
            let len = (size - done).min(u64::from(CHUNK_SIZE)) as usize;
            let chunk = &mut buffer[..len];
            fill(format!("{package_id}/{index}/{done}").as_bytes(), chunk);
            let hash = blake3::hash(chunk);
            whole.update(chunk);
            if let Some(cache) = sinks.cache {
                cache
                    .insert(hash, bytes::Bytes::copy_from_slice(chunk))
                    .await?;
            }
            if let Some(out) = output.as_mut() {
                std::io::Write::write_all(out, chunk)?;
            }
            chunks.push(hash);
            done += len as u64;
        }
        if let Some(out) = output {
            out.sync_all()?;
        }
        files.push(ManifestFile {
            path,
            size,
            blake3: whole.finalize(),
            chunks,
        });
    }
    let manifest = Manifest {
        package_id: package_id.to_owned(),
        title: format!("generated {total} bytes"),
        chunk_size: CHUNK_SIZE,
        files,
        total_bytes: total,
    };
    // The same checks as a manifest from the content service or a drive.
    Manifest::from_json(manifest.to_json().as_bytes())?;
    Ok(manifest)
}

/// A simulated kiosk in `data_dir` with one bay per drive id, each a blank READY drive of
/// `capacity` bytes.
pub async fn kiosk(
    data_dir: &Path,
    drives: &[&str],
    capacity: u64,
) -> anyhow::Result<SimulatedBays> {
    let config = SimulationConfig {
        bays: drives
            .iter()
            .enumerate()
            .map(|(i, id)| SimBayConfig {
                id: format!("A{:02}", i + 1),
                item: Some(SimItemConfig {
                    kind: SimItemKind::Drive,
                    item_id: (*id).to_owned(),
                    capacity_bytes: Some(capacity),
                    content_package_id: None,
                    write_protected: false,
                    charge_percent: None,
                    remote_link: false,
                }),
            })
            .collect(),
        faults: Default::default(),
    };
    Ok(SimulatedBays::open(data_dir, &config).await?)
}
