//! Fuzz target: `plugbox::fuzzing::arg_schema` (a thin shim).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| plugbox::fuzzing::arg_schema(data));
