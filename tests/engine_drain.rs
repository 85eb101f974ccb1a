//! No call is lost to a planned stop: calls at full speed across a `wall_seconds` recycle, an
//! idle shrink, a reload and an unload all succeed; an instance SIGKILLed under calls fails
//! only the calls it had in flight, with `plugin_crashed`; a call past its timeout is a
//! `limit` naming `call_timeout_ms`; a host handler's failure is `host_error`.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::engine::*;
use common::plugins::{TestEngine, TestPlugin};
use plugbox::capability::{typed, CallContext, CallError, Reply};
use plugbox::engine::Plugin;
use plugbox::ipc::ErrorCode;
use serde_json::{json, Value};
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Turns a hang into a failure; never a measure of speed.
const HANG: Duration = Duration::from_secs(30);

/// Reads the audit log as it grows (the log is large here: re-reading it whole would cost
/// more than the calls).
struct Tail {
    file: std::fs::File,
    partial: Vec<u8>,
    seen: Vec<Value>,
}

impl Tail {
    fn new(te: &TestEngine) -> Self {
        let file = std::fs::File::open(&te.audit).expect("audit log");
        Self {
            file,
            partial: Vec::new(),
            seen: Vec::new(),
        }
    }

    fn read_new(&mut self) {
        self.file.read_to_end(&mut self.partial).expect("read");
        let mut start = 0;
        while let Some(len) = self.partial[start..].iter().position(|b| *b == b'\n') {
            let line = &self.partial[start..start + len];
            self.seen
                .push(serde_json::from_slice(line).expect("JSON record"));
            start += len + 1;
        }
        self.partial.drain(..start);
    }

    /// Waits until a record matching `pred` has been written; returns it.
    async fn wait(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let waited = tokio::time::timeout(HANG, async {
            loop {
                self.read_new();
                if let Some(r) = self.seen.iter().find(|r| pred(r)) {
                    return r.clone();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        waited.unwrap_or_else(|_| panic!("no audit record for {what}"))
    }
}

/// A `state` record of a drain of kind `stop` reaching `to`.
fn drained(r: &Value, stop: &str, to: &str) -> bool {
    r["event"] == "state" && r["detail"]["stop"] == stop && r["detail"]["to"] == to
}

/// Callers issuing `echo` calls back to back until told to stop; every outcome is counted.
struct Load {
    /// Calls that succeeded and calls that failed so far; waiters watch it.
    progress: Arc<tokio::sync::watch::Sender<(u64, usize)>>,
    failed: Arc<Mutex<Vec<CallError>>>,
}

struct Callers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn new() -> Self {
        Self {
            progress: Arc::new(tokio::sync::watch::Sender::new((0, 0))),
            failed: Arc::default(),
        }
    }

    fn start(&self, plugin: &Plugin, n: usize) -> Callers {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..n)
            .map(|c| {
                let (plugin, stop) = (plugin.clone(), Arc::clone(&stop));
                let (progress, failed) = (Arc::clone(&self.progress), Arc::clone(&self.failed));
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Acquire) {
                        i += 1;
                        let x = json!(format!("{c}-{i}"));
                        match plugin.call("echo", json!({ "x": x })).await {
                            Ok(Reply::Json(v)) if v == x => progress.send_modify(|p| p.0 += 1),
                            Ok(other) => panic!("wrong reply {other:?}"),
                            Err(e) => {
                                failed.lock().unwrap().push(e);
                                progress.send_modify(|p| p.1 += 1);
                            }
                        }
                    }
                })
            })
            .collect();
        Callers { stop, tasks }
    }

    fn ok(&self) -> u64 {
        self.progress.borrow().0
    }

    fn failures(&self) -> Vec<CallError> {
        self.failed.lock().unwrap().clone()
    }

    /// Waits until at least `calls` succeeded in all (and fails early on a failed call).
    async fn until(&self, calls: u64) {
        let mut progress = self.progress.subscribe();
        tokio::time::timeout(HANG, progress.wait_for(|p| p.0 >= calls || p.1 > 0))
            .await
            .expect("calls keep succeeding")
            .expect("the load is alive");
        assert_eq!(self.failures(), vec![], "a call failed");
    }
}

impl Callers {
    /// Stops issuing calls and waits for the ones in flight.
    async fn finish(self) {
        self.stop.store(true, Ordering::Release);
        for t in self.tasks {
            tokio::time::timeout(HANG, t).await.unwrap().unwrap();
        }
    }
}

const DRAIN_POLICY: &str = "[process]\ninstances = 2\nmin_warm = 1\nidle_seconds = 1\n[limits]\nwall_seconds = 12\ncall_timeout_ms = 500\n[supervision]\nhealth_interval_ms = 100\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_calls_survive_a_recycle_an_idle_shrink_a_reload_and_an_unload() {
    let te = TestEngine::new();
    let v1 = TestPlugin::new("drainer", DRAIN_POLICY, ECHO);
    let plugin = te.engine.load(v1.path(), &all()).await.expect("load");
    let mut tail = Tail::new(&te);
    let load = Load::new();

    // Under 4 callers the pool grows to its 2 instances.
    let busy = load.start(&plugin, 4);
    tokio::time::timeout(HANG, async {
        while plugin.instances().len() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("a second instance");
    load.until(1_000).await;
    busy.finish().await;

    // (b) idle: one sequential caller keeps only the first instance of the pool busy; the
    // other has no call for idle_seconds and is drained down to min_warm.
    let one = load.start(&plugin, 1);
    tail.wait("an idle shrink", |r| drained(r, "idle", "stopped"))
        .await;
    load.until(2_000).await;
    one.finish().await;

    // (a) wall_seconds: the first instance is recycled (from 6.5 s of its 12) while 4 callers
    // keep the pool busy.
    let busy = load.start(&plugin, 4);
    tail.wait("a recycle", |r| drained(r, "recycle", "stopped"))
        .await;
    load.until(5_000).await;

    // (c) reload: new code while the callers run.
    let v2 = TestPlugin::new(
        "drainer",
        DRAIN_POLICY,
        &format!("{ECHO}@plugbox.command\ndef version():\n    return 2\n"),
    );
    te.engine
        .reload("drainer", v2.path(), &all())
        .await
        .expect("reload");
    tail.wait("a reload drain", |r| drained(r, "reload", "stopped"))
        .await;
    load.until(10_000).await;
    busy.finish().await;

    // (d) unload: the calls in flight when it begins complete; it returns once they did.
    let naps: Vec<_> = (0..8)
        .map(|_| {
            let plugin = plugin.clone();
            tokio::spawn(async move { plugin.call("nap", json!({ "s": 0.2 })).await })
        })
        .collect();
    in_flight(&plugin, 8).await;
    assert!(te.engine.unload("drainer").await);
    for nap in naps {
        nap.await.unwrap().expect("a call in flight at unload");
    }
    tail.wait("an unload drain", |r| drained(r, "unload", "stopped"))
        .await;

    assert_eq!(load.failures(), vec![], "no call fails");
    assert!(load.ok() >= 10_000, "{}", load.ok());
    // The recycles are in the audit log: each drained instance went draining → stopped.
    tail.read_new();
    for stop in ["recycle", "idle", "reload", "unload"] {
        let draining = tail
            .seen
            .iter()
            .filter(|r| drained(r, stop, "draining"))
            .count();
        let stopped = tail
            .seen
            .iter()
            .filter(|r| drained(r, stop, "stopped"))
            .count();
        assert!(
            draining >= 1 && draining == stopped,
            "{stop}: {draining} {stopped}"
        );
    }
    let invoked = tail.seen.iter().filter(|r| r["event"] == "invoke");
    assert!(invoked.clone().all(|r| r["outcome"] == "ok"));
    assert!(invoked.count() as u64 >= 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recycled_instance_keeps_serving_until_its_replacement_is_ready() {
    let te = TestEngine::new();
    let policy = "[limits]\nwall_seconds = 8\ncall_timeout_ms = 300\n";
    let p = TestPlugin::new("recycled", policy, ECHO);
    let plugin = te.engine.load(p.path(), &all()).await.expect("load");
    let first = plugin.instances()[0].instance().to_owned();
    let mut tail = Tail::new(&te);
    let load = Load::new();
    let busy = load.start(&plugin, 2);
    let stopped = tail
        .wait("the recycle", |r| drained(r, "recycle", "stopped"))
        .await;
    busy.finish().await;
    assert_eq!(load.failures(), vec![]);
    assert_eq!(stopped["plugin"]["instance"], first.as_str());
    assert!(stopped["reason"]
        .as_str()
        .unwrap()
        .contains("its replacement is ready"));
    // The replacement was ready (its restart record) before the old one began draining.
    let seq = |pred: &dyn Fn(&Value) -> bool| {
        tail.seen.iter().find(|r| pred(r)).unwrap()["seq"]
            .as_u64()
            .unwrap()
    };
    let replaced = seq(&|r: &Value| {
        r["event"] == "restart" && r["reason"] == "recycle after limits.wall_seconds"
    });
    let draining = seq(&|r: &Value| drained(r, "recycle", "draining"));
    assert!(replaced < draining, "{replaced} {draining}");
    assert_eq!(plugin.stats().restarts, 0, "a recycle is not a restart");
}

/// Waits until the instances of `plugin` hold `calls` calls in flight between them.
async fn in_flight(plugin: &Plugin, calls: usize) {
    tokio::time::timeout(HANG, async {
        while plugin
            .instances()
            .iter()
            .map(|i| i.in_flight())
            .sum::<usize>()
            < calls
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("calls in flight");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_instance_fails_only_its_calls_in_flight_with_plugin_crashed() {
    let te = TestEngine::new();
    let policy = "[process]\ninstances = 2\nmin_warm = 2\n[limits]\nwall_seconds = 60\ncall_timeout_ms = 10000\n[supervision]\nbackoff_ms = 50\n";
    let p = TestPlugin::new("crasher", policy, ECHO);
    let plugin = te.engine.load(p.path(), &all()).await.expect("load");
    let naps: Vec<_> = (0..4)
        .map(|_| {
            let plugin = plugin.clone();
            tokio::spawn(async move { plugin.call("nap", json!({ "s": 1.5 })).await })
        })
        .collect();
    in_flight(&plugin, 4).await;
    let instances = plugin.instances();
    let victim = instances.iter().max_by_key(|i| i.in_flight()).unwrap();
    let (victim_pid, victim_calls) = (victim.pid(), victim.in_flight());
    plugbox::sys::kill_group(victim_pid, libc::SIGKILL).expect("kill");
    let mut crashed = 0;
    for nap in naps {
        match tokio::time::timeout(HANG, nap).await.unwrap().unwrap() {
            Ok(reply) => assert_ne!(pid_of(reply) as i32, victim_pid),
            Err(e) => {
                assert_eq!(e.code, ErrorCode::PluginCrashed, "{e}");
                assert!(e.message.contains("signal 9 (SIGKILL)"), "{e}");
                crashed += 1;
            }
        }
    }
    assert_eq!(crashed, victim_calls, "exactly the calls it had in flight");
    // Later calls succeed: on the other instance, then on the restarted one.
    for _ in 0..50 {
        plugin.call("echo", json!({ "x": 1 })).await.expect("after");
    }
    te.wait_for("the restart", |r| r["event"] == "restart")
        .await;
    let pids: Vec<i32> = plugin.instances().iter().map(|i| i.pid()).collect();
    assert!(!pids.contains(&victim_pid), "{pids:?}");
    for _ in 0..50 {
        plugin
            .call("echo", json!({ "x": 1 }))
            .await
            .expect("after restart");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_its_timeout_is_a_limit_and_a_failing_host_handler_is_host_error() {
    let te = TestEngine::new();
    te.engine
        .register(
            "test.fail",
            typed(|_ctx: CallContext, _args: Value| async {
                Err::<Value, _>(CallError::host("the host's handler broke"))
            }),
        )
        .unwrap();
    let main = format!(
        "{ECHO}@plugbox.command\ndef ask():\n    try:\n        plugbox.host.call('test.fail')\n    except plugbox.HostError as e:\n        return [e.code, e.message]\n"
    );
    let policy = "[capabilities]\n\"test.fail\" = {}\n[limits]\ncall_timeout_ms = 300\n";
    let p = TestPlugin::new("limited", policy, &main);
    let plugin = te.engine.load(p.path(), &all()).await.expect("load");
    let e = plugin.call("nap", json!({ "s": 3 })).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Limit);
    assert!(e.message.contains("limits.call_timeout_ms (300 ms)"), "{e}");
    let reply = plugin.call("ask", json!({})).await.expect("ask");
    assert_eq!(
        reply,
        Reply::Json(json!(["host_error", "the host's handler broke"]))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_cannot_pass_its_failure_off_as_a_crash_a_limit_or_the_hosts() {
    let te = TestEngine::new();
    let main = "import rawwire as w\nw.handshake()\nfor code in ['plugin_crashed', 'limit', 'unavailable', 'host_error', 'plugin_error']:\n    h, _ = w.recv()\n    w.send({'type': 'error', 'id': h['id'], 'error': {'code': code, 'message': 'forged'}})\nw.serve_report({})\n";
    let p = TestPlugin::new("forger", "", main);
    let instance = te
        .engine
        .spawn_instance(p.path(), &all())
        .await
        .expect("load");
    for forged in ["plugin_crashed", "limit", "unavailable", "host_error"] {
        let e = instance.call("report", json!({})).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::Protocol, "{forged}: {e}");
        assert!(e.message.contains(forged), "{e}");
    }
    let e = instance.call("report", json!({})).await.unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (ErrorCode::PluginError, "forged")
    );
    let violations = te.events("protocol_violation");
    assert_eq!(violations.len(), 4, "{violations:#?}");
    assert!(violations.iter().all(|v| v["decision"] == "deny"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unload_waits_for_a_plugin_to_host_call_in_flight() {
    let te = TestEngine::new();
    let started = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let (s, r) = (Arc::clone(&started), Arc::clone(&release));
    te.engine
        .register(
            "test.slow",
            typed(move |_ctx: CallContext, _args: Value| {
                let (s, r) = (Arc::clone(&s), Arc::clone(&r));
                async move {
                    let released = r.notified();
                    s.notify_one();
                    released.await;
                    Ok::<_, CallError>("done")
                }
            }),
        )
        .unwrap();
    // The command returns at once; a thread of the plugin calls the host in the background.
    let main = format!(
        "{ECHO}import _thread\n@plugbox.command\ndef bg():\n    _thread.start_new_thread(plugbox.host.call, ('test.slow',))\n    return 'started'\n"
    );
    let policy = "[capabilities]\n\"test.slow\" = {}\n[limits]\ncall_timeout_ms = 10000\n";
    let p = TestPlugin::new("background", policy, &main);
    let plugin = te.engine.load(p.path(), &all()).await.expect("load");
    plugin.call("bg", json!({})).await.expect("bg");
    tokio::time::timeout(HANG, started.notified())
        .await
        .expect("the host call");
    let engine = te.engine.clone();
    let unload = tokio::spawn(async move { engine.unload("background").await });
    let draining = te
        .wait_for("the drain", |r| drained(r, "unload", "draining"))
        .await;
    assert_eq!(
        draining["detail"]["plugin_calls_in_flight"], 1,
        "{draining}"
    );
    assert!(!unload.is_finished(), "the drain waits for the host call");
    release.notify_one();
    assert!(tokio::time::timeout(HANG, unload).await.unwrap().unwrap());
    let stopped = te
        .wait_for("the stop", |r| drained(r, "unload", "stopped"))
        .await;
    assert_eq!(stopped["detail"]["drained"], true, "{stopped}");
    let outcome = te
        .wait_for("the outcome", |r| {
            r["event"] == "call_outcome" && r["capability"] == "test.slow"
        })
        .await;
    assert_eq!(outcome["outcome"], "ok");
    let exit = te.wait_for("the exit", |r| r["event"] == "exit").await;
    assert!(outcome["seq"].as_u64() < exit["seq"].as_u64());
}
