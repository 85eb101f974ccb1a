//! `plugbox serve` protocol 2 carries raw bodies both ways (issue 13, item 3; docs/serve.md):
//! a 100 MiB argument goes to the plugin as bytes (no base64, no line limit), a binary result
//! comes back as an answer announcing its length followed by the bytes, and a body over the
//! plugin's limit is answered `too_large` while the stream stays in step: the next request on
//! the same pipe is served. Protocol 1 still refuses a body (`invalid`).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::plugins::TestPlugin;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdout, Command, Stdio};

const MIB: usize = 1024 * 1024;

const PLUGIN: &str = r#"
import hashlib
import plugbox

@plugbox.command
def digest(data: bytes, label: str) -> dict:
    return {"label": label, "type": type(data).__name__, "len": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}

@plugbox.command
def blob(n: int) -> bytes:
    return bytes(range(256)) * (n // 256)
"#;

/// Body limit `min(memory_mib, 1 GiB)`: 512 MiB here.
const LIMITS: &str = "[limits]\nmemory_mib = 512\ncall_timeout_ms = 60000\n";

fn serve(work: &std::path::Path, protocol: &str) -> Child {
    Command::new(common::plugbox())
        .arg("serve")
        .arg("--audit")
        .arg(work.join("audit.jsonl"))
        .arg("--state")
        .arg(work.join("state"))
        .args(["--allow-ungranted", "--protocol", protocol])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("plugbox serve")
}

fn line(out: &mut BufReader<ChildStdout>) -> Value {
    let mut text = String::new();
    assert!(out.read_line(&mut text).unwrap() > 0, "serve closed stdout");
    serde_json::from_str(&text).unwrap()
}

/// A request line followed by `body` (written in chunks: the test holds no second copy).
fn request(stdin: &mut impl Write, req: &Value, body: Option<(usize, u8)>) {
    let mut text = req.to_string();
    text.push('\n');
    stdin.write_all(text.as_bytes()).unwrap();
    if let Some((len, fill)) = body {
        let chunk = vec![fill; MIB];
        let mut left = len;
        while left > 0 {
            let n = left.min(MIB);
            stdin.write_all(&chunk[..n]).unwrap();
            left -= n;
        }
    }
    stdin.flush().unwrap();
}

fn sha256_of_fill(len: usize, fill: u8) -> String {
    let mut h = Sha256::new();
    let chunk = vec![fill; MIB];
    let mut left = len;
    while left > 0 {
        let n = left.min(MIB);
        h.update(&chunk[..n]);
        left -= n;
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn serve_carries_a_100_mib_argument_and_a_binary_result_and_refuses_an_oversized_body() {
    let plugin = TestPlugin::new("bodies", LIMITS, PLUGIN);
    let work = tempfile::tempdir().unwrap();
    let mut child = serve(work.path(), "2");
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let ready = line(&mut out);
    assert_eq!(ready["protocol"], 2);
    assert_eq!(ready["protocols"], json!([1, 2]));
    let dir = plugin.path().to_str().unwrap().to_owned();
    // The host writes everything on its own thread while this one reads the answers.
    let writer = std::thread::spawn(move || {
        request(
            &mut stdin,
            &json!({"id": "load", "op": "load", "dir": dir}),
            None,
        );
        let call = |id: &str, len: usize| {
            json!({"id": id, "op": "call", "plugin": "bodies", "command": "digest",
                   "args": {"label": id}, "body": {"arg": "data", "len": len}})
        };
        request(&mut stdin, &call("big", 100 * MIB), Some((100 * MIB, 0xa5)));
        // Over the plugin's 512 MiB: read and dropped, answered too_large.
        request(&mut stdin, &call("huge", 513 * MIB), Some((513 * MIB, 1)));
        request(&mut stdin, &call("small", 3), Some((3, 0xff)));
        let blob = json!({"id": "blob", "op": "call", "plugin": "bodies", "command": "blob",
                          "args": {"n": 3 * MIB}});
        request(&mut stdin, &blob, None);
        stdin
    });
    let mut answers = std::collections::HashMap::new();
    while answers.len() < 5 {
        let a = line(&mut out);
        let id = a["id"].as_str().unwrap().to_owned();
        let bytes = a["body"].as_u64().map(|n| {
            let mut b = vec![0u8; n as usize];
            out.read_exact(&mut b).unwrap();
            b
        });
        answers.insert(id, (a, bytes));
    }
    let stdin = writer.join().unwrap();
    assert_eq!(answers["load"].0["ok"], true, "{:?}", answers["load"]);
    let big = &answers["big"].0;
    assert_eq!(big["ok"], true, "{big}");
    assert_eq!(big["result"]["len"], 100 * MIB);
    // The memfd's pages as they are (a large body is mapped, not copied).
    assert_eq!(big["result"]["type"], "memoryview");
    assert_eq!(big["result"]["sha256"], sha256_of_fill(100 * MIB, 0xa5));
    let huge = &answers["huge"].0;
    assert_eq!(huge["error"]["code"], "too_large", "{huge}");
    // The stream stayed in step: the next request was read as a request.
    let small = &answers["small"].0;
    assert_eq!(
        small["result"]["sha256"],
        sha256_of_fill(3, 0xff),
        "{small}"
    );
    assert_eq!(small["result"]["type"], "bytes");
    let (blob, bytes) = &answers["blob"];
    assert_eq!(blob["ok"], true, "{blob}");
    assert!(blob.get("result").is_none(), "{blob}");
    let expected: Vec<u8> = (0..=255u8).cycle().take(3 * MIB).collect();
    assert!(
        bytes.as_deref() == Some(&expected[..]),
        "the binary result differs"
    );
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

#[test]
fn protocol_1_refuses_a_body_and_keeps_its_binary_result_answer() {
    let plugin = TestPlugin::new("bodies-one", LIMITS, PLUGIN);
    let work = tempfile::tempdir().unwrap();
    let mut child = serve(work.path(), "1");
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    assert_eq!(line(&mut out)["protocol"], 1);
    let dir = plugin.path().to_str().unwrap();
    request(
        &mut stdin,
        &json!({"id": 1, "op": "load", "dir": dir}),
        None,
    );
    assert_eq!(line(&mut out)["ok"], true);
    let call = json!({"id": 2, "op": "call", "plugin": "bodies-one", "command": "digest",
                      "args": {"label": "x"}, "body": {"arg": "data", "len": 0}});
    request(&mut stdin, &call, None);
    let refused = line(&mut out);
    assert_eq!(refused["error"]["code"], "invalid", "{refused}");
    let blob = json!({"id": 3, "op": "call", "plugin": "bodies-one", "command": "blob",
                      "args": {"n": 512}});
    request(&mut stdin, &blob, None);
    assert_eq!(line(&mut out)["result"], json!({"bytes_len": 512}));
    drop(stdin);
    assert!(child.wait().unwrap().success());
}
