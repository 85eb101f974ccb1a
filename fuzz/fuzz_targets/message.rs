//! Fuzz target: `plugbox::fuzzing::message` (a thin shim).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| plugbox::fuzzing::message(data));
