//! Supervision with real plugins: a call that hangs (timeout, kill, restart), a missed health
//! ping, a crash loop that opens the circuit (and a trial that closes it), `restart = "never"`,
//! and a restart refused because the code changed on disk.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::engine::*;
use common::plugins::{TestEngine, TestPlugin};
use plugbox::capability::Reply;
use plugbox::engine::State;
use plugbox::ipc::ErrorCode;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

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
    assert_eq!(e.code, ErrorCode::Limit);
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
        // Probes every 50 ms, each given 400 ms: several would be outstanding at once.
        "[supervision]\nhealth_interval_ms = 50\nhealth_timeout_ms = 400\nbackoff_ms = 50\n",
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
    // One failure, one record: the probes still outstanding when it failed add none.
    let failures = te.events("health_failure");
    let of_first = failures
        .iter()
        .filter(|r| r["plugin"]["instance"] == failure["plugin"]["instance"])
        .count();
    assert_eq!(of_first, 1, "{failures:#?}");
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
    // Fails fast: refused by the open circuit, not left to the call timeout.
    wait_failed(&te).await;
    let e = plugin.call("echo", json!({"x": 1})).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Unavailable, "{e:?}");
    assert!(e.message.contains("circuit open"), "{e:?}");
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
async fn restart_never_fails_the_plugin_on_its_first_crash() {
    let te = TestEngine::new();
    let main = format!("{ECHO}@plugbox.command\ndef crash():\n    os._exit(9)\n");
    let p = TestPlugin::new("fragile", "[supervision]\nrestart = \"never\"\n", &main);
    let plugin = te.engine.load(p.path(), &all()).await.expect("load");
    let _ = plugin.call("crash", json!({})).await;
    te.wait_for("circuit", |r| r["event"] == "circuit").await;
    wait_failed(&te).await;
    assert_eq!(plugin.state(), State::Failed);
    let e = plugin.call("echo", json!({"x": 1})).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Unavailable);
    assert_eq!(spawned_pids(&te).len(), 1, "never restarted");
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
    wait_failed(&te).await;
    assert_eq!(plugin.state(), State::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_reaches_wall_seconds_is_recycled_without_counting_a_failure() {
    let te = TestEngine::new();
    let p = TestPlugin::new("mortal", "[limits]\nwall_seconds = 1\n", ECHO);
    let plugin = te.engine.load(p.path(), &all()).await.expect("load");
    let first = pid_of(plugin.call("pid", json!({})).await.unwrap()) as i32;
    // Drained and stopped before the hard kill at 1 s, not killed (tests/engine_drain.rs).
    let stopped = te
        .wait_for("the recycle", |r| {
            r["event"] == "state"
                && r["detail"]["stop"] == "recycle"
                && r["detail"]["to"] == "stopped"
        })
        .await;
    assert!(
        stopped["reason"]
            .as_str()
            .unwrap()
            .contains("limits.wall_seconds (1) is near"),
        "{stopped}"
    );
    let restart = te.wait_for("recycle", |r| r["event"] == "restart").await;
    assert!(
        restart["reason"].as_str().unwrap().contains("recycle"),
        "{restart}"
    );
    let second = pid_of(plugin.call("pid", json!({})).await.expect("after recycle")) as i32;
    assert_ne!(first, second);
    assert!(!common::alive(first));
    let stats = plugin.stats();
    assert_eq!((stats.restarts, stats.circuit_open), (0, false));
}

/// Waits for the plugin's `failed` state record: the state is set before that record is
/// written, while the circuit record comes before the state changes.
async fn wait_failed(te: &TestEngine) {
    te.wait_for("state failed", |r| {
        r["event"] == "state" && r["plugin"]["instance"] == "-" && r["detail"]["to"] == "failed"
    })
    .await;
}
