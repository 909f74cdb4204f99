//! Fuzz target `live_peer`: see `fuzz_entries` for what it feeds and checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_entries::live_peer(data));
