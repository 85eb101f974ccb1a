//! Hostile audit volume and hostile audit files (issue 9, findings 6 and 10).
//!
//! A plugin that floods the host with calls it was never granted writes a bounded number of
//! records (every call counts against its rate; rate-limited refusals are coalesced into
//! counted `calls_suppressed` records, and no attempt goes uncounted). The reading tools stream
//! the log with a per-line cap under a hard address-space limit, and `audit verify` refuses a
//! log whose head was cut off, special files and over-long lines, promptly and with a clear
//! error.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::plugbox;
use common::plugins::{TestEngine, TestPlugin};
use plugbox::audit::verify::{verify, Damage};
use plugbox::audit::{AuditLog, AuditOptions, Durability, EventKind, Record, Subject};
use plugbox::capability::Reply;
use plugbox::manifest::Grants;
use serde_json::{json, Value};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const CALLS: u64 = 200_000;
const RATE: u64 = 100;
const BURST: u64 = 10;

/// Sends `N` calls of a capability it was never granted, in batches, as fast as the channel
/// takes them, counting the reply codes; then answers `report` with the counts. Raw frames,
/// batched, so the channel is as full as a hostile plugin can make it (the SDK sends ungranted
/// calls too, one at a time: `tests/audit_attempts.rs`).
const FLOOD: &str = r#"
import rawwire as w, os, struct, json
w.handshake()
N, BATCH = 200000, 256
counts = {}
buf = b""
def pump(want):
    global buf
    got = 0
    while True:
        off = 0
        while len(buf) - off >= 8:
            length, hl = struct.unpack_from(">II", buf, off)
            if len(buf) - off < 4 + length:
                break
            h = json.loads(buf[off + 8:off + 8 + hl])
            off += 4 + length
            if h["type"] == "error":
                c = h["error"]["code"]
                counts[c] = counts.get(c, 0) + 1
                got += 1
            elif h["type"] == "result":
                counts["ok"] = counts.get("ok", 0) + 1
                got += 1
            elif h["type"] == "call" and h["method"] == "plugbox.ping":
                w.send({"type": "result", "id": h["id"], "result": "pong"})
            else:
                w._held.append(h)
        buf = buf[off:]
        if got >= want:
            return
        chunk = os.read(w.FD, 1 << 16)
        if not chunk:
            raise EOFError
        buf += chunk
pack = struct.pack
i = 1
while i <= N:
    n = min(BATCH, N - i + 1)
    out = []
    for k in range(i, i + n):
        h = b'{"type":"call","id":%d,"method":"never.granted","args":{}}' % k
        out.append(pack(">II", 4 + len(h), len(h)) + h)
    w.write_all(b"".join(out))
    pump(n)
    i += n
w.serve_report(counts)
"#;

fn records(path: &Path) -> Vec<Value> {
    let file = std::fs::File::open(path).expect("open");
    std::io::BufReader::new(file)
        .lines()
        .map(|l| serde_json::from_str(&l.expect("line")).expect("json"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_ungranted_calls_writes_bounded_counted_records_and_a_verifiable_log() {
    let te = TestEngine::new();
    let limits = format!(
        "[limits]\ncalls_per_second = {RATE}\ncall_burst = {BURST}\nwall_seconds = 600\ncpu_seconds = 600\ncall_timeout_ms = 300000\n"
    );
    let flood = TestPlugin::new("flood", &limits, FLOOD);
    let started = Instant::now();
    let p = te
        .engine
        .spawn_instance(flood.path(), &Grants::all_requested())
        .await
        .expect("load");
    // The plugin answers `report` once it has sent every call and read every reply (the
    // call's own deadline, `call_timeout_ms`, turns a hang into a failure).
    let report = match p.call("report", json!({})).await.expect("report") {
        Reply::Json(v) => v,
        other => panic!("{other:?}"),
    };
    let elapsed = started.elapsed().as_secs_f64();
    p.shutdown().await;
    te.engine.shutdown().await.expect("shutdown seals the log");

    // The plugin got a typed reply to every call: refused as not granted, or rate-limited.
    let denied = report["denied"].as_u64().unwrap_or(0);
    let limited = report["rate_limited"].as_u64().unwrap_or(0);
    assert_eq!(denied + limited, CALLS, "{report}");
    assert!(denied > 0 && limited > 0, "{report}");

    let all = records(&te.audit);
    let mine: Vec<&Value> = all
        .iter()
        .filter(|r| r["plugin"]["name"] == "flood")
        .collect();
    let calls: Vec<&&Value> = mine.iter().filter(|r| r["event"] == "call").collect();
    let suppressed: Vec<&&Value> = mine
        .iter()
        .filter(|r| r["event"] == "calls_suppressed")
        .collect();
    let suppressed_count: u64 = suppressed
        .iter()
        .map(|r| r["detail"]["suppressed"].as_u64().expect("count"))
        .sum();
    let by_rule = |rule: &str| calls.iter().filter(|r| r["rule"] == rule).count() as u64;

    // No attempt goes uncounted: written denials plus suppressed counts are the calls made.
    assert_eq!(calls.len() as u64 + suppressed_count, CALLS);
    assert_eq!(by_rule("allow-list"), denied);
    assert_eq!(
        by_rule("limits.calls_per_second") + suppressed_count,
        limited
    );

    // Bounded: a token per recorded decision (the burst plus the rate over the run), one
    // recorded refusal per interval that saw any, one count per interval plus the last.
    let windows = elapsed.ceil() as u64 + 1;
    let bound = BURST + (RATE as f64 * elapsed).ceil() as u64 + 2 * windows + 1;
    let volume = calls.len() as u64 + suppressed.len() as u64;
    eprintln!("{volume} records for {CALLS} calls in {elapsed:.1}s (bound {bound})");
    assert!(
        volume <= bound,
        "{volume} records for {CALLS} calls in {elapsed:.1}s (bound {bound})"
    );

    // The last count precedes the plugin's exit record, and the log is sealed and intact.
    let pos = |pred: &dyn Fn(&Value) -> bool| all.iter().rposition(pred).expect("record");
    let last_count = pos(&|r| r["event"] == "calls_suppressed");
    let exit = pos(&|r| {
        r["plugin"]["name"] == "flood" && matches!(r["event"].as_str(), Some("exit" | "kill"))
    });
    assert!(last_count < exit, "count {last_count} after exit {exit}");
    assert_eq!(all.last().unwrap()["event"], "seal");
    let v = verify(std::slice::from_ref(&te.audit)).expect("verify");
    assert!(v.broken.is_none(), "{v:?}");
}

fn subject() -> Subject {
    Subject {
        name: "word-count".into(),
        version: "1.4.2".into(),
        instance: "word-count#1".into(),
        digest: Some("ab".repeat(32)),
    }
}

/// A sealed log of about `bytes` written through the real writer.
fn big_log(dir: &Path, bytes: u64) -> PathBuf {
    let path = dir.join("big.jsonl");
    let options = AuditOptions {
        durability: Durability::Os,
        ..AuditOptions::default()
    };
    let log = AuditLog::open_with(&path, options).expect("open");
    let mut r = Record::new(EventKind::Call, subject());
    r.capability = Some("doc.get_text".into());
    r.decision = Some("deny");
    r.rule = Some("allow-list");
    r.reason = Some("capability \"doc.get_text\" is not granted".into());
    r.args_sha256 = Some("cd".repeat(32));
    let mut i = 0u64;
    while i % 4096 != 0 || std::fs::metadata(&path).expect("stat").len() < bytes {
        r.call_id = Some(i);
        log.write(&r).expect("write");
        i += 1;
    }
    log.seal().expect("seal");
    path
}

/// Runs the real binary with its address space capped at `mib` MiB; fails on a hang.
fn plugbox_capped(mib: u64, args: &[&str], file: &Path) -> Output {
    let child = Command::new("prlimit")
        .arg(format!("--as={}", mib * 1024 * 1024))
        .arg(plugbox())
        .args(args)
        .arg(file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("prlimit");
    let pid = child.id().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(out) => out.expect("output"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid]).status();
            panic!(
                "plugbox {args:?} {} still running after 120 s",
                file.display()
            );
        }
    }
}

#[test]
fn show_and_summary_stream_a_200_mb_log_in_bounded_memory() {
    let dir = tempfile::tempdir().expect("tmp");
    let log = big_log(dir.path(), 200 * 1024 * 1024);
    for args in [
        &["audit", "show"][..],
        &["audit", "show", "--json"],
        &["audit", "summary"],
    ] {
        let out = plugbox_capped(128, args, &log);
        assert!(out.status.success(), "{args:?}: {out:?}");
    }
    let out = Command::new(plugbox())
        .args(["audit", "summary"])
        .arg(&log)
        .output()
        .expect("summary");
    let text = String::from_utf8_lossy(&out.stdout);
    let expected_calls = std::fs::File::open(&log)
        .map(|f| std::io::BufReader::new(f).lines().count() - 2)
        .expect("count");
    assert!(text.contains(&format!("{expected_calls} denied")), "{text}");
}

#[test]
fn an_over_long_line_is_reported_by_number_and_the_rest_is_still_read() {
    let dir = tempfile::tempdir().expect("tmp");
    let small = big_log(dir.path(), 1);
    let mut lines: Vec<String> = std::fs::read_to_string(&small)
        .expect("read")
        .lines()
        .map(str::to_owned)
        .collect();
    lines.insert(2, "x".repeat(64 * 1024 * 1024));
    let hostile = dir.path().join("long.jsonl");
    std::fs::write(&hostile, lines.join("\n") + "\n").expect("write");
    for args in [&["audit", "show"][..], &["audit", "summary"]] {
        let out = plugbox_capped(128, args, &hostile);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert!(err.contains("long.jsonl:3: "), "{err}");
        assert!(err.contains("longer than"), "{err}");
    }
    let out = plugbox_capped(128, &["audit", "verify"], &hostile);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v = verify(&[hostile]).expect("verify");
    let b = v.broken.expect("broken");
    assert_eq!((b.damage, b.line), (Damage::Corrupt, 3), "{b:?}");
}

/// A sealed log of `n` call records after its `open` record.
fn small_log(dir: &Path, n: u64) -> PathBuf {
    let path = dir.join("audit.jsonl");
    let log = AuditLog::open(&path).expect("open");
    for i in 0..n {
        let mut r = Record::new(EventKind::Call, subject());
        r.call_id = Some(i);
        r.decision = Some("allow");
        log.write(&r).expect("write");
    }
    log.seal().expect("seal");
    path
}

#[test]
fn a_log_whose_head_was_cut_off_is_broken_and_names_where_it_starts() {
    let dir = tempfile::tempdir().expect("tmp");
    let log = small_log(dir.path(), 8);
    let text = std::fs::read_to_string(&log).expect("read");
    let cut = dir.path().join("cut.jsonl");
    for drop in [1usize, 3] {
        let rest: Vec<&str> = text.lines().skip(drop).collect();
        std::fs::write(&cut, rest.join("\n") + "\n").expect("write");
        let v = verify(std::slice::from_ref(&cut)).expect("verify");
        let b = v.broken.clone().expect("a cut head is broken");
        assert_eq!((b.damage, b.line), (Damage::HeadMissing, 1), "{v:?}");
        let seq = drop + 1;
        assert!(b.detail.contains(&format!("seq {seq}")), "{b:?}");
        let out = Command::new(plugbox())
            .args(["audit", "verify"])
            .arg(&cut)
            .output()
            .expect("cli");
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("broken: head_missing at"), "{stdout}");
        assert!(stdout.contains(&format!("seq {seq}")), "{stdout}");
    }
    // The untouched log still verifies.
    assert!(verify(&[log]).expect("verify").broken.is_none());
}

#[test]
fn a_rotated_file_given_without_the_file_before_it_is_missing_its_head() {
    let dir = tempfile::tempdir().expect("tmp");
    let first = dir.path().join("audit.jsonl");
    let options = AuditOptions {
        rotate_bytes: Some(1),
        ..AuditOptions::default()
    };
    let log = AuditLog::open_with(&first, options).expect("open");
    let mut r = Record::new(EventKind::Call, subject());
    r.decision = Some("allow");
    log.write(&r).expect("write");
    log.seal().expect("seal");
    // Rotation archived the first file as `.000001`; the live one continues its chain.
    let archived = PathBuf::from(format!("{}.000001", first.display()));
    assert!(verify(&[archived.clone(), first.clone()])
        .expect("verify")
        .broken
        .is_none());
    let alone = verify(std::slice::from_ref(&first)).expect("verify");
    assert_eq!(
        alone.broken.map(|b| b.damage),
        Some(Damage::HeadMissing),
        "{:?}",
        alone.notes
    );
}

fn run_capped(args: &[&str], file: &Path) -> (Option<i32>, String) {
    let out = plugbox_capped(128, args, file);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn special_files_are_refused_promptly_by_every_reading_tool() {
    let dir = tempfile::tempdir().expect("tmp");
    let fifo = dir.path().join("fifo.jsonl");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo")
        .success());
    for file in [Path::new("/dev/zero"), fifo.as_path()] {
        for args in [
            &["audit", "verify"][..],
            &["audit", "show"],
            &["audit", "summary"],
        ] {
            let (code, err) = run_capped(args, file);
            assert_eq!(code, Some(125), "{args:?} {}: {err}", file.display());
            assert!(err.contains("not a regular file"), "{err}");
        }
    }
}
