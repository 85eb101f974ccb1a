//! Bulk bodies end to end (issue 13 item 4): a host→plugin call's large body goes in a sealed
//! memfd, the plugin's large result in a buffer the host gives it; both bounded by the
//! plugin's `limits.memory_mib` (at most 1 GiB), refused `too_large` before anything is sent.
//!
//! The tests of this file run one at a time (`SERIAL`): the 1 GiB test measures this
//! process's peak resident memory.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::plugins::{TestEngine, TestPlugin};
use plugbox::capability::Reply;
use plugbox::ipc::ErrorCode;
use plugbox::manifest::Grants;
use serde_json::{json, Map};
use std::time::Duration;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const MIB: usize = 1 << 20;

/// A plugin with `echo(data)` (returns what it got, as it got it), `kind(data)` (the type the
/// command received and whether it is read-only) and `calls()` (how many `echo`s ran).
const ECHO: &str = r#"import plugbox
seen = [0]
@plugbox.command
def echo(data):
    seen[0] += 1
    return data
@plugbox.command
def kind(data):
    return [type(data).__name__, memoryview(data).readonly, len(data)]
@plugbox.command
def calls():
    return seen[0]
@plugbox.command
def write_big(n):
    return plugbox.host.call("fs.write", path="out/big", data=bytes(n))
"#;

fn echo_plugin(limits: &str) -> TestPlugin {
    let extra = format!(
        "[capabilities]\n\"fs.write\" = {{ paths = [\"out\"], max_bytes = 67108864 }}\n[limits]\ncall_timeout_ms = 60000\n{limits}\n"
    );
    TestPlugin::new("bulk", &extra, ECHO)
}

/// A body whose bytes can be checked without keeping a copy: byte `i` is `(i * 7 + i / 4099) % 251`.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 7 + i / 4099) % 251) as u8).collect()
}

fn is_pattern(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .enumerate()
        .all(|(i, b)| *b == ((i * 7 + i / 4099) % 251) as u8)
}

fn data_call(n: usize) -> (Map<String, serde_json::Value>, Vec<u8>) {
    (Map::new(), pattern(n))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_call_goes_there_and_back_intact_as_a_read_only_view() {
    let _serial = SERIAL.lock().await;
    let te = TestEngine::new();
    let p = echo_plugin("");
    let plugin = te
        .engine
        .spawn_instance(p.path(), &Grants::all_requested())
        .await
        .expect("load");
    let (args, body) = data_call(64 * MIB);
    let kind = plugin
        .call_with_body("kind", args.clone(), "data", body.clone())
        .await
        .expect("kind");
    assert_eq!(kind, Reply::Json(json!(["memoryview", true, 64 * MIB])));
    let reply = plugin
        .call_with_body("echo", args, "data", body)
        .await
        .expect("echo");
    let Reply::Bytes(back) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(back.len(), 64 * MIB);
    assert!(is_pattern(&back));
    // Around the threshold, and small: inline frames still work the same.
    let t = plugbox::ipc::bulk::BULK_THRESHOLD;
    for n in [t - 1, t, t + 1, 3] {
        let reply = plugin
            .call_with_body("echo", Map::new(), "data", pattern(n))
            .await
            .expect("echo");
        assert!(matches!(reply, Reply::Bytes(ref b) if b.len() == n && is_pattern(b)));
    }
    assert!(te.events("protocol_violation").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_is_refused_before_anything_is_sent_and_the_instance_serves_on() {
    let _serial = SERIAL.lock().await;
    let te = TestEngine::new();
    let p = echo_plugin("memory_mib = 256\n");
    let plugin = te
        .engine
        .spawn_instance(p.path(), &Grants::all_requested())
        .await
        .expect("load");
    // Untouched zero pages: the test does not fill 256 MiB to make this point.
    let over = vec![0u8; 256 * MIB + 1];
    let refused = plugin
        .call_with_body("echo", Map::new(), "data", over)
        .await
        .expect_err("too large");
    assert_eq!(refused.code, ErrorCode::TooLarge, "{refused:?}");
    assert!(refused.message.contains("limits.memory_mib"), "{refused:?}");
    // The plugin never saw it, and serves the next call on the same process.
    assert_eq!(
        plugin.call("calls", json!({})).await.expect("calls"),
        Reply::Json(json!(0))
    );
    let reply = plugin
        .call_with_body("echo", Map::new(), "data", pattern(2 * MIB))
        .await
        .expect("echo after too_large");
    assert!(matches!(reply, Reply::Bytes(ref b) if b.len() == 2 * MIB));
    assert!(plugin.exited().is_none());
    let invokes = te.events("invoke");
    assert!(
        invokes.iter().any(|r| r["outcome"] == "too_large"),
        "{invokes:?}"
    );
    assert!(te.events("protocol_violation").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_call_past_the_frame_cap_is_too_large_in_the_plugin_and_it_serves_on() {
    let _serial = SERIAL.lock().await;
    let te = TestEngine::new();
    let p = echo_plugin("");
    let plugin = te
        .engine
        .spawn_instance(p.path(), &Grants::all_requested())
        .await
        .expect("load");
    let e = plugin
        .call("write_big", json!({"n": 17 * MIB}))
        .await
        .expect_err("too large");
    assert_eq!(e.code, ErrorCode::PluginError, "{e:?}");
    assert!(e.message.contains("LimitExceeded"), "{e:?}");
    assert_eq!(
        plugin
            .call("write_big", json!({"n": 5}))
            .await
            .expect("small"),
        Reply::Json(json!({"written": 5}))
    );
    assert!(plugin.exited().is_none());
    assert!(te.events("protocol_violation").is_empty());
}

/// `VmHWM` (peak resident memory) of this process, bytes.
fn peak_rss() -> u64 {
    common::status_bytes("self", "VmHWM:")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_gib_call_when_granted_holds_one_copy_in_the_host() {
    let _serial = SERIAL.lock().await;
    let te = TestEngine::new();
    let p = echo_plugin("memory_mib = 1536\n");
    let plugin = te
        .engine
        .spawn_instance(p.path(), &Grants::all_requested())
        .await
        .expect("load");
    let gib = 1usize << 30;
    let body = pattern(gib);
    // Reset the peak to what is resident now (the body included).
    std::fs::write("/proc/self/clear_refs", "5").expect("clear_refs");
    let before = peak_rss();
    let call = plugin.call_with_body("echo", Map::new(), "data", body);
    let reply = tokio::time::timeout(Duration::from_secs(120), call)
        .await
        .expect("no hang")
        .expect("echo 1 GiB");
    let Reply::Bytes(back) = reply else {
        panic!("{reply:?}")
    };
    let peak = peak_rss();
    assert_eq!(back.len(), gib);
    assert!(is_pattern(&back));
    // The body is sealed in its memfd (not resident in this process) and the result read
    // back into the body's own vector: the peak stays near the one body held before the
    // call. A copy through frames, or a result vector of its own, would add a GiB or more.
    let grew = peak.saturating_sub(before);
    assert!(grew < (gib as u64) / 4, "peak grew by {grew} bytes");
    // One more byte than the protocol carries: too_large, nothing sent.
    drop(back);
    let over = vec![0u8; gib + 1];
    let e = plugin
        .call_with_body("echo", Map::new(), "data", over)
        .await
        .expect_err("past 1 GiB");
    assert_eq!(e.code, ErrorCode::TooLarge);
    assert!(plugin.exited().is_none());
}
