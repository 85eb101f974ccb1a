//! The warm call path (issue 13) keeps its guarantees where it was shortened: the gate decides
//! the scope check too, and gives the call's slot back when it refuses; a plugin→host call the
//! reader answers at once (no task) is still recorded before it runs and after its reply, and
//! a plugin that floods such calls without reading its replies stalls only itself and is cut
//! off.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::plugins::{TestEngine, TestPlugin};
use plugbox::capability::{typed, CallContext, CallError, Reply};
use plugbox::manifest::Grants;
use serde_json::{json, Value};
use std::time::Duration;

/// Registers `test.echo` (returns `x`) and `test.big` (64 KiB of text), both ready at once.
fn engine() -> TestEngine {
    let te = TestEngine::new();
    te.engine
        .register(
            "test.echo",
            typed(
                |_: CallContext, args: Value| async move { Ok::<_, CallError>(args["x"].clone()) },
            ),
        )
        .unwrap();
    te.engine
        .register(
            "test.big",
            typed(|_: CallContext, _: Value| async move {
                Ok::<_, CallError>(json!("x".repeat(64 * 1024)))
            }),
        )
        .unwrap();
    te
}

const ESCAPER: &str = r#"import plugbox

@plugbox.command
def probe():
    codes = []
    for _ in range(5):
        try:
            plugbox.host.call("fs.read", path="../../../../etc/shadow")
        except plugbox.PlugboxError as e:
            codes.append(e.code)
    codes.append(plugbox.host.call("test.echo", x="still served"))
    return codes
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_refusal_is_the_gates_decision_and_gives_the_calls_slot_back() {
    let te = engine();
    let manifest = "[capabilities]\n\"fs.read\" = { paths = [\"data\"] }\n\"test.echo\" = {}\n\
                    [limits]\ncalls_in_flight = 1\n";
    let plugin = TestPlugin::new("escaper", manifest, ESCAPER);
    let p = te
        .engine
        .spawn_instance(plugin.path(), &Grants::all_requested())
        .await
        .expect("load");
    let Reply::Json(codes) = p.call("probe", json!({})).await.expect("probe") else {
        panic!("bytes")
    };
    let codes = codes.as_array().unwrap().clone();
    assert_eq!(codes.len(), 6, "{codes:?}");
    assert!(codes[..5].iter().all(|c| c != "rate_limited"), "{codes:?}");
    assert_eq!(
        codes[5], "still served",
        "the one slot was given back every time"
    );
    let calls = te.events("call");
    let scoped: Vec<_> = calls
        .iter()
        .filter(|r| r["capability"] == "fs.read")
        .collect();
    assert_eq!(scoped.len(), 5, "{calls:#?}");
    for r in &scoped {
        assert_eq!(
            (r["decision"].as_str(), r["rule"].as_str()),
            (Some("deny"), Some("capability.scope")),
            "{r}"
        );
    }
    assert!(
        calls.iter().all(|r| r["rule"] != "limits.calls_in_flight"),
        "{calls:#?}"
    );
    let outcomes = te.events("call_outcome");
    assert!(
        outcomes.iter().all(|r| r["capability"] != "fs.read"),
        "a refused call never runs: {outcomes:#?}"
    );
    p.shutdown().await;
}

/// Floods `test.big` calls and never reads: the host's replies fill the channel.
const FLOODER: &str =
    "import rawwire as w\nw.handshake()\nfor i in range(1, 1000000):\n    w.call(i, 'test.big')\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_floods_quick_calls_and_never_reads_is_cut_off_with_every_outcome_after_its_decision(
) {
    let te = engine();
    let manifest = "[capabilities]\n\"test.big\" = {}\n[limits]\ncall_timeout_ms = 2000\n\
                    calls_per_second = 1000000\ncall_burst = 1000000\n";
    let plugin = TestPlugin::new("flooder", manifest, FLOODER);
    let p = te
        .engine
        .spawn_instance(plugin.path(), &Grants::all_requested())
        .await
        .expect("load");
    let exit = tokio::time::timeout(Duration::from_secs(60), p.wait())
        .await
        .expect("the flooder is cut off");
    assert!(exit.cause.contains("stopped reading"), "{exit:?}");
    te.wait_for("the kill record", |r| r["event"] == "kill")
        .await;
    let records = te.records();
    let mut allowed = std::collections::HashSet::new();
    let mut answered = 0;
    for r in &records {
        match r["event"].as_str() {
            Some("call") if r["decision"] == "allow" => {
                allowed.insert(r["call_id"].as_u64().unwrap());
            }
            Some("call_outcome") => {
                let id = r["call_id"].as_u64().unwrap();
                assert!(
                    allowed.contains(&id),
                    "outcome of call {id} before its decision: {r}"
                );
                answered += 1;
            }
            _ => {}
        }
    }
    assert!(
        answered > 0,
        "some replies went out before the channel filled"
    );
    let kill_seq = records.iter().find(|r| r["event"] == "kill").unwrap()["seq"].as_u64();
    let last_outcome = records
        .iter()
        .rfind(|r| r["event"] == "call_outcome")
        .unwrap()["seq"]
        .as_u64();
    assert!(last_outcome < kill_seq, "outcomes precede the kill record");
}
