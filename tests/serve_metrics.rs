//! `plugbox serve --metrics` (issue 12, item 4): a real serve with a real plugin, scraped over
//! HTTP and parsed by a real Prometheus text parser (the `prometheus_client` package's): the
//! counters and histogram counts match the calls made, errors by code, calls in flight, and
//! the audit records and bytes the log holds. A non-loopback address is refused.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::plugins::TestPlugin;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

const PLUGIN: &str = r#"
import plugbox

@plugbox.command
def add(a, b):
    return a + b

@plugbox.command
def work(n):
    for i in range(n):
        plugbox.host.call("kv.get", key=f"k{i}")
    try:
        plugbox.host.call("doc.set_text", text="x")
    except plugbox.CapabilityDenied:
        pass
    try:
        plugbox.host.call("kv.get", key="")
    except Exception:
        pass
    return n

@plugbox.command
def slow():
    import sys, time
    print("slow: started", file=sys.stderr, flush=True)
    time.sleep(3)
    return "done"

@plugbox.command
def boom():
    raise ValueError("boom")
"#;

/// Fetches `url` and parses it with `prometheus_client`'s text parser; one JSON line per
/// sample: `[name, labels, value]`.
const SCRAPE: &str = r#"
import json, sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families
text = urllib.request.urlopen(sys.argv[1], timeout=10).read().decode()
for family in text_string_to_metric_families(text):
    for s in family.samples:
        print(json.dumps([s.name, s.labels, s.value]))
"#;

fn scrape(url: &str) -> Vec<(String, Value, f64)> {
    let out = Command::new(common::PYTHON)
        .args(["-c", SCRAPE, url])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v[0].as_str().unwrap().to_owned(),
                v[1].clone(),
                v[2].as_f64().unwrap(),
            )
        })
        .collect()
}

/// The value of sample `name` for plugin `metered` with the `extra` labels.
fn value(samples: &[(String, Value, f64)], name: &str, extra: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|(n, labels, _)| {
            n == name
                && labels["plugin"] == "metered"
                && extra.iter().all(|(k, v)| labels[*k] == *v)
        })
        .unwrap_or_else(|| panic!("no sample {name} {extra:?}: {samples:#?}"))
        .2
}

#[test]
fn a_scrape_parsed_by_prometheus_client_matches_the_calls_made() {
    let plugin = TestPlugin::new("metered", "[capabilities]\n\"kv.get\" = {}\n", PLUGIN);
    let work = tempfile::tempdir().unwrap();
    let mut serve = Command::new(common::plugbox())
        .arg("serve")
        .arg("--audit")
        .arg(work.path().join("audit.jsonl"))
        .arg("--state")
        .arg(work.path().join("state"))
        .args(["--allow-ungranted", "--metrics", "127.0.0.1:0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("plugbox serve");
    // serve says where it listens (port 0: a free one) before it reads any request.
    let mut stderr = BufReader::new(serve.stderr.take().unwrap()).lines();
    let url = loop {
        let line = stderr.next().expect("stderr ended").unwrap();
        if let Some(at) = line.strip_prefix("plugbox: metrics on ") {
            break at.to_owned();
        }
    };
    // serve's stderr carries the plugin's own stderr: the test waits on its lines.
    let (stderr_tx, stderr_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in stderr.map_while(Result::ok) {
            let _ = stderr_tx.send(line);
        }
    });

    let mut requests = vec![json!({"id": "load", "op": "load", "dir": plugin.path()})];
    for i in 0..5 {
        requests.push(json!({"id": i, "op": "call", "plugin": "metered", "command": "add", "args": {"a": i, "b": 1}}));
    }
    requests.push(json!({"id": "work", "op": "call", "plugin": "metered", "command": "work", "args": {"n": 3}}));
    requests.push(json!({"id": "boom", "op": "call", "plugin": "metered", "command": "boom"}));
    let mut stdin = serve.stdin.take().unwrap();
    for r in &requests {
        writeln!(stdin, "{r}").unwrap();
    }
    // Wait for every answer (the calls are done) before scraping.
    let mut pending: HashSet<String> = requests.iter().map(|r| r["id"].to_string()).collect();
    let mut stdout = BufReader::new(serve.stdout.take().unwrap()).lines();
    while !pending.is_empty() {
        let answer: Value =
            serde_json::from_str(&stdout.next().expect("an answer").unwrap()).unwrap();
        pending.remove(&answer["id"].to_string());
    }

    // A command that takes 3 s is counted in flight while it runs, and no longer after.
    let slow = json!({"id": "slow", "op": "call", "plugin": "metered", "command": "slow"});
    writeln!(stdin, "{slow}").unwrap();
    // It says on stderr when it has started; from then until its answer it is in flight.
    let started = std::iter::from_fn(|| stderr_rx.recv_timeout(Duration::from_secs(60)).ok())
        .any(|line| line.contains("slow: started"));
    assert!(started, "the slow command never said it started");
    let now = scrape(&url);
    let n = value(&now, "plugbox_command_calls_in_flight", &[]);
    assert!(n <= 1.0, "{n} command calls in flight");
    let seen_in_flight = n == 1.0;
    assert!(seen_in_flight, "the slow command was never seen in flight");
    let answer: Value = serde_json::from_str(&stdout.next().expect("an answer").unwrap()).unwrap();
    assert_eq!(answer["id"], "slow", "{answer}");

    // The audit counters lie between the log's size before and after the scrape (the engine
    // may append a record meanwhile; the counter follows each write).
    let audit = work.path().join("audit.jsonl");
    let before = std::fs::read(&audit).unwrap();
    let samples = scrape(&url);
    let after = std::fs::read(&audit).unwrap();
    let lines = |b: &[u8]| b.iter().filter(|&&c| c == b'\n').count() as f64;
    let records = samples
        .iter()
        .find(|(n, _, _)| n == "plugbox_audit_records_total")
        .expect("plugbox_audit_records_total")
        .2;
    let bytes = samples
        .iter()
        .find(|(n, _, _)| n == "plugbox_audit_bytes_total")
        .expect("plugbox_audit_bytes_total")
        .2;
    assert!(
        lines(&before) <= records && records <= lines(&after) && records > 10.0,
        "{records} records, the log has {} then {}",
        lines(&before),
        lines(&after)
    );
    assert!(
        before.len() as f64 <= bytes && bytes <= after.len() as f64,
        "{bytes} bytes, the log has {} then {}",
        before.len(),
        after.len()
    );

    let v = |name: &str, extra: &[(&str, &str)]| value(&samples, name, extra);
    // Calls by capability and decision: `doc.set_text` is not the plugin's, so `_other`.
    let calls = "plugbox_capability_calls_total";
    let decided = |method, decision| v(calls, &[("method", method), ("decision", decision)]);
    assert_eq!(decided("kv.get", "allow"), 4.0);
    assert_eq!(decided("kv.get", "deny"), 0.0);
    assert_eq!(decided("_other", "deny"), 1.0);
    assert_eq!(decided("_other", "allow"), 0.0);
    // The one allowed call that failed: `kv.get` with an empty key.
    let errors = |name: &str| -> Vec<(String, f64)> {
        let mut v: Vec<_> = samples
            .iter()
            .filter(|(n, l, x)| n == name && l["plugin"] == "metered" && *x > 0.0)
            .map(|(_, l, x)| (l["code"].as_str().unwrap().to_owned(), *x))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    assert_eq!(
        errors("plugbox_capability_call_errors_total"),
        [("invalid".to_owned(), 1.0)]
    );
    assert_eq!(
        v(
            "plugbox_capability_call_errors_total",
            &[("code", "timeout")]
        ),
        0.0
    );
    // `boom` raised.
    assert_eq!(
        errors("plugbox_command_call_errors_total"),
        [("plugin_error".to_owned(), 1.0)]
    );
    assert_eq!(v("plugbox_capability_calls_in_flight", &[]), 0.0);
    assert_eq!(v("plugbox_command_calls_in_flight", &[]), 0.0);
    assert_eq!(
        v(
            "plugbox_capability_denials_total",
            &[("rule", "allow-list")]
        ),
        1.0
    );
    assert_eq!(
        v(
            "plugbox_capability_denials_total",
            &[("rule", "capability.scope")]
        ),
        0.0
    );
    let commands = "plugbox_command_calls_total";
    for (command, ok, error) in [("add", 5.0), ("work", 1.0), ("slow", 1.0), ("boom", 0.0)]
        .map(|(c, ok)| (c, ok, if c == "boom" { 1.0 } else { 0.0 }))
    {
        let outcome = |o| v(commands, &[("method", command), ("outcome", o)]);
        assert_eq!((outcome("ok"), outcome("error")), (ok, error), "{command}");
    }
    // Durations per method: the command or capability name; nothing fell into `_other`.
    let client = "plugbox_rpc_client_duration_seconds";
    for (command, n) in [("add", 5.0), ("work", 1.0), ("boom", 1.0), ("slow", 1.0)] {
        let m = [("method", command)];
        assert_eq!(v(&format!("{client}_count"), &m), n, "{command}");
        let inf = [("method", command), ("le", "+Inf")];
        assert_eq!(v(&format!("{client}_bucket"), &inf), n, "{command}");
    }
    assert_eq!(v(&format!("{client}_count"), &[("method", "_other")]), 0.0);
    let slow = v(&format!("{client}_sum"), &[("method", "slow")]);
    assert!((3.0..30.0).contains(&slow), "slow took {slow} s");
    let server = "plugbox_rpc_server_duration_seconds";
    assert_eq!(v(&format!("{server}_count"), &[("method", "kv.get")]), 4.0);
    assert_eq!(v(&format!("{server}_count"), &[("method", "_other")]), 0.0);
    let methods: HashSet<&str> = samples
        .iter()
        .filter(|(n, l, _)| n == &format!("{server}_count") && l["plugin"] == "metered")
        .map(|(_, l, _)| l["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, HashSet::from(["kv.get", "_other"]));
    assert!(v(&format!("{server}_sum"), &[("method", "kv.get")]) > 0.0);
    assert_eq!(v("plugbox_plugin_state", &[("state", "ready")]), 1.0);
    assert_eq!(v("plugbox_plugin_state", &[("state", "failed")]), 0.0);
    assert_eq!(v("plugbox_plugin_ready_instances", &[]), 1.0);
    assert_eq!(v("plugbox_plugin_restarts_total", &[]), 0.0);
    assert_eq!(v("plugbox_plugin_circuit_open", &[]), 0.0);

    // A reload that adds a command: the new command gets its own `method` label, and the
    // counts of the first version stay.
    let v2 = TestPlugin::new(
        "metered",
        "[capabilities]\n\"kv.get\" = {}\n",
        &format!("{PLUGIN}\n@plugbox.command\ndef mul(a, b):\n    return a * b\n"),
    );
    for r in [
        json!({"id": "reload", "op": "reload", "plugin": "metered", "dir": v2.path()}),
        json!({"id": "mul", "op": "call", "plugin": "metered", "command": "mul", "args": {"a": 6, "b": 7}}),
    ] {
        writeln!(stdin, "{r}").unwrap();
        let answer: Value = serde_json::from_str(&stdout.next().unwrap().unwrap()).unwrap();
        assert_eq!(answer["id"], r["id"], "{answer}");
        assert!(answer.get("error").is_none(), "{answer}");
    }
    let samples = scrape(&url);
    let v = |name: &str, extra: &[(&str, &str)]| value(&samples, name, extra);
    let outcome = |m, o| v(commands, &[("method", m), ("outcome", o)]);
    assert_eq!(outcome("mul", "ok"), 1.0);
    assert_eq!(outcome("add", "ok"), 5.0);
    assert_eq!(outcome("_other", "ok"), 0.0);

    drop(stdin); // end of input: serve unloads, seals and exits 0
    for _ in stdout {}
    assert!(serve.wait().unwrap().success());
}

#[test]
fn a_metrics_address_that_is_not_loopback_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(common::plugbox())
        .arg("serve")
        .arg("--audit")
        .arg(work.path().join("audit.jsonl"))
        .arg("--state")
        .arg(work.path().join("state"))
        .args(["--metrics", "0.0.0.0:0"])
        .stdin(Stdio::null())
        .output()
        .expect("plugbox serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a loopback address"), "{err}");
}
