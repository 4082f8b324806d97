//! Fuzz target `kiosk_message`: see [`sneakernet_fuzz::kiosk_message`] and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sneakernet_fuzz::kiosk_message(data));
