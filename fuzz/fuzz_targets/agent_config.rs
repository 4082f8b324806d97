//! Fuzz target `agent_config`: see [`sneakernet_fuzz::agent_config`] and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sneakernet_fuzz::agent_config(data));
