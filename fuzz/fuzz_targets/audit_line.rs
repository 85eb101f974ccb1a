//! Fuzz target: `plugbox::fuzzing::audit_line` (a thin shim).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| plugbox::fuzzing::audit_line(data));
