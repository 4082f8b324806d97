//! The download step of provisioning: fetch into the chunk cache every chunk of a package
//! the cache lacks.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio_util::sync::CancellationToken;

use super::{ChunkHash, ContentSource, MAX_HASHES_PER_CALL, Manifest, Piece, SourceError};
use crate::cache::{CacheError, CachePin, ChunkCache};
use crate::link::Backoff;

/// A chunk stream that sends nothing for this long is treated as broken (and resumed).
pub const PIECE_TIMEOUT: Duration = Duration::from_secs(60);
/// First ceiling of the (full-jitter) backoff between attempts after a transient failure.
pub const RETRY_INITIAL: Duration = Duration::from_millis(500);
/// Cap of that backoff.
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// What a download did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DownloadReport {
    /// Chunks fetched and stored (each distinct chunk once, however often refetched).
    pub chunks_downloaded: u64,
    /// Their bytes.
    pub bytes_downloaded: u64,
    /// Distinct chunks of the package the cache already held.
    pub chunks_cached: u64,
}

/// Why a download stopped. Nothing fetched is lost: stored chunks stay in the cache (unpinned)
/// and a later call fetches only the rest.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The source failed and retrying did not help (`retries` transient failures in a row
    /// without a byte of progress, or a refusal, or an answer out of contract).
    #[error("chunk download failed: {0}")]
    Failed(SourceError),
    /// A chunk's bytes did not hash to its name (or the service reported it lost) on every one
    /// of `attempts` fetches.
    #[error("chunk {hash} arrived corrupt {attempts} times")]
    ChunkCorrupt {
        /// The chunk.
        hash: ChunkHash,
        /// Fetches made, all corrupt (1 + retries).
        attempts: u32,
    },
    /// The cache cannot hold the package beside what other pins hold.
    #[error(
        "the chunk cache cannot hold the package: {needed} bytes needed, budget {budget} bytes"
    )]
    CacheFull {
        /// Bytes that would have to be held.
        needed: u64,
        /// The cache's budget.
        budget: u64,
    },
    /// The cache's disk failed.
    #[error("chunk cache: {0}")]
    Cache(CacheError),
    /// `cancel` fired.
    #[error("download cancelled")]
    Cancelled,
}

/// Fetches into `cache` every chunk of `manifest` it lacks, and returns with the report a pin
/// on every chunk of the package, so the caller keeps them until they are copied.
///
/// Guarantees:
/// - The package's chunks are pinned first, so chunks already held are not evicted while the
///   others arrive; a package larger than the cache's whole budget fails at once with
///   [`DownloadError::CacheFull`], before anything is fetched.
/// - Chunks are asked in manifest order, each once, at most [`MAX_HASHES_PER_CALL`] per call.
///   A stream that breaks, ends early or stalls for [`PIECE_TIMEOUT`] is resumed: the missing
///   chunks are asked again, the first with the offset of the bytes already held.
/// - A chunk is stored only once its bytes hash to its name (checked by the cache). One that
///   does not, is longer or shorter than the manifest says, or that the service reports lost
///   (DATA_LOSS naming it) is fetched again from its start, at most `retries` more times;
///   then [`DownloadError::ChunkCorrupt`] names it.
/// - Transient failures ([`SourceError::Unavailable`]) are retried after a full-jitter backoff
///   ([`RETRY_INITIAL`] doubling to [`RETRY_MAX`]), up to `retries` in a row without progress.
///   Refusals and answers out of contract fail at once.
/// - `on_bytes(done, total)` is called after every piece; `total` is the bytes of the chunks
///   missing at the start, `done` what is held of them (it goes back when a corrupt chunk is
///   discarded). The caller rate-limits what it reports.
/// - Memory: one chunk being assembled plus the piece in hand.
/// - Chunks found present are not re-hashed here; [`ChunkCache::read`] checks them when they
///   are copied (and removes a corrupt one, which a second call then fetches).
pub async fn download_missing<S: ContentSource>(
    source: &S,
    cache: &ChunkCache,
    manifest: &Manifest,
    retries: u32,
    on_bytes: impl FnMut(u64, u64) + Send,
    cancel: &CancellationToken,
) -> Result<(DownloadReport, CachePin), DownloadError> {
    let wanted = manifest.unique_chunks_with_len();
    let hashes: Vec<ChunkHash> = wanted.iter().map(|(hash, _)| *hash).collect();
    let pin = cache.pin(&hashes);
    let package_bytes = wanted
        .iter()
        .map(|(_, len)| len)
        .fold(0u64, |a, b| a.saturating_add(*b));
    let budget = cache.stats().budget_bytes;
    if package_bytes > budget {
        return Err(DownloadError::CacheFull {
            needed: package_bytes,
            budget,
        });
    }
    let missing: HashSet<ChunkHash> = cache.missing(&hashes).into_iter().collect();
    let todo: VecDeque<Due> = wanted
        .iter()
        .filter(|(hash, _)| missing.contains(hash))
        .map(|&(hash, len)| Due { hash, len })
        .collect();
    let total = todo.iter().map(|d| d.len).fold(0u64, u64::saturating_add);
    let mut download = Download {
        source,
        cache,
        package_id: &manifest.package_id,
        retries,
        cancel,
        on_bytes,
        report: DownloadReport {
            chunks_cached: (wanted.len() - todo.len()) as u64,
            ..DownloadReport::default()
        },
        todo,
        held: Vec::new(),
        done: 0,
        total,
        corrupt: HashMap::new(),
        failures: 0,
        backoff: Backoff::new(RETRY_INITIAL, RETRY_MAX),
    };
    tracing::info!(
        package_id = %manifest.package_id,
        chunks = download.todo.len(),
        bytes = total,
        cached = download.report.chunks_cached,
        "downloading missing chunks"
    );
    download.run().await?;
    tracing::info!(
        package_id = %manifest.package_id,
        chunks = download.report.chunks_downloaded,
        bytes = download.report.bytes_downloaded,
        "chunks downloaded"
    );
    Ok((download.report, pin))
}

/// A chunk still to fetch.
#[derive(Clone, Copy)]
struct Due {
    hash: ChunkHash,
    len: u64,
}

/// How one request ended without failing the download.
enum RoundEnd {
    /// Progress was made (or a corrupt chunk discarded): ask for what is left.
    Again,
    /// A transient failure: back off, then resume.
    Broken(SourceError),
}

/// What a piece did to the chunk being assembled.
enum Taken {
    Partial,
    Stored,
    Discarded,
}

struct Download<'a, S, F> {
    source: &'a S,
    cache: &'a ChunkCache,
    package_id: &'a str,
    retries: u32,
    cancel: &'a CancellationToken,
    on_bytes: F,
    report: DownloadReport,
    /// Chunks not yet stored, in order; the front one is being assembled in `held`.
    todo: VecDeque<Due>,
    held: Vec<u8>,
    done: u64,
    total: u64,
    /// Discarded fetches per chunk.
    corrupt: HashMap<ChunkHash, u32>,
    /// Transient failures since the last piece arrived.
    failures: u32,
    backoff: Backoff,
}

impl<S: ContentSource, F: FnMut(u64, u64) + Send> Download<'_, S, F> {
    async fn run(&mut self) -> Result<(), DownloadError> {
        while !self.todo.is_empty() {
            match self.round().await? {
                RoundEnd::Again => {}
                RoundEnd::Broken(error) => self.back_off(error).await?,
            }
        }
        Ok(())
    }

    /// One DownloadChunks call, read until its chunks are stored or it fails.
    async fn round(&mut self) -> Result<RoundEnd, DownloadError> {
        let hashes: Vec<ChunkHash> = self
            .todo
            .iter()
            .take(MAX_HASHES_PER_CALL)
            .map(|due| due.hash)
            .collect();
        let asked = hashes.len();
        let offset = self.held.len() as u64;
        let opening = self.source.chunks(self.package_id, hashes, offset);
        let mut stream = match self.within_timeout(opening).await? {
            Err(broken) => return Ok(RoundEnd::Broken(broken)),
            Ok(Err(error)) => return self.failed(error),
            Ok(Ok(stream)) => stream,
        };
        let mut stored = 0;
        while stored < asked {
            let piece = match self.next_piece(&mut stream).await? {
                Err(broken) => return Ok(RoundEnd::Broken(broken)),
                Ok(Err(error)) => return self.failed(error),
                Ok(Ok(piece)) => piece,
            };
            match self.take(piece).await? {
                Taken::Partial => {}
                Taken::Stored => stored += 1,
                Taken::Discarded => return Ok(RoundEnd::Again),
            }
        }
        Ok(RoundEnd::Again)
    }

    async fn next_piece(
        &self,
        stream: &mut BoxStream<'static, Result<Piece, SourceError>>,
    ) -> Result<Result<Result<Piece, SourceError>, SourceError>, DownloadError> {
        Ok(match self.within_timeout(stream.next()).await? {
            Ok(Some(item)) => Ok(item),
            Ok(None) => Err(SourceError::Unavailable(
                "the chunk stream ended before every chunk asked".into(),
            )),
            Err(stalled) => Err(stalled),
        })
    }

    /// `work`, unless `cancel` fires first (an error) or it takes [`PIECE_TIMEOUT`] (`Err`
    /// inside: a stalled stream, transient).
    async fn within_timeout<T>(
        &self,
        work: impl Future<Output = T>,
    ) -> Result<Result<T, SourceError>, DownloadError> {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Err(DownloadError::Cancelled),
            result = tokio::time::timeout(PIECE_TIMEOUT, work) => Ok(result.map_err(|_| {
                SourceError::Unavailable(format!(
                    "the content service sent nothing for {} s",
                    PIECE_TIMEOUT.as_secs()
                ))
            })),
        }
    }

    /// A source error: transient ones end the round, a reported lost chunk is refetched,
    /// anything else fails the download.
    fn failed(&mut self, error: SourceError) -> Result<RoundEnd, DownloadError> {
        match error {
            SourceError::Unavailable(_) => Ok(RoundEnd::Broken(error)),
            SourceError::DataLoss {
                hash: Some(hash), ..
            } if self.todo.front().is_some_and(|due| due.hash == hash) => {
                tracing::warn!(chunk = %hash, %error, "content service reports a chunk lost");
                self.discard_front(self.held.len() as u64)?;
                Ok(RoundEnd::Again)
            }
            error => Err(DownloadError::Failed(error)),
        }
    }

    /// Adds `piece` to the chunk being assembled; stores the chunk on its last piece.
    async fn take(&mut self, piece: Piece) -> Result<Taken, DownloadError> {
        let malformed = |message: String| DownloadError::Failed(SourceError::Malformed(message));
        let Some(due) = self.todo.front().copied() else {
            return Err(malformed("a piece after every chunk asked".into()));
        };
        if piece.hash != due.hash {
            return Err(malformed(format!(
                "a piece of chunk {} while chunk {} was due",
                piece.hash, due.hash
            )));
        }
        let held = self.held.len() as u64;
        if piece.offset != held {
            return Err(malformed(format!(
                "a piece of chunk {} at offset {} while {held} bytes are held",
                due.hash, piece.offset
            )));
        }
        if piece.data.is_empty() && !piece.last {
            return Err(malformed(format!("an empty piece of chunk {}", due.hash)));
        }
        let len = piece.data.len() as u64;
        if held.saturating_add(len) > due.len {
            tracing::warn!(chunk = %due.hash, "chunk longer than the manifest says");
            self.discard_front(held)?;
            return Ok(Taken::Discarded);
        }
        if self.held.is_empty() {
            self.held
                .reserve_exact(usize::try_from(due.len).unwrap_or_default());
        }
        self.held.extend_from_slice(&piece.data);
        self.done = self.done.saturating_add(len);
        self.failures = 0;
        self.backoff.reset();
        (self.on_bytes)(self.done, self.total);
        if !piece.last {
            return Ok(Taken::Partial);
        }
        if self.held.len() as u64 != due.len {
            tracing::warn!(chunk = %due.hash, "chunk shorter than the manifest says");
            self.discard_front(self.held.len() as u64)?;
            return Ok(Taken::Discarded);
        }
        let bytes = Bytes::from(std::mem::take(&mut self.held));
        match self.cache.insert(due.hash, bytes).await {
            Ok(()) => {
                self.todo.pop_front();
                self.report.chunks_downloaded = self.report.chunks_downloaded.saturating_add(1);
                self.report.bytes_downloaded = self.report.bytes_downloaded.saturating_add(due.len);
                Ok(Taken::Stored)
            }
            Err(CacheError::Corrupt { .. }) => {
                tracing::warn!(chunk = %due.hash, "chunk arrived corrupt");
                self.discard_front(due.len)?;
                Ok(Taken::Discarded)
            }
            Err(CacheError::Full { needed, budget }) => {
                Err(DownloadError::CacheFull { needed, budget })
            }
            Err(error) => Err(DownloadError::Cache(error)),
        }
    }

    /// Drops what is held of the front chunk (`received` bytes counted as done) so it is
    /// fetched again from its start; fails once it was discarded more than `retries` times.
    fn discard_front(&mut self, received: u64) -> Result<(), DownloadError> {
        let Some(due) = self.todo.front().copied() else {
            return Ok(());
        };
        self.held = Vec::new();
        self.done = self.done.saturating_sub(received);
        (self.on_bytes)(self.done, self.total);
        let attempts = self.corrupt.entry(due.hash).or_insert(0);
        *attempts = attempts.saturating_add(1);
        if *attempts > self.retries {
            return Err(DownloadError::ChunkCorrupt {
                hash: due.hash,
                attempts: *attempts,
            });
        }
        tracing::info!(chunk = %due.hash, attempt = *attempts, "fetching the chunk again");
        Ok(())
    }

    /// Waits before resuming after `error`, or fails when that was one failure too many.
    async fn back_off(&mut self, error: SourceError) -> Result<(), DownloadError> {
        self.failures = self.failures.saturating_add(1);
        if self.failures > self.retries {
            return Err(DownloadError::Failed(error));
        }
        let delay = self.backoff.next_delay(&mut rand::rng());
        tracing::warn!(
            package_id = %self.package_id,
            %error,
            attempt = self.failures,
            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "chunk download interrupted; resuming"
        );
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Err(DownloadError::Cancelled),
            () = tokio::time::sleep(delay) => Ok(()),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;

    use futures::stream;

    use super::*;
    use crate::content_source::manifest::MIN_CHUNK_SIZE;
    use crate::content_source::manifest::tests::proto_manifest;

    const MIB: usize = MIN_CHUNK_SIZE as usize;
    const PIECE: usize = MIB / 4;

    /// `len` bytes that differ from chunk to chunk (so no two chunks share a hash).
    pub(crate) fn noise(seed: &str, len: usize) -> Vec<u8> {
        let mut bytes = vec![0; len];
        blake3::Hasher::new()
            .update(seed.as_bytes())
            .finalize_xof()
            .fill(&mut bytes);
        bytes
    }

    /// Two files, five distinct chunks: 1 MiB, 1 MiB, 0.5 MiB, then 1 MiB and 5 bytes.
    fn package() -> (Manifest, Vec<(String, Vec<u8>)>) {
        let files = vec![
            ("film/a.bin".to_owned(), noise("a", 2 * MIB + MIB / 2)),
            ("film/b.bin".to_owned(), noise("b", MIB + 5)),
        ];
        let refs: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(p, b)| (p.as_str(), b.as_slice()))
            .collect();
        (Manifest::try_from(proto_manifest(&refs)).unwrap(), files)
    }

    /// A content service in memory, serving pieces of [`PIECE`] bytes, with scripted faults.
    #[derive(Default)]
    pub(crate) struct FakeSource {
        chunks: HashMap<ChunkHash, Bytes>,
        /// Break the next stream (once) after this many pieces.
        break_after_pieces: Mutex<Option<usize>>,
        /// Serve these chunks with a flipped byte this many more times.
        pub(crate) corrupt: Mutex<HashMap<ChunkHash, u32>>,
        /// Answer DATA_LOSS naming these chunks this many more times, instead of their bytes.
        lost: Mutex<HashMap<ChunkHash, u32>>,
        /// Answer this many more calls UNAVAILABLE.
        unavailable: Mutex<u32>,
        /// Every call: (first hash, how many, first_chunk_offset).
        calls: Mutex<Vec<(ChunkHash, usize, u64)>>,
    }

    impl FakeSource {
        pub(crate) fn serving(files: &[(String, Vec<u8>)]) -> Self {
            let chunks = files
                .iter()
                .flat_map(|(_, bytes)| bytes.chunks(MIB))
                .map(|c| (blake3::hash(c), Bytes::copy_from_slice(c)))
                .collect();
            FakeSource {
                chunks,
                ..FakeSource::default()
            }
        }

        fn calls(&self) -> Vec<(ChunkHash, usize, u64)> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl ContentSource for FakeSource {
        async fn manifest(&self, _: &str) -> Result<Manifest, SourceError> {
            Err(SourceError::Malformed("not served by the fake".into()))
        }

        async fn chunks(
            &self,
            _: &str,
            hashes: Vec<ChunkHash>,
            first_chunk_offset: u64,
        ) -> Result<BoxStream<'static, Result<Piece, SourceError>>, SourceError> {
            self.calls
                .lock()
                .unwrap()
                .push((hashes[0], hashes.len(), first_chunk_offset));
            {
                let mut unavailable = self.unavailable.lock().unwrap();
                if *unavailable > 0 {
                    *unavailable -= 1;
                    return Err(SourceError::Unavailable("connection refused".into()));
                }
            }
            let mut break_after = self.break_after_pieces.lock().unwrap().take();
            let mut items = Vec::new();
            for (i, hash) in hashes.iter().enumerate() {
                if let Some(left) = self.lost.lock().unwrap().get_mut(hash).filter(|l| **l > 0) {
                    *left -= 1;
                    items.push(Err(SourceError::DataLoss {
                        hash: Some(*hash),
                        message: format!("chunk {hash} is corrupt in the store"),
                    }));
                    return Ok(stream::iter(items).boxed());
                }
                let mut bytes = self.chunks[hash].clone();
                let mut corrupt = self.corrupt.lock().unwrap();
                if let Some(left) = corrupt.get_mut(hash).filter(|left| **left > 0) {
                    *left -= 1;
                    let mut flipped = bytes.to_vec();
                    flipped[0] ^= 1;
                    bytes = Bytes::from(flipped);
                }
                let mut at = if i == 0 {
                    first_chunk_offset as usize
                } else {
                    0
                };
                while at < bytes.len() {
                    if let Some(left) = break_after.as_mut() {
                        if *left == 0 {
                            items.push(Err(SourceError::Unavailable("connection reset".into())));
                            return Ok(stream::iter(items).boxed());
                        }
                        *left -= 1;
                    }
                    let end = (at + PIECE).min(bytes.len());
                    items.push(Ok(Piece {
                        hash: *hash,
                        offset: at as u64,
                        data: bytes.slice(at..end),
                        last: end == bytes.len(),
                    }));
                    at = end;
                }
            }
            Ok(stream::iter(items).boxed())
        }
    }

    async fn cache(dir: &tempfile::TempDir, budget: u64) -> ChunkCache {
        ChunkCache::open(dir.path().join("chunks"), budget)
            .await
            .unwrap()
    }

    /// A budget far above the test package.
    const ROOMY: u64 = 64 << 20;

    /// A kiosk's view of the test package: its cache (in `_dir`), the manifest, the files and
    /// a source serving them.
    struct Kiosk {
        _dir: tempfile::TempDir,
        cache: ChunkCache,
        manifest: Manifest,
        files: Vec<(String, Vec<u8>)>,
        source: FakeSource,
    }

    impl Kiosk {
        async fn download(
            &self,
            retries: u32,
        ) -> (
            Result<(DownloadReport, CachePin), DownloadError>,
            Vec<(u64, u64)>,
        ) {
            download(&self.source, &self.cache, &self.manifest, retries).await
        }

        /// Makes the source serve chunk `index` corrupt `times` more times; returns its hash.
        fn corrupt(&self, index: usize, times: u32) -> ChunkHash {
            fault(
                &self.source.corrupt,
                self.manifest.unique_chunks()[index],
                times,
            )
        }

        /// Makes the source report chunk `index` lost `times` more times; returns its hash.
        fn lose(&self, index: usize, times: u32) -> ChunkHash {
            fault(
                &self.source.lost,
                self.manifest.unique_chunks()[index],
                times,
            )
        }

        async fn assert_files_rebuild(&self) {
            assert_files_rebuild(&self.cache, &self.manifest, &self.files).await;
        }
    }

    fn fault(faults: &Mutex<HashMap<ChunkHash, u32>>, hash: ChunkHash, times: u32) -> ChunkHash {
        faults.lock().unwrap().insert(hash, times);
        hash
    }

    async fn kiosk(budget: u64) -> Kiosk {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache(&dir, budget).await;
        let (manifest, files) = package();
        let source = FakeSource::serving(&files);
        Kiosk {
            _dir: dir,
            cache,
            manifest,
            files,
            source,
        }
    }

    /// Rebuilds every file from the cache and checks it against the manifest and the original.
    async fn assert_files_rebuild(
        cache: &ChunkCache,
        manifest: &Manifest,
        files: &[(String, Vec<u8>)],
    ) {
        for (file, (_, original)) in manifest.files.iter().zip(files) {
            let mut rebuilt = Vec::new();
            for hash in &file.chunks {
                rebuilt.extend_from_slice(&cache.read(hash).await.unwrap());
            }
            assert_eq!(blake3::hash(&rebuilt), file.blake3, "{}", file.path);
            assert!(rebuilt == *original, "{}", file.path);
        }
    }

    async fn download(
        source: &FakeSource,
        cache: &ChunkCache,
        manifest: &Manifest,
        retries: u32,
    ) -> (
        Result<(DownloadReport, CachePin), DownloadError>,
        Vec<(u64, u64)>,
    ) {
        let mut progress = Vec::new();
        let result = download_missing(
            source,
            cache,
            manifest,
            retries,
            |done, total| progress.push((done, total)),
            &CancellationToken::new(),
        )
        .await;
        (result, progress)
    }

    #[tokio::test]
    async fn a_second_download_of_a_cached_package_fetches_no_chunk() {
        let k = kiosk(ROOMY).await;
        let total = k.manifest.total_bytes;

        let (result, progress) = k.download(3).await;
        let (report, pin) = result.unwrap();
        let counts = (report.chunks_downloaded, report.bytes_downloaded);
        assert_eq!((counts, report.chunks_cached), ((5, total), 0));
        assert_eq!(pin.hashes(), k.manifest.unique_chunks());
        assert_eq!(progress.last(), Some(&(total, total)));
        assert!(progress.windows(2).all(|w| w[0].0 <= w[1].0));
        assert_eq!(k.source.calls().len(), 1);
        k.assert_files_rebuild().await;

        let (result, progress) = k.download(3).await;
        let (report, _pin) = result.unwrap();
        let counts = (report.chunks_downloaded, report.bytes_downloaded);
        assert_eq!((counts, report.chunks_cached), ((0, 0), 5));
        assert!(progress.is_empty());
        assert_eq!(k.source.calls().len(), 1, "no second call to the source");
        assert_eq!(k.cache.stats().inserted, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_broken_mid_chunk_resumes_from_the_bytes_already_held() {
        let k = kiosk(ROOMY).await;
        // Four pieces make the first chunk; two more are half of the second.
        *k.source.break_after_pieces.lock().unwrap() = Some(6);

        let (result, progress) = k.download(3).await;
        let (report, _pin) = result.unwrap();
        assert_eq!(report.chunks_downloaded, 5);
        let chunks = k.manifest.unique_chunks();
        assert_eq!(
            k.source.calls(),
            vec![(chunks[0], 5, 0), (chunks[1], 4, 2 * PIECE as u64)]
        );
        assert!(progress.iter().all(|(done, total)| done <= total));
        k.assert_files_rebuild().await;
    }

    #[tokio::test]
    async fn a_chunk_served_corrupt_twice_is_fetched_again_until_right() {
        let k = kiosk(ROOMY).await;
        let bad = k.corrupt(2, 2);

        let (result, progress) = k.download(3).await;
        let (report, _pin) = result.unwrap();
        assert_eq!(report.chunks_downloaded, 5);
        assert_eq!(report.bytes_downloaded, k.manifest.total_bytes);
        let calls = k.source.calls();
        assert_eq!(calls.len(), 3);
        assert!(
            calls[1..].iter().all(|call| *call == (bad, 3, 0)),
            "{calls:?}"
        );
        assert_eq!(
            progress.last(),
            Some(&(k.manifest.total_bytes, k.manifest.total_bytes))
        );
        k.assert_files_rebuild().await;
    }

    #[tokio::test]
    async fn a_chunk_always_corrupt_fails_the_download_naming_it() {
        let k = kiosk(ROOMY).await;
        let bad = k.corrupt(1, u32::MAX);

        let (result, _) = k.download(3).await;
        let error = result.unwrap_err();
        assert!(
            matches!(error, DownloadError::ChunkCorrupt { hash, attempts: 4 } if hash == bad),
            "{error}"
        );
        assert!(error.to_string().contains(bad.to_hex().as_str()));
        assert_eq!(k.source.calls().len(), 4);
        // What arrived intact stays cached; the corrupt chunk is not stored.
        assert_eq!(
            k.cache.missing(&k.manifest.unique_chunks()),
            k.manifest.unique_chunks()[1..].to_vec()
        );
    }

    #[tokio::test]
    async fn a_chunk_the_service_reports_lost_is_asked_again_then_fails_naming_it() {
        let k = kiosk(ROOMY).await;
        k.lose(3, 2);
        assert_eq!(k.download(2).await.0.unwrap().0.chunks_downloaded, 5);

        let k = kiosk(ROOMY).await;
        let lost = k.lose(3, u32::MAX);
        match k.download(2).await.0 {
            Err(DownloadError::ChunkCorrupt { hash, attempts }) => {
                assert_eq!((hash, attempts), (lost, 3));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_package_the_budget_cannot_hold_beside_pinned_chunks_fails_as_cache_full() {
        // Larger than the whole budget: refused before any call.
        let small = kiosk(2 * MIB as u64).await;
        let (result, _) = small.download(3).await;
        assert!(
            matches!(result, Err(DownloadError::CacheFull { .. })),
            "{result:?}"
        );
        assert!(small.source.calls().is_empty());

        // Fits the budget, but not beside another package being provisioned.
        let k = kiosk(package().0.total_bytes + MIB as u64 / 2).await;
        let other = Bytes::from(noise("other package", MIB));
        let other_hash = blake3::hash(&other);
        k.cache.insert(other_hash, other).await.unwrap();
        let _other_pin = k.cache.pin(&[other_hash]);
        let (result, _) = k.download(3).await;
        let error = result.unwrap_err();
        assert!(matches!(error, DownloadError::CacheFull { .. }), "{error}");
        assert!(
            k.cache.missing(&[other_hash]).is_empty(),
            "the pinned chunk stays"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_up_to_the_limit_in_a_row() {
        let patient = kiosk(ROOMY).await;
        *patient.source.unavailable.lock().unwrap() = 2;
        let (result, _) = patient.download(2).await;
        assert_eq!(result.unwrap().0.chunks_downloaded, 5);

        let impatient = kiosk(ROOMY).await;
        *impatient.source.unavailable.lock().unwrap() = 3;
        let (result, _) = impatient.download(2).await;
        assert!(
            matches!(
                result,
                Err(DownloadError::Failed(SourceError::Unavailable(_)))
            ),
            "{result:?}"
        );
        assert_eq!(impatient.source.calls().len(), 3);
    }

    #[tokio::test]
    async fn a_cancelled_download_stops_before_asking() {
        let k = kiosk(ROOMY).await;
        let cancel = CancellationToken::new();
        cancel.cancel();
        let result =
            download_missing(&k.source, &k.cache, &k.manifest, 3, |_, _| {}, &cancel).await;
        assert!(
            matches!(result, Err(DownloadError::Cancelled)),
            "{result:?}"
        );
    }
}
