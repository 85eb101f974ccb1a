//! Nothing a plugin started outlives it: grandchildren (a daemonised `sleep`, with
//! `subprocesses = true`) are gone after unload, after a call timeout kills the plugin, and
//! after the host itself is SIGKILLed (a real `plugbox run` process, killed by this test).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::plugins::{TestEngine, TestPlugin};
use plugbox::manifest::Grants;
use serde_json::json;
use std::time::{Duration, Instant};

/// `spawn(marker)` leaves a daemonised `sleep <marker>` behind (its parent shell exits, so it
/// is re-parented away from the plugin); `spawn_and_hold` then waits, `spawn_and_hog` then
/// holds the GIL so that the plugin answers nothing, not even a cancel.
const SPAWNER: &str = r#"import plugbox, subprocess, time
def _spawn(marker):
    subprocess.run(['/bin/sh', '-c', '( /usr/bin/sleep ' + marker + ' & ) ; exit 0'], check=True)
@plugbox.command
def spawn(marker):
    _spawn(marker)
    return 'spawned'
@plugbox.command
def spawn_and_hold(marker):
    _spawn(marker)
    time.sleep(120)
@plugbox.command
def spawn_and_hog(marker):
    _spawn(marker)
    import re
    re.match(r'(a*)*$', 'a' * 40 + 'b')
"#;

const POLICY: &str = "[process]\nsubprocesses = true\n[filesystem]\nexecute = [\"/usr/bin\", \"/bin\"]\n[limits]\nwall_seconds = 120\n";

/// A `sleep` duration no other process uses: `4242.<pid><nanos>`.
fn marker() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("4242.{}{nanos}", std::process::id())
}

/// Live `sleep <marker>` processes.
fn with_marker(marker: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if cmdline == format!("/usr/bin/sleep\0{marker}\0").as_bytes() && common::alive(pid) {
            found.push(pid);
        }
    }
    found
}

async fn until(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grandchildren_are_killed_when_the_plugin_is_unloaded() {
    let te = TestEngine::new();
    let p = TestPlugin::new("spawner", POLICY, SPAWNER);
    let plugin = te
        .engine
        .load(p.path(), &Grants::all_requested())
        .await
        .expect("load");
    let m = marker();
    plugin
        .call("spawn", json!({ "marker": m }))
        .await
        .expect("spawn");
    // The backgrounded `sleep` may still be between fork and exec when `spawn` returns.
    until("the daemon to run", Duration::from_secs(3), || {
        with_marker(&m).len() == 1
    })
    .await;
    assert!(te.engine.unload("spawner").await);
    until("the daemon to die", Duration::from_secs(3), || {
        with_marker(&m).is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grandchildren_are_killed_when_a_call_timeout_kills_the_plugin() {
    let te = TestEngine::new();
    let policy = format!("{POLICY}call_timeout_ms = 300\n[supervision]\nrestart = \"never\"\n");
    let p = TestPlugin::new("spawner", &policy, SPAWNER);
    let plugin = te
        .engine
        .load(p.path(), &Grants::all_requested())
        .await
        .expect("load");
    let m = marker();
    let e = plugin
        .call("spawn_and_hog", json!({ "marker": m }))
        .await
        .unwrap_err();
    assert_eq!(e.code, plugbox::ipc::ErrorCode::Limit);
    te.wait_for("the kill", |r| r["event"] == "kill").await;
    until("the daemon to die", Duration::from_secs(3), || {
        with_marker(&m).is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grandchildren_are_killed_when_the_host_is_sigkilled() {
    let p = TestPlugin::new(
        "spawner",
        &format!("{POLICY}call_timeout_ms = 120000\n"),
        SPAWNER,
    );
    let work = tempfile::tempdir().unwrap();
    let m = marker();
    let mut host = std::process::Command::new(common::plugbox())
        .arg("run")
        .arg(p.path())
        .arg("--audit")
        .arg(work.path().join("audit.jsonl"))
        .arg("--state")
        .arg(work.path().join("state"))
        .args(["--call", "spawn_and_hold", "--args"])
        .arg(json!({ "marker": m }).to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("plugbox run");
    until("the daemon to start", Duration::from_secs(20), || {
        !with_marker(&m).is_empty()
    })
    .await;
    let audit = std::fs::read_to_string(work.path().join("audit.jsonl")).unwrap();
    let plugin_pid = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["event"] == "spawn")
        .and_then(|r| r["detail"]["pid"].as_i64())
        .expect("spawn record") as i32;
    host.kill().expect("SIGKILL the host");
    host.wait().expect("reap the host");
    until("the daemon to die", Duration::from_secs(3), || {
        with_marker(&m).is_empty()
    })
    .await;
    // The watchdog's SIGKILL reaches the whole group at once, but the plugin (a threaded
    // interpreter) may finish exiting a moment after its daemon: wait for its death too, with
    // the same bound, rather than sampling it at one instant.
    until(
        "the plugin to die with its host",
        Duration::from_secs(3),
        || !common::alive(plugin_pid),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unload_escalates_from_shutdown_to_sigterm_to_sigkill() {
    let te = TestEngine::new();
    // Polite: exits on `shutdown` with status 0.
    let polite = TestPlugin::new("polite", "", "import plugbox\n");
    // Stubborn: ignores SIGTERM, and a thread holding the GIL keeps it from reading `shutdown`.
    let stubborn = TestPlugin::new(
        "stubborn",
        "",
        "import plugbox, signal, _thread, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ndef _hog():\n    time.sleep(0.05)\n    import re\n    re.match(r'(a*)*$', 'a' * 40 + 'b')\n@plugbox.command\ndef wedge():\n    _thread.start_new_thread(_hog, ())\n    return 'wedged soon'\n",
    );
    let grants = Grants::all_requested();
    te.engine
        .load(polite.path(), &grants)
        .await
        .expect("polite");
    let p = te
        .engine
        .load(stubborn.path(), &grants)
        .await
        .expect("stubborn");
    p.call("wedge", json!({})).await.expect("wedge");
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Polite: it exits on `shutdown` by itself (status 0), never signalled.
    assert!(te.engine.unload("polite").await);
    let exit = te.wait_for("polite exit", |r| r["event"] == "exit").await;
    assert_eq!(exit["detail"]["exit_code"], 0, "{exit}");

    let started = Instant::now();
    assert!(te.engine.unload("stubborn").await);
    // Stubborn: the engine waited out both graces (a lower bound the engine guarantees, not a
    // speed), then killed it.
    let took = started.elapsed();
    let grace = plugbox::engine::SHUTDOWN_GRACE + plugbox::engine::TERM_GRACE;
    assert!(took >= grace, "{took:?}");
    let kill = te.wait_for("stubborn kill", |r| r["event"] == "kill").await;
    assert_eq!(kill["detail"]["signal"], 9, "{kill}");
}
