//! Signed checkpoints and exported anchors (issue 12, item 2).
//!
//! The unkeyed chain cannot tell a log from a rewritten, re-chained one: every attack here is
//! first shown to pass plain `plugbox audit verify` (exit 0), then to fail `verify --key`
//! with its reason. A thief of the key who re-signs a rewritten log passes `--key`, and fails
//! `--anchors`: the checkpoints exported before the rewrite still name the old hashes.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use plugbox::audit::chain::{self, GENESIS};
use plugbox::audit::{AuditKey, AuditLog, AuditOptions, Checkpoint, EventKind, Record, Subject};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

fn plugbox() -> &'static str {
    env!("CARGO_BIN_EXE_plugbox")
}

/// `plugbox audit keygen --out DIR/keys`: the secret key, its public key.
fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let out = dir.join(name);
    let o = Command::new(plugbox())
        .args(["audit", "keygen", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    (out.join("audit.key"), out.join("audit.pub"))
}

fn subject() -> Subject {
    Subject {
        name: "notes".into(),
        version: "0.1.0".into(),
        instance: "notes#1".into(),
        digest: None,
    }
}

fn call(i: u64) -> Record {
    let mut r = Record::new(EventKind::Call, subject());
    r.capability = Some("kv.set".into());
    r.decision = Some("deny");
    r.rule = Some("allow-list");
    r.call_id = Some(i);
    r
}

fn options(key: &Path, anchors: Option<&Path>, every: u64) -> AuditOptions {
    AuditOptions {
        key: Some(Arc::new(AuditKey::load(key).unwrap())),
        checkpoint_records: every,
        checkpoint_interval: Duration::from_secs(3600),
        anchors: anchors.map(Path::to_owned),
        ..AuditOptions::default()
    }
}

/// One signed session of `records` call records, checkpoints every `every` records.
fn session(log: &Path, options: AuditOptions, records: u64) {
    let audit = AuditLog::open_with(log, options).unwrap();
    for i in 0..records {
        audit.write(&call(i)).unwrap();
    }
    audit.seal().unwrap();
}

/// `plugbox audit verify LOG [extra...]`: (exit code, stdout).
fn verify(log: &Path, extra: &[&Path]) -> (i32, String) {
    let mut cmd = Command::new(plugbox());
    cmd.args(["audit", "verify"]).arg(log);
    let mut flag = None;
    for p in extra {
        match p.to_str() {
            Some(f @ ("--key" | "--anchors")) => flag = Some(f.to_owned()),
            _ => {
                cmd.arg(flag.take().expect("a flag before each path"))
                    .arg(p);
            }
        }
    }
    let o = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    (o.status.code().unwrap_or(-1), text)
}

fn key_arg(public: &Path) -> [&Path; 2] {
    [Path::new("--key"), public]
}

/// Asserts `verify` fails with `damage` and that its text says `why`.
fn assert_broken(result: (i32, String), damage: &str, why: &str) {
    let (code, text) = result;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains(&format!("broken: {damage} at ")), "{text}");
    assert!(text.contains(why), "{text}");
}

/// The log's lines, as written.
fn lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap()
}

fn event(line: &str) -> String {
    json(line)["event"].as_str().unwrap().to_owned()
}

/// `line` with the value of `"name":` (digits, or a string or object up to `until`) replaced.
fn set(line: &str, name: &str, until: &str, value: &str) -> String {
    let key = format!("\"{name}\":");
    let start = line.find(&key).unwrap() + key.len();
    let end = start + line[start..].find(until).unwrap();
    format!("{}{value}{}", &line[..start], &line[end..])
}

/// Writes `records` as a log, renumbered from 1 and re-chained from genesis, byte for byte
/// otherwise, as someone who can write the file does after editing it. `resign`: the
/// thief's copy of the key, to re-sign every checkpoint for the new hashes.
fn rewrite(log: &Path, records: Vec<String>, resign: Option<&AuditKey>) {
    let mut prev = GENESIS.to_owned();
    let mut hashes: Vec<String> = Vec::new();
    let mut out = String::new();
    for (i, line) in records.into_iter().enumerate() {
        let body = &line[..line.rfind(",\"hash\":").unwrap()];
        let mut text = set(&format!("{body}}}"), "seq", ",", &(i + 1).to_string());
        let at = text.rfind("\"prev\":").unwrap();
        text = format!("{}\"prev\":\"{prev}\"}}", &text[..at]);
        if let (Some(key), "checkpoint") = (resign, event(&text).as_str()) {
            let old: Checkpoint = serde_json::from_value(json(&text)["detail"].clone()).unwrap();
            let hash = &hashes[usize::try_from(old.seq).unwrap() - 1];
            let c = Checkpoint::sign(key, &hashes[0], old.seq, hash, old.before_seal);
            let detail = serde_json::to_string(&c).unwrap();
            text = set(&text, "detail", ",\"prev\":", &detail);
        }
        let mut bytes = text.into_bytes();
        prev = chain::seal(&mut bytes);
        hashes.push(prev.clone());
        out.push_str(std::str::from_utf8(&bytes).unwrap());
        out.push('\n');
    }
    std::fs::write(log, out).unwrap();
}

/// A deny flipped to allow.
fn flip(line: &str) -> String {
    assert!(line.contains("\"decision\":\"deny\""), "{line}");
    line.replace("\"decision\":\"deny\"", "\"decision\":\"allow\"")
}

#[test]
fn keygen_writes_a_private_key_only_its_owner_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (secret, public) = keygen(dir.path(), "keys");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&secret), 0o600);
    assert_eq!(mode(&public), 0o644);
    let text = std::fs::read_to_string(&public).unwrap();
    assert!(text.starts_with("plugbox-audit-public-key-v1 "), "{text}");
    // Never overwritten.
    let again = Command::new(plugbox())
        .args(["audit", "keygen", "--out"])
        .arg(dir.path().join("keys"))
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(125), "{again:?}");
    // A secret key others may read is refused, by the engine and by the CLI.
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = AuditKey::load(&secret).unwrap_err().to_string();
    assert!(
        err.contains("mode 0644") && err.contains("refused"),
        "{err}"
    );
    let run = Command::new(plugbox())
        .args(["serve", "--audit-key"])
        .arg(&secret)
        .arg("--audit")
        .arg(dir.path().join("audit.jsonl"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(125), "{run:?}");
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("mode 0644"),
        "{run:?}"
    );
}

/// The whole path an operator takes: keygen, `plugbox run --audit-key --audit-anchors` on a
/// real plugin, then the auditor's `verify --key --anchors`.
#[test]
fn a_signed_run_verifies_with_its_key_and_anchors() {
    let dir = tempfile::tempdir().unwrap();
    let (secret, public) = keygen(dir.path(), "keys");
    let (log, anchors) = (dir.path().join("audit.jsonl"), dir.path().join("anchors"));
    let notes = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/plugins/notes");
    for _ in 0..2 {
        let out = Command::new(plugbox())
            .arg("run")
            .arg(&notes)
            .arg("--audit")
            .arg(&log)
            .arg("--state")
            .arg(dir.path().join("state"))
            .arg("--audit-key")
            .arg(&secret)
            .arg("--audit-anchors")
            .arg(&anchors)
            .args(["--checkpoint-records", "3"])
            .args(["--call", "add", "--args", r#"{"text":"one"}"#])
            .args(["--call", "list_notes"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let records = lines(&log);
    let fingerprint = AuditKey::load(&secret).unwrap().fingerprint().to_owned();
    let opens: Vec<&String> = records.iter().filter(|r| event(r) == "open").collect();
    assert_eq!(opens.len(), 2, "two sessions in one file");
    for open in opens {
        assert_eq!(json(open)["detail"]["checkpoint_key"], fingerprint.as_str());
    }
    let checkpoints = records.iter().filter(|r| event(r) == "checkpoint").count();
    assert!(
        checkpoints >= 4,
        "periodic ones and one per seal: {checkpoints}"
    );
    let exported = std::fs::read_to_string(&anchors).unwrap().lines().count();
    assert_eq!(exported, checkpoints, "every checkpoint exported");
    let (code, text) = verify(
        &log,
        &[
            Path::new("--key"),
            &public,
            Path::new("--anchors"),
            &anchors,
        ],
    );
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("intact") && text.contains("2 session(s)"),
        "{text}"
    );
    assert!(
        text.contains(&format!("{checkpoints} checkpoint(s) verified")),
        "{text}"
    );
}

#[test]
fn a_rewritten_and_rechained_log_fails_naming_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (secret, public) = keygen(dir.path(), "keys");
    let log = dir.path().join("audit.jsonl");
    session(&log, options(&secret, None, 4), 10);
    let mut records = lines(&log);
    records[2] = flip(&records[2]);
    rewrite(&log, records, None);
    assert_eq!(verify(&log, &[]).0, 0, "the unkeyed chain is fooled");
    assert_broken(
        verify(&log, &key_arg(&public)),
        "checkpoint_mismatch",
        "the log was rewritten and re-chained after it was signed",
    );
}

#[test]
fn a_log_cut_and_resealed_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (secret, public) = keygen(dir.path(), "keys");
    let log = dir.path().join("audit.jsonl");
    session(&log, options(&secret, None, 4), 20);
    let records = lines(&log);
    let seal = records.last().unwrap().clone();
    // Cut after record 8, and right after a periodic checkpoint: both re-sealed.
    let at_checkpoint = records
        .iter()
        .position(|r| event(r) == "checkpoint")
        .unwrap();
    for keep in [8, at_checkpoint + 1] {
        let mut cut = records[..keep].to_vec();
        cut.push(seal.clone());
        rewrite(&log, cut, None);
        assert_eq!(verify(&log, &[]).0, 0, "the unkeyed chain is fooled");
        assert_broken(
            verify(&log, &key_arg(&public)),
            "checkpoint_missing",
            "does not follow a closing checkpoint",
        );
    }
}

#[test]
fn records_after_the_last_checkpoint_of_a_sealed_log_fail() {
    let dir = tempfile::tempdir().unwrap();
    let (secret, public) = keygen(dir.path(), "keys");
    let log = dir.path().join("audit.jsonl");
    session(&log, options(&secret, None, 4), 6);
    let mut records = lines(&log);
    let n = records.len();
    assert_eq!(event(&records[n - 2]), "checkpoint");
    // A record slipped in between the closing checkpoint and the seal.
    let forged = records[3].clone();
    records.insert(n - 1, forged);
    rewrite(&log, records, None);
    assert_eq!(verify(&log, &[]).0, 0, "the unkeyed chain is fooled");
    assert_broken(
        verify(&log, &key_arg(&public)),
        "unsigned",
        "records were added after the last checkpoint",
    );
}

#[test]
fn a_log_signed_by_another_key_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (secret, _) = keygen(dir.path(), "mine");
    let (_, other_public) = keygen(dir.path(), "theirs");
    let log = dir.path().join("audit.jsonl");
    session(&log, options(&secret, None, 4), 6);
    assert_broken(
        verify(&log, &key_arg(&other_public)),
        "wrong_key",
        "not by the given key",
    );
    // The key's name copied into every record does not help: the signatures do not verify.
    let (_, public) = (secret.clone(), dir.path().join("mine/audit.pub"));
    let theirs = plugbox::audit::PublicKey::load(&other_public).unwrap();
    let ours = plugbox::audit::PublicKey::load(&public).unwrap();
    let text = std::fs::read_to_string(&log)
        .unwrap()
        .replace(ours.fingerprint(), theirs.fingerprint());
    std::fs::write(&log, text).unwrap();
    rewrite(&log, lines(&log), None);
    assert_broken(
        verify(&log, &key_arg(&other_public)),
        "bad_signature",
        "signature does not verify",
    );
}

#[test]
fn a_log_whose_first_records_are_missing_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (secret, public) = keygen(dir.path(), "keys");
    let log = dir.path().join("audit.jsonl");
    session(&log, options(&secret, None, 4), 12);
    let records = lines(&log);
    // Cut as is: the head is missing.
    let text: String = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .skip(3)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&log, text).unwrap();
    assert_broken(
        verify(&log, &key_arg(&public)),
        "head_missing",
        "starts at seq 4",
    );
    // Cut, renumbered and re-chained from a forged open: the checkpoints no longer match.
    let mut forged = vec![records[0].clone()];
    forged.extend(records[4..].iter().cloned());
    rewrite(&log, forged, None);
    assert_eq!(verify(&log, &[]).0, 0, "the unkeyed chain is fooled");
    assert_broken(
        verify(&log, &key_arg(&public)),
        "checkpoint_mismatch",
        "signs seq",
    );
}

/// Every session of a file is covered, and rotation keeps the checkpoints verifiable across
/// files; one session written without the key fails the whole log.
#[test]
fn every_session_and_every_rotated_file_is_covered() {
    let dir = tempfile::tempdir().unwrap();
    let (secret, public) = keygen(dir.path(), "keys");
    let log = dir.path().join("audit.jsonl");
    let rotating = AuditOptions {
        rotate_bytes: Some(2000),
        ..options(&secret, None, 5)
    };
    session(&log, rotating.clone(), 20);
    session(&log, rotating, 20);
    assert!(log.with_extension("jsonl.000001").exists(), "rotated");
    let (code, text) = verify(&log, &key_arg(&public));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("2 session(s)"), "{text}");
    session(&log, AuditOptions::default(), 2);
    assert_broken(
        verify(&log, &key_arg(&public)),
        "unsigned",
        "names no checkpoint key",
    );
}

/// A thief of the key rewrites the log and re-signs every checkpoint: `--key` passes, which
/// is why the anchors exist; `--anchors` fails. Cutting whole sessions off the end passes
/// `--key` too, and fails `--anchors`.
#[test]
fn exported_anchors_catch_a_rewrite_resigned_with_the_stolen_key() {
    let dir = tempfile::tempdir().unwrap();
    let (secret, public) = keygen(dir.path(), "keys");
    let (log, anchors) = (dir.path().join("audit.jsonl"), dir.path().join("anchors"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let hook_seen = Arc::clone(&seen);
    let with_hook = AuditOptions {
        on_checkpoint: Some(Arc::new(move |c: &Checkpoint| {
            hook_seen.lock().unwrap().push(c.clone())
        })),
        ..options(&secret, Some(&anchors), 4)
    };
    session(&log, with_hook.clone(), 10);
    session(&log, with_hook, 10);
    let exported: Vec<Checkpoint> = std::fs::read_to_string(&anchors)
        .unwrap()
        .lines()
        .map(|l| Checkpoint::parse(l.as_bytes()).unwrap())
        .collect();
    assert_eq!(
        *seen.lock().unwrap(),
        exported,
        "the host callback saw every anchor"
    );
    let both = [
        Path::new("--key"),
        &public,
        Path::new("--anchors"),
        &anchors,
    ];
    assert_eq!(verify(&log, &both).0, 0);
    let original = lines(&log);

    let thief = AuditKey::load(&secret).unwrap();
    let mut records = original.clone();
    records[2] = flip(&records[2]);
    rewrite(&log, records, Some(&thief));
    let (code, text) = verify(&log, &key_arg(&public));
    assert_eq!(code, 0, "the re-signed log passes --key alone: {text}");
    assert_broken(
        verify(&log, &both),
        "anchor_mismatch",
        "the log was rewritten after the export",
    );

    // Rewritten from its very first record: a log the anchors do not know at all.
    let mut records = original.clone();
    records[0] = records[0].replacen("\"ts\":\"2", "\"ts\":\"1", 1);
    rewrite(&log, records, Some(&thief));
    assert_eq!(
        verify(&log, &key_arg(&public)).0,
        0,
        "re-signed from genesis"
    );
    assert_broken(verify(&log, &both), "anchor_missing", "belongs to this log");

    // The second session cut off whole: a shorter log, sealed and signed.
    let first_seal = original.iter().position(|r| event(r) == "seal").unwrap();
    let kept: String = original[..=first_seal]
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&log, kept).unwrap();
    assert_eq!(
        verify(&log, &key_arg(&public)).0,
        0,
        "a session boundary cut"
    );
    assert_broken(
        verify(&log, &both),
        "anchor_missing",
        "records were cut after the export",
    );
}

/// An idle log's unsigned tail is signed within the interval, by the timer, with no further
/// record written.
#[test]
fn an_idle_tail_is_signed_within_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let (secret, public) = keygen(dir.path(), "keys");
    let log = dir.path().join("audit.jsonl");
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let opts = AuditOptions {
        checkpoint_interval: Duration::from_millis(200),
        on_checkpoint: Some(Arc::new(move |c: &Checkpoint| {
            let _ = tx.lock().unwrap().send(c.clone());
        })),
        ..options(&secret, None, 1000)
    };
    let audit = AuditLog::open_with(&log, opts).unwrap();
    let seq = audit.write(&call(1)).unwrap();
    // (On a slow machine the timer may sign the open record first: wait for the call's.)
    let c = loop {
        let c = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("a timed checkpoint");
        if c.seq >= seq {
            break c;
        }
    };
    assert_eq!((c.seq, c.before_seal), (seq, false));
    audit.seal().unwrap();
    let last = loop {
        let c = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        if c.before_seal {
            break c;
        }
    };
    assert_eq!(
        last.seq,
        seq + 1,
        "the closing checkpoint signs the timed checkpoint"
    );
    assert_eq!(verify(&log, &key_arg(&public)).0, 0);
}

/// The `checkpoint_line` fuzz target's committed seeds, replayed on stable.
#[test]
fn checkpoint_line_fuzz_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/checkpoint_line");
    let mut n = 0;
    for seed in std::fs::read_dir(dir).unwrap() {
        plugbox::fuzzing::checkpoint_line(&std::fs::read(seed.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(n >= 2);
}
