//! Defaults for a long-running host: one audit log file across runs (sessions appended after a
//! seal), rotated sets that verify in any order, default paths outside the current directory,
//! plugin output forwarded line by line and never lost on a crash, and rate limits that a
//! sequential loop of fast calls never trips.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::plugins::{TestEngine, TestPlugin};
use plugbox::audit::verify::{verify, Damage};
use plugbox::audit::{AuditLog, AuditOptions, EventKind, Record, Subject};
use plugbox::default_paths::{base_dir, SYSTEM_DIR};
use plugbox::manifest::Grants;
use serde_json::{json, Value};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const HI: &str = "import plugbox\n@plugbox.command\ndef hi():\n    return 'hi'\n";

/// `plugbox run DIR --audit AUDIT --state STATE --call ...`.
fn run(dir: &Path, audit: &Path, state: &Path, calls: &[&str]) -> Output {
    let mut cmd = Command::new(common::plugbox());
    cmd.arg("run").arg(dir).arg("--audit").arg(audit);
    cmd.arg("--state").arg(state);
    for c in calls {
        cmd.args(["--call", c]);
    }
    cmd.output().expect("plugbox run")
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn records(path: &Path) -> Vec<Value> {
    BufReader::new(std::fs::File::open(path).unwrap())
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect()
}

#[test]
fn two_runs_on_one_audit_path_leave_one_file_that_verifies_as_two_sessions() {
    let p = TestPlugin::new("twice", "", HI);
    let work = tempfile::tempdir().unwrap();
    let (audit, state) = (work.path().join("audit.jsonl"), work.path().join("state"));
    for _ in 0..2 {
        let out = run(p.path(), &audit, &state, &["hi"]);
        assert!(out.status.success(), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("plugbox: audit log: {}", audit.display())),
            "{stderr}"
        );
    }
    assert_eq!(names_in(work.path()), ["audit.jsonl", "state"]);
    let out = Command::new(common::plugbox())
        .args(["audit", "verify"])
        .arg(&audit)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("2 session(s), sealed"), "{stdout}");
    // The second session's open record links to the first session's seal.
    let all = records(&audit);
    let i = all.iter().rposition(|r| r["event"] == "open").unwrap();
    assert!(i > 0);
    assert_eq!(all[i - 1]["event"], "seal");
    assert_eq!(all[i]["prev"], all[i - 1]["hash"]);
    assert_eq!(all[i]["detail"]["after_seal"], all[i - 1]["seq"]);
}

fn subject() -> Subject {
    Subject {
        name: "p".into(),
        version: "1.0.0".into(),
        instance: "p#1".into(),
        digest: None,
    }
}

/// A sealed log of `n` call records written through the library.
fn sealed_log(path: &Path, options: AuditOptions, n: u64) {
    let log = AuditLog::open_with(path, options).unwrap();
    for i in 0..n {
        let mut r = Record::new(EventKind::Call, subject());
        r.call_id = Some(i);
        r.decision = Some("allow");
        log.write(&r).unwrap();
    }
    log.seal().unwrap();
}

#[test]
fn an_unsealed_log_is_moved_aside_and_never_continued() {
    let work = tempfile::tempdir().unwrap();
    let audit = work.path().join("audit.jsonl");
    sealed_log(&audit, AuditOptions::default(), 3);
    // The host "crashed": the seal never reached the file.
    let text = std::fs::read_to_string(&audit).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let unsealed = lines[..lines.len() - 1].join("\n") + "\n";
    std::fs::write(&audit, &unsealed).unwrap();
    let log = AuditLog::open(&audit).unwrap();
    log.seal().unwrap();
    drop(log);
    let names = names_in(work.path());
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names[1].starts_with("audit.jsonl.unsealed-"), "{names:?}");
    let aside = work.path().join(&names[1]);
    // The file moved aside is exactly what was there, and still reports what is wrong.
    assert_eq!(std::fs::read_to_string(&aside).unwrap(), unsealed);
    let v = verify(std::slice::from_ref(&aside)).unwrap();
    assert_eq!(v.broken.map(|b| b.damage), Some(Damage::Unsealed));
    // The new log starts at genesis, names it and its last intact record.
    let v = verify(std::slice::from_ref(&audit)).unwrap();
    assert!(v.broken.is_none(), "{v:?}");
    assert_eq!(v.sessions, 1);
    let open = &records(&audit)[0];
    assert_eq!(open["detail"]["previous_state"], "unsealed");
    assert_eq!(open["detail"]["previous_file"], json!(aside));
    assert_eq!(open["detail"]["previous_last_seq"], 4);
}

#[test]
fn a_rotated_set_verifies_in_any_order_and_from_the_live_path() {
    let work = tempfile::tempdir().unwrap();
    let audit = work.path().join("audit.jsonl");
    let options = AuditOptions {
        rotate_bytes: Some(1500),
        ..AuditOptions::default()
    };
    sealed_log(&audit, options.clone(), 12);
    // Reopening the sealed live file appends a session, and rotation goes on numbering.
    sealed_log(&audit, options, 12);
    let names = names_in(work.path());
    assert!(names.len() > 3, "{names:?}");
    assert_eq!(names[0], "audit.jsonl");
    assert!(names[1..]
        .iter()
        .all(|n| n.len() == "audit.jsonl.000001".len()));
    let verify_cli = |files: &[PathBuf]| {
        let out = Command::new(common::plugbox())
            .args(["audit", "verify"])
            .args(files)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(0), "{files:?}: {stdout}");
        assert!(stdout.contains("2 session(s), sealed"), "{stdout}");
    };
    let glob: Vec<PathBuf> = names.iter().map(|n| work.path().join(n)).collect();
    verify_cli(&glob);
    let mut reversed = glob.clone();
    reversed.reverse();
    verify_cli(&reversed);
    verify_cli(std::slice::from_ref(&audit));
}

#[test]
fn the_default_location_is_var_lib_for_root_and_the_state_home_otherwise() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    };
    let both: &[(&str, &str)] = &[("XDG_STATE_HOME", "/s"), ("HOME", "/h")];
    assert_eq!(base_dir(0, env(both)).unwrap(), Path::new(SYSTEM_DIR));
    assert_eq!(base_dir(0, env(&[])).unwrap(), Path::new(SYSTEM_DIR));
    assert_eq!(base_dir(1000, env(both)).unwrap(), Path::new("/s/plugbox"));
    assert_eq!(
        base_dir(1000, env(&[("HOME", "/h")])).unwrap(),
        Path::new("/h/.local/state/plugbox")
    );
    assert!(base_dir(1000, env(&[])).is_err());
}

/// `plugbox run` as the unprivileged uid `nobody`, with only `vars` in its environment.
fn run_as_nobody(vars: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(common::plugbox());
    cmd.args(["run", "/nonexistent/plugin", "--call", "x"])
        .env_clear()
        .uid(common::NOBODY)
        .gid(common::NOBODY)
        .current_dir("/");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn without_paths_a_user_writes_under_its_state_home_never_the_current_directory() {
    common::require_root();
    let work = tempfile::tempdir().unwrap();
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = work.path().join("home");
    let xdg = work.path().join("xdg");
    for d in [&home, &xdg] {
        std::fs::create_dir(d).unwrap();
        chown(d, Some(common::NOBODY), Some(common::NOBODY)).unwrap();
    }
    for (vars, base) in [
        (
            vec![("HOME", home.as_path())],
            home.join(".local/state/plugbox"),
        ),
        (
            vec![("HOME", home.as_path()), ("XDG_STATE_HOME", xdg.as_path())],
            xdg.join("plugbox"),
        ),
    ] {
        let out = run_as_nobody(&vars);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // The plugin does not exist, so the run fails, after choosing and opening its log.
        assert_eq!(out.status.code(), Some(125), "{stderr}");
        let audit = base.join("audit.jsonl");
        assert!(
            stderr.contains(&format!("plugbox: audit log: {}", audit.display())),
            "{stderr}"
        );
        for dir in [base.clone(), base.join("state")] {
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", dir.display());
        }
        let mode = std::fs::metadata(&audit).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // A symlink planted as the final component is refused, not followed.
    let planted = work.path().join("planted");
    std::fs::create_dir(&planted).unwrap();
    chown(&planted, Some(common::NOBODY), Some(common::NOBODY)).unwrap();
    std::fs::create_dir_all(planted.join("real")).unwrap();
    chown(
        planted.join("real"),
        Some(common::NOBODY),
        Some(common::NOBODY),
    )
    .unwrap();
    std::os::unix::fs::symlink(planted.join("real"), planted.join("plugbox")).unwrap();
    let out = run_as_nobody(&[("XDG_STATE_HOME", &planted)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("symlink"), "{stderr}");
    assert!(names_in(&planted.join("real")).is_empty());
}

/// Reads `stream` line by line into a channel (so a test can wait for one line, bounded).
fn lines_of(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits (bounded, to turn a hang into a failure) for a line matching `want`.
fn wait_for(rx: &mpsc::Receiver<String>, what: &str, want: impl Fn(&str) -> bool) -> String {
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if want(&line) => return line,
            Ok(_) => {}
            Err(e) => panic!("no {what}: {e}"),
        }
    }
}

#[test]
fn a_line_printed_before_a_blocking_host_call_reaches_the_host_while_the_plugin_waits() {
    let p = TestPlugin::new(
        "chatty",
        "[capabilities]\n\"hold\" = {}\n",
        "import plugbox\n@plugbox.command\ndef talk():\n    print('MARK-before-the-call')\n    return plugbox.host.call('hold')\n",
    );
    let work = tempfile::tempdir().unwrap();
    let mut serve = Command::new(common::plugbox())
        .arg("serve")
        .arg("--audit")
        .arg(work.path().join("audit.jsonl"))
        .arg("--state")
        .arg(work.path().join("state"))
        .args(["--capability", "hold"])
        .arg("--allow-ungranted")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = serve.stdin.take().unwrap();
    let answers = lines_of(serve.stdout.take().unwrap());
    let logs = lines_of(serve.stderr.take().unwrap());
    writeln!(stdin, "{}", json!({"id": 1, "op": "load", "dir": p.path()})).unwrap();
    wait_for(&answers, "load answer", |l| l.contains("\"id\":1"));
    writeln!(
        stdin,
        "{}",
        json!({"id": 2, "op": "call", "plugin": "chatty", "command": "talk"})
    )
    .unwrap();
    let call: Value = serde_json::from_str(&wait_for(&answers, "host_call", |l| {
        l.contains("host_call")
    }))
    .unwrap();
    // The plugin is blocked in its host call: its line must already have been forwarded.
    wait_for(&logs, "forwarded line", |l| {
        l.contains("MARK-before-the-call")
    });
    writeln!(
        stdin,
        "{}",
        json!({"op": "host_reply", "call": call["call"], "result": "released"})
    )
    .unwrap();
    let answer = wait_for(&answers, "call answer", |l| l.contains("\"id\":2"));
    assert!(answer.contains("released"), "{answer}");
    drop(stdin);
    assert!(serve.wait().unwrap().success());
}

#[test]
fn lines_printed_just_before_the_plugin_dies_are_delivered() {
    let main = "import os, signal, sys, plugbox\n\
@plugbox.command\ndef exit_now():\n    print('MARK-exit')\n    os._exit(0)\n\
@plugbox.command\ndef kill_self():\n    print('MARK-kill')\n    os.kill(os.getpid(), signal.SIGKILL)\n\
@plugbox.command\ndef crash():\n    sys.stdout.write('MARK-abort-partial')\n    os.abort()\n";
    let p = TestPlugin::new("dying", "", main);
    for (command, mark) in [
        ("exit_now", "MARK-exit"),
        ("kill_self", "MARK-kill"),
        ("crash", "MARK-abort-partial"),
    ] {
        let work = tempfile::tempdir().unwrap();
        let out = run(
            p.path(),
            &work.path().join("audit.jsonl"),
            &work.path().join("state"),
            &[command],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{command}: {stderr}");
        assert!(stderr.contains(mark), "{command}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequential_loop_of_fast_calls_is_never_rate_limited_by_default() {
    const ROUND_TRIPS: u64 = 20_000;
    const FIRE_AND_FORGET: u64 = 30_000;
    let te = TestEngine::new();
    // Default rate limits; only the per-call deadline and CPU budget are raised, so that a
    // loaded machine cannot turn the loop's duration into a failure.
    let p = TestPlugin::new(
        "looper",
        "[capabilities]\n\"log\" = {}\n[limits]\ncall_timeout_ms = 600000\ncpu_seconds = 600\n",
        "import plugbox\n@plugbox.command\ndef loop(n, m):\n    for _ in range(n):\n        plugbox.host.call('log', level='debug', message='x')\n    for _ in range(m):\n        plugbox.log.debug('y')\n    return plugbox.host.call('log', level='info', message='done')\n",
    );
    let plugin = te
        .engine
        .load(p.path(), &Grants::all_requested())
        .await
        .unwrap();
    plugin
        .call("loop", json!({"n": ROUND_TRIPS, "m": FIRE_AND_FORGET}))
        .await
        .unwrap();
    te.engine.shutdown().await.unwrap();
    let (mut allowed, mut refused) = (0u64, 0u64);
    for r in records(&te.audit) {
        match (r["event"].as_str(), r["decision"].as_str()) {
            (Some("call"), Some("allow")) => allowed += 1,
            (Some("call"), _) | (Some("calls_suppressed"), _) => {
                eprintln!("refused: {r}");
                refused += 1;
            }
            _ => {}
        }
    }
    assert_eq!(refused, 0);
    assert_eq!(allowed, ROUND_TRIPS + FIRE_AND_FORGET + 1);
}
