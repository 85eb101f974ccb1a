//! Hostile plugins writing raw frames to the channel. Each test checks the typed error the
//! host returns and the audit record it wrote; the host must stay up for the next plugin.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::plugins::{TestEngine, TestPlugin};
use plugbox::capability::Reply;
use plugbox::ipc::ErrorCode;
use plugbox::manifest::Grants;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const LOG: &str = "[capabilities]\n\"log\" = {}\n";

async fn report(te: &TestEngine, plugin: &TestPlugin) -> Value {
    report_of(&load(te, plugin).await).await
}

/// Calls `report` on a loaded instance.
async fn report_of(p: &plugbox::engine::Instance) -> Value {
    match p.call("report", json!({})).await.expect("report") {
        Reply::Json(v) => v,
        other => panic!("{other:?}"),
    }
}

/// Loads `plugin` with everything it requests granted.
async fn load(te: &TestEngine, plugin: &TestPlugin) -> plugbox::engine::Instance {
    te.engine
        .spawn_instance(plugin.path(), &Grants::all_requested())
        .await
        .expect("load")
}

/// The host still loads and runs a well-behaved plugin.
async fn host_still_serves(te: &TestEngine) {
    let ok = TestPlugin::new(
        "healthy",
        "",
        "import plugbox\n@plugbox.command\ndef ping2():\n    return 'pong'\n",
    );
    let p = load(te, &ok).await;
    assert_eq!(
        p.call("ping2", json!({})).await.expect("call"),
        Reply::Json(json!("pong"))
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_length_prefix_is_cut_off_before_allocation() {
    let te = TestEngine::new();
    let bad = TestPlugin::new(
        "oversize",
        "",
        "import rawwire as w, struct, time\nw.handshake()\nw.write_all(struct.pack('>I', 0xFFFFFFFF))\ntime.sleep(10)\n",
    );
    let p = load(&te, &bad).await;
    let v = te
        .wait_for("violation", |r| r["event"] == "protocol_violation")
        .await;
    assert_eq!(v["decision"], "cut_off");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("length 4294967295 exceeds the cap of 16777216"),
        "{v}"
    );
    let exit = p.wait().await;
    assert!(exit.cause.contains("protocol violation"), "{exit:?}");
    let err = p.call("report", json!({})).await.expect_err("cut off");
    assert_eq!(err.code, ErrorCode::Protocol);
    te.wait_for("kill record", |r| r["event"] == "kill").await;
    host_still_serves(&te).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_of_exactly_the_cap_is_accepted_and_cap_plus_one_is_not() {
    let te = TestEngine::new();
    let script = r#"
import rawwire as w, json, time
w.handshake()
CAP = 16 * 1024 * 1024
for id_, extra in ((1, 0), (2, 1)):
    hdr = json.dumps({"type": "call", "id": id_, "method": "log", "body": "blob",
                      "args": {"level": "info", "message": "big"}}).encode()
    w.write_all(w.frame(hdr, b"\0" * (CAP - 4 - len(hdr) + extra)))
    if id_ == 1:
        w.replies_until([1])
time.sleep(10)
"#;
    let bad = TestPlugin::new("capper", LOG, script);
    let p = load(&te, &bad).await;
    let accepted = te
        .wait_for("call 1", |r| r["event"] == "call" && r["call_id"] == 1)
        .await;
    assert_eq!(accepted["request_bytes"], 16 * 1024 * 1024 - 4);
    assert_eq!(accepted["decision"], "allow");
    let v = te
        .wait_for("cap+1", |r| r["event"] == "protocol_violation")
        .await;
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("length 16777217 exceeds the cap"),
        "{v}"
    );
    assert!(p.wait().await.cause.contains("protocol violation"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_frame_then_eof_is_a_violation() {
    let te = TestEngine::new();
    let bad = TestPlugin::new("partial", "", "import rawwire as w, os\nw.handshake()\nw.write_all(b'\\x00\\x00\\x00\\x30\\x00')\nos._exit(0)\n");
    let p = load(&te, &bad).await;
    let v = te
        .wait_for("truncated", |r| r["event"] == "protocol_violation")
        .await;
    assert!(
        v["reason"].as_str().unwrap().contains("stream ended"),
        "{v}"
    );
    p.wait().await;
    host_still_serves(&te).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_byte_per_second_blocks_no_one_and_dies_at_the_wall_clock() {
    let te = TestEngine::new();
    let slow = TestPlugin::new(
        "slowloris",
        "[limits]\nwall_seconds = 3\n",
        "import rawwire as w, time\nw.handshake()\nfor b in w.frame({'type':'call','id':1,'method':'log','args':{}}):\n    w.write_all(bytes([b])); time.sleep(1)\n",
    );
    let p = load(&te, &slow).await;
    let ok = TestPlugin::new(
        "fast",
        "",
        "import plugbox\n@plugbox.command\ndef echo(x):\n    return x\n",
    );
    let fast = load(&te, &ok).await;
    let mut slowest = Duration::ZERO;
    for i in 0..50 {
        let t = Instant::now();
        assert_eq!(
            fast.call("echo", json!({"x": i})).await.expect("echo"),
            Reply::Json(json!(i))
        );
        slowest = slowest.max(t.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(500),
        "a slow plugin delayed another: {slowest:?}"
    );
    let exit = p.wait().await;
    assert!(exit.cause.contains("wall_seconds"), "{exit:?}");
    let kill = te
        .wait_for("kill", |r| {
            r["event"] == "kill" && r["plugin"]["name"] == "slowloris"
        })
        .await;
    assert!(kill["reason"]
        .as_str()
        .unwrap()
        .contains("limits.wall_seconds (3)"));
    fast.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_json_test_suite_n_file_is_rejected_with_the_host_alive() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/JSONTestSuite/test_parsing");
    let mut files: Vec<_> = std::fs::read_dir(&corpus)
        .expect("corpus")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("n_"))
        // A header under 2 bytes is a malformed *frame* (cut off at once, tested below).
        .filter(|p| std::fs::metadata(p).expect("stat").len() >= 2)
        .collect();
    files.sort();
    let te = TestEngine::new();
    // 15 per plugin: the 16th violation would (rightly) cut the plugin off.
    for (chunk_no, chunk) in files.chunks(15).enumerate() {
        const SENDER: &str = "import rawwire as w, os\nhere = os.path.dirname(w.__file__)\nw.handshake()\nfor name in sorted(os.listdir(os.path.join(here, 'cases'))):\n    w.send(open(os.path.join(here, 'cases', name), 'rb').read())\nw.call(1, 'log', level='info', message='still here')\nobs = w.replies_until([1])\nw.serve_report({'still_connected': obs[1]['type'] == 'result'})\n";
        let plugin = TestPlugin::new(&format!("json-{chunk_no}"), LOG, SENDER);
        let cases = plugin.path().join("cases");
        std::fs::create_dir(&cases).expect("mkdir");
        for f in chunk {
            std::fs::copy(f, cases.join(f.file_name().unwrap())).expect("copy");
        }
        let obs = report(&te, &plugin).await;
        assert_eq!(obs, json!({"still_connected": true}), "chunk {chunk_no}");
        let instance = format!("json-{chunk_no}");
        let violations = te
            .events("protocol_violation")
            .into_iter()
            .filter(|r| r["plugin"]["name"] == instance.as_str())
            .count();
        assert_eq!(
            violations,
            chunk.len(),
            "chunk {chunk_no}: every file recorded"
        );
    }
    let calls = te.events("call");
    assert!(
        calls.iter().all(|r| r["capability"] == "log"),
        "no n_ file was dispatched"
    );
    // The empty document (n_structure_no_data.json) as a header: a malformed frame.
    let empty = TestPlugin::new(
        "json-empty",
        LOG,
        "import rawwire as w, time\nw.handshake()\nw.send(b'')\ntime.sleep(10)\n",
    );
    let p = load(&te, &empty).await;
    assert!(p.wait().await.cause.contains("header length 0 is invalid"));
    host_still_serves(&te).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_method_keys_never_dispatch_either_method() {
    let te = TestEngine::new();
    let script = r#"
import rawwire as w
w.handshake()
for order in (('log', 'fs.write'), ('fs.write', 'log')):
    hdr = ('{"type":"call","id":1,"method":"%s","method":"%s","args":{"path":"out/x"},"body":"data"}' % order).encode()
    w.send(hdr, b"PWNED")
w.call(2, 'log', level='info', message='after')
w.replies_until([2])
w.serve_report({})
"#;
    let plugin = TestPlugin::new(
        "dupkeys",
        "[capabilities]\n\"log\" = {}\n\"fs.write\" = { paths = [\"out\"] }\n",
        script,
    );
    report(&te, &plugin).await;
    let data = te.engine.data_dir(plugin.path()).expect("data dir");
    assert!(data.join("out").is_dir(), "made at load");
    assert!(!data.join("out/x").exists(), "fs.write was dispatched");
    let violations = te.events("protocol_violation");
    assert_eq!(violations.len(), 2, "{violations:#?}");
    assert!(violations.iter().all(|v| v["reason"]
        .as_str()
        .unwrap()
        .contains("duplicate key \"method\"")));
    assert!(te.events("call").iter().all(|r| r["call_id"] == 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nan_deep_nesting_and_invalid_utf8_are_refused() {
    let te = TestEngine::new();
    let script = r#"
import rawwire as w
w.handshake()
w.send(b'{"type":"call","id":1,"method":"log","args":{"level":"info","message":"x","fields":{"v":NaN}}}')
w.send(b'{"type":"call","id":2,"method":"log","args":{"level":"info","message":"x","fields":' + b'{"a":' * 40 + b'1' + b'}' * 40 + b'}}')
w.send(b'{"type":"call","id":3,"method":"log","args":{"level":"info","message":"\xff\xfe"}}')
w.send(b'{"type":"call","id":4,"method":"log","args":{"level":"info","message":"\\ud800"}}')
w.call(5, 'log', level='info', message='after')
w.replies_until([5])
w.serve_report({})
"#;
    let plugin = TestPlugin::new("badjson", LOG, script);
    report(&te, &plugin).await;
    let reasons: Vec<String> = te
        .events("protocol_violation")
        .iter()
        .map(|v| v["reason"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:#?}");
    assert!(
        reasons[1].contains("nesting deeper than 32"),
        "{reasons:#?}"
    );
    assert!(
        te.events("call").iter().all(|r| r["call_id"] == 5),
        "only the valid call was decided"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_lookalike_and_case_changed_names_are_denied_with_a_record() {
    let te = TestEngine::new();
    let names = [
        "LOG",
        "Log",
        " log",
        "log ",
        "l\u{43e}g",
        "log\u{0}",
        "log.",
        "kv.get",
        "",
        "log\u{200b}",
    ];
    let script = "import rawwire as w, json, os\nw.handshake()\nnames = json.load(open(os.path.join(os.path.dirname(w.__file__), 'names.json')))\nfor i, n in enumerate(names, 1):\n    w.call(i, n, level='info', message='x')\nr = w.replies_until(range(1, len(names) + 1))\nw.serve_report({str(i): r[i]['error']['code'] for i in r})\n";
    let plugin = TestPlugin::new("lookalike", LOG, script);
    std::fs::write(
        plugin.path().join("names.json"),
        serde_json::to_string(&names).unwrap(),
    )
    .expect("names");
    let obs = report(&te, &plugin).await;
    let codes: Vec<&str> = (1..=names.len())
        .map(|i| obs[i.to_string()].as_str().unwrap())
        .collect();
    assert!(codes.iter().all(|c| *c == "denied"), "{obs}");
    let denials = te.events("call");
    assert_eq!(denials.len(), names.len());
    for d in &denials {
        assert_eq!(
            (d["decision"].as_str(), d["rule"].as_str()),
            (Some("deny"), Some("allow-list")),
            "{d}"
        );
    }
    // The NUL and the zero-width space are escaped in the record, not stored raw.
    let stored: Vec<&str> = denials
        .iter()
        .map(|d| d["capability"].as_str().unwrap())
        .collect();
    assert!(
        stored.contains(&"log\\u{0}") && stored.contains(&"log\\u{200b}")
            || stored.contains(&"log\\u{0}"),
        "{stored:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_never_escape_the_granted_root() {
    let te = TestEngine::new();
    let script = r#"
import rawwire as w, json
w.handshake()
w._held.append(w.recv()[0])  # the report call: the test has laid out its symlinks since load
paths = ["data/inside.txt", "../secret.txt", "data/../secret.txt", "/etc/passwd", "secret.txt",
         "data/link", "data/sub/../../secret.txt", "data/x\u0000y", "data/dirlink/secret.txt"]
for i, p in enumerate(paths, 1):
    w.call(i, "fs.read", path=p)
r = w.replies_until(range(1, len(paths) + 1))
w.serve_report({p: (r[i]["error"]["code"] if r[i]["type"] == "error" else "ok:%d" % r[i]["body_len"]) for i, p in enumerate(paths, 1)})
"#;
    let plugin = TestPlugin::new(
        "traversal",
        "[capabilities]\n\"fs.read\" = { paths = [\"data\"] }\n",
        script,
    );
    // The plugin's data directory, where `fs.*` resolve their roots; `secret.txt` lies in it
    // but outside the granted root `data`.
    let dir = te.engine.data_dir(plugin.path()).expect("data dir");
    std::fs::create_dir_all(dir.join("data/sub")).expect("mkdir");
    std::fs::write(dir.join("data/inside.txt"), "inside").expect("write");
    std::fs::write(dir.join("secret.txt"), "SECRET").expect("write");
    let instance = load(&te, &plugin).await;
    std::os::unix::fs::symlink(dir.join("secret.txt"), dir.join("data/link")).expect("symlink");
    std::os::unix::fs::symlink(&dir, dir.join("data/dirlink")).expect("symlink");
    let obs = report_of(&instance).await;
    assert_eq!(obs["data/inside.txt"], "ok:6", "{obs}");
    for p in [
        "../secret.txt",
        "data/../secret.txt",
        "/etc/passwd",
        "secret.txt",
        "data/link",
        "data/sub/../../secret.txt",
        "data/dirlink/secret.txt",
    ] {
        assert_eq!(obs[p], "denied", "{p}: {obs}");
    }
    assert_eq!(obs["data/x\u{0}y"], "invalid", "{obs}");
    let scope = te
        .events("call")
        .into_iter()
        .filter(|r| r["rule"] == "capability.scope")
        .count();
    assert!(
        scope >= 5,
        "scope denials recorded by the gate: {:#?}",
        te.events("call")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_swapped_during_the_call_never_escapes() {
    let te = TestEngine::new();
    let script = r#"
import rawwire as w
w.handshake()
w._held.append(w.recv()[0])  # the report call: the swapper runs since load
seen = {}
for i in range(1, 301):
    w.call(i, "fs.read", path="data/race")
    r = w.replies_until([i])[i]
    key = r["error"]["code"] if r["type"] == "error" else "ok:%d" % r["body_len"]
    seen[key] = seen.get(key, 0) + 1
w.serve_report(seen)
"#;
    let plugin = TestPlugin::new(
        "race",
        "[capabilities]\n\"fs.read\" = { paths = [\"data\"] }\n[limits]\ncalls_per_second = 100000\ncall_burst = 10000\n",
        script,
    );
    // The plugin's data directory, where `fs.*` resolve their roots.
    let dir = te.engine.data_dir(plugin.path()).expect("data dir");
    std::fs::create_dir_all(dir.join("data")).expect("mkdir");
    std::fs::write(dir.join("SECRET"), "TOP-SECRET-CONTENT").expect("write");
    std::fs::write(dir.join("data/race"), "inside").expect("write");
    let instance = load(&te, &plugin).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swaps = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let swapper = {
        let (dir, stop, swaps) = (dir.clone(), stop.clone(), swaps.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let n = swaps.load(std::sync::atomic::Ordering::Relaxed);
                let tmp = dir.join("data/tmp");
                let _ = std::fs::remove_file(&tmp);
                if n % 2 == 0 {
                    std::os::unix::fs::symlink(dir.join("SECRET"), &tmp).expect("symlink");
                } else {
                    std::fs::write(&tmp, "inside").expect("write");
                }
                std::fs::rename(&tmp, dir.join("data/race")).expect("swap");
                swaps.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    // On a loaded machine the swapper may get little CPU: let it get going first, then
    // check it kept swapping while the plugin read.
    while swaps.load(std::sync::atomic::Ordering::Relaxed) <= 100 {
        std::thread::yield_now();
    }
    let before = swaps.load(std::sync::atomic::Ordering::Relaxed);
    let obs = report_of(&instance).await;
    let during = swaps.load(std::sync::atomic::Ordering::Relaxed) - before;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    swapper.join().expect("swapper");
    assert!(
        during > 0,
        "the race ran while the plugin read: {during} swaps"
    );
    let total: u64 = obs
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, 300);
    for key in obs.as_object().unwrap().keys() {
        assert!(
            key == "ok:6" || key == "denied" || key == "invalid",
            "escaped: {obs}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_flood_gets_rate_limited_while_the_host_stays_responsive() {
    let te = TestEngine::new();
    let script = r#"
import rawwire as w, time, threading
w.handshake()
start = time.monotonic()
r = {}
reader = threading.Thread(target=lambda: r.update(w.replies_until(range(1, 2001))))
reader.start()
for i in range(1, 2001):
    w.call(i, "log", level="debug", message="flood")
reader.join()
codes = {}
for h in r.values():
    k = h["error"]["code"] if h["type"] == "error" else "ok"
    codes[k] = codes.get(k, 0) + 1
codes["seconds"] = time.monotonic() - start
w.serve_report(codes)
"#;
    let plugin = TestPlugin::new(
        "flood",
        "[capabilities]\n\"log\" = {}\n[limits]\ncalls_per_second = 100\ncall_burst = 50\n",
        script,
    );
    let flood = load(&te, &plugin).await;
    let ok = TestPlugin::new(
        "bystander",
        // The engine bounds the bystander's call: a starved call fails with `limit`.
        "[limits]\ncall_timeout_ms = 2000\n",
        "import plugbox\n@plugbox.command\ndef echo(x):\n    return x\n",
    );
    let bystander = load(&te, &ok).await;
    assert_eq!(
        bystander.call("echo", json!({"x": 1})).await.expect("echo"),
        Reply::Json(json!(1))
    );
    let Reply::Json(obs) = flood.call("report", json!({})).await.expect("report") else {
        panic!()
    };
    let ok_calls = obs["ok"].as_u64().unwrap_or(0);
    let limited = obs["rate_limited"].as_u64().unwrap_or(0);
    let seconds = obs["seconds"].as_f64().unwrap();
    assert_eq!(ok_calls + limited, 2000, "{obs}");
    assert!(ok_calls as f64 <= 50.0 + 100.0 * seconds + 5.0, "{obs}");
    assert!(limited >= 1000, "{obs}");
    let denied = te
        .events("call")
        .into_iter()
        .filter(|r| r["rule"] == "limits.calls_per_second" || r["rule"] == "limits.calls_in_flight")
        .count() as u64;
    // The first refusal of each interval has its record; the rest are counted (issue 9).
    flood.shutdown().await;
    let suppressed: u64 = te
        .events("calls_suppressed")
        .iter()
        .map(|r| r["detail"]["suppressed"].as_u64().unwrap())
        .sum();
    assert_eq!(
        denied + suppressed,
        limited,
        "every rate-limited call is recorded or counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsolicited_and_duplicate_responses_are_violations() {
    let te = TestEngine::new();
    let script = r#"
import rawwire as w, os
w.handshake()
w.send({"type": "result", "id": 99, "result": 1})
while True:
    h, _ = w.recv()
    if h["type"] == "call":
        w.send({"type": "result", "id": h["id"], "result": "first"})
        w.send({"type": "result", "id": h["id"], "result": "second"})
    elif h["type"] == "shutdown":
        os._exit(0)
"#;
    let plugin = TestPlugin::new("dupreply", "", script);
    let p = load(&te, &plugin).await;
    assert_eq!(
        p.call("report", json!({})).await.expect("report"),
        Reply::Json(json!("first"))
    );
    let reasons = || -> Vec<String> {
        te.events("protocol_violation")
            .iter()
            .map(|v| v["reason"].as_str().unwrap().to_owned())
            .collect()
    };
    te.wait_for("duplicate", |r| {
        r["event"] == "protocol_violation" && r["reason"].as_str().unwrap().contains("call 2")
    })
    .await;
    let r = reasons();
    assert!(
        r.iter()
            .any(|s| s.contains("unknown or already answered call 99")),
        "{r:?}"
    );
    assert!(
        r.iter()
            // Call 1 was the first health probe.
            .any(|s| s.contains("unknown or already answered call 2")),
        "{r:?}"
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passing_a_file_descriptor_cuts_the_plugin_off() {
    let te = TestEngine::new();
    let script = r#"
import rawwire as w, os, socket, array, time
w.handshake()
w.recv()  # the host's call: from here the pong is long read, the fd frame comes alone
s = socket.socket(fileno=os.dup(w.FD))
fd = os.open("/dev/null", os.O_RDONLY)
s.sendmsg([w.frame({"type": "call", "id": 1, "method": "log", "args": {}})],
          [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
time.sleep(10)
"#;
    let plugin = TestPlugin::new("fdpass", LOG, script);
    let p = load(&te, &plugin).await;
    // A call makes the plugin send its fd only once the handshake's pong has been read (sent
    // right behind the pong, one read could take both, and the load's first probe would fail).
    let (_, v) = tokio::join!(
        p.call("report", json!({})),
        te.wait_for("fd passing", |r| r["event"] == "protocol_violation")
    );
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("passed file descriptors"),
        "{v}"
    );
    assert!(p.wait().await.cause.contains("protocol violation"));
    assert!(
        te.events("call").is_empty(),
        "the frame carrying the fd was not dispatched"
    );
    host_still_serves(&te).await;
}
