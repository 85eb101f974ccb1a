//! Every attempt reaches the broker (issue 12, item 1): a plugin on the real Python SDK that
//! calls a capability it was not granted leaves a `deny` record (rule `allow-list`) written by
//! the host's gate, its name escaped, and still gets a typed `CapabilityDenied`. Nothing the
//! SDK could refuse on its own (lookalike names, names that are not valid UTF-8, arguments that
//! are not JSON) keeps the attempt off the record.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::plugins::{TestEngine, TestPlugin};
use plugbox::audit::verify::verify;
use plugbox::capability::Reply;
use plugbox::manifest::Grants;
use serde_json::{json, Value};

const MANIFEST: &str = "[capabilities]\n\"log\" = {}\n\"kv.get\" = {}\n";

/// `attempt` calls each name it is given through `plugbox.host.call` and reports, per name,
/// the exception's class and code (or "allowed"). `odd` makes the attempts the SDK cannot
/// send as written: a lone surrogate in the name, and an argument JSON cannot hold.
const PLUGIN: &str = r#"
import plugbox

def _try(name, **kwargs):
    try:
        plugbox.host.call(name, **kwargs)
        return "allowed"
    except plugbox.PlugboxError as e:
        return f"{type(e).__name__}:{e.code}"

@plugbox.command
def attempt(names):
    return [_try(name, text="pwned") for name in names]

@plugbox.command
def odd():
    return [_try("doc\udc80.set_text"), _try("doc.set_text", text=object())]
"#;

/// The `call` records of plugin `name`.
fn calls(te: &TestEngine, name: &str) -> Vec<Value> {
    te.events("call")
        .into_iter()
        .filter(|r| r["plugin"]["name"] == name)
        .collect()
}

async fn reply(p: &plugbox::engine::Instance, command: &str, args: Value) -> Value {
    match p.call(command, args).await.expect(command) {
        Reply::Json(v) => v,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_undeclared_and_four_lookalike_attempts_are_five_deny_records() {
    let te = TestEngine::new();
    let plugin = TestPlugin::new("attempts", MANIFEST, PLUGIN);
    let p = te
        .engine
        .spawn_instance(plugin.path(), &Grants::all_requested())
        .await
        .expect("load");
    let names = [
        "doc.set_text",
        "LOG",
        "log ",
        "fs/../kv.set",
        "kv.get\u{1b}[2J\n",
    ];
    let got = reply(&p, "attempt", json!({ "names": names })).await;
    // The caller still gets a typed error: the host's answer, after the host recorded it.
    assert_eq!(got, json!(vec!["CapabilityDenied:denied"; 5]));

    let denied = calls(&te, "attempts");
    let recorded: Vec<&str> = denied
        .iter()
        .map(|r| r["capability"].as_str().expect("capability"))
        .collect();
    assert_eq!(
        recorded,
        [
            "doc.set_text",
            "LOG",
            "log ",
            "fs/../kv.set",
            "kv.get\\u{1b}[2J\\u{a}"
        ]
    );
    for r in &denied {
        assert_eq!(r["decision"], "deny", "{r}");
        assert_eq!(r["rule"], "allow-list", "{r}");
        assert!(
            r["reason"].as_str().unwrap().contains("is not granted"),
            "{r}"
        );
        assert!(r["args_sha256"].is_string(), "{r}");
    }
    // The host's own log view escapes them too: no raw control character reaches a terminal.
    let raw = std::fs::read_to_string(&te.audit).unwrap();
    assert!(!raw.contains('\u{1b}'));
    p.shutdown().await;
    te.engine.shutdown().await.expect("shutdown");
    let v = verify(std::slice::from_ref(&te.audit)).expect("verify");
    assert!(v.broken.is_none(), "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_the_sdk_cannot_send_as_written_are_recorded_all_the_same() {
    let te = TestEngine::new();
    let plugin = TestPlugin::new("odd", MANIFEST, PLUGIN);
    let p = te
        .engine
        .spawn_instance(plugin.path(), &Grants::all_requested())
        .await
        .expect("load");
    let got = reply(&p, "odd", json!({})).await;
    assert_eq!(got, json!(vec!["CapabilityDenied:denied"; 2]));
    let denied = calls(&te, "odd");
    assert_eq!(denied.len(), 2, "{denied:#?}");
    // A lone surrogate travels as its escape, the text `\udc80` (no grant can hold it); the
    // record writes that text's backslash as two. Arguments JSON cannot hold are left out,
    // and the name alone is decided.
    assert_eq!(denied[0]["capability"], "doc\\\\udc80.set_text");
    assert_eq!(denied[1]["capability"], "doc.set_text");
    for r in &denied {
        assert_eq!(
            (&r["decision"], &r["rule"]),
            (&json!("deny"), &json!("allow-list"))
        );
    }
    p.shutdown().await;
    te.engine.shutdown().await.expect("shutdown");
}

/// `flood` makes `n` attempts through the SDK as fast as the replies come, and counts the
/// exception codes.
const FLOOD: &str = r#"
import plugbox

@plugbox.command
def flood(n):
    counts = {}
    for _ in range(n):
        try:
            plugbox.host.call("never.granted")
        except plugbox.PlugboxError as e:
            counts[e.code] = counts.get(e.code, 0) + 1
    return counts
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_of_sdk_attempts_is_recorded_in_bounded_volume_and_none_goes_uncounted() {
    const ATTEMPTS: u64 = 5000;
    const RATE: u64 = 50;
    const BURST: u64 = 5;
    let te = TestEngine::new();
    let limits = format!("[limits]\ncalls_per_second = {RATE}\ncall_burst = {BURST}\n");
    let plugin = TestPlugin::new("flood", &limits, FLOOD);
    let p = te
        .engine
        .spawn_instance(plugin.path(), &Grants::all_requested())
        .await
        .expect("load");
    let started = std::time::Instant::now();
    let counts = reply(&p, "flood", json!({ "n": ATTEMPTS })).await;
    let elapsed = started.elapsed().as_secs_f64();
    p.shutdown().await;
    te.engine.shutdown().await.expect("shutdown");
    // Every attempt got the host's typed answer: not granted, or past the rate.
    let denied = counts["denied"].as_u64().unwrap_or(0);
    let limited = counts["rate_limited"].as_u64().unwrap_or(0);
    assert_eq!(denied + limited, ATTEMPTS, "{counts}");
    let records = calls(&te, "flood");
    let suppressed: u64 = te
        .events("calls_suppressed")
        .iter()
        .map(|r| r["detail"]["suppressed"].as_u64().unwrap())
        .sum();
    // None uncounted: the records plus the suppressed counts are the attempts.
    assert_eq!(records.len() as u64 + suppressed, ATTEMPTS);
    let allow_list = records.iter().filter(|r| r["rule"] == "allow-list").count();
    assert_eq!(allow_list as u64, denied);
    // Bounded: the burst plus the rate over the run, and one refusal recorded per interval.
    let windows = elapsed.ceil() as u64 + 1;
    let bound = BURST + (RATE as f64 * elapsed).ceil() as u64 + 2 * windows + 1;
    eprintln!(
        "{} records for {ATTEMPTS} SDK attempts in {elapsed:.2}s (bound {bound})",
        records.len()
    );
    assert!(records.len() as u64 <= bound, "{} > {bound}", records.len());
}
