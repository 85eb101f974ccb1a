//! `plugbox audit summary` counts incidents per plugin (issue 12, item 3), from a log a real
//! engine wrote: a plugin killed by SIGABRT (a crash, then a restart), a call past
//! `limits.call_timeout_ms`, a missed health ping (the kill and the restart that follow), an
//! ungranted call, and a refused load; each with its singular or plural noun.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::engine::*;
use common::plugins::{TestEngine, TestPlugin};
use plugbox::ipc::ErrorCode;
use plugbox::manifest::Grants;
use serde_json::json;
use std::process::Command;

/// The line of `plugin` in the summary's `incidents:` section.
fn incident_line<'a>(summary: &'a str, plugin: &str) -> &'a str {
    let section = summary
        .split("\nincidents:\n")
        .nth(1)
        .expect("an incidents section");
    section
        .lines()
        .take_while(|l| l.starts_with("  "))
        .find(|l| l.trim_start().starts_with(&format!("{plugin} ")))
        .unwrap_or_else(|| panic!("no incident line for {plugin}:\n{summary}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_timeout_health_failure_denial_and_refused_load_are_counted_per_plugin() {
    let te = TestEngine::new();
    let quick = "[supervision]\nbackoff_ms = 50\n";

    // Killed by SIGABRT: a crash, and the restart after it.
    let aborter = TestPlugin::new(
        "aborter",
        quick,
        &format!("{ECHO}@plugbox.command\ndef abort():\n    os.abort()\n"),
    );
    let p = te.engine.load(aborter.path(), &all()).await.expect("load");
    let e = p.call("abort", json!({})).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::PluginCrashed, "{e:?}");
    assert!(e.message.contains("SIGABRT"), "{e:?}");
    te.wait_for("aborter restart", |r| {
        r["event"] == "restart" && r["plugin"]["name"] == "aborter"
    })
    .await;

    // A call past its timeout, cancelled (the SDK answers the cancel): no kill.
    let sleeper = TestPlugin::new(
        "sleeper",
        &format!("[limits]\ncall_timeout_ms = 300\n{quick}"),
        ECHO,
    );
    let p = te.engine.load(sleeper.path(), &all()).await.expect("load");
    let e = p.call("nap", json!({"s": 30})).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Limit, "{e:?}");

    // A missed health ping: the ping is cancelled, the cancel ignored (the GIL is held), so
    // the plugin is killed for that first; the restart follows. One ungranted call before.
    let main = format!(
        "{ECHO}import _thread\ndef _hog():\n    time.sleep(0.1)\n    {GIL_HOG}@plugbox.command\ndef freeze():\n    try:\n        plugbox.host.call('doc.set_text', text='x')\n    except plugbox.CapabilityDenied:\n        pass\n    _thread.start_new_thread(_hog, ())\n    return 'frozen soon'\n"
    );
    let freezer = TestPlugin::new(
        "freezer",
        "[supervision]\nhealth_interval_ms = 2000\nhealth_timeout_ms = 300\nbackoff_ms = 50\n",
        &main,
    );
    let p = te.engine.load(freezer.path(), &all()).await.expect("load");
    p.call("freeze", json!({})).await.expect("freeze");
    te.wait_for("freezer restart", |r| {
        r["event"] == "restart" && r["plugin"]["name"] == "freezer"
    })
    .await;

    // A refused load: the manifest needs what the host does not grant.
    let needy = TestPlugin::new("needy", "[capabilities]\n\"kv.set\" = {}\n", ECHO);
    assert!(te.engine.load(needy.path(), &Grants::none()).await.is_err());

    te.engine.shutdown().await.expect("shutdown");
    let out = Command::new(common::plugbox())
        .args(["audit", "summary"])
        .arg(&te.audit)
        .output()
        .expect("summary");
    let summary = String::from_utf8(out.stdout).expect("utf-8");
    assert!(out.status.success(), "{summary}");
    let line = |p| incident_line(&summary, p).split_once(p).unwrap().1.trim();
    assert_eq!(line("aborter"), "2 incidents: 1 crash (SIGABRT), 1 restart");
    assert_eq!(line("sleeper"), "1 incident: 1 call timeout");
    // On a loaded machine a restarted instance may miss a ping too: the line counts what the
    // log holds (one frozen instance: at least one of each).
    let of = |event: &str| {
        te.records()
            .iter()
            .filter(|r| r["plugin"]["name"] == "freezer" && r["event"] == event)
            .count() as u64
    };
    let (kills, failures, restarts) = (of("kill"), of("health_failure"), of("restart"));
    assert!(kills >= 1 && failures >= 1 && restarts >= 1);
    let noun = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let freezer = line("freezer");
    let total = kills + failures + restarts + 1;
    let head = format!("{total} incidents: {} (", noun(kills, "kill", "kills"));
    let tail = format!(
        "), {}, {}, 1 denial",
        noun(failures, "health failure", "health failures"),
        noun(restarts, "restart", "restarts")
    );
    assert!(
        freezer.starts_with(&head) && freezer.ends_with(&tail),
        "{freezer}"
    );
    // The frozen instance ignored the ping's cancel (its GIL is held): killed for that.
    assert!(freezer.contains("ignored cancel"), "{freezer}");
    assert_eq!(line("needy"), "1 incident: 1 refused load");
    // The per-plugin table agrees, in the singular where it should be.
    assert!(
        summary
            .lines()
            .any(|l| l.trim_start().starts_with("sleeper") && l.ends_with(" 1 incident")),
        "{summary}"
    );
}
