//! A plugin says which host→plugin call it makes a capability call for (`cause`), and the
//! host names that call's tag to the capability (`CallContext::cause`; `plugbox serve` puts
//! the request id on its `host_call` line). The plugin is untrusted: it must not be able to
//! attribute its call to a call it is not serving. Here real plugins claim, through the SDK's
//! own thread-local, a call id never sent, one already answered, and one another plugin is
//! serving right now; a background thread claims nothing. Each gets no attribution, and the
//! audit record of the call says what was claimed and refused. An honest claim is attributed.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::engine::all;
use common::plugins::{TestEngine, TestPlugin};
use plugbox::capability::{typed, CallContext, CallError, Reply};
use plugbox::engine::{CallOptions, Plugin};
use serde_json::{json, Map, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// Only turns a hang into a failure.
const HANG: Duration = Duration::from_secs(30);

const PLUGIN: &str = r#"
import threading
import plugbox
from plugbox import _calls

def ask(**args):
    return plugbox.host.call("test.cause", **args)

@plugbox.command
def honest():
    return {"me": _calls.running.call, "cause": ask()}

@plugbox.command
def forge(claim):
    # A hostile plugin sets the SDK's record of the call it runs to whatever it likes.
    mine = _calls.running.call
    _calls.running.call = claim
    try:
        return {"me": mine, "cause": ask()}
    finally:
        _calls.running.call = mine

@plugbox.command
def background():
    out = {}
    t = threading.Thread(target=lambda: out.update(cause=ask()))
    t.start()
    t.join()
    return {"me": _calls.running.call, "cause": out["cause"]}

@plugbox.command
def hold():
    # Tells the host its call id, then waits (inside a host call) until the host lets go.
    return plugbox.host.call("test.hold", me=_calls.running.call)
"#;

const CAPS: &str = "[capabilities]\n\"test.cause\" = {}\n\"test.hold\" = {}\n";

/// An engine whose `test.cause` answers the cause it was given, and whose `test.hold` sends
/// the caller's call id on the returned channel and waits for the notify.
fn engine() -> (TestEngine, mpsc::UnboundedReceiver<u64>, Arc<Notify>) {
    let te = TestEngine::new();
    let cause =
        typed(|ctx: CallContext, _args: Value| async move { Ok::<_, CallError>(ctx.cause) });
    te.engine.register("test.cause", cause).unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let tx = Arc::new(Mutex::new(tx));
    let release = Arc::new(Notify::new());
    let waiter = Arc::clone(&release);
    let hold = typed(move |_ctx: CallContext, args: Value| {
        let tx = Arc::clone(&tx);
        let waiter = Arc::clone(&waiter);
        async move {
            let me = args["me"].as_u64().unwrap_or(0);
            let _ = tx.lock().unwrap().send(me);
            waiter.notified().await;
            Ok::<_, CallError>(me)
        }
    });
    te.engine.register("test.hold", hold).unwrap();
    (te, rx, release)
}

async fn load(te: &TestEngine, name: &str) -> (TestPlugin, Plugin) {
    let dir = TestPlugin::new(name, CAPS, PLUGIN);
    let plugin = te.engine.load(dir.path(), &all()).await.expect("load");
    (dir, plugin)
}

/// Calls `command` tagged `tag`; returns (the plugin's own call id, the cause it was given).
async fn call(plugin: &Plugin, command: &str, args: Value, tag: u64) -> (u64, Value) {
    let Value::Object(args) = args else { panic!() };
    let options = CallOptions {
        body: None,
        tag: Some(tag),
    };
    let reply = tokio::time::timeout(HANG, plugin.call_with(command, args, options))
        .await
        .expect("hung")
        .expect("call");
    let Reply::Json(v) = reply else {
        panic!("{reply:?}")
    };
    (v["me"].as_u64().unwrap(), v["cause"].clone())
}

/// The `call` record of the latest `test.cause` call.
fn last_cause_record(te: &TestEngine) -> Value {
    te.events("call")
        .into_iter()
        .rev()
        .find(|r| r["capability"] == "test.cause")
        .expect("a call record")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_gets_no_attribution_for_a_call_it_is_not_serving() {
    let (te, _held, _release) = engine();
    let (_dir, plugin) = load(&te, "attr-one").await;

    // Honest: the tag of the call the command runs for.
    let (me, cause) = call(&plugin, "honest", json!({}), 41).await;
    assert_eq!(cause, json!(41));
    assert_eq!(last_cause_record(&te)["detail"], json!({ "cause": me }));

    // An id it was never sent.
    let claim = me + 1000;
    let (_, cause) = call(&plugin, "forge", json!({ "claim": claim }), 42).await;
    assert_eq!(cause, Value::Null);
    assert_eq!(
        last_cause_record(&te)["detail"],
        json!({ "cause_refused": claim })
    );

    // A call it has answered already (stale): its tag is not lent to a later call.
    let (_, cause) = call(&plugin, "forge", json!({ "claim": me }), 43).await;
    assert_eq!(cause, Value::Null);
    assert_eq!(
        last_cause_record(&te)["detail"],
        json!({ "cause_refused": me })
    );

    // A thread the command started claims nothing, though the command's call is waiting.
    let (_, cause) = call(&plugin, "background", json!({}), 44).await;
    assert_eq!(cause, Value::Null);
    assert!(last_cause_record(&te)
        .get("detail")
        .is_none_or(Value::is_null));
    te.engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_cannot_claim_a_call_another_plugin_is_serving() {
    let (te, mut held, release) = engine();
    let (_a_dir, a) = load(&te, "attr-a").await;
    let (_b_dir, b) = load(&te, "attr-b").await;
    // Move A's call ids well past B's, so that B's own call cannot have the id it claims.
    for tag in 0..20 {
        call(&a, "honest", json!({}), tag).await;
    }
    let holding = tokio::spawn({
        let a = a.clone();
        async move {
            let options = CallOptions {
                body: None,
                tag: Some(99),
            };
            a.call_with("hold", Map::new(), options).await
        }
    });
    // A's `hold` is waiting for its reply now (it is inside `test.hold`).
    let a_call = tokio::time::timeout(HANG, held.recv())
        .await
        .expect("hung")
        .unwrap();
    let (b_call, cause) = call(&b, "forge", json!({ "claim": a_call }), 7).await;
    assert_ne!(b_call, a_call, "B's own call has the id it claims");
    assert_eq!(cause, Value::Null, "B was given A's tag");
    let record = last_cause_record(&te);
    assert_eq!(record["plugin"]["name"], "attr-b");
    assert_eq!(record["detail"], json!({ "cause_refused": a_call }));
    release.notify_one();
    let held_reply = tokio::time::timeout(HANG, holding)
        .await
        .expect("hung")
        .unwrap();
    assert_eq!(held_reply.unwrap(), Reply::Json(json!(a_call)));
    te.engine.shutdown().await.unwrap();
}
