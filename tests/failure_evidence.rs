//! Evidence survives failures (issue 10): a plugin that fails before it is ready (a syntax
//! error, an exception at import, a native crash, an exit) always leaves its exit status and
//! the tail of its stderr (the traceback) in the load error and in the `load_refused` record,
//! and the audit log is always sealed when the engine shuts down or `plugbox run` exits, also
//! under CPU load.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::plugins::{TestEngine, TestPlugin};
use futures_util::future::join_all;
use plugbox::engine::{LoadError, TAIL_LINES};
use plugbox::manifest::Grants;
use plugbox::sys::WaitStatus;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A syntax error on line 2 of the entry file.
const SYNTAX: &str = "import plugbox\ndef broken(:\n    pass\n";
/// What every syntax error's traceback shows.
const SYNTAX_SHOWS: [&str; 2] = ["main.py\", line 2", "SyntaxError: "];
/// Loads of each kind in the bar.
const LOADS_PER_KIND: usize = 200;
/// Plugins of each kind loaded concurrently by one engine.
const BATCH_PER_KIND: usize = 4;
/// Generous: only turns a hang into a failure.
const HANG: Duration = Duration::from_secs(120);

/// An entry file that raises at import with a message naming `marker`.
fn raising(marker: &str) -> String {
    format!("import plugbox\n\ndef setup():\n    raise LookupError('distinctive failure {marker}')\n\nsetup()\n")
}

/// Two threads spinning until dropped: the loads below run on a machine with no idle core.
struct CpuLoad {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<u64>>,
}

impl CpuLoad {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..2)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut spins = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        spins = std::hint::black_box(spins.wrapping_add(1));
                    }
                    spins
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for CpuLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One failing plugin and the texts its traceback must show.
struct Case {
    plugin: TestPlugin,
    name: String,
    shows: Vec<String>,
}

fn syntax_case(i: usize) -> Case {
    let name = format!("syntax{i}");
    Case {
        plugin: TestPlugin::new(&name, "", SYNTAX),
        name,
        shows: SYNTAX_SHOWS.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn raising_case(i: usize) -> Case {
    let name = format!("raises{i}");
    let marker = format!("#{i}-7f3a");
    Case {
        plugin: TestPlugin::new(&name, "", &raising(&marker)),
        shows: vec![
            "main.py\", line 4, in setup".into(),
            format!("LookupError: distinctive failure {marker}"),
        ],
        name,
    }
}

/// The log verifies intact **and sealed** (a verdict without damage means both).
fn assert_sealed(audit: &Path) {
    let verdict = plugbox::audit::verify::verify_file(audit).unwrap();
    assert!(
        verdict.broken.is_none(),
        "{}",
        plugbox::audit::verify::describe(&verdict)
    );
    let text = std::fs::read_to_string(audit).unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "seal", "{text}");
}

/// The `load_refused` record of plugin `name`: exactly one, its tail as one text.
fn refused_tail(te: &TestEngine, name: &str) -> (Value, String) {
    let records: Vec<Value> = te
        .events("load_refused")
        .into_iter()
        .filter(|r| r["plugin"]["name"] == name)
        .collect();
    let [record] = &records[..] else {
        panic!("{name}: {records:#?}")
    };
    let lines = record["detail"]["stderr_tail"].as_array().expect("tail");
    assert!(lines.len() <= TAIL_LINES);
    let tail = lines
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    (record.clone(), tail)
}

/// Loads every case at once in a fresh engine, checks each error and record, shuts the engine
/// down and checks the log is sealed.
async fn load_batch(cases: &[Case]) {
    let te = TestEngine::new();
    let grants = Grants::all_requested();
    let loads = cases
        .iter()
        .map(|c| te.engine.load(c.plugin.path(), &grants));
    let results = tokio::time::timeout(HANG, join_all(loads)).await.unwrap();
    for (case, result) in cases.iter().zip(results) {
        let Err(error) = result else {
            panic!("{}: a broken plugin loaded", case.name)
        };
        let shown = error.to_string();
        assert_eq!(error.step(), "handshake", "{shown}");
        let evidence = error.evidence().unwrap_or_else(|| panic!("{shown}"));
        assert!(evidence.complete, "{shown}");
        assert!(
            matches!(evidence.status, Some(WaitStatus::Exited(_))),
            "{shown}"
        );
        for text in &case.shows {
            assert!(
                shown.contains(text.as_str()),
                "{}: {text:?} in {shown}",
                case.name
            );
        }
    }
    tokio::time::timeout(HANG, te.engine.shutdown())
        .await
        .unwrap()
        .unwrap();
    for case in cases {
        let (record, tail) = refused_tail(&te, &case.name);
        assert_eq!(record["detail"]["step"], "handshake");
        assert!(record["detail"]["exit_code"].is_i64(), "{record}");
        for text in &case.shows {
            assert!(
                tail.contains(text.as_str()),
                "{}: {text:?} in {record}",
                case.name
            );
        }
    }
    assert_sealed(&te.audit);
}

/// The bar: 200 loads of a plugin with a syntax error and 200 of one that raises at import,
/// with two cores' worth of busy threads competing: every error and every `load_refused`
/// record carries the traceback, and every engine's log verifies sealed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failed_load_under_cpu_load_keeps_its_traceback_and_a_sealed_log() {
    let cases: Vec<Case> = (0..BATCH_PER_KIND)
        .map(syntax_case)
        .chain((0..BATCH_PER_KIND).map(raising_case))
        .collect();
    let _load = CpuLoad::start();
    let started = std::time::Instant::now();
    for _ in 0..LOADS_PER_KIND / BATCH_PER_KIND {
        load_batch(&cases).await;
    }
    eprintln!(
        "{} failed loads ({} engines) under CPU load in {:?}",
        2 * LOADS_PER_KIND,
        LOADS_PER_KIND / BATCH_PER_KIND,
        started.elapsed()
    );
}

/// `plugbox run` of a failing plugin: the traceback is in what it prints, and the log it
/// leaves verifies sealed (`plugbox audit verify` says so), every time, under CPU load.
#[test]
fn plugbox_run_of_a_failing_plugin_prints_the_traceback_and_seals_the_log() {
    let cases = [syntax_case(0), raising_case(0)];
    let dir = tempfile::tempdir().unwrap();
    let _load = CpuLoad::start();
    for round in 0..5 {
        for case in &cases {
            let audit = dir.path().join(format!("{}-{round}.jsonl", case.name));
            let out = Command::new(common::plugbox())
                .arg("run")
                .arg(case.plugin.path())
                .arg("--audit")
                .arg(&audit)
                .arg("--state")
                .arg(dir.path().join("state"))
                .env("PLUGBOX_LOG", "off")
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(125), "{stderr}");
            for text in &case.shows {
                assert!(stderr.contains(text.as_str()), "{text:?} in {stderr}");
            }
            let verify = Command::new(common::plugbox())
                .args(["audit", "verify"])
                .arg(&audit)
                .output()
                .unwrap();
            let verdict = String::from_utf8_lossy(&verify.stdout);
            assert_eq!(verify.status.code(), Some(0), "{verdict}");
            assert!(verdict.contains("sealed"), "{verdict}");
        }
    }
}

/// A native crash and a bare exit before `hello`: the error names the signal or the exit
/// status, and carries what the plugin wrote to stderr first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_crash_or_exit_before_hello_names_its_status_and_keeps_its_stderr() {
    let aborts = TestPlugin::new(
        "aborts",
        "",
        "import os, sys\nprint('about to abort natively', file=sys.stderr)\nos.abort()\n",
    );
    let exits = TestPlugin::new(
        "exits",
        "",
        "import os, sys\nprint('leaving with three', file=sys.stderr)\nos._exit(3)\n",
    );
    let te = TestEngine::new();
    let grants = Grants::all_requested();
    for (plugin, status, ending, said) in [
        (
            &aborts,
            WaitStatus::Signaled(libc::SIGABRT),
            "killed by signal 6 (SIGABRT)",
            "about to abort natively",
        ),
        (
            &exits,
            WaitStatus::Exited(3),
            "exited with status 3",
            "leaving with three",
        ),
    ] {
        let error = te.engine.load(plugin.path(), &grants).await.err().unwrap();
        let shown = error.to_string();
        let evidence = error.evidence().unwrap_or_else(|| panic!("{shown}"));
        assert_eq!(evidence.status, Some(status), "{shown}");
        assert!(shown.contains(ending) && shown.contains(said), "{shown}");
        assert_eq!(evidence.stderr_tail, said);
    }
    te.engine.shutdown().await.unwrap();
    let (record, tail) = refused_tail(&te, "aborts");
    assert_eq!(record["detail"]["signal"], libc::SIGABRT);
    assert_eq!(tail, "about to abort natively");
    let (record, _) = refused_tail(&te, "exits");
    assert_eq!(record["detail"]["exit_code"], 3);
    assert_sealed(&te.audit);
}

/// A plugin that closes its channel but stays alive with stderr open, and one that never
/// says hello: neither holds the load up beyond its bounds; both are killed, and what they
/// wrote (escaped: no raw control character) is still their evidence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_keeps_stderr_open_is_killed_and_its_tail_still_reported() {
    let closes = TestPlugin::new(
        "closes",
        "",
        "import os, sys, time\nsys.stderr.write('closing \\x1b[2Jthe channel\\n')\nsys.stderr.flush()\nos.close(int(os.environ['PLUGBOX_FD']))\ntime.sleep(3600)\n",
    );
    let silent = TestPlugin::new(
        "silent",
        "",
        "import sys, time\nprint('thinking forever', file=sys.stderr)\ntime.sleep(3600)\n",
    );
    let te = TestEngine::with(|c| c.handshake_timeout = Duration::from_secs(3));
    let grants = Grants::all_requested();
    for (plugin, said) in [
        (&closes, "closing \\u{1b}[2Jthe channel"),
        (&silent, "thinking forever"),
    ] {
        let error = tokio::time::timeout(HANG, te.engine.load(plugin.path(), &grants))
            .await
            .unwrap()
            .err()
            .unwrap();
        let shown = error.to_string();
        assert!(matches!(error, LoadError::PluginFailed { .. }), "{shown}");
        let evidence = error.evidence().unwrap();
        assert_eq!(
            evidence.status,
            Some(WaitStatus::Signaled(libc::SIGKILL)),
            "{shown}"
        );
        assert!(evidence.complete, "{shown}");
        assert!(shown.contains(said), "{shown}");
        assert!(!shown.contains('\u{1b}'), "{shown}");
    }
    te.engine.shutdown().await.unwrap();
    let (_, tail) = refused_tail(&te, "closes");
    assert_eq!(tail, "closing \\u{1b}[2Jthe channel");
    assert_eq!(te.engine.live_plugins(), 0);
    assert_sealed(&te.audit);
}

/// `plugbox check` names the file and the line of a syntax error, and fails.
#[test]
fn check_names_the_file_and_line_of_a_syntax_error() {
    let case = syntax_case(0);
    let out = Command::new(common::plugbox())
        .arg("check")
        .arg(case.plugin.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains("SyntaxError") && stderr.contains("(main.py, line 2)"),
        "{stderr}"
    );
}

/// A plugin whose `nap` says on stderr that it started (with its pid), then sleeps.
const NAPPER: &str = "import os, sys, time, plugbox\n@plugbox.command\ndef nap(s):\n    print(f'napping pid={os.getpid()}', file=sys.stderr, flush=True)\n    time.sleep(s)\n    return 1\n";

/// Reads `stderr` lines on a thread until one says the plugin is napping; returns its pid.
fn napping_pid(stderr: std::process::ChildStderr) -> i32 {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if let Some(at) = line.find("napping pid=") {
                let digits: String = line[at + 12..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                let _ = tx.send(digits.parse::<i32>().unwrap());
            }
        }
    });
    rx.recv_timeout(HANG).expect("the plugin started napping")
}

/// Waits (bounded) for `child` to exit; its status code.
fn exit_code(mut child: std::process::Child) -> Option<i32> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait().map(|s| s.code()));
    });
    rx.recv_timeout(HANG).expect("exited").unwrap()
}

/// SIGINT to `plugbox run` during a call: the plugin is unloaded, the log sealed, and the
/// run exits 130 (128 + SIGINT) instead of dying with the log unsealed.
#[test]
fn plugbox_run_stopped_by_sigint_unloads_and_seals() {
    let plugin = TestPlugin::new("napper", "", NAPPER);
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let mut child = Command::new(common::plugbox())
        .arg("run")
        .arg(plugin.path())
        .arg("--audit")
        .arg(&audit)
        .arg("--state")
        .arg(dir.path().join("state"))
        .args(["--call", "nap", "--args", "{\"s\": 3600}"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let plugin_pid = napping_pid(child.stderr.take().unwrap());
    assert_eq!(send_signal(child.id(), libc::SIGINT), 0);
    assert_eq!(exit_code(child), Some(128 + libc::SIGINT));
    assert!(!common::alive(plugin_pid), "the plugin outlived the run");
    assert_sealed(&audit);
}

/// SIGTERM to `plugbox serve` with a call in flight: every plugin is unloaded, the log
/// sealed, and serve exits 0, as at end of input.
#[test]
fn plugbox_serve_stopped_by_sigterm_unloads_and_seals() {
    use std::io::{BufRead, Write};
    let plugin = TestPlugin::new("napper", "", NAPPER);
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let mut child = Command::new(common::plugbox())
        .arg("serve")
        .arg("--audit")
        .arg(&audit)
        .arg("--state")
        .arg(dir.path().join("state"))
        .arg("--allow-ungranted")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut ready = String::new();
    stdout.read_line(&mut ready).unwrap();
    assert!(ready.contains(r#""op":"ready""#), "{ready}");
    let load = serde_json::json!({"id": 1, "op": "load", "dir": plugin.path()});
    writeln!(stdin, "{load}").unwrap();
    let mut answer = String::new();
    stdout.read_line(&mut answer).unwrap();
    assert!(answer.contains("\"ok\":true"), "{answer}");
    let call =
        r#"{"id": 2, "op": "call", "plugin": "napper", "command": "nap", "args": {"s": 3600}}"#;
    writeln!(stdin, "{call}").unwrap();
    let plugin_pid = napping_pid(child.stderr.take().unwrap());
    assert_eq!(send_signal(child.id(), libc::SIGTERM), 0);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(
        rest.contains("\"id\":2"),
        "the call in flight is answered: {rest}"
    );
    assert_eq!(exit_code(child), Some(0));
    drop(stdin);
    assert!(!common::alive(plugin_pid), "the plugin outlived serve");
    assert_sealed(&audit);
}

/// Sends `sig` to the process this test started, by its pid, through `kill(1)` (the tests
/// keep no `unsafe`).
fn send_signal(pid: u32, sig: i32) -> i32 {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    status.code().unwrap_or(-1)
}

/// An engine dropped without `shutdown` (and its runtime after it): its plugin is killed and
/// the log is sealed by the time the drops return, in the thread that dropped them (never
/// left to the group-commit thread, which an exiting process would cut off). Repeated, since
/// the race it guards against was intermittent.
#[test]
fn an_engine_dropped_without_shutdown_seals_its_log_before_the_drop_returns() {
    let plugin = TestPlugin::new("echo", "", common::engine::ECHO);
    for _ in 0..5 {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let te = TestEngine::new();
        let pid = runtime.block_on(async {
            let grants = Grants::all_requested();
            let loaded = te.engine.load(plugin.path(), &grants).await.unwrap();
            common::engine::pid_of(loaded.call("pid", serde_json::json!({})).await.unwrap())
        });
        let TestEngine { engine, audit, .. } = te;
        drop(engine);
        drop(runtime);
        assert!(dies(pid as i32), "the plugin outlived its engine");
        assert_sealed(&audit);
    }
}

/// Waits (bounded) for process `pid` to end, on its pidfd: whether it did.
fn dies(pid: i32) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(pidfd) = plugbox::sys::pidfd_open(pid) else {
        return true; // already reaped
    };
    let mut fds = [libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    let limit = i32::try_from(HANG.as_millis()).unwrap();
    plugbox::sys::poll(&mut fds, limit).unwrap() == 1
}

/// A plugin that says hello and dies before answering its first health probe: the error is
/// the failed probe with its exit status and stderr, and its slot is given back once (the
/// engine counts no plugin left alive).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_dying_after_hello_keeps_its_evidence_and_its_slot_count() {
    let plugin = TestPlugin::new(
        "hellodies",
        "",
        "import os, sys, rawwire\nrawwire.send({'type': 'hello', 'protocol': 1, 'plugin': {'name': rawwire.NAME, 'version': rawwire.VERSION}, 'commands': []})\nrawwire.recv()\nrawwire.recv()\nprint('dying after hello, before the probe', file=sys.stderr, flush=True)\nos._exit(4)\n",
    );
    let te = TestEngine::new();
    let error = tokio::time::timeout(
        HANG,
        te.engine.load(plugin.path(), &Grants::all_requested()),
    )
    .await
    .unwrap()
    .err()
    .unwrap();
    let shown = error.to_string();
    assert_eq!(error.step(), "health", "{shown}");
    let evidence = error.evidence().unwrap_or_else(|| panic!("{shown}"));
    assert_eq!(evidence.status, Some(WaitStatus::Exited(4)), "{shown}");
    assert_eq!(evidence.stderr_tail, "dying after hello, before the probe");
    assert_eq!(te.engine.live_plugins(), 0);
    te.engine.shutdown().await.unwrap();
    let (record, tail) = refused_tail(&te, "hellodies");
    assert_eq!(record["detail"]["step"], "health");
    assert_eq!(tail, "dying after hello, before the probe");
    assert_sealed(&te.audit);
}
