//! `plugbox serve`, the managed engine for hosts in other languages: pipelined JSON-line
//! requests over real pipes, real plugins, bad input answered, and a sealed audit log.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::plugins::TestPlugin;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

const ADDER: &str = "import plugbox\n@plugbox.command\ndef add(a, b):\n    return a + b\n";

#[test]
fn a_pipelined_session_loads_calls_unloads_and_seals_the_log() {
    let one = TestPlugin::new("adder-one", "", ADDER);
    let two = TestPlugin::new("adder-two", "[process]\ninstances = 2\n", ADDER);
    let work = tempfile::tempdir().unwrap();
    let audit = work.path().join("audit.jsonl");
    let mut serve = Command::new(common::plugbox())
        .arg("serve")
        .arg("--audit")
        .arg(&audit)
        .arg("--state")
        .arg(work.path().join("state"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("plugbox serve");
    let mut requests = vec![
        json!({"id": "load-1", "op": "load", "dir": one.path()}),
        json!({"id": "load-2", "op": "load", "dir": two.path()}),
    ];
    for i in 0..20 {
        let plugin = if i % 2 == 0 { "adder-one" } else { "adder-two" };
        requests.push(json!({"id": i, "op": "call", "plugin": plugin, "command": "add", "args": {"a": i, "b": 1}}));
    }
    requests.push(json!({"id": "unload-1", "op": "unload", "plugin": "adder-one"}));
    requests.push(json!({"id": "late", "op": "call", "plugin": "adder-one", "command": "add", "args": {"a": 1, "b": 1}}));
    requests.push(json!({"id": "unknown", "op": "call", "plugin": "adder-two", "command": "nope"}));
    requests.push(json!({"id": "stats", "op": "stats"}));
    {
        let stdin = serve.stdin.as_mut().unwrap();
        for r in &requests {
            writeln!(stdin, "{r}").unwrap();
        }
        writeln!(stdin, "not json").unwrap();
        // One byte over the cap, then a good request on the next line.
        stdin.write_all(&vec![b'x'; (1 << 20) + 1]).unwrap();
        writeln!(stdin).unwrap();
        writeln!(stdin, "{}", json!({"id": "bad-op", "op": "explode"})).unwrap();
        writeln!(stdin, "{}", json!({"id": "bye", "op": "shutdown"})).unwrap();
    }
    let answers: Vec<Value> = BufReader::new(serve.stdout.take().unwrap())
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).expect("an answer is JSON"))
        .collect();
    let status = serve.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let by_id: HashMap<String, &Value> = answers.iter().map(|a| (a["id"].to_string(), a)).collect();
    let get = |id: Value| {
        *by_id
            .get(&id.to_string())
            .unwrap_or_else(|| panic!("no answer to {id}: {answers:#?}"))
    };
    assert_eq!(get(json!("load-1"))["result"]["state"], "ready");
    assert_eq!(get(json!("load-2"))["result"]["name"], "adder-two");
    for i in 0..20 {
        let a = get(json!(i));
        assert_eq!(a["ok"], true, "{a}");
        assert_eq!(a["result"], json!(i + 1));
    }
    assert_eq!(get(json!("unload-1"))["ok"], true);
    assert_eq!(
        get(json!("late"))["error"]["code"],
        "not_loaded",
        "ordered after the unload"
    );
    assert_eq!(get(json!("unknown"))["error"]["code"], "invalid");
    assert_eq!(get(json!("bad-op"))["error"]["code"], "invalid");
    assert_eq!(get(json!("bye"))["ok"], true);
    let anonymous: Vec<&Value> = answers.iter().filter(|a| a["id"].is_null()).collect();
    let codes: Vec<&Value> = anonymous.iter().map(|a| &a["error"]["code"]).collect();
    assert_eq!(
        codes,
        [&json!("invalid"), &json!("too_large")],
        "{anonymous:#?}"
    );
    assert_eq!(answers.len(), requests.len() + 4);

    let verify = Command::new(common::plugbox())
        .args(["audit", "verify"])
        .arg(&audit)
        .output()
        .unwrap();
    let verdict = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success() && verdict.contains("sealed"),
        "{verdict}"
    );
}
