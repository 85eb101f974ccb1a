//! The managed engine with real plugins: atomic and idempotent activation, audited lifecycle
//! transitions, unload and reload, call timeouts, health checks, restarts with backoff, the
//! restart circuit, warm instances, and teardown of whole process trees.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::alive;
use common::plugins::{TestEngine, TestPlugin};
use plugbox::capability::Reply;
use plugbox::engine::{LoadError, State};
use plugbox::ipc::ErrorCode;
use plugbox::manifest::Grants;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

const ECHO: &str = "import plugbox, os, time\n@plugbox.command\ndef echo(x):\n    return x\n@plugbox.command\ndef pid():\n    return os.getpid()\n@plugbox.command\ndef nap(s):\n    time.sleep(s)\n    return os.getpid()\n";

/// Holds the GIL for ever (catastrophic backtracking in C): no thread of the plugin runs
/// again, so it answers neither a cancel nor a ping.
const GIL_HOG: &str = "import re\n    re.match(r'(a*)*$', 'a' * 40 + 'b')\n";

fn all() -> Grants {
    Grants::all_requested()
}

/// Pids of every `spawn` record, in order.
fn spawned_pids(te: &TestEngine) -> Vec<i32> {
    te.events("spawn")
        .iter()
        .map(|r| r["detail"]["pid"].as_i64().unwrap() as i32)
        .collect()
}

/// `(instance, to)` of every `state` record.
fn transitions(te: &TestEngine) -> Vec<(String, String)> {
    te.events("state")
        .iter()
        .map(|r| {
            (
                r["plugin"]["instance"].as_str().unwrap().to_owned(),
                r["detail"]["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn gone_within(pid: i32, limit: Duration) -> bool {
    let start = Instant::now();
    while alive(pid) {
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

fn pid_of(reply: Reply) -> i64 {
    match reply {
        Reply::Json(Value::Number(n)) => n.as_i64().unwrap(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_is_idempotent_unload_drains_and_every_transition_is_audited() {
    let te = TestEngine::new();
    let p = TestPlugin::new("steady", "", ECHO);
    let plugin = te.engine.load(p.path(), &all()).await.expect("load");
    assert_eq!(plugin.state(), State::Ready);
    let again = te.engine.load(p.path(), &all()).await.expect("second load");
    assert_eq!(
        spawned_pids(&te).len(),
        1,
        "the second load started nothing"
    );
    assert_eq!(
        pid_of(again.call("pid", json!({})).await.unwrap()),
        pid_of(plugin.call("pid", json!({})).await.unwrap())
    );
    let stingy = Grants::from_file(plugbox::manifest::GrantFile {
        schema: 1,
        capabilities: Default::default(),
        code_digest: None,
    })
    .unwrap();
    match te.engine.load(p.path(), &stingy).await {
        Err(e @ LoadError::Conflict { .. }) => assert_eq!(e.step(), "register"),
        other => panic!("{other:?}"),
    }
    let pid = spawned_pids(&te)[0];
    // A call in flight when unload starts finishes; calls after it fail fast.
    let slow = tokio::spawn({
        let plugin = plugin.clone();
        async move { plugin.call("nap", json!({"s": 0.3})).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(te.engine.unload("steady").await);
    assert!(
        slow.await.unwrap().is_ok(),
        "the in-flight call was drained"
    );
    let after = plugin.call("echo", json!({"x": 1})).await.unwrap_err();
    assert_eq!(after.code, ErrorCode::Unavailable);
    assert!(!alive(pid));
    assert!(te.engine.plugin("steady").is_none());
    assert!(!te.engine.unload("steady").await);

    let t = transitions(&te);
    let plugin_level: Vec<&str> = t
        .iter()
        .filter(|(i, _)| i == "-")
        .map(|(_, to)| to.as_str())
        .collect();
    assert_eq!(
        plugin_level,
        ["discovered", "validated", "ready", "draining", "stopped"]
    );
    let instance_level: Vec<&str> = t
        .iter()
        .filter(|(i, _)| i != "-")
        .map(|(_, to)| to.as_str())
        .collect();
    assert_eq!(instance_level, ["spawning", "handshaking", "ready"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_never_answers_the_handshake_is_killed_and_nothing_stays_registered() {
    let te = TestEngine::with(|c| c.handshake_timeout = Duration::from_millis(500));
    let p = TestPlugin::new("mute", "", "import time\ntime.sleep(60)\n");
    let started = Instant::now();
    let e = te.engine.load(p.path(), &all()).await.unwrap_err();
    assert_eq!(e.step(), "handshake", "{e}");
    assert!(
        e.to_string()
            .contains("no hello before the handshake deadline"),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let pid = spawned_pids(&te)[0];
    assert!(
        gone_within(pid, Duration::from_secs(2)).await,
        "the silent process survived"
    );
    assert!(te.engine.plugin("mute").is_none());
    assert_eq!(te.engine.live_plugins(), 0);
    let refused = te.events("load_refused");
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["detail"]["step"], "handshake");
    assert!(transitions(&te).contains(&("-".into(), "failed".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_hangs_is_timed_out_the_plugin_killed_and_restarted() {
    let te = TestEngine::new();
    let main = format!("{ECHO}@plugbox.command\ndef hang():\n    {GIL_HOG}");
    let p = TestPlugin::new(
        "hanger",
        "[limits]\ncall_timeout_ms = 300\n[supervision]\nbackoff_ms = 50\n",
        &main,
    );
    let plugin = te.engine.load(p.path(), &all()).await.expect("load");
    let first = pid_of(plugin.call("pid", json!({})).await.unwrap()) as i32;
    let e = plugin.call("hang", json!({})).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Timeout);
    let timeout = te
        .wait_for("timeout record", |r| r["event"] == "timeout")
        .await;
    assert_eq!(timeout["rule"], "limits.call_timeout_ms");
    assert!(gone_within(first, Duration::from_secs(3)).await);
    te.wait_for("restart", |r| r["event"] == "restart").await;
    let second = pid_of(plugin.call("pid", json!({})).await.expect("after restart")) as i32;
    assert_ne!(first, second);
    let stats = plugin.stats();
    assert_eq!(stats.restarts, 1);
    assert_eq!(stats.state, State::Ready);
    assert!(te.events("kill").iter().any(|r| r["reason"]
        .as_str()
        .unwrap()
        .contains("not answered after cancel")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_stops_answering_pings_is_killed_and_restarted() {
    let te = TestEngine::new();
    let main = format!(
        "{ECHO}import _thread\ndef _hog():\n    time.sleep(0.1)\n    {GIL_HOG}@plugbox.command\ndef freeze():\n    _thread.start_new_thread(_hog, ())\n    return 'frozen soon'\n"
    );
    let p = TestPlugin::new(
        "freezer",
        "[supervision]\nhealth_interval_ms = 200\nhealth_timeout_ms = 200\nbackoff_ms = 50\n",
        &main,
    );
    let plugin = te.engine.load(p.path(), &all()).await.expect("load");
    let first = pid_of(plugin.call("pid", json!({})).await.unwrap()) as i32;
    plugin.call("freeze", json!({})).await.expect("freeze");
    let failure = te
        .wait_for("health failure", |r| r["event"] == "health_failure")
        .await;
    assert_eq!(failure["rule"], "supervision.health_timeout_ms");
    assert!(gone_within(first, Duration::from_secs(3)).await);
    te.wait_for("restart", |r| r["event"] == "restart").await;
    let second = pid_of(plugin.call("pid", json!({})).await.expect("after restart")) as i32;
    assert_ne!(first, second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_opens_the_circuit_then_a_trial_restart_closes_it() {
    let te = TestEngine::new();
    // The plugin reads its mode from outside its (digested) directory.
    let mode_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(mode_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mode = mode_dir.path().join("mode");
    let set_mode = |m: &str| {
        std::fs::write(&mode, m).unwrap();
        std::fs::set_permissions(&mode, std::fs::Permissions::from_mode(0o644)).unwrap();
    };
    set_mode("ok");
    let main = format!(
        "import os\nif open({:?}).read() == 'crash':\n    os._exit(3)\n{ECHO}@plugbox.command\ndef crash():\n    os._exit(3)\n",
        mode.display().to_string()
    );
    let extra = format!(
        "[filesystem]\nread = [{:?}]\n[supervision]\nmax_restarts = 3\nbackoff_ms = 20\nbackoff_max_ms = 100\ncircuit_open_seconds = 1\n",
        mode_dir.path().display().to_string()
    );
    let p = TestPlugin::new("crashy", &extra, &main);
    let plugin = te.engine.load(p.path(), &all()).await.expect("load");
    set_mode("crash");
    let _ = plugin.call("crash", json!({})).await;
    let opened = te
        .wait_for("circuit open", |r| r["event"] == "circuit")
        .await;
    assert_eq!(opened["detail"]["circuit"], "open");
    assert!(
        opened["reason"].as_str().unwrap().contains("3 restarts"),
        "{opened}"
    );
    // Fails fast: no waiting for the call timeout.
    let started = Instant::now();
    let e = plugin.call("echo", json!({"x": 1})).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Unavailable, "{e:?}");
    assert!(e.message.contains("circuit open"), "{e:?}");
    assert!(started.elapsed() < Duration::from_millis(50));
    assert_eq!(plugin.state(), State::Failed);
    // Every failed start was killed and audited.
    assert_eq!(te.events("load_refused").len(), 3);
    for pid in spawned_pids(&te) {
        assert!(gone_within(pid, Duration::from_secs(2)).await);
    }
    // After circuit_open_seconds one trial start runs; with the cause fixed it succeeds.
    set_mode("ok");
    te.wait_for("circuit closed", |r| {
        r["event"] == "circuit" && r["detail"]["circuit"] == "closed"
    })
    .await;
    assert_eq!(
        plugin
            .call("echo", json!({"x": 7}))
            .await
            .expect("after trial"),
        Reply::Json(json!(7))
    );
    assert_eq!(plugin.state(), State::Ready);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_instances_share_the_calls_each_under_its_own_uid() {
    let te = TestEngine::new();
    let p = TestPlugin::new("pool", "[process]\ninstances = 3\nmin_warm = 2\n", ECHO);
    let plugin = te.engine.load(p.path(), &all()).await.expect("load");
    assert_eq!(
        plugin.instances().len(),
        2,
        "min_warm instances are ready at load"
    );
    let started = Instant::now();
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let plugin = plugin.clone();
            tokio::spawn(
                async move { pid_of(plugin.call("nap", json!({"s": 0.4})).await.unwrap()) },
            )
        })
        .collect();
    let mut pids = Vec::new();
    for c in calls {
        pids.push(c.await.unwrap());
    }
    pids.sort_unstable();
    pids.dedup();
    assert!(pids.len() >= 2, "calls went to one instance: {pids:?}");
    assert!(
        started.elapsed() < Duration::from_millis(1100),
        "{:?}",
        started.elapsed()
    );
    // The busy pool grew to `instances`.
    for _ in 0..200 {
        if plugin.instances().len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(plugin.instances().len(), 3);
    let uids: Vec<u64> = te
        .events("spawn")
        .iter()
        .map(|r| r["detail"]["enforcement"]["uid"].as_u64().unwrap())
        .collect();
    let mut distinct = uids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "{uids:?}");
    for instance in plugin.instances() {
        let status = std::fs::read_to_string(format!("/proc/{}/status", instance.pid())).unwrap();
        let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        let uid: u64 = uid_line.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(uids.contains(&uid) && uid >= u64::from(plugbox::engine::DEFAULT_UID_BASE));
    }
    te.engine.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_switches_calls_to_new_code_and_a_broken_version_rolls_back() {
    let te = TestEngine::new();
    let v1 = TestPlugin::new(
        "versioned",
        "",
        "import plugbox\n@plugbox.command\ndef which():\n    return 1\n",
    );
    let v2 = TestPlugin::new(
        "versioned",
        "",
        "import plugbox\n@plugbox.command\ndef which():\n    return 2\n",
    );
    let broken = TestPlugin::new("versioned", "", "raise SystemExit(4)\n");
    let plugin = te.engine.load(v1.path(), &all()).await.expect("load");
    assert_eq!(
        plugin.call("which", json!({})).await.unwrap(),
        Reply::Json(json!(1))
    );
    let old_pid = spawned_pids(&te)[0];
    te.engine
        .reload("versioned", v2.path(), &all())
        .await
        .expect("reload");
    assert_eq!(
        plugin.call("which", json!({})).await.unwrap(),
        Reply::Json(json!(2))
    );
    assert!(
        gone_within(old_pid, Duration::from_secs(4)).await,
        "the old instance drained"
    );
    let e = te
        .engine
        .reload("versioned", broken.path(), &all())
        .await
        .unwrap_err();
    assert_eq!(e.step(), "handshake", "{e}");
    assert_eq!(
        plugin.call("which", json!({})).await.unwrap(),
        Reply::Json(json!(2))
    );
    assert_eq!(plugin.state(), State::Ready);
    assert_eq!(plugin.stats().restarts, 0, "a reload is not a restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_never_fails_the_plugin_on_its_first_crash() {
    let te = TestEngine::new();
    let main = format!("{ECHO}@plugbox.command\ndef crash():\n    os._exit(9)\n");
    let p = TestPlugin::new("fragile", "[supervision]\nrestart = \"never\"\n", &main);
    let plugin = te.engine.load(p.path(), &all()).await.expect("load");
    let _ = plugin.call("crash", json!({})).await;
    te.wait_for("circuit", |r| r["event"] == "circuit").await;
    assert_eq!(plugin.state(), State::Failed);
    let e = plugin.call("echo", json!({"x": 1})).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Unavailable);
    assert_eq!(spawned_pids(&te).len(), 1, "never restarted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_engine_kills_every_plugin_process() {
    let te = TestEngine::new();
    let a = TestPlugin::new("first", "", ECHO);
    let b = TestPlugin::new("second", "[process]\nmin_warm = 2\ninstances = 2\n", ECHO);
    let engine = te.engine.clone();
    let pa = engine.load(a.path(), &all()).await.expect("a");
    let _pb = engine.load(b.path(), &all()).await.expect("b");
    let pids = spawned_pids(&te);
    assert_eq!(pids.len(), 3);
    drop(engine);
    let TestEngine { engine, .. } = te;
    drop(engine);
    for pid in pids {
        assert!(
            gone_within(pid, Duration::from_secs(2)).await,
            "{pid} outlived the engine"
        );
    }
    let e = pa.call("echo", json!({"x": 1})).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Unavailable, "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_refuses_code_that_changed_on_disk_since_load() {
    let te = TestEngine::new();
    let main = format!("{ECHO}@plugbox.command\ndef crash():\n    os._exit(9)\n");
    let p = TestPlugin::new(
        "tampered",
        "[supervision]\nbackoff_ms = 10\nmax_restarts = 1\n",
        &main,
    );
    let plugin = te.engine.load(p.path(), &all()).await.expect("load");
    std::fs::write(p.path().join("main.py"), format!("{main}# changed\n")).unwrap();
    let _ = plugin.call("crash", json!({})).await;
    let refused = te
        .wait_for("refused restart", |r| r["event"] == "load_refused")
        .await;
    assert_eq!(refused["detail"]["step"], "validate");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("differs from the approved"),
        "{refused}"
    );
    assert_eq!(spawned_pids(&te).len(), 1, "the changed code never ran");
    te.wait_for("circuit", |r| r["event"] == "circuit").await;
    assert_eq!(plugin.state(), State::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_escalates_needs_a_new_grant() {
    let te = TestEngine::new();
    let code = "import plugbox\n@plugbox.command\ndef which():\n    return plugbox.__name__\n";
    let v1 = TestPlugin::new("growing", "[capabilities]\n\"log\" = {}\n", code);
    let v2 = TestPlugin::new(
        "growing",
        "[capabilities]\n\"log\" = {}\n\"kv.get\" = {}\n[process]\ninstances = 2\n",
        code,
    );
    let plugin = te.engine.load(v1.path(), &all()).await.expect("load");
    let e = te
        .engine
        .reload("growing", v2.path(), &all())
        .await
        .unwrap_err();
    assert_eq!(e.step(), "validate");
    let text = e.to_string();
    assert!(
        text.contains("capabilities.\"kv.get\"") && text.contains("process.instances"),
        "{text}"
    );
    assert_eq!(spawned_pids(&te).len(), 1, "nothing of v2 ran");
    // The operator approves: a grant naming the new capability.
    let approved = Grants::from_file(plugbox::manifest::GrantFile {
        schema: 1,
        capabilities: [("log", ()), ("kv.get", ())]
            .into_iter()
            .map(|(n, ())| (n.to_owned(), Default::default()))
            .collect(),
        code_digest: None,
    })
    .unwrap();
    te.engine
        .reload("growing", v2.path(), &approved)
        .await
        .expect("reload with a new grant");
    assert_eq!(
        plugin.call("which", json!({})).await.unwrap(),
        Reply::Json(json!("plugbox"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_hold_for_the_plugin_across_its_instances() {
    let te = TestEngine::new();
    let main = "import plugbox, os\n@plugbox.command\ndef burst(n):\n    ok = 0\n    for _ in range(n):\n        try:\n            plugbox.host.call('kv.get', key='k')\n            ok += 1\n        except plugbox.PlugboxError:\n            pass\n    return [os.getpid(), ok]\n";
    let p = TestPlugin::new(
        "metered",
        "[capabilities]\n\"kv.get\" = {}\n[process]\ninstances = 2\nmin_warm = 2\n[limits]\ncalls_per_second = 1\ncall_burst = 10\n",
        main,
    );
    let plugin = te.engine.load(p.path(), &all()).await.expect("load");
    // Two calls at once go to the two instances; together they get one bucket of 10.
    let (a, b) = tokio::join!(
        plugin.call("burst", json!({"n": 10})),
        plugin.call("burst", json!({"n": 10}))
    );
    let (a, b) = match (a.unwrap(), b.unwrap()) {
        (Reply::Json(a), Reply::Json(b)) => (a, b),
        other => panic!("{other:?}"),
    };
    assert_ne!(a[0], b[0], "both instances served");
    let allowed = a[1].as_u64().unwrap() + b[1].as_u64().unwrap();
    assert!(
        (10..=11).contains(&allowed),
        "{allowed} calls passed a burst of 10"
    );
}
