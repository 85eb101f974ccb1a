//! `plugbox serve`'s stdout when the host does not read it for a while: answers are written by
//! the task that has them while stdout has room, and queued for the stdout thread once it has
//! not. Here a host sends 400 calls (text answers of 2 KiB and binary answers of 3 KiB, about
//! 1 MiB in all: far past a pipe's 64 KiB) before it reads a single line. Then every answer
//! arrives exactly once, whole, each line valid JSON and each body exactly its bytes: no line
//! written directly overtook or cut into one queued before it.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::plugins::TestPlugin;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

const PLUGIN: &str = r#"
import plugbox

@plugbox.command
def text(i: int) -> str:
    return str(i) * (2048 // len(str(i)))

@plugbox.command
def blob(i: int) -> bytes:
    return bytes([i % 256]) * 3072
"#;

const CALLS: u64 = 400;

#[test]
fn answers_held_back_by_a_host_that_does_not_read_arrive_whole_and_once() {
    let plugin = TestPlugin::new("backlog", "", PLUGIN);
    let work = tempfile::tempdir().unwrap();
    let mut child = Command::new(common::plugbox())
        .arg("serve")
        .arg("--audit")
        .arg(work.path().join("audit.jsonl"))
        .arg("--state")
        .arg(work.path().join("state"))
        .args(["--allow-ungranted", "--protocol", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let dir = plugin.path().to_str().unwrap();
    writeln!(stdin, "{}", json!({"id": 0, "op": "load", "dir": dir})).unwrap();
    let mut loaded = String::new();
    out.read_line(&mut loaded).unwrap();
    assert!(loaded.contains("\"ok\":true"), "{loaded}");
    for i in 1..=CALLS {
        let command = if i % 2 == 0 { "text" } else { "blob" };
        let call = json!({"id": i, "op": "call", "plugin": "backlog", "command": command,
                          "args": {"i": i}});
        writeln!(stdin, "{call}").unwrap();
    }
    stdin.flush().unwrap();
    let mut seen = HashSet::new();
    while seen.len() < CALLS as usize {
        let mut text = String::new();
        assert!(out.read_line(&mut text).unwrap() > 0, "serve closed stdout");
        let answer: Value = serde_json::from_str(&text).expect("a whole JSON line");
        let i = answer["id"].as_u64().unwrap();
        assert!(seen.insert(i), "answer {i} twice");
        assert_eq!(answer["ok"], true, "{answer}");
        if i % 2 == 0 {
            let s = i.to_string();
            assert_eq!(answer["result"], s.repeat(2048 / s.len()), "answer {i}");
        } else {
            assert_eq!(answer["body"], 3072, "{answer}");
            let mut body = vec![0u8; 3072];
            out.read_exact(&mut body).unwrap();
            assert!(body.iter().all(|b| u64::from(*b) == i % 256), "body {i}");
        }
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
}
