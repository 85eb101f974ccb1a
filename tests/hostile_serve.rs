//! The real `plugbox serve` with a hostile plugin and a well-behaved one: throughout each
//! attack, every call of the well-behaved plugin (which itself calls a host capability
//! answered over the pipes, and `fs.read`) completes within its call timeout, and serve's
//! peak memory stays bounded.
//!
//! Each attack is one function returning an [`Attack`]; [`run`] does the rest. To add one,
//! write its function and a `#[test]` calling `run` with it.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::plugins::TestPlugin;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;
/// Generous: only turns a hang into a failure (the well-behaved plugin's own call timeout is
/// 5 s; an answer later than this means serve stopped serving it).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest any attack may take before the test fails as hung.
const ATTACK_DEADLINE: Duration = Duration::from_secs(120);
/// Calls of the well-behaved plugin made during every attack, at least.
const MIN_GOOD_CALLS: u64 = 20;
/// The host capability both plugins may call; the test host answers it.
const ASK: &str = "host.ask";

/// A `plugbox serve` driven as a host would: requests written, answers routed by id,
/// `host_call`s of the well-behaved plugin answered at once, the hostile plugin's never.
struct Host {
    child: Child,
    stdin: Arc<Mutex<ChildStdin>>,
    waiting: Arc<Mutex<HashMap<String, mpsc::Sender<Value>>>>,
    /// `host_call` lines of any plugin but `good` seen so far.
    hostile_host_calls: Arc<AtomicU64>,
    audit: PathBuf,
    state: PathBuf,
    next: AtomicU64,
    _work: tempfile::TempDir,
}

impl Host {
    fn start(slow_hostile_host: Duration) -> Self {
        let work = tempfile::tempdir().unwrap();
        let audit = work.path().join("audit.jsonl");
        let mut child = Command::new(common::plugbox())
            .arg("serve")
            .arg("--audit")
            .arg(&audit)
            .arg("--state")
            .arg(work.path().join("state"))
            // These plugins are loaded without a grant file (development).
            .arg("--allow-ungranted")
            .args(["--capability", ASK])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("plugbox serve");
        let stdin = Arc::new(Mutex::new(child.stdin.take().unwrap()));
        let waiting: Arc<Mutex<HashMap<String, mpsc::Sender<Value>>>> = Arc::default();
        let hostile_host_calls = Arc::new(AtomicU64::new(0));
        let stdout = child.stdout.take().unwrap();
        let (stdin2, waiting2, hostile2) = (
            Arc::clone(&stdin),
            Arc::clone(&waiting),
            Arc::clone(&hostile_host_calls),
        );
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let v: Value = serde_json::from_str(&line).expect("serve writes JSON lines");
                if v["op"] == "host_call" {
                    if v["plugin"] == "good" {
                        let reply = json!({"op": "host_reply", "call": v["call"], "result": v["args"]["i"].as_i64().unwrap() * 2});
                        writeln!(stdin2.lock().unwrap(), "{reply}").unwrap();
                    } else {
                        hostile2.fetch_add(1, Ordering::AcqRel);
                        // A slow host (not synchronisation): it never answers these.
                        std::thread::sleep(slow_hostile_host);
                    }
                    continue;
                }
                if let Some(tx) = waiting2.lock().unwrap().remove(&v["id"].to_string()) {
                    let _ = tx.send(v);
                }
            }
        });
        Self {
            child,
            stdin,
            waiting,
            hostile_host_calls,
            audit,
            state: work.path().join("state"),
            next: AtomicU64::new(1),
            _work: work,
        }
    }

    /// Sends `request` with a fresh id; the answer arrives on the returned channel.
    fn send(&self, mut request: Value) -> mpsc::Receiver<Value> {
        let id = json!(format!("r{}", self.next.fetch_add(1, Ordering::AcqRel)));
        request["id"] = id.clone();
        let (tx, rx) = mpsc::channel();
        self.waiting.lock().unwrap().insert(id.to_string(), tx);
        writeln!(self.stdin.lock().unwrap(), "{request}").unwrap();
        rx
    }

    /// Sends `request` and waits (up to [`CALL_TIMEOUT`]) for its answer.
    fn ask(&self, request: Value) -> Value {
        self.send(request.clone())
            .recv_timeout(CALL_TIMEOUT)
            .unwrap_or_else(|_| panic!("no answer within {CALL_TIMEOUT:?} to {request}"))
    }

    /// Moves the plugin's `data/` files into its data directory (as an operator migrating
    /// from a release where `fs.*` read the plugin directory would), then loads it.
    fn load(&self, plugin: &TestPlugin) {
        let bundled = plugin.path().join("data");
        if bundled.exists() {
            let data = plugbox::engine::plugin_data_dir(&self.state, plugin.path()).unwrap();
            std::fs::create_dir_all(data.join("data")).unwrap();
            for entry in std::fs::read_dir(&bundled).unwrap() {
                let entry = entry.unwrap();
                std::fs::copy(entry.path(), data.join("data").join(entry.file_name())).unwrap();
            }
            std::fs::remove_dir_all(&bundled).unwrap();
        }
        let a = self.ask(json!({"op": "load", "dir": plugin.path()}));
        assert_eq!(a["result"]["state"], "ready", "{a}");
    }

    /// Every audit record so far.
    fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// A counter of serve's from `/proc/PID/status`, bytes.
    fn status_bytes(&self, field: &str) -> u64 {
        common::status_bytes(&self.child.id().to_string(), field)
    }

    /// Resets serve's peak RSS (`VmHWM`) to its RSS now.
    fn reset_peak_rss(&self) {
        std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5").unwrap();
    }

    fn shutdown(mut self) {
        let bye = self.ask(json!({"op": "shutdown"}));
        assert_eq!(bye["ok"], true, "{bye}");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status:?}");
    }
}

impl Drop for Host {
    /// A failed test leaves no serve behind (a finished one was reaped already).
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs once the calls are done: the attack's own checks and clean-up.
type Finish = Box<dyn FnOnce(&Host)>;

/// One attack on a running serve host.
struct Attack {
    /// The hostile plugin to load next to the well-behaved one, if the attack has one.
    hostile: Option<TestPlugin>,
    /// Starts what is not done by loading the plugin (requests the test host sends).
    start: Box<dyn FnOnce(&Host) -> Finish>,
    /// Has the attack done enough? Polled between calls of the well-behaved plugin.
    done: Box<dyn Fn(&Host) -> bool>,
    /// How slowly the test host handles each hostile `host_call` line.
    slow_host: Duration,
    /// serve's peak RSS may grow by less than this during the attack, MiB.
    peak_growth_mib: u64,
}

/// The well-behaved plugin: each call asks the host (over serve's pipes) and reads a file.
fn good_plugin() -> TestPlugin {
    let plugin = TestPlugin::new(
        "good",
        // Its own rate limit is out of the way: every failure here is the attack's doing.
        "[capabilities]\n\"host.ask\" = {}\n\"fs.read\" = { paths = [\"data\"] }\n\
         [limits]\ncalls_per_second = 100000\ncall_burst = 100000\n",
        "import plugbox\n@plugbox.command\ndef work(i):\n    asked = plugbox.host.call('host.ask', i=i)\n    data = plugbox.host.call('fs.read', path='data/small')\n    return [asked, len(data)]\n",
    );
    data_file(&plugin, "small", 1000);
    plugin
}

/// `data/NAME` of `size` bytes in `plugin`'s directory, moved to its data directory by
/// [`Host::load`].
fn data_file(plugin: &TestPlugin, name: &str, size: usize) {
    let data = plugin.path().join("data");
    if !data.exists() {
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::write(data.join(name), vec![b'x'; size]).unwrap();
}

/// Runs `attack` against a fresh serve host and checks the well-behaved plugin throughout.
fn run(attack: Attack) {
    let host = Host::start(attack.slow_host);
    let good = good_plugin();
    host.load(&good);
    if let Some(hostile) = &attack.hostile {
        host.load(hostile);
    }
    host.reset_peak_rss();
    let baseline = host.status_bytes("VmRSS:");
    let finish = (attack.start)(&host);
    let started = Instant::now();
    let mut calls = 0u64;
    while calls < MIN_GOOD_CALLS || !(attack.done)(&host) {
        assert!(
            started.elapsed() < ATTACK_DEADLINE,
            "the attack did not get under way"
        );
        let a = host
            .ask(json!({"op": "call", "plugin": "good", "command": "work", "args": {"i": calls}}));
        assert_eq!(a["result"], json!([calls * 2, 1000]), "call {calls}: {a}");
        calls += 1;
    }
    finish(&host);
    let growth = host.status_bytes("VmHWM:").saturating_sub(baseline);
    eprintln!(
        "{calls} good calls; serve peak RSS grew {} MiB",
        growth / MIB
    );
    assert!(
        growth < attack.peak_growth_mib * MIB,
        "serve's peak RSS grew {} MiB (bound {} MiB)",
        growth / MIB,
        attack.peak_growth_mib
    );
    host.shutdown();
}

fn nothing_more() -> Finish {
    Box::new(|_| {})
}

/// (a) Floods 8 MiB `fs.read`s and never reads a reply. Its budget holds 4 of them; it is
/// cut off for not reading, restarted, and floods again.
fn stops_reading_while_flooding_large_reads() -> Attack {
    let plugin = TestPlugin::new(
        "hoarder",
        "[capabilities]\n\"fs.read\" = { paths = [\"data\"], max_bytes = 8388608 }\n\
         [limits]\ncalls_in_flight = 64\npending_reply_mib = 32\ncall_timeout_ms = 2000\n\
         [supervision]\nmax_restarts = 1000\nbackoff_max_ms = 200\n",
        "import rawwire as w\nw.handshake()\ni = 0\nwhile True:\n    i += 1\n    w.call(i, 'fs.read', path='data/big')\n",
    );
    data_file(&plugin, "big", 8 * MIB as usize);
    Attack {
        hostile: Some(plugin),
        start: Box::new(|_| nothing_more()),
        // Refused past its budget, and cut off (then restarted) at least twice.
        done: Box::new(|host| {
            let records = host.records();
            let refused = records
                .iter()
                .any(|r| r["rule"] == "limits.pending_reply_mib");
            let cut = records
                .iter()
                .filter(|r| r["event"] == "kill" && r["plugin"]["name"] == "hoarder")
                .count();
            refused && cut >= 2
        }),
        slow_host: Duration::ZERO,
        peak_growth_mib: 32 + 64,
    }
}

/// (b) Floods `host.ask` calls with 900 KiB arguments, cancelling 9 in 10 at once and leaving
/// the rest to time out, while the host reads its `host_call` lines slowly and never answers
/// them: dead lines are dropped, not queued without bound.
fn floods_host_calls_the_host_never_answers() -> Attack {
    let plugin = TestPlugin::new(
        "flooder",
        "[capabilities]\n\"host.ask\" = {}\n\
         [limits]\ncalls_per_second = 100000\ncall_burst = 100000\ncalls_in_flight = 256\ncall_timeout_ms = 1000\n\
         [supervision]\nmax_restarts = 1000\nbackoff_max_ms = 200\n",
        "import rawwire as w, os, threading\nw.handshake()\ndef drain():\n    while os.read(w.FD, 1 << 20):\n        pass\nthreading.Thread(target=drain, daemon=True).start()\nblob = 'x' * (900 * 1024)\ni = 0\nwhile True:\n    i += 1\n    w.call(i, 'host.ask', i=i, blob=blob)\n    if i % 10:\n        w.send({'type': 'cancel', 'id': i})\n",
    );
    Attack {
        hostile: Some(plugin),
        start: Box::new(|_| nothing_more()),
        done: Box::new(|host| host.hostile_host_calls.load(Ordering::Acquire) >= 100),
        slow_host: Duration::from_millis(50),
        peak_growth_mib: 128,
    }
}

/// (c) A `load` of a directory whose `plugbox.toml` is a FIFO, issued mid-run: refused at
/// once (the manifest reader never blocks), audited, and nothing else waits for it.
fn loads_a_fifo_manifest() -> Attack {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("plugbox.toml");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    Attack {
        hostile: None,
        start: Box::new(move |host| {
            let answer = host.send(json!({"op": "load", "dir": dir.path()}));
            Box::new(move |host| {
                let a = answer
                    .recv_timeout(CALL_TIMEOUT)
                    .expect("the FIFO load answers");
                assert_eq!(a["ok"], false, "{a}");
                assert_eq!(a["error"]["code"], "load_failed", "{a}");
                assert!(
                    a["error"]["message"].as_str().unwrap().contains("FIFO"),
                    "{a}"
                );
                let refused = host
                    .records()
                    .into_iter()
                    .filter(|r| r["event"] == "load_refused");
                assert_eq!(refused.count(), 1, "the refusal is audited");
                drop(dir);
            })
        }),
        done: Box::new(|_| true),
        slow_host: Duration::ZERO,
        peak_growth_mib: 64,
    }
}

/// (d) Floods calls of a capability it was never granted, as fast as it can: each gets a
/// typed refusal, the refusals past the rate are counted into `calls_suppressed` records
/// instead of one record each, and the well-behaved plugin's calls are unaffected.
fn floods_ungranted_calls() -> Attack {
    let plugin = TestPlugin::new(
        "denied",
        "[limits]\ncalls_per_second = 50\ncall_burst = 10\n",
        "import rawwire as w, os, threading\nw.handshake()\ndef drain():\n    while os.read(w.FD, 1 << 20):\n        pass\nthreading.Thread(target=drain, daemon=True).start()\ni = 0\nwhile True:\n    i += 1\n    w.call(i, 'doc.set_text', text='x')\n",
    );
    Attack {
        hostile: Some(plugin),
        start: Box::new(|_| nothing_more()),
        done: Box::new(|host| {
            host.records()
                .iter()
                .filter(|r| r["event"] == "calls_suppressed")
                .filter_map(|r| r["detail"]["suppressed"].as_u64())
                .sum::<u64>()
                >= 10_000
        }),
        slow_host: Duration::ZERO,
        peak_growth_mib: 64,
    }
}

#[test]
fn a_plugin_that_stops_reading_while_flooding_large_reads() {
    run(stops_reading_while_flooding_large_reads());
}

#[test]
fn a_plugin_flooding_host_calls_the_host_never_answers() {
    run(floods_host_calls_the_host_never_answers());
}

#[test]
fn a_load_of_a_fifo_manifest_mid_run() {
    run(loads_a_fifo_manifest());
}

#[test]
fn a_plugin_flooding_ungranted_calls() {
    run(floods_ungranted_calls());
}
