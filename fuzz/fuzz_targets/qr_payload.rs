//! Fuzz target `qr_payload`: see [`sneakernet_fuzz::qr_payload`] and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sneakernet_fuzz::qr_payload(data));
