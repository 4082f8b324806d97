//! The kiosk's chunk cache: content chunks on the kiosk's own disk, addressed by their BLAKE3
//! hash, within a size budget, so a package is downloaded once and provisioned many times.
//!
//! Guarantees:
//! - Layout: a chunk lives in `dir/<hex[0..2]>/<hex>` (`hex` = the 64 lowercase hex digits of
//!   its hash). Nothing else in those shard directories is a chunk.
//! - A chunk file that looks complete is complete: bytes are written to `dir/tmp/`, fsynced,
//!   and only then renamed to their name. A crash mid-write leaves a temp file, never a
//!   short chunk under a chunk's name. (The directory is not fsynced after the rename: losing
//!   a just-renamed chunk in a power cut only makes it missing, which a cache may be.)
//! - Nothing stored is trusted. [`ChunkCache::open`] rebuilds the index from the directory:
//!   it removes temp files, drops files that are empty or larger than [`MAX_CHUNK_BYTES`]
//!   (no chunk can be), ignores (with a warning) names that are not chunk names, and orders
//!   least-recently-used by file modification time. Hashes are not checked at open: that
//!   would read the whole cache (hundreds of GiB on a kiosk) before the agent could start.
//! - Every [`ChunkCache::read`] checks the bytes against the hash: a file that no longer
//!   matches (bit rot, a truncated write from outside, tampering) is deleted and reported as
//!   [`CacheError::Corrupt`]; from then on [`ChunkCache::missing`] lists it, so it is fetched
//!   again. [`ChunkCache::insert`] refuses bytes that do not hash to the given name.
//! - Recency survives restarts through the files' modification times: a read sets its
//!   chunk's mtime to now. Chosen over an access-order file because it needs no second file
//!   kept consistent with the chunks (nothing to repair after a crash) and costs one
//!   metadata write per read, small beside reading up to 64 MiB. Within a run, order is kept
//!   in memory exactly; across restarts it is as good as the clock and mtime resolution.
//! - The cache never holds more than `budget_bytes`: an insert evicts least-recently-used
//!   chunks first, and fails with [`CacheError::Full`] (evicting nothing) when even evicting
//!   every evictable chunk would not make room. A chunk pinned by a live [`CachePin`] is never
//!   evicted. A cache found over budget at open (the budget was lowered) is evicted down to it.
//! - Hashing and file I/O run on tokio's blocking pool; the index is a plain mutex held only
//!   for in-memory bookkeeping, never across an `.await` or a file operation.
//! - One `ChunkCache` per directory (the agent's data-dir lock keeps other agents out); clones
//!   share one cache.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use bytes::Bytes;

/// A chunk's name: the BLAKE3 hash of its bytes.
pub type ChunkHash = blake3::Hash;

/// The largest chunk the contract allows (a package's chunk size is 1 MiB to 64 MiB).
pub const MAX_CHUNK_BYTES: u64 = 64 * 1024 * 1024;

/// The directory under the cache's `dir` where chunks are written before they are renamed.
const TEMP_DIR: &str = "tmp";

/// Why the cache could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Even after evicting every unpinned chunk there is no room: pinned chunks (and the new
    /// one) would need `needed` bytes, more than the budget.
    #[error("chunk cache full: {needed} bytes needed, budget {budget} bytes")]
    Full {
        /// Bytes the cache would have to hold: what is pinned plus the new chunk.
        needed: u64,
        /// The cache's size budget.
        budget: u64,
    },
    /// The bytes do not hash to the chunk's name (on insert: refused; on read: the file was
    /// deleted).
    #[error("chunk {hash} is corrupt: its bytes do not hash to its name")]
    Corrupt {
        /// The chunk.
        hash: ChunkHash,
    },
    /// The chunk is not in the cache (never inserted, evicted, or removed as corrupt).
    #[error("chunk {hash} is not in the cache")]
    Missing {
        /// The chunk.
        hash: ChunkHash,
    },
    /// The chunk is larger than any chunk can be.
    #[error("a chunk of {size} bytes exceeds the largest chunk ({max} bytes)")]
    TooBig {
        /// Its size.
        size: u64,
        /// [`MAX_CHUNK_BYTES`].
        max: u64,
    },
    /// The disk failed; the path says where.
    #[error("chunk cache i/o on {path}: {1}", path = .0.display())]
    Io(PathBuf, #[source] std::io::Error),
}

/// Counters of a cache since it was opened (`chunks`, `bytes` and `budget_bytes` are current).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Chunks held.
    pub chunks: u64,
    /// Bytes held.
    pub bytes: u64,
    /// The size budget.
    pub budget_bytes: u64,
    /// Chunks evicted to make room (at open or by inserts).
    pub evictions: u64,
    /// Chunks written by [`ChunkCache::insert`] (not counting inserts of a chunk already held).
    pub inserted: u64,
    /// Reads that returned verified bytes.
    pub hits: u64,
    /// Chunk files found corrupt by reads, and deleted.
    pub corrupt: u64,
}

/// A content-addressed chunk cache on disk (see the module doc for its guarantees). Cheap to
/// clone; clones share one cache.
#[derive(Clone)]
pub struct ChunkCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ChunkCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ChunkCache({}, {:?})",
            self.inner.dir.display(),
            self.stats()
        )
    }
}

/// Keeps chunks in the cache: while it lives, no chunk with one of its hashes is evicted,
/// whether it was present when pinned or inserted later. Dropping it releases them (other
/// pins of the same hashes still hold).
pub struct CachePin {
    inner: Arc<Inner>,
    hashes: Vec<ChunkHash>,
}

impl std::fmt::Debug for CachePin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachePin")
            .field("chunks", &self.hashes.len())
            .finish()
    }
}

impl CachePin {
    /// The pinned hashes, deduplicated, in the order first given.
    pub fn hashes(&self) -> &[ChunkHash] {
        &self.hashes
    }
}

impl Drop for CachePin {
    fn drop(&mut self) {
        self.inner.index().unpin(&self.hashes);
    }
}

struct Inner {
    dir: PathBuf,
    index: Mutex<Index>,
    /// Serialises renames into place and deletions, so a deletion never removes a file an
    /// insert just put under the same name. Taken only on the blocking pool.
    files: Mutex<()>,
    /// Makes temp file names unique within this process.
    temp_seq: AtomicU64,
}

/// One chunk the cache holds.
#[derive(Clone, Copy)]
struct Entry {
    size: u64,
    /// Recency: larger is more recent. Key in `Index::lru` while unpinned.
    tick: u64,
    /// Which insert (or open) put this file there: a corrupt read removes the entry only if
    /// the file was not replaced meanwhile.
    generation: u64,
}

#[derive(Default)]
struct Index {
    entries: HashMap<ChunkHash, Entry>,
    /// The unpinned entries by recency (oldest first): exactly the eviction candidates.
    lru: BTreeMap<u64, ChunkHash>,
    /// How many live pins hold each hash.
    pins: HashMap<ChunkHash, u32>,
    clock: u64,
    bytes: u64,
    budget: u64,
    evictions: u64,
    inserted: u64,
    hits: u64,
    corrupt: u64,
}

impl Index {
    fn next(&mut self) -> u64 {
        self.clock = self.clock.saturating_add(1);
        self.clock
    }

    fn add(&mut self, hash: ChunkHash, size: u64) {
        let tick = self.next();
        self.entries.insert(
            hash,
            Entry {
                size,
                tick,
                generation: tick,
            },
        );
        self.bytes = self.bytes.saturating_add(size);
        if !self.pins.contains_key(&hash) {
            self.lru.insert(tick, hash);
        }
    }

    fn remove(&mut self, hash: &ChunkHash) -> Option<Entry> {
        let entry = self.entries.remove(hash)?;
        self.lru.remove(&entry.tick);
        self.bytes = self.bytes.saturating_sub(entry.size);
        Some(entry)
    }

    fn touch(&mut self, hash: &ChunkHash) {
        let tick = self.next();
        if let Some(entry) = self.entries.get_mut(hash) {
            if self.lru.remove(&entry.tick).is_some() {
                self.lru.insert(tick, *hash);
            }
            entry.tick = tick;
        }
    }

    /// Removes least-recently-used unpinned entries until `extra` more bytes fit the budget;
    /// returns them. Removes nothing and fails when they would not be enough.
    fn evict_for(&mut self, extra: u64) -> Result<Vec<ChunkHash>, CacheError> {
        let target = self.budget.saturating_sub(extra);
        let mut excess = self.bytes.saturating_sub(target);
        if extra > self.budget {
            excess = u64::MAX;
        }
        let mut victims = Vec::new();
        for hash in self.lru.values() {
            if excess == 0 {
                break;
            }
            let size = self.entries.get(hash).map_or(0, |e| e.size);
            excess = excess.saturating_sub(size);
            victims.push(*hash);
        }
        if excess > 0 {
            let evictable: u64 = self
                .lru
                .values()
                .filter_map(|h| self.entries.get(h))
                .map(|e| e.size)
                .sum();
            return Err(CacheError::Full {
                needed: self.bytes.saturating_sub(evictable).saturating_add(extra),
                budget: self.budget,
            });
        }
        for hash in &victims {
            self.remove(hash);
        }
        self.evictions = self.evictions.saturating_add(victims.len() as u64);
        Ok(victims)
    }

    fn pin(&mut self, hashes: &[ChunkHash]) {
        for hash in hashes {
            let count = self.pins.entry(*hash).or_insert(0);
            *count = count.saturating_add(1);
            if *count == 1
                && let Some(entry) = self.entries.get(hash)
            {
                self.lru.remove(&entry.tick);
            }
        }
    }

    fn unpin(&mut self, hashes: &[ChunkHash]) {
        for hash in hashes {
            let Some(count) = self.pins.get_mut(hash) else {
                continue;
            };
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.pins.remove(hash);
                if let Some(entry) = self.entries.get(hash) {
                    self.lru.insert(entry.tick, *hash);
                }
            }
        }
    }
}

impl ChunkCache {
    /// Opens (creating it if needed) the cache in `dir` with a budget of `budget_bytes`.
    /// Rebuilds the index from the files as the module doc says, and evicts down to the
    /// budget. The agent passes `content.cache_dir` (default `data_dir/chunk-cache`) and
    /// `content.cache_budget_bytes` from its config.
    pub async fn open(dir: PathBuf, budget_bytes: u64) -> Result<Self, CacheError> {
        let inner = blocking(move || Inner::open(dir, budget_bytes)).await?;
        let cache = ChunkCache {
            inner: Arc::new(inner),
        };
        let stats = cache.stats();
        tracing::info!(
            dir = %cache.inner.dir.display(),
            chunks = stats.chunks,
            bytes = stats.bytes,
            budget_bytes,
            evicted = stats.evictions,
            "chunk cache opened"
        );
        Ok(cache)
    }

    /// The hashes among `hashes` the cache does not hold, in their first order, each once.
    pub fn missing(&self, hashes: &[ChunkHash]) -> Vec<ChunkHash> {
        let index = self.inner.index();
        let mut seen = HashSet::with_capacity(hashes.len());
        hashes
            .iter()
            .filter(|h| seen.insert(**h) && !index.entries.contains_key(h))
            .copied()
            .collect()
    }

    /// Pins `hashes` (present ones and ones inserted later) until the returned pin drops.
    pub fn pin(&self, hashes: &[ChunkHash]) -> CachePin {
        let mut seen = HashSet::with_capacity(hashes.len());
        let hashes: Vec<ChunkHash> = hashes
            .iter()
            .filter(|h| seen.insert(**h))
            .copied()
            .collect();
        self.inner.index().pin(&hashes);
        CachePin {
            inner: Arc::clone(&self.inner),
            hashes,
        }
    }

    /// Stores `bytes` as chunk `hash`: refuses them ([`CacheError::Corrupt`]) unless they hash
    /// to it, evicts least-recently-used unpinned chunks to fit the budget, and fails with
    /// [`CacheError::Full`] (evicting nothing) when that cannot make room. Storing a chunk
    /// already held only marks it used. Durable once it returns (see the module doc).
    pub async fn insert(&self, hash: ChunkHash, bytes: Bytes) -> Result<(), CacheError> {
        let size = bytes.len() as u64;
        if size > MAX_CHUNK_BYTES {
            return Err(CacheError::TooBig {
                size,
                max: MAX_CHUNK_BYTES,
            });
        }
        let inner = Arc::clone(&self.inner);
        blocking(move || inner.insert(hash, &bytes)).await
    }

    /// The bytes of chunk `hash`, checked against the hash, and marks it used. A file that
    /// does not match is deleted and [`CacheError::Corrupt`] returned; a chunk not held is
    /// [`CacheError::Missing`].
    pub async fn read(&self, hash: &ChunkHash) -> Result<Bytes, CacheError> {
        let hash = *hash;
        let entry = self
            .inner
            .index()
            .entries
            .get(&hash)
            .copied()
            .ok_or(CacheError::Missing { hash })?;
        let inner = Arc::clone(&self.inner);
        blocking(move || inner.read(hash, entry)).await
    }

    /// Current size and counters.
    pub fn stats(&self) -> CacheStats {
        let index = self.inner.index();
        CacheStats {
            chunks: index.entries.len() as u64,
            bytes: index.bytes,
            budget_bytes: index.budget,
            evictions: index.evictions,
            inserted: index.inserted,
            hits: index.hits,
            corrupt: index.corrupt,
        }
    }
}

impl Inner {
    fn index(&self) -> MutexGuard<'_, Index> {
        // Every critical section leaves the index consistent (no panics inside), so a poisoned
        // lock holds a usable index.
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn files(&self) -> MutexGuard<'_, ()> {
        self.files.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn path_of(&self, hash: &ChunkHash) -> PathBuf {
        let hex = hash.to_hex();
        self.dir.join(&hex[..2]).join(hex.as_str())
    }

    fn open(dir: PathBuf, budget: u64) -> Result<Self, CacheError> {
        let temp = dir.join(TEMP_DIR);
        std::fs::create_dir_all(&temp).map_err(|e| CacheError::Io(temp.clone(), e))?;
        for entry in read_dir(&temp)? {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                tracing::warn!(path = %entry.path().display(), "not a temp file; left alone");
                continue;
            }
            remove_file(&entry.path())?;
        }
        let mut found = Vec::new();
        for shard in read_dir(&dir)? {
            let shard_name = shard.file_name();
            let Some(shard_name) = shard_name.to_str().filter(|n| is_shard_name(n)) else {
                continue;
            };
            let path = shard.path();
            if !path.is_dir() {
                continue;
            }
            for file in read_dir(&path)? {
                scan_chunk_file(&file, shard_name, &mut found)?;
            }
        }
        // Oldest first; equal times in hash order, so a rebuild is deterministic.
        found.sort_by(|a, b| (a.2, a.0.as_bytes()).cmp(&(b.2, b.0.as_bytes())));
        let mut index = Index {
            budget,
            ..Index::default()
        };
        for (hash, size, _) in found {
            index.add(hash, size);
        }
        let victims = index.evict_for(0)?;
        let inner = Inner {
            dir,
            index: Mutex::new(index),
            files: Mutex::new(()),
            temp_seq: AtomicU64::new(0),
        };
        inner.delete(&victims);
        Ok(inner)
    }

    fn insert(&self, hash: ChunkHash, bytes: &[u8]) -> Result<(), CacheError> {
        if blake3::hash(bytes) != hash {
            return Err(CacheError::Corrupt { hash });
        }
        {
            let mut index = self.index();
            if index.entries.contains_key(&hash) {
                index.touch(&hash);
                return Ok(());
            }
        }
        let temp = self.write_temp(&hash, bytes)?;
        let result = self.commit(hash, bytes.len() as u64, &temp);
        if result.is_err() {
            // Best effort: open removes leftovers anyway.
            let _ = std::fs::remove_file(&temp);
        }
        result
    }

    fn write_temp(&self, hash: &ChunkHash, bytes: &[u8]) -> Result<PathBuf, CacheError> {
        let seq = self.temp_seq.fetch_add(1, Ordering::Relaxed);
        let temp = self
            .dir
            .join(TEMP_DIR)
            .join(format!("{}-{seq}.tmp", hash.to_hex()));
        let io = |e| CacheError::Io(temp.clone(), e);
        let mut file = File::create(&temp).map_err(io)?;
        file.write_all(bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(temp)
    }

    /// Makes room, then renames the synced temp file into place and indexes it.
    fn commit(&self, hash: ChunkHash, size: u64, temp: &Path) -> Result<(), CacheError> {
        let _files = self.files();
        let victims = {
            let mut index = self.index();
            if index.entries.contains_key(&hash) {
                // Another insert of the same chunk won the race.
                index.touch(&hash);
                return Ok(());
            }
            // No other commit runs until this one has indexed its chunk (`files` is held), so
            // the room made here stays free for it.
            index.evict_for(size)?
        };
        self.delete_locked(&victims);
        let path = self.path_of(&hash);
        let renamed = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::rename(temp, &path));
        renamed.map_err(|e| CacheError::Io(path, e))?;
        let mut index = self.index();
        index.add(hash, size);
        index.inserted = index.inserted.saturating_add(1);
        Ok(())
    }

    fn read(&self, hash: ChunkHash, entry: Entry) -> Result<Bytes, CacheError> {
        let path = self.path_of(&hash);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                // Evicted meanwhile, or deleted from outside.
                self.forget_if_same(&hash, entry.generation, false);
                return Err(CacheError::Missing { hash });
            }
            Err(e) => return Err(CacheError::Io(path, e)),
        };
        // One byte more than expected reveals a file that grew; memory stays bounded.
        let mut bytes = Vec::with_capacity(usize::try_from(entry.size).unwrap_or(0));
        (&mut file)
            .take(entry.size.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| CacheError::Io(path.clone(), e))?;
        if bytes.len() as u64 != entry.size || blake3::hash(&bytes) != hash {
            tracing::warn!(chunk = %hash, path = %path.display(), "corrupt chunk file removed");
            self.forget_if_same(&hash, entry.generation, true);
            return Err(CacheError::Corrupt { hash });
        }
        if let Err(error) = file.set_modified(SystemTime::now()) {
            tracing::debug!(chunk = %hash, %error, "cannot record the chunk's use in its mtime");
        }
        let mut index = self.index();
        index.touch(&hash);
        index.hits = index.hits.saturating_add(1);
        Ok(Bytes::from(bytes))
    }

    /// Drops `hash` from the index (and its file when `delete`), unless another insert
    /// replaced the file read as `generation` meanwhile.
    fn forget_if_same(&self, hash: &ChunkHash, generation: u64, delete: bool) {
        let _files = self.files();
        {
            let mut index = self.index();
            if index.entries.get(hash).map(|e| e.generation) != Some(generation) {
                return;
            }
            index.remove(hash);
            if delete {
                index.corrupt = index.corrupt.saturating_add(1);
            }
        }
        if delete {
            self.delete_locked(&[*hash]);
        }
    }

    fn delete(&self, hashes: &[ChunkHash]) {
        let _files = self.files();
        self.delete_locked(hashes);
    }

    /// Deletes the files of chunks already dropped from the index. A failure only leaves a
    /// stray file (warned about) that the next open indexes again.
    fn delete_locked(&self, hashes: &[ChunkHash]) {
        for hash in hashes {
            let path = self.path_of(hash);
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::debug!(chunk = %hash, "chunk evicted"),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::warn!(chunk = %hash, path = %path.display(), %error, "cannot delete chunk file");
                }
            }
        }
    }
}

/// Whether `name` is a shard directory's name: two lowercase hex digits.
fn is_shard_name(name: &str) -> bool {
    name.len() == 2
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Looks at one file of a shard directory at open: a chunk is pushed to `found` as
/// (hash, size, mtime); a temp file and a file no chunk can be are removed; anything else is
/// left alone with a warning (the directory may have been misconfigured to hold other files).
fn scan_chunk_file(
    file: &std::fs::DirEntry,
    shard: &str,
    found: &mut Vec<(ChunkHash, u64, SystemTime)>,
) -> Result<(), CacheError> {
    let path = file.path();
    let name = file.file_name();
    let name = name.to_str().unwrap_or_default();
    if name.ends_with(".tmp") {
        return remove_file(&path);
    }
    let hash = blake3::Hash::from_hex(name)
        .ok()
        .filter(|h| h.to_hex().as_str() == name && name.starts_with(shard));
    let Some(hash) = hash else {
        tracing::warn!(path = %path.display(), "not a chunk file; left alone");
        return Ok(());
    };
    let metadata = file
        .metadata()
        .map_err(|e| CacheError::Io(path.clone(), e))?;
    if !metadata.is_file() {
        tracing::warn!(path = %path.display(), "not a chunk file; left alone");
        return Ok(());
    }
    let size = metadata.len();
    if size == 0 || size > MAX_CHUNK_BYTES {
        tracing::warn!(chunk = %hash, size, "chunk file of impossible size removed");
        return remove_file(&path);
    }
    let mtime = metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    found.push((hash, size, mtime));
    Ok(())
}

fn read_dir(dir: &Path) -> Result<Vec<std::fs::DirEntry>, CacheError> {
    let io = |e| CacheError::Io(dir.to_owned(), e);
    std::fs::read_dir(dir)
        .map_err(io)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io)
}

fn remove_file(path: &Path) -> Result<(), CacheError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CacheError::Io(path.to_owned(), e)),
    }
}

/// Runs `work` on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, CacheError> + Send + 'static,
) -> Result<T, CacheError> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        Err(CacheError::Io(
            PathBuf::new(),
            std::io::Error::other(format!("chunk cache task failed: {e}")),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(fill: u8, len: usize) -> (ChunkHash, Bytes) {
        let bytes = Bytes::from(vec![fill; len]);
        (blake3::hash(&bytes), bytes)
    }

    async fn open(dir: &Path, budget: u64) -> ChunkCache {
        ChunkCache::open(dir.to_owned(), budget).await.unwrap()
    }

    /// Chunks a, b and c, 100 bytes each.
    fn abc() -> [(ChunkHash, Bytes); 3] {
        [chunk(b'a', 100), chunk(b'b', 100), chunk(b'c', 100)]
    }

    /// A cache in `dir` holding `chunks`, inserted in order.
    async fn holding(dir: &Path, budget: u64, chunks: &[(ChunkHash, Bytes)]) -> ChunkCache {
        let cache = open(dir, budget).await;
        for (hash, bytes) in chunks {
            cache.insert(*hash, bytes.clone()).await.unwrap();
        }
        cache
    }

    fn set_mtime(path: &Path, secs: u64) {
        let time = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(time)
            .unwrap();
    }

    #[tokio::test]
    async fn an_inserted_chunk_reads_back_from_its_content_address() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), 1 << 20).await;
        let (hash, bytes) = chunk(7, 1000);
        assert_eq!(cache.missing(&[hash, hash]), vec![hash]);
        cache.insert(hash, bytes.clone()).await.unwrap();
        cache.insert(hash, bytes.clone()).await.unwrap();
        assert_eq!(cache.read(&hash).await.unwrap(), bytes);
        assert!(cache.missing(&[hash]).is_empty());
        let hex = hash.to_hex();
        assert!(dir.path().join(&hex[..2]).join(hex.as_str()).is_file());
        let stats = cache.stats();
        assert_eq!(
            (stats.chunks, stats.bytes, stats.inserted, stats.hits),
            (1, 1000, 1, 1)
        );
    }

    #[tokio::test]
    async fn bytes_that_do_not_hash_to_the_name_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), 1 << 20).await;
        let (hash, _) = chunk(1, 100);
        let (_, other) = chunk(2, 100);
        let error = cache.insert(hash, other).await.unwrap_err();
        assert!(
            matches!(error, CacheError::Corrupt { hash: h } if h == hash),
            "{error}"
        );
        assert_eq!(cache.missing(&[hash]), vec![hash]);
        assert_eq!(cache.stats().chunks, 0);
    }

    #[tokio::test]
    async fn a_chunk_larger_than_any_chunk_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), u64::MAX).await;
        let big = Bytes::from(vec![0; MAX_CHUNK_BYTES as usize + 1]);
        let error = cache.insert(blake3::hash(&big), big).await.unwrap_err();
        assert!(matches!(error, CacheError::TooBig { .. }), "{error}");
    }

    #[tokio::test]
    async fn a_chunk_corrupted_on_disk_is_reported_removed_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), 1 << 20).await;
        let (hash, bytes) = chunk(3, 500);
        cache.insert(hash, bytes).await.unwrap();
        let path = cache.inner.path_of(&hash);
        let mut flipped = std::fs::read(&path).unwrap();
        flipped[10] ^= 0xff;
        std::fs::write(&path, flipped).unwrap();

        let error = cache.read(&hash).await.unwrap_err();
        assert!(
            matches!(error, CacheError::Corrupt { hash: h } if h == hash),
            "{error}"
        );
        assert!(!path.exists());
        assert_eq!(cache.missing(&[hash]), vec![hash]);
        let stats = cache.stats();
        assert_eq!((stats.chunks, stats.bytes, stats.corrupt), (0, 0, 1));
        assert!(matches!(
            cache.read(&hash).await,
            Err(CacheError::Missing { .. })
        ));
    }

    #[tokio::test]
    async fn eviction_takes_the_least_recently_used_unpinned_chunk_and_refuses_when_pins_fill_the_budget()
     {
        let dir = tempfile::tempdir().unwrap();
        // Room for three chunks of 100 bytes: less than two packages of two chunks.
        let [(a, _), (b, _), (c, _)] = abc();
        let cache = holding(dir.path(), 300, &abc()).await;
        let (d, d_bytes) = chunk(b'd', 100);
        let (e, e_bytes) = chunk(b'e', 100);
        cache.read(&a).await.unwrap();
        // Order of use, oldest first: b, c, a. Pinning b leaves c the oldest evictable one.
        let pin_b = cache.pin(&[b, b]);
        assert_eq!(pin_b.hashes(), &[b]);
        cache.insert(d, d_bytes.clone()).await.unwrap();
        assert_eq!(cache.missing(&[a, b, c, d]), vec![c]);
        assert_eq!(cache.stats().evictions, 1);

        // Pin everything held: nothing can make room for e, and nothing is evicted trying.
        let pin_all = cache.pin(&[a, d]);
        let error = cache.insert(e, e_bytes.clone()).await.unwrap_err();
        assert!(
            matches!(
                error,
                CacheError::Full {
                    needed: 400,
                    budget: 300
                }
            ),
            "{error}"
        );
        assert!(cache.missing(&[a, b, d]).is_empty());

        // Releasing a pin makes its chunks evictable again, oldest first (a, then d).
        drop(pin_all);
        cache.insert(e, e_bytes).await.unwrap();
        assert_eq!(cache.missing(&[a, b, d, e]), vec![a]);
        drop(pin_b);
        assert_eq!(cache.stats().bytes, 300);
    }

    #[tokio::test]
    async fn a_pin_taken_before_insert_protects_the_chunk_once_inserted() {
        let dir = tempfile::tempdir().unwrap();
        let [(a, _), (b, _), (c, _)] = abc();
        let cache = open(dir.path(), 200).await;
        let _pin = cache.pin(&[a]);
        for (hash, bytes) in abc() {
            cache.insert(hash, bytes).await.unwrap();
        }
        assert_eq!(cache.missing(&[a, b, c]), vec![b]);
    }

    #[tokio::test]
    async fn reopening_after_a_crash_rebuilds_the_index_and_catches_the_truncated_chunk_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let [(a, a_bytes), (b, b_bytes), (c, c_bytes)] = abc();
        let paths = {
            let cache = holding(dir.path(), 1000, &abc()).await;
            [a, b, c].map(|h| cache.inner.path_of(&h))
        };
        // The crash: a temp file left mid-write, a chunk file cut short, an impossible one.
        let temp = dir.path().join(TEMP_DIR).join("leftover.tmp");
        std::fs::write(&temp, b"half a chunk").unwrap();
        std::fs::write(&paths[1], &b_bytes[..40]).unwrap();
        let (z, _) = chunk(b'z', 10);
        let empty = dir.path().join(&z.to_hex()[..2]).join(z.to_hex().as_str());
        std::fs::create_dir_all(empty.parent().unwrap()).unwrap();
        std::fs::write(&empty, b"").unwrap();
        let stranger = dir.path().join("notes.txt");
        std::fs::write(&stranger, b"not ours").unwrap();

        let cache = open(dir.path(), 1000).await;
        assert!(!temp.exists());
        assert!(!empty.exists());
        assert!(stranger.exists());
        assert_eq!(cache.stats().chunks, 3);
        assert_eq!(cache.stats().bytes, 240);
        assert_eq!(cache.read(&a).await.unwrap(), a_bytes);
        assert!(matches!(cache.read(&b).await, Err(CacheError::Corrupt { hash }) if hash == b));
        assert_eq!(cache.missing(&[a, b, c]), vec![b]);
        assert_eq!(cache.read(&c).await.unwrap(), c_bytes);
    }

    #[tokio::test]
    async fn a_lowered_budget_evicts_at_open_oldest_modification_first() {
        let dir = tempfile::tempdir().unwrap();
        let [(a, _), (b, _), (c, _)] = abc();
        {
            let cache = holding(dir.path(), 1000, &abc()).await;
            set_mtime(&cache.inner.path_of(&a), 3_000);
            set_mtime(&cache.inner.path_of(&b), 1_000);
            set_mtime(&cache.inner.path_of(&c), 2_000);
        }
        let cache = open(dir.path(), 150).await;
        assert_eq!(cache.missing(&[a, b, c]), vec![b, c]);
        let stats = cache.stats();
        assert_eq!((stats.chunks, stats.bytes, stats.evictions), (1, 100, 2));
        assert!(!cache.inner.path_of(&b).exists());
    }

    #[tokio::test]
    async fn a_read_renews_the_chunks_place_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let [(a, _), (b, _), _] = abc();
        {
            let cache = holding(dir.path(), 1000, &abc()[..2]).await;
            set_mtime(&cache.inner.path_of(&a), 1_000);
            set_mtime(&cache.inner.path_of(&b), 2_000);
            cache.read(&a).await.unwrap();
        }
        let cache = open(dir.path(), 100).await;
        assert_eq!(cache.missing(&[a, b]), vec![b]);
    }
}
