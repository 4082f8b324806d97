//! Fuzz target `gateway_message`: see [`sneakernet_fuzz::gateway_message`] and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sneakernet_fuzz::gateway_message(data));
