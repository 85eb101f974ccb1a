//! Hostile plugins against the built-in `fs.*` capabilities (issue 9, findings 1, 2 and the fs
//! half of 11): a swapped data directory, FIFOs and other special files, and writes past the
//! file size limit or the quota. The files are put in the plugin's data directory
//! (`<state>/<name>-<id>/data/`), where `fs.*` resolve their roots.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::plugins::{TestEngine, TestPlugin};
use plugbox::capability::Reply;
use plugbox::engine::Instance;
use plugbox::manifest::Grants;
use serde_json::{json, Value};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Long enough for any honest call on a loaded machine; only turns a hang into a failure.
const HANG: Duration = Duration::from_secs(60);

/// The plugin: commands that try an `fs.*` call and return `{"ok": result}` or
/// `{"code", "message"}`, and the helpers the attacks need.
const FS_PLUGIN: &str = include_str!("plugins/hostile_fs.py");

/// A plugin named `name` running [`FS_PLUGIN`] with the `fs.*` grants (and limits) in
/// `sections`.
fn fs_plugin(name: &str, sections: &str) -> TestPlugin {
    TestPlugin::new(name, sections, FS_PLUGIN)
}

/// The data directory `p` gets under the state directory `state`, with its `data/` root made
/// (as the engine makes it at load), so files can be put there before the plugin loads.
fn store_in(state: &Path, p: &TestPlugin) -> PathBuf {
    let dir = plugbox::engine::plugin_data_dir(state, p.path()).unwrap();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    dir
}

/// [`store_in`] the state directory of `te`.
fn store(te: &TestEngine, p: &TestPlugin) -> PathBuf {
    let dir = te.engine.data_dir(p.path()).unwrap();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    dir
}

async fn load(te: &TestEngine, p: &TestPlugin) -> Instance {
    te.engine
        .spawn_instance(p.path(), &Grants::all_requested())
        .await
        .expect("load")
}

/// Calls `command` and returns its JSON result, failing on a hang.
async fn call(plugin: &Instance, command: &str, args: Value) -> Value {
    match tokio::time::timeout(HANG, plugin.call(command, args))
        .await
        .unwrap_or_else(|_| panic!("{command} hung"))
    {
        Ok(Reply::Json(v)) => v,
        other => panic!("{command}: {other:?}"),
    }
}

/// `mkfifo path` (the test runs as root; no unsafe in tests).
fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo").arg(path).status().unwrap().success();
    assert!(ok, "mkfifo {path:?}");
}

/// Asserts a `{"code", "message"}` result with `code` and a message containing `part`.
#[track_caller]
fn assert_refused(result: &Value, code: &str, part: &str) {
    assert_eq!(result["code"], code, "{result}");
    let message = result["message"].as_str().unwrap_or_default();
    assert!(message.contains(part), "{result}");
}

/// Measures the round trip of one `fs.read` of a small file, as the plugin sees it: prints
/// the median and 90th percentile of 2000 calls. Run with
/// `cargo test --test hostile_fs -- --ignored --nocapture fs_read_latency`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn fs_read_latency() {
    let te = TestEngine::new();
    let p = TestPlugin::new(
        "bench",
        "[capabilities]\n\"fs.read\" = { paths = [\"data\"] }\n[limits]\ncalls_per_second = 1000000\ncall_burst = 1000000\n",
        "import plugbox, time\n@plugbox.command\ndef bench(n):\n    ts = []\n    for _ in range(n):\n        t = time.perf_counter_ns()\n        plugbox.host.call('fs.read', path='data/small.txt')\n        ts.append(time.perf_counter_ns() - t)\n    ts.sort()\n    return [ts[len(ts) // 2], ts[len(ts) * 9 // 10]]\n",
    );
    std::fs::write(store(&te, &p).join("data/small.txt"), b"hello, world\n").unwrap();
    let plugin = te
        .engine
        .spawn_instance(p.path(), &Grants::all_requested())
        .await
        .expect("load");
    plugin
        .call("bench", json!({"n": 200}))
        .await
        .expect("warm up");
    for _ in 0..3 {
        let Reply::Json(r) = plugin
            .call("bench", json!({"n": 2000}))
            .await
            .expect("bench")
        else {
            panic!()
        };
        println!(
            "fs.read small file: median {} us, p90 {} us",
            r[0].as_u64().unwrap() / 1000,
            r[1].as_u64().unwrap() / 1000
        );
    }
}

/// Finding 1, as it stands now that `fs.*` work in the data directory: the data directory is
/// renamed away after load and a symlink to a secret directory put in its place. The engine
/// keeps the directory it opened at load: reads find nothing of the secret, writes land in
/// the original directory. (The plugin directory is not reached by `fs.*` at all; see
/// `tests/hostile_datadir.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swapped_data_directory_does_not_redirect_fs_calls() {
    let te = TestEngine::new();
    let p = fs_plugin(
        "swapper",
        "[capabilities]\n\"fs.read\" = { paths = [\".\"] }\n\"fs.write\" = { paths = [\".\"] }\n\"fs.list\" = { paths = [\".\"] }\n",
    );
    let data = store(&te, &p);
    std::fs::write(data.join("mine.txt"), b"mine").unwrap();
    let secret = tempfile::tempdir().unwrap();
    std::fs::write(secret.path().join("secret.txt"), b"TOPSECRET").unwrap();
    let plugin = load(&te, &p).await;
    let moved = data.with_extension("moved");
    std::fs::rename(&data, &moved).unwrap();
    std::os::unix::fs::symlink(secret.path(), &data).unwrap();

    let read = call(&plugin, "read", json!({"path": "./secret.txt"})).await;
    assert_refused(&read, "invalid", "no such file");
    let listing = call(&plugin, "ls", json!({"path": "."})).await;
    let names: Vec<&str> = listing["ok"]
        .as_array()
        .unwrap_or_else(|| panic!("{listing}"))
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"mine.txt") && !names.contains(&"secret.txt"),
        "{names:?}"
    );
    let wrote = call(
        &plugin,
        "write",
        json!({"path": "./planted.txt", "text": "x"}),
    )
    .await;
    assert_eq!(wrote["ok"], json!({"written": 1}), "{wrote}");
    assert!(!secret.path().join("planted.txt").exists());
    assert_eq!(std::fs::read(moved.join("planted.txt")).unwrap(), b"x");
    let mine = call(&plugin, "read", json!({"path": "./mine.txt"})).await;
    assert_eq!(mine["ok"].as_str(), Some("mine"));

    plugin.shutdown().await;
    std::fs::remove_file(&data).unwrap();
    std::fs::rename(&moved, &data).unwrap();
}

/// Finding 2 (a): a FIFO, a character device and a socket inside the granted root are
/// refused at once with a typed error; nothing blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_files_are_refused_at_once() {
    let te = TestEngine::new();
    let p = fs_plugin(
        "fifo",
        "[capabilities]\n\"fs.read\" = { paths = [\"data\"] }\n\"fs.write\" = { paths = [\"data\"] }\n\"fs.list\" = { paths = [\"data\"] }\n",
    );
    // Made after the load: the quota walk at load skips special files, but that is another
    // finding's (11) business.
    let plugin = load(&te, &p).await;
    let data = store(&te, &p).join("data");
    mkfifo(&data.join("fifo"));
    let zero = Command::new("mknod")
        .arg(data.join("zero"))
        .args(["c", "1", "5"])
        .status()
        .unwrap();
    assert!(zero.success());
    let _socket = std::os::unix::net::UnixListener::bind(data.join("sock")).unwrap();

    for name in ["fifo", "zero", "sock"] {
        let path = format!("data/{name}");
        let read = call(&plugin, "read", json!({"path": path})).await;
        assert_refused(&read, "invalid", "not a regular file");
        let list = call(&plugin, "ls", json!({"path": path})).await;
        assert_refused(&list, "invalid", "not a directory");
    }
    // A FIFO with no reader cannot even be opened for writing (ENXIO); with a reader
    // (the host holds one end open here) it is opened, then refused.
    let lonely = call(&plugin, "write", json!({"path": "data/fifo", "text": "x"})).await;
    assert_eq!(lonely["code"], "invalid", "{lonely}");
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(data.join("fifo"))
        .unwrap();
    let write = call(&plugin, "write", json!({"path": "data/fifo", "text": "x"})).await;
    assert_refused(&write, "invalid", "not a regular file");
    drop(reader);
    let write = call(&plugin, "write", json!({"path": "data/zero", "text": "x"})).await;
    assert_refused(&write, "invalid", "not a regular file");
}

/// Finding 2 (b): a plugin fires 640 FIFO reads from 16 threads at once (more than tokio's
/// 512 blocking threads); each is refused, and another plugin's `fs.read` still completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_fifo_reads_leaves_other_plugins_served() {
    let te = TestEngine::new();
    let limits = "[limits]\ncalls_per_second = 100000\ncall_burst = 100000\ncalls_in_flight = 64\npending_reply_mib = 2048\n";
    let grant = "[capabilities]\n\"fs.read\" = { paths = [\"data\"] }\n";
    let hostile_dir = fs_plugin("flood", &format!("{grant}{limits}"));
    let honest = fs_plugin("honest", grant);
    std::fs::write(store(&te, &honest).join("data/note.txt"), b"still here").unwrap();
    let fifo = store(&te, &hostile_dir).join("data/fifo");
    let (hostile, honest) = (load(&te, &hostile_dir).await, load(&te, &honest).await);
    mkfifo(&fifo);

    let codes = call(
        &hostile,
        "read_many",
        json!({"path": "data/fifo", "threads": 16, "each": 40}),
    )
    .await;
    let codes = codes.as_array().unwrap();
    assert_eq!(codes.len(), 640);
    assert!(codes.iter().all(|c| c == "invalid"), "{codes:?}");
    let read = call(&honest, "read", json!({"path": "data/note.txt"})).await;
    assert_eq!(read["ok"], "still here", "{read}");
}

/// Finding 2 (c): `plugbox run DIR --call wait_for --call read_raw`: once the plugin is
/// ready, a FIFO appears in its root (made by the test: Landlock gives no plugin the right to
/// make one), then a `go` file in the plugin directory that `wait_for` waits for (the data
/// directory is the host's, mode 0700: the plugin cannot see into it), and the plugin reads
/// the FIFO. The typed error is printed and the process exits 1; it
/// used to never exit.
#[test]
fn plugbox_run_exits_after_a_fifo_read() {
    let p = fs_plugin(
        "runfifo",
        "[capabilities]\n\"fs.read\" = { paths = [\"data\"] }\n[limits]\ncall_timeout_ms = 60000\n",
    );
    let work = tempfile::tempdir().unwrap();
    let fifo = store_in(&work.path().join("state"), &p).join("data/fifo");
    let go = p.path().join("go");
    let audit = work.path().join("audit.jsonl");
    let child = Command::new(common::plugbox())
        .arg("run")
        .arg(p.path())
        .arg("--audit")
        .arg(&audit)
        .arg("--state")
        .arg(work.path().join("state"))
        .args(["--call", "wait_for", "--args"])
        .arg(json!({ "path": go.display().to_string() }).to_string())
        .args(["--call", "read_raw", "--args", r#"{"path": "data/fifo"}"#])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output().unwrap()));
    wait_until_ready(&audit);
    mkfifo(&fifo);
    std::fs::write(&go, b"").unwrap();
    let Ok(out) = rx.recv_timeout(HANG) else {
        Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
        panic!("plugbox run hung after a FIFO read");
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{out:?}");
    assert_eq!(lines[0]["ok"], true, "{out:?}");
    let line = &lines[1];
    assert_eq!(line["ok"], false, "{out:?}");
    assert_eq!(line["error"]["code"], "plugin_error", "{out:?}");
    let message = line["error"]["message"].as_str().unwrap();
    assert!(message.contains("not a regular file"), "{out:?}");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

/// Waits (at most [`HANG`]) for the audit log at `path` to record a plugin becoming ready.
fn wait_until_ready(path: &Path) {
    let started = std::time::Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let ready = text.lines().any(|l| {
            let r: Value = serde_json::from_str(l).unwrap_or_default();
            r["event"] == "state" && r["detail"]["to"] == "ready"
        });
        if ready {
            return;
        }
        assert!(started.elapsed() < HANG, "no ready record: {text}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Finding 11 (fs half): a write larger than `limits.file_size_mib` is refused `too_large`
/// before the file is touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_past_file_size_mib_is_refused_and_leaves_the_file() {
    let te = TestEngine::new();
    let p = fs_plugin(
        "bigwrite",
        "[capabilities]\n\"fs.write\" = { paths = [\"data\"], max_bytes = 4194304 }\n[limits]\nfile_size_mib = 1\n",
    );
    let file = store(&te, &p).join("data/keep.txt");
    std::fs::write(&file, b"original").unwrap();
    let plugin = load(&te, &p).await;

    let big = call(
        &plugin,
        "write_n",
        json!({"path": "data/keep.txt", "size": (1 << 20) + 1}),
    )
    .await;
    assert_refused(&big, "too_large", "file_size_mib");
    assert_eq!(std::fs::read(&file).unwrap(), b"original");
    let fits = call(
        &plugin,
        "write_n",
        json!({"path": "data/keep.txt", "size": 1 << 20}),
    )
    .await;
    assert_eq!(fits["ok"], json!({"written": 1 << 20}), "{fits}");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 1 << 20);
}

/// Finding 11 (fs half): bytes stored beneath the `fs.write` roots are counted at activation
/// (files already there included) and by each write's size change; a write past
/// `limits.fs_quota_mib` is refused `too_large` naming the quota, and creates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_past_the_fs_quota_are_refused() {
    let te = TestEngine::new();
    let p = fs_plugin(
        "quota",
        "[capabilities]\n\"fs.write\" = { paths = [\"data\"], max_bytes = 4194304 }\n\"fs.read\" = { paths = [\"data\"] }\n[limits]\nfs_quota_mib = 1\n",
    );
    let data = store(&te, &p).join("data");
    std::fs::create_dir(data.join("old")).unwrap();
    std::fs::write(data.join("old/big.bin"), vec![0u8; 700 << 10]).unwrap();
    let plugin = load(&te, &p).await;

    let a = call(
        &plugin,
        "write_n",
        json!({"path": "data/a.bin", "size": 200 << 10}),
    )
    .await;
    assert_eq!(a["ok"], json!({"written": 200 << 10}), "{a}");
    let b = call(
        &plugin,
        "write_n",
        json!({"path": "data/b.bin", "size": 200 << 10}),
    )
    .await;
    assert_refused(&b, "too_large", "fs_quota_mib");
    assert!(!data.join("b.bin").exists());
    // Shrinking an existing file gives its bytes back.
    let shrink = call(
        &plugin,
        "write",
        json!({"path": "data/old/big.bin", "text": "small"}),
    )
    .await;
    assert_eq!(shrink["ok"], json!({"written": 5}), "{shrink}");
    let b = call(
        &plugin,
        "write_n",
        json!({"path": "data/b.bin", "size": 200 << 10}),
    )
    .await;
    assert_eq!(b["ok"], json!({"written": 200 << 10}), "{b}");
    // Rewriting a file in place counts only the difference.
    let again = call(
        &plugin,
        "write_n",
        json!({"path": "data/b.bin", "size": 200 << 10}),
    )
    .await;
    assert_eq!(again["ok"], json!({"written": 200 << 10}), "{again}");
    let fill = call(
        &plugin,
        "write_n",
        json!({"path": "data/c.bin", "size": 600 << 10}),
    )
    .await;
    assert_eq!(fill["ok"], json!({"written": 600 << 10}), "{fill}");
    let over = call(
        &plugin,
        "write_n",
        json!({"path": "data/d.bin", "size": 30 << 10}),
    )
    .await;
    assert_refused(&over, "too_large", "fs_quota_mib");
}

/// `limits.fs_quota_mib`: 64 MiB unless set, and checked like every limit.
#[test]
fn the_fs_quota_defaults_to_64_mib_and_is_validated() {
    use plugbox::policy::Policy;
    let p = Policy::from_toml("schema = 1").unwrap();
    assert_eq!(p.limits().fs_quota_bytes, 64 << 20);
    let p = Policy::from_toml("schema = 1\n[limits]\nfs_quota_mib = 0\n").unwrap();
    assert_eq!(p.limits().fs_quota_bytes, 0);
    let e = Policy::from_toml("schema = 1\n[limits]\nfs_quota_mib = 2000000\n").unwrap_err();
    assert!(e.to_string().contains("limits.fs_quota_mib"), "{e}");
}
