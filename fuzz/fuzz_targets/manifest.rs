//! Fuzz target: `plugbox::fuzzing::manifest` (a thin shim).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| plugbox::fuzzing::manifest(data));
