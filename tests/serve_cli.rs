//! `plugbox serve`, the managed engine for hosts in other languages: pipelined JSON-line
//! requests over real pipes, real plugins, bad input answered, and a sealed audit log.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::plugins::TestPlugin;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `plugbox serve` with its audit log and state in `work`, stdin and stdout piped; returns
/// the process and the audit log's path.
fn spawn_serve(work: &Path, extra: &[&str]) -> (std::process::Child, PathBuf) {
    let audit = work.join("audit.jsonl");
    let serve = Command::new(common::plugbox())
        .arg("serve")
        .arg("--audit")
        .arg(&audit)
        .arg("--state")
        .arg(work.join("state"))
        // These plugins are loaded without a grant file (development).
        .arg("--allow-ungranted")
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("plugbox serve");
    (serve, audit)
}

const ADDER: &str = "import plugbox\n@plugbox.command\ndef add(a, b):\n    return a + b\n";

#[test]
fn a_pipelined_session_loads_calls_unloads_and_seals_the_log() {
    let one = TestPlugin::new("adder-one", "", ADDER);
    let two = TestPlugin::new("adder-two", "[process]\ninstances = 2\n", ADDER);
    let work = tempfile::tempdir().unwrap();
    let (mut serve, audit) = spawn_serve(work.path(), &[]);
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
    assert_eq!(
        answers[0]["op"], "ready",
        "the first line says serve is ready"
    );
    let answers = answers[1..].to_vec();
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

#[test]
fn a_serve_host_answers_its_own_capabilities_over_the_pipes() {
    let plugin = TestPlugin::new(
        "counter",
        "[capabilities]\n\"doc.get_text\" = {}\n\"doc.secret\" = { optional = true }\n",
        "import plugbox\n@plugbox.command\ndef count():\n    return len(plugbox.host.call('doc.get_text', part='body').split())\n@plugbox.command\ndef peek():\n    try:\n        return plugbox.host.call('doc.secret')\n    except plugbox.PlugboxError as e:\n        return e.code\n",
    );
    let work = tempfile::tempdir().unwrap();
    let capabilities = ["--capability", "doc.get_text", "--capability", "doc.secret"];
    let (mut serve, audit) = spawn_serve(work.path(), &capabilities);
    let mut stdin = serve.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    let stdout = serve.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = tx.send(serde_json::from_str(&line.unwrap()).expect("JSON"));
        }
    });
    let next = || {
        rx.recv_timeout(std::time::Duration::from_secs(20))
            .expect("a line")
    };
    assert_eq!(next()["op"], "ready");
    writeln!(
        stdin,
        "{}",
        json!({"id": 1, "op": "load", "dir": plugin.path()})
    )
    .unwrap();
    assert_eq!(next()["result"]["state"], "ready");

    writeln!(
        stdin,
        "{}",
        json!({"id": 2, "op": "call", "plugin": "counter", "command": "count"})
    )
    .unwrap();
    let host_call = next();
    assert_eq!(host_call["op"], "host_call", "{host_call}");
    assert_eq!(host_call["capability"], "doc.get_text");
    assert_eq!(host_call["plugin"], "counter");
    assert_eq!(host_call["args"], json!({"part": "body"}));
    writeln!(
        stdin,
        "{}",
        json!({"op": "host_reply", "call": host_call["call"], "result": "one two three"})
    )
    .unwrap();
    let answer = next();
    assert_eq!(
        (answer["id"].clone(), answer["result"].clone()),
        (json!(2), json!(3)),
        "{answer}"
    );

    writeln!(
        stdin,
        "{}",
        json!({"id": 3, "op": "call", "plugin": "counter", "command": "peek"})
    )
    .unwrap();
    let host_call = next();
    assert_eq!(host_call["capability"], "doc.secret");
    writeln!(stdin, "{}", json!({"op": "host_reply", "call": host_call["call"], "error": {"code": "denied", "message": "not today"}})).unwrap();
    assert_eq!(next()["result"], "denied");
    // An answer nobody waits for is reported, not silently taken.
    writeln!(
        stdin,
        "{}",
        json!({"id": 4, "op": "host_reply", "call": 999, "result": 1})
    )
    .unwrap();
    let stray = next();
    assert_eq!(
        (stray["id"].clone(), stray["error"]["code"].clone()),
        (json!(4), json!("invalid"))
    );
    drop(stdin);
    assert!(serve.wait().unwrap().success());

    let records: Vec<Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let decided: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"] == "call_outcome")
        .map(|r| &r["outcome"])
        .collect();
    assert_eq!(
        decided,
        [&json!("ok"), &json!("denied")],
        "each host call audited with its outcome"
    );
}
