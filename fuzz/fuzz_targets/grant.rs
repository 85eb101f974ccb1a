//! Fuzz target: `plugbox::fuzzing::grant` (a thin shim).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| plugbox::fuzzing::grant(data));
