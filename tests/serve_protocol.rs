//! `plugbox serve` as a specified protocol (issue 14, item 1): a host written from
//! `docs/serve.md` alone (`tests/serve_host/host.py`, which speaks only the documented lines
//! and checks every line both ways against `docs/serve.schema.json` with the `jsonschema`
//! package) loads a real plugin, describes it, calls it, answers its `host_call` (which names
//! the request that led to it), sees it crash
//! and restart through `event` lines, and shuts serve down. The committed schema is the one the
//! code generates.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::plugins::TestPlugin;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

const PLUGIN: &str = r#"
import os
import plugbox

@plugbox.command
def count():
    return len(plugbox.host.call("doc.get_text", part="body").split())

@plugbox.command
def crash():
    os._exit(3)
"#;

#[test]
fn a_host_written_from_the_docs_loads_describes_calls_and_sees_a_crash_and_a_restart() {
    let plugin = TestPlugin::new(
        "doc-words",
        "[capabilities]\n\"doc.get_text\" = {}\n",
        PLUGIN,
    );
    // The description belongs to [plugin].
    let toml = std::fs::read_to_string(plugin.path().join("plugbox.toml")).unwrap();
    let description = "description = \"Counts the words of the host's document.\"\n";
    let toml = toml.replacen("[plugin]\n", &format!("[plugin]\n{description}"), 1);
    std::fs::write(plugin.path().join("plugbox.toml"), toml).unwrap();
    let work = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(common::PYTHON)
        .arg(root.join("tests/serve_host/host.py"))
        .arg(common::plugbox())
        .arg(root.join("docs/serve.schema.json"))
        .arg(plugin.path())
        .arg(work.path())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "the host failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).expect("the host's summary");
    assert_eq!(seen["ready"]["engine"], env!("CARGO_PKG_VERSION"));
    let described = &seen["described"];
    assert_eq!(described["name"], "doc-words");
    assert_eq!(
        described["description"],
        "Counts the words of the host's document."
    );
    assert_eq!(described["capabilities"], json!(["doc.get_text"]));
    assert_eq!(described["commands"], json!(["count", "crash"]));
    assert_eq!(seen["host_calls"][0]["capability"], "doc.get_text");
    assert_eq!(seen["host_calls"][0]["args"], json!({"part": "body"}));
    // Each host_call names the request that led to it (the host checked every one).
    assert_eq!(seen["host_calls"][0]["request"], "count", "{seen}");
    assert_eq!(seen["host_calls"][1]["request"], "again", "{seen}");
    assert_eq!(seen["crashed"]["code"], "plugin_crashed", "{seen}");
    assert_eq!(seen["exited"]["detail"]["exit_code"], 3, "{seen}");
    let crashed_instance = seen["exited"]["instance"].as_str().unwrap();
    assert_ne!(seen["restarted"]["instance"], crashed_instance);
    assert!(seen["restarted"]["seq"].as_u64() > seen["exited"]["seq"].as_u64());
    assert_eq!(seen["again"]["result"], 3, "{seen}");
    assert_eq!(seen["missing"]["code"], "not_loaded");
    assert_eq!(seen["bye"]["ok"], true);
    assert_eq!(seen["status"], 0);
    // Shutdown's own events came before serve exited: the plugin stopped.
    let last: Vec<(String, String)> = serde_json::from_value(seen["last_events"].clone()).unwrap();
    assert!(
        last.contains(&("stopped".to_owned(), "-".to_owned())),
        "{last:?}"
    );
    // Every event is a record of the log, at its seq.
    let log = std::fs::read_to_string(work.path().join("audit.jsonl")).unwrap();
    let records: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let at = |seq: &Value| records.iter().find(|r| r["seq"] == *seq).unwrap().clone();
    assert_eq!(at(&seen["exited"]["seq"])["event"], "exit");
    assert_eq!(at(&seen["restarted"]["seq"])["event"], "restart");
}

#[test]
fn a_protocol_version_serve_does_not_speak_is_refused_before_the_ready_line() {
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(common::plugbox())
        .arg("serve")
        .arg("--audit")
        .arg(work.path().join("audit.jsonl"))
        .arg("--state")
        .arg(work.path().join("state"))
        .args(["--protocol", "3"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("plugbox serve");
    assert_eq!(out.status.code(), Some(125));
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--protocol 3") && err.contains("[1, 2]"),
        "{err}"
    );
}
