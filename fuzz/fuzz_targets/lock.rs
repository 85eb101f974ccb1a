//! Fuzz target: `plugbox::fuzzing::lock` (a thin shim).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| plugbox::fuzzing::lock(data));
