//! Fuzz target: `plugbox::fuzzing::checkpoint_line` (a thin shim).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| plugbox::fuzzing::checkpoint_line(data));
