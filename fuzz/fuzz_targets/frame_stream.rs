//! Fuzz target: `plugbox::fuzzing::frame_stream` (a thin shim).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| plugbox::fuzzing::frame_stream(data));
