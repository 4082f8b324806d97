//! The content service's hot pure code (docs/benchmarks.md, scenario 4): hashing a chunk (what
//! an upload does to every full chunk and a download to every chunk before a byte is sent) and
//! checking a package declaration (`NewPackage::from_request`: paths, hashes, sizes, clashes,
//! sorting, fingerprint) for a package of many files. Under `cargo test --benches` each body
//! runs once.
//!
//! Baselines in the same run: `blake3::hash` of the same chunk single-threaded (the floor for
//! `ContentHash::of`) and with `update_rayon` on every core (what hashing could reach if it
//! used both cores), and a plain sort of the same paths (the floor of any declaration check
//! that orders files by path).

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use sneakernet_content::domain::{CHUNK_SIZE, ContentHash, NewPackage};
use sneakernet_proto::content::v1 as pb;

/// `len` bytes that do not compress or repeat (BLAKE3's speed does not depend on them).
fn bytes(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut reader = blake3::Hasher::new().update(b"bench").finalize_xof();
    out.resize(len, 0);
    reader.fill(&mut out);
    out
}

fn chunk_hashing(c: &mut Criterion) {
    let chunk = bytes(CHUNK_SIZE as usize);
    let mut group = c.benchmark_group("content_chunk_hash_4mib");
    group.throughput(Throughput::Bytes(chunk.len() as u64));
    group.bench_function("content_hash_of", |b| {
        b.iter(|| ContentHash::of(black_box(&chunk)))
    });
    group.bench_function("baseline_blake3_hash", |b| {
        b.iter(|| blake3::hash(black_box(&chunk)))
    });
    group.bench_function("baseline_blake3_update_rayon", |b| {
        b.iter(|| {
            blake3::Hasher::new()
                .update_rayon(black_box(&chunk))
                .finalize()
        })
    });
    group.finish();
}

/// A declaration of `n` files spread over directories, in no particular order.
fn declaration(n: usize) -> pb::CreatePackageRequest {
    pb::CreatePackageRequest {
        title: "Bench package".into(),
        description: "Generated for the benchmark".into(),
        files: (0..n)
            .map(|i| {
                let i = i.wrapping_mul(7919) % n;
                pb::FileDeclaration {
                    path: format!("season-{:02}/disc-{}/file-{i:06}.mkv", i % 17, i % 5),
                    size_bytes: 1_000_000 + i as u64,
                    blake3: blake3::hash(&i.to_le_bytes()).as_bytes().to_vec(),
                }
            })
            .collect(),
        idempotency_key: "bench".into(),
    }
}

fn manifest_building(c: &mut Criterion) {
    let mut group = c.benchmark_group("content_package_declaration");
    for n in [100usize, 10_000] {
        let request = declaration(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("new_package_from_request_{n}_files"), |b| {
            b.iter_batched(
                || request.clone(),
                |request| NewPackage::from_request(request).map(|p| p.total_size),
                BatchSize::SmallInput,
            )
        });
        group.bench_function(format!("baseline_sort_paths_{n}_files"), |b| {
            b.iter_batched(
                || {
                    request
                        .files
                        .iter()
                        .map(|f| f.path.clone())
                        .collect::<Vec<_>>()
                },
                |mut paths| {
                    paths.sort();
                    paths
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, chunk_hashing, manifest_building);
criterion_main!(benches);
