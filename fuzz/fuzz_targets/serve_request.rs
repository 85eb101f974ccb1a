//! Fuzz target: `plugbox::fuzzing::serve_request` (a thin shim).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| plugbox::fuzzing::serve_request(data));
