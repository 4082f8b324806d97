//! The agent's hot content code (docs/benchmarks.md, scenario 4): a verified chunk read from
//! the cache (`ChunkCache::read`: read, BLAKE3, compare, touch), a drive's read-back
//! verification against its manifest (`drive_content::verify`), and the checked manifest
//! (`Manifest::from_json` with every rule, as a drive's or the service's manifest is read;
//! `to_json` as it is written onto a drive). Under `cargo test --benches` each body runs once.
//!
//! Baselines in the same run: the same chunk file read with `std::fs::read` alone and hashed
//! with `blake3::hash` alone (the two halves of a verified read), the drive's files read and
//! hashed with no manifest around them, and the same manifest JSON parsed into an untyped
//! `serde_json::Value` (parsing with no checks).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sneakernet_kiosk_agent::cache::ChunkCache;
use sneakernet_kiosk_agent::content_source::{Manifest, ManifestFile};
use sneakernet_kiosk_agent::drive_content;

mod support;
use support::{CHUNK_SIZE, MIB, Sinks};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn chunk_verify(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let cache = rt
        .block_on(ChunkCache::open(dir.path().join("cache"), 64 * MIB))
        .expect("open the cache");
    let mut chunk = vec![0u8; CHUNK_SIZE as usize];
    support::fill(b"chunk", &mut chunk);
    let hash = blake3::hash(&chunk);
    rt.block_on(cache.insert(hash, bytes::Bytes::from(chunk.clone())))
        .expect("insert the chunk");
    let hex = hash.to_hex();
    let path = dir.path().join("cache").join(&hex[..2]).join(hex.as_str());
    assert!(path.is_file(), "the cache's layout is <hex[0..2]>/<hex>");

    let mut group = c.benchmark_group("agent_chunk_verify_4mib");
    group.throughput(Throughput::Bytes(chunk.len() as u64));
    group.bench_function("cache_read_verified", |b| {
        b.iter(|| rt.block_on(cache.read(black_box(&hash))).map(|b| b.len()))
    });
    group.bench_function("baseline_fs_read", |b| {
        b.iter(|| std::fs::read(black_box(&path)).map(|b| b.len()))
    });
    group.bench_function("baseline_blake3_hash", |b| {
        b.iter(|| blake3::hash(black_box(&chunk)))
    });
    group.finish();
}

fn drive_verify(c: &mut Criterion) {
    const SIZE: u64 = 16 * MIB;
    let rt = runtime();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let source = dir.path().join("source");
    let manifest = rt
        .block_on(support::generate(
            "verify-bench",
            SIZE,
            4 * MIB,
            4,
            &Sinks {
                cache: None,
                files_dir: Some(&source),
            },
        ))
        .expect("generate the package");
    let bays = rt
        .block_on(support::kiosk(
            &dir.path().join("kiosk"),
            &["D-1"],
            2 * SIZE,
        ))
        .expect("a simulated kiosk");
    rt.block_on(bays.stock("D-1", &manifest, &source))
        .expect("stock the drive");
    let files: Vec<_> = manifest
        .files
        .iter()
        .map(|f| bays.drive_dir("D-1").join(&f.path))
        .collect();

    let mut group = c.benchmark_group("agent_drive_verify_16mib");
    group.throughput(Throughput::Bytes(SIZE));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(4));
    group.bench_function("drive_content_verify", |b| {
        b.iter(|| drive_content::verify(&bays, "D-1", black_box(&manifest), |_| {}).is_ok())
    });
    group.bench_function("baseline_read_and_blake3_each_file", |b| {
        b.iter(|| {
            files
                .iter()
                .map(|f| std::fs::read(f).map(|bytes| blake3::hash(&bytes)))
                .filter(Result::is_ok)
                .count()
        })
    });
    group.finish();
}

/// The manifest of a package of `files` files of `file_chunks` chunks each (hashes only: no
/// bytes behind them).
fn manifest(files: usize, file_chunks: usize) -> Manifest {
    let chunk = u64::from(CHUNK_SIZE);
    let files: Vec<ManifestFile> = (0..files)
        .map(|i| ManifestFile {
            path: format!("season-{:02}/file-{i:06}.mkv", i % 17),
            size: chunk * file_chunks as u64,
            blake3: blake3::hash(format!("file {i}").as_bytes()),
            chunks: (0..file_chunks)
                .map(|j| blake3::hash(format!("chunk {i}/{j}").as_bytes()))
                .collect(),
        })
        .collect();
    let total_bytes = files.iter().map(|f| f.size).sum();
    Manifest {
        package_id: "manifest-bench".into(),
        title: "Manifest bench".into(),
        chunk_size: CHUNK_SIZE,
        files,
        total_bytes,
    }
}

fn manifest_check(c: &mut Criterion) {
    let mut group = c.benchmark_group("agent_manifest");
    // A 2 GiB film package (8 files of 64 chunks) and a data set of 10,000 one-chunk files.
    for (name, files, chunks) in [("2gib_8_files", 8, 64), ("10000_files", 10_000, 1)] {
        let json = manifest(files, chunks).to_json();
        let parsed = Manifest::from_json(json.as_bytes()).expect("a valid manifest");
        group.throughput(Throughput::Bytes(json.len() as u64));
        group.bench_function(format!("from_json_checked_{name}"), |b| {
            b.iter(|| Manifest::from_json(black_box(json.as_bytes())).map(|m| m.total_bytes))
        });
        group.bench_function(format!("baseline_serde_json_value_{name}"), |b| {
            b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(json.as_bytes())))
        });
        group.bench_function(format!("to_json_{name}"), |b| {
            b.iter(|| black_box(&parsed).to_json().len())
        });
    }
    group.finish();
}

criterion_group!(benches, chunk_verify, drive_verify, manifest_check);
criterion_main!(benches);
