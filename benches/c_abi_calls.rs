//! Warm calls through the C ABI against the Rust API, on the same plugin instance of the same
//! engine, interleaved in blocks (A B B A ...): `plugbox_engine_call` (strict JSON arguments
//! in, JSON text out, a C string allocated and freed per call) against `Plugin::call` with a
//! `serde_json::Value`, both from a thread outside the engine's runtime (as a C host's
//! thread is). Issue 14's target: the C ABI within 10% of the Rust API.
//!
//! Run: `cargo bench --bench c_abi_calls` (`cargo test` runs it as a short smoke test).
//!
//! This benchmark calls the exported `extern "C"` functions from Rust, as a C host would,
//! which takes `unsafe` outside `src/sys/`: each block states why it is sound.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, unsafe_code)]

mod common;
use common::blocks::{interleave, load, report, Targets};

use plugbox::capability::{typed, CallContext, CallError};
use plugbox::sys::c_abi::{
    plugbox_engine_call, plugbox_engine_free, plugbox_engine_load, plugbox_engine_new,
    plugbox_error_code, plugbox_string_free, PlugboxEngine,
};
use serde_json::{json, Value};
use std::ffi::{c_char, CStr, CString};
use std::path::Path;
use std::time::Instant;

const TARGETS: Targets = Targets { p50: 1.1, p99: 1.1 };

/// Fails with the error's code if `err` is not null.
fn ok(err: *mut plugbox::sys::c_abi::PlugboxError, what: &str) {
    if !err.is_null() {
        // SAFETY: `err` is a live error just returned by the library.
        let code = unsafe { CStr::from_ptr(plugbox_error_code(err)) };
        panic!("{what}: {code:?}");
    }
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let (blocks, calls) = if benching { (10, 500) } else { (2, 20) };
    let work = tempfile::tempdir().expect("tmp");
    let engine = start(work.path());
    // SAFETY: `engine` is live until `plugbox_engine_free` at the end of main.
    let host = unsafe { &*engine }.host();
    let rt = host.runtime_handle().expect("runtime");
    let plugin = host.engine().plugin("bench-echo").expect("loaded");
    let args = json!({ "x": "x".repeat(80) });
    let args_c = CString::new(args.to_string()).unwrap();
    println!(
        "warm calls, {blocks} blocks x {calls} calls per side, interleaved A B B A; {}",
        load()
    );
    let (mut a, mut b) = interleave(
        blocks,
        || via_abi(engine, &args_c, calls),
        || {
            let mut samples = Vec::with_capacity(calls);
            for _ in 0..calls {
                let t = Instant::now();
                let reply = rt.block_on(plugin.call("echo", args.clone()));
                samples.push(t.elapsed().as_nanos() as u64);
                reply.expect("call");
            }
            samples
        },
    );
    report(
        "host->plugin warm call, 80 B, plugbox_engine_call vs Plugin::call (block_on), same plugin",
        "Rust API Plugin::call from a thread outside the runtime",
        &mut a,
        &mut b,
        &TARGETS,
    );
    drop(plugin);
    // SAFETY: `engine` came from `plugbox_engine_new`, is freed once, no call in progress.
    unsafe { plugbox_engine_free(engine) };
}

/// An engine made through the C ABI, with `bench.echo` registered and the echo plugin loaded.
fn start(work: &Path) -> *mut PlugboxEngine {
    let config = json!({
        "audit_log": work.join("audit.jsonl"),
        "state_dir": work.join("state"),
        "allow_ungranted": true,
    });
    let config = CString::new(config.to_string()).unwrap();
    let mut engine: *mut PlugboxEngine = std::ptr::null_mut();
    // SAFETY: a NUL-terminated config and a writable out-pointer.
    ok(
        unsafe { plugbox_engine_new(config.as_ptr(), &mut engine) },
        "engine",
    );
    // SAFETY: `engine` was just made and is not freed before main ends.
    let host = unsafe { &*engine }.host();
    let echo =
        typed(|_: CallContext, args: Value| async move { Ok::<_, CallError>(args["x"].clone()) });
    host.engine()
        .register("bench.echo", echo)
        .expect("register");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = CString::new(root.join("benches/plugins/echo").to_str().unwrap()).unwrap();
    let grant = CString::new(r#"{"all_requested": true}"#).unwrap();
    // SAFETY: live engine, NUL-terminated strings, a null (optional) out-pointer.
    ok(
        unsafe { plugbox_engine_load(engine, dir.as_ptr(), grant.as_ptr(), std::ptr::null_mut()) },
        "load",
    );
    engine
}

/// `calls` timed calls of `echo` through `plugbox_engine_call`, in nanoseconds.
fn via_abi(engine: *mut PlugboxEngine, args: &CStr, calls: usize) -> Vec<u64> {
    let (name, command) = (c"bench-echo", c"echo");
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let mut result: *mut c_char = std::ptr::null_mut();
        let t = Instant::now();
        // SAFETY: live engine, NUL-terminated strings, a writable out-pointer; the result is
        // freed once, below.
        let err = unsafe {
            plugbox_engine_call(
                engine,
                name.as_ptr(),
                command.as_ptr(),
                args.as_ptr(),
                &mut result,
            )
        };
        // SAFETY: `result` is null or a string this library returned, freed once.
        unsafe { plugbox_string_free(result) };
        samples.push(t.elapsed().as_nanos() as u64);
        ok(err, "call");
    }
    samples
}
