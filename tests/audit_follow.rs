//! `plugbox audit show --follow` (issue 12, item 3): a follower started on a live log prints
//! every record a real engine appends, across rotations, none missed or repeated; hostile
//! lines appended to a followed file are escaped (table) or reported by number (over-long),
//! and the follower goes on. Every wait is for the follower's own output, under a timeout
//! that only turns a hang into a failure.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::engine::*;
use common::plugins::{TestEngine, TestPlugin};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

const HANG_GUARD: Duration = Duration::from_secs(30);

/// The lines of `stream`, as a thread reads them.
fn lines_of(stream: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// `plugbox audit show --follow LOG [extra...]`, its stdout and stderr read line by line.
fn follower(log: &Path, extra: &[&str]) -> (Child, Receiver<String>, Receiver<String>) {
    let mut child = Command::new(common::plugbox())
        .args(["audit", "show", "--follow"])
        .args(extra)
        .arg(log)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn follower");
    let out = lines_of(child.stdout.take().unwrap());
    let err = lines_of(child.stderr.take().unwrap());
    (child, out, err)
}

/// The next line, failing on end of stream or a hang.
fn next(lines: &Receiver<String>, what: &str) -> String {
    lines
        .recv_timeout(HANG_GUARD)
        .unwrap_or_else(|e| panic!("no line for {what}: {e}"))
}

/// Kills the follower (it runs until interrupted) and reaps it.
fn stop(mut child: Child) {
    child.kill().expect("kill the follower");
    child.wait().expect("reap the follower");
}

/// Sends `signal` (`STOP`, `CONT`) to the follower, by its pid.
fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill(1)");
    assert!(status.success());
}

/// Reads a follower's JSON lines up to the `seal`; returns the seqs and events seen.
fn read_to_seal(out: &Receiver<String>) -> (Vec<u64>, Vec<String>) {
    let (mut seqs, mut events) = (Vec::new(), Vec::new());
    loop {
        let line = next(out, "the seal record");
        let r: Value = serde_json::from_str(&line).expect("a JSON record");
        seqs.push(r["seq"].as_u64().unwrap());
        events.push(r["event"].as_str().unwrap().to_owned());
        if r["event"] == "call" {
            // The attempt, its name escaped by the writer as for any raw frame.
            assert_eq!(r["capability"], "doc.set_text\\u{1b}[2J", "{r}");
            assert_eq!(r["decision"], "deny");
        }
        if r["event"] == "seal" {
            return (seqs, events);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_print_every_record_an_engine_appends_across_rotations() {
    let te = TestEngine::with(|c| c.audit.rotate_bytes = Some(4096));
    // Two followers: one keeps up, one is stopped (SIGSTOP) while the engine works, so it
    // falls several rotations behind and must read each archive in turn. Each prints the
    // engine's `open` record first, so each is following before anything else is appended.
    let (live, live_out, _e1) = follower(&te.audit, &["--json"]);
    let (behind, behind_out, _e2) = follower(&te.audit, &["--json"]);
    for out in [&live_out, &behind_out] {
        let first: Value = serde_json::from_str(&next(out, "the open record")).unwrap();
        assert_eq!(
            (&first["seq"], &first["event"]),
            (&json!(1), &json!("open"))
        );
    }
    signal(&behind, "STOP");

    // Everything below is appended while they follow: enough records for several rotations.
    let main = format!("{ECHO}@plugbox.command\ndef attempt():\n    try:\n        plugbox.host.call('doc.set_text\\x1b[2J')\n    except plugbox.CapabilityDenied:\n        return 'denied'\n");
    let p = TestPlugin::new("followed", "", &main);
    let plugin = te.engine.load(p.path(), &all()).await.expect("load");
    for i in 0..40 {
        plugin.call("echo", json!({ "x": i })).await.expect("echo");
    }
    plugin.call("attempt", json!({})).await.expect("attempt");
    te.engine.shutdown().await.expect("shutdown seals the log");
    signal(&behind, "CONT");

    for (name, out) in [("live", &live_out), ("behind", &behind_out)] {
        let (seqs, events) = read_to_seal(out);
        let rotations = events.iter().filter(|e| *e == "rotate").count();
        assert!(rotations >= 3, "{name}: {rotations} rotations: {events:?}");
        let expected: Vec<u64> = (2..=*seqs.last().unwrap()).collect();
        assert_eq!(seqs, expected, "{name}: every record once, in order");
        assert_eq!(
            events.iter().filter(|e| *e == "invoke").count(),
            41,
            "{name}"
        );
    }
    stop(live);
    stop(behind);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_lines_appended_to_a_followed_log_are_escaped_or_reported_and_it_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let record = |seq: u64, capability: &str| {
        let r = json!({"seq": seq, "ts": "2026-12-06T00:00:00.000000000Z", "event": "call",
            "plugin": {"name": "p", "instance": "p#1"}, "capability": capability, "decision": "deny"});
        format!("{r}\n")
    };
    std::fs::write(&log, record(1, "first")).unwrap();
    let (child, out, err) = follower(&log, &[]);
    assert!(next(&out, "the first record").contains("first"));

    let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    // Raw controls inside the JSON (as `\u001b` escapes, so still one valid line).
    file.write_all(record(2, "\u{1b}]0;owned\u{7}\u{1b}[2J\u{202e}x").as_bytes())
        .unwrap();
    let row = next(&out, "the hostile record");
    assert!(
        row.contains("\\u{1b}]0;owned\\u{7}\\u{1b}[2J\\u{202e}x"),
        "{row}"
    );
    assert!(
        !row.chars().any(|c| c.is_control() || c == '\u{202e}'),
        "{row:?}"
    );

    // A line longer than any record, written in pieces, then a good one.
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..5 {
        file.write_all(&chunk).unwrap();
    }
    file.write_all(b"\n").unwrap();
    file.write_all(record(4, "after").as_bytes()).unwrap();
    let report = next(&err, "the over-long line's report");
    assert!(report.contains(":3: a line of 5242880 bytes"), "{report}");
    assert!(next(&out, "the record after it").contains("after"));
    stop(child);
}
