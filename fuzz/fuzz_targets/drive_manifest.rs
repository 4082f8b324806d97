//! Fuzz target `drive_manifest`: see [`sneakernet_fuzz::drive_manifest`] and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sneakernet_fuzz::drive_manifest(data));
