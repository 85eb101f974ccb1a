//! Load: one million calls from 64 concurrent plugins through one audit writer. Sequence
//! numbers are contiguous, the chain verifies, and the call records match the calls made.
//! `PLUGBOX_LOAD_CALLS` lowers the total for quick local runs; CI runs the full million.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::plugins::{TestEngine, TestPlugin};
use plugbox::capability::{typed, CallContext, CallError, Reply};
use plugbox::manifest::Grants;
use serde_json::{json, Value};
use std::io::BufRead;

const PLUGINS: u64 = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_calls_from_64_plugins_are_all_recorded_in_order() {
    let total: u64 = std::env::var("PLUGBOX_LOAD_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let per_plugin = total / PLUGINS;
    let te = TestEngine::new();
    te.engine
        .register(
            "load.noop",
            typed(|_: CallContext, _: Value| async { Ok::<_, CallError>(Value::Null) }),
        )
        .expect("register");
    let source = TestPlugin::new(
        "load",
        "[capabilities]\n\"load.noop\" = {}\n[limits]\nwall_seconds = 3600\ncpu_seconds = 3600\ncalls_per_second = 1000000\ncall_burst = 1000000\ncall_timeout_ms = 3600000\n",
        "import plugbox\n@plugbox.command\ndef burst(n):\n    call = plugbox.host.call\n    for i in range(n):\n        call('load.noop', i=i)\n    return n\n",
    );
    let started = std::time::Instant::now();
    let mut plugins = Vec::new();
    for _ in 0..PLUGINS {
        plugins.push(
            te.engine
                .spawn_instance(source.path(), &Grants::all_requested())
                .await
                .expect("load"),
        );
    }
    let mut tasks = Vec::new();
    for p in plugins {
        tasks.push(tokio::spawn(async move {
            let r = p.call("burst", json!({ "n": per_plugin })).await;
            p.shutdown().await;
            r
        }));
    }
    for t in tasks {
        assert_eq!(
            t.await.expect("join").expect("burst"),
            Reply::Json(json!(per_plugin))
        );
    }
    let elapsed = started.elapsed();
    te.engine.audit().seal().expect("seal");

    // Stream the log once: contiguous sequence numbers, and call records per decision.
    let file = std::fs::File::open(&te.audit).expect("open");
    let (mut expected, mut allowed, mut outcomes_ok) = (1u64, 0u64, 0u64);
    for line in std::io::BufReader::new(file).lines() {
        let line = line.expect("line");
        let v: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(
            v["seq"].as_u64(),
            Some(expected),
            "sequence numbers are contiguous"
        );
        expected += 1;
        if v["capability"] == "load.noop" {
            match v["event"].as_str() {
                Some("call") if v["decision"] == "allow" => allowed += 1,
                Some("call_outcome") if v["outcome"] == "ok" => outcomes_ok += 1,
                other => panic!("unexpected {other:?}: {line}"),
            }
        }
    }
    let made = per_plugin * PLUGINS;
    assert_eq!(allowed, made, "one allow record per call made");
    assert_eq!(outcomes_ok, made, "one outcome record per call made");
    let verdict = plugbox::audit::verify::verify(std::slice::from_ref(&te.audit)).expect("verify");
    assert!(verdict.broken.is_none(), "{verdict:?}");
    eprintln!(
        "load: {made} calls from {PLUGINS} plugins in {:.1} s ({:.0} calls/s), {} records verified",
        elapsed.as_secs_f64(),
        made as f64 / elapsed.as_secs_f64(),
        verdict.records
    );
}
