//! Fuzz target: `plugbox::fuzzing::zygote_answer` (a thin shim).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| plugbox::fuzzing::zygote_answer(data));
