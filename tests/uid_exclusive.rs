//! Per-instance uids are exclusive on the whole host: two engines in two processes, with the
//! same default uid range, loading plugins at the same time never run two plugin processes
//! under one uid.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::plugins::TestPlugin;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Stdio};

const INSTANCES: usize = 4;

fn spawn_serve(work: &std::path::Path) -> (Child, BufReader<ChildStdout>) {
    let mut serve = Command::new(common::plugbox())
        .arg("serve")
        .arg("--audit")
        .arg(work.join("audit.jsonl"))
        .arg("--state")
        .arg(work.join("state"))
        .arg("--allow-ungranted")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("plugbox serve");
    let mut out = BufReader::new(serve.stdout.take().unwrap());
    let mut ready = String::new();
    out.read_line(&mut ready).unwrap();
    assert!(ready.contains(r#""op":"ready""#), "{ready}");
    (serve, out)
}

/// Parent pid and real uid of every process, from `/proc/PID/status`.
fn processes() -> HashMap<i32, (i32, u32)> {
    let mut all = HashMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<i64>().ok())
        };
        if let (Some(ppid), Some(uid)) = (field("PPid:"), field("Uid:")) {
            all.insert(pid, (ppid as i32, uid as u32));
        }
    }
    all
}

/// The uids (other than root) of every process descending from `ancestor`.
fn descendant_uids(all: &HashMap<i32, (i32, u32)>, ancestor: i32) -> Vec<u32> {
    let descends = |mut pid: i32| {
        while let Some(&(ppid, _)) = all.get(&pid) {
            if ppid == ancestor {
                return true;
            }
            pid = ppid;
        }
        false
    };
    all.iter()
        .filter(|(pid, (_, uid))| *uid != 0 && descends(**pid))
        .map(|(_, (_, uid))| *uid)
        .collect()
}

#[test]
fn two_engines_loading_at_once_never_share_a_uid() {
    let manifest = format!("[process]\ninstances = {INSTANCES}\nmin_warm = {INSTANCES}\n");
    let code = "import plugbox\n@plugbox.command\ndef ping():\n    return 'pong'\n";
    let plugin = TestPlugin::new("uid-exclusive", &manifest, code);
    let works = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut serves: Vec<_> = works.iter().map(|w| spawn_serve(w.path())).collect();
    // Both loads are in flight at once: each engine starts its instances concurrently.
    for (serve, _) in &mut serves {
        let load = json!({"id": "load", "op": "load", "dir": plugin.path()});
        writeln!(serve.stdin.as_mut().unwrap(), "{load}").unwrap();
    }
    for (_, out) in &mut serves {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let answer: Value = serde_json::from_str(&line).expect("an answer");
        assert_eq!(answer["result"]["state"], "ready", "{answer}");
    }
    // Both engines hold every instance now (min_warm = instances): read who runs as whom.
    let all = processes();
    let uids: Vec<Vec<u32>> = serves
        .iter()
        .map(|(serve, _)| descendant_uids(&all, serve.id() as i32))
        .collect();
    for (serve, out) in &mut serves {
        let bye = json!({"id": "bye", "op": "shutdown"});
        writeln!(serve.stdin.as_mut().unwrap(), "{bye}").unwrap();
        for line in out.lines() {
            line.unwrap();
        }
        assert!(serve.wait().unwrap().success());
    }
    let sets: Vec<BTreeSet<u32>> = uids.iter().map(|u| u.iter().copied().collect()).collect();
    for (u, set) in uids.iter().zip(&sets) {
        assert_eq!(set.len(), INSTANCES, "one uid per instance: {uids:?}");
        assert_eq!(u.len(), INSTANCES, "one process per uid: {uids:?}");
    }
    let shared: Vec<&u32> = sets[0].intersection(&sets[1]).collect();
    assert!(
        shared.is_empty(),
        "uids run by both engines: {shared:?} ({uids:?})"
    );
}
