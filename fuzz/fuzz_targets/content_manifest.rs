//! Fuzz target `content_manifest`: see [`sneakernet_fuzz::content_manifest`] and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sneakernet_fuzz::content_manifest(data));
