//! The committed corpus replayed through every target body on stable, without libFuzzer: what
//! CI runs when nightly or cargo-fuzz cannot be had (`.ci/run`, docs/fuzzing.md). It proves
//! each target still accepts its seeds without a panic; it finds nothing new.

use std::path::{Path, PathBuf};

/// A target's body: what its `fuzz_targets/<name>.rs` hands every input to.
type TargetBody = fn(&[u8]);

/// Every target with its body, by the name of its binary under `fuzz_targets/`.
const TARGETS: &[(&str, TargetBody)] = &[
    ("kiosk_message", crate::kiosk_message),
    ("gateway_message", crate::gateway_message),
    ("qr_payload", crate::qr_payload),
    ("content_manifest", crate::content_manifest),
    ("drive_manifest", crate::drive_manifest),
    ("service_config", crate::service_config),
    ("agent_config", crate::agent_config),
];

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a readable directory entry").path())
        .collect();
    entries.sort();
    entries
}

#[test]
fn every_fuzz_target_has_a_replay_row_and_a_seed_corpus() {
    let binaries: Vec<String> = sorted_entries(&fuzz_dir().join("fuzz_targets"))
        .iter()
        .filter_map(|path| Some(path.file_stem()?.to_str()?.to_owned()))
        .collect();
    let mut rows: Vec<String> = TARGETS.iter().map(|(name, _)| (*name).to_owned()).collect();
    rows.sort();
    assert_eq!(rows, binaries, "TARGETS must list every fuzz_targets/*.rs");
    for (target, _) in TARGETS {
        let corpus = fuzz_dir().join("corpus").join(target);
        assert!(
            !sorted_entries(&corpus).is_empty(),
            "{target}: no seed in {}",
            corpus.display()
        );
    }
}

#[test]
fn every_committed_corpus_file_replays_through_its_target_without_a_panic() {
    let mut replayed = 0;
    for (target, body) in TARGETS {
        for file in sorted_entries(&fuzz_dir().join("corpus").join(target)) {
            let bytes = std::fs::read(&file)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
            // A panic here names the input: the unwinding message carries it.
            let outcome = std::panic::catch_unwind(|| body(&bytes));
            assert!(
                outcome.is_ok(),
                "target {target} panicked on {}",
                file.display()
            );
            replayed += 1;
        }
    }
    println!(
        "replayed {replayed} corpus files through {} targets",
        TARGETS.len()
    );
}
