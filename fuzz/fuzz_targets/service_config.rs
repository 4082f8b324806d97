//! Fuzz target `service_config`: see [`sneakernet_fuzz::service_config`] and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sneakernet_fuzz::service_config(data));
