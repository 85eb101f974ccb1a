//! The managed engine with real plugins: atomic and idempotent activation, audited lifecycle
//! transitions, unload (draining) and reload (atomic, rolled back, escalation needs a grant),
//! and an engine dropped with plugins alive.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::alive;
use common::engine::*;
use common::plugins::{TestEngine, TestPlugin};
use plugbox::capability::Reply;
use plugbox::engine::{LoadError, State};
use plugbox::ipc::ErrorCode;
use plugbox::manifest::Grants;
use serde_json::json;
use std::time::{Duration, Instant};

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
    let stingy = Grants::none();
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
    assert_eq!(
        instance_level,
        ["spawning", "handshaking", "ready", "draining", "stopped"]
    );
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
    let approved = Grants::none()
        .grant("log", Default::default())
        .grant("kv.get", Default::default());
    te.engine
        .reload("growing", v2.path(), &approved)
        .await
        .expect("reload with a new grant");
    assert_eq!(
        plugin.call("which", json!({})).await.unwrap(),
        Reply::Json(json!("plugbox"))
    );
}
