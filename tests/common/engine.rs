//! Helpers for the managed-engine suites: plugin sources, audit queries, process checks.

use super::alive;
use super::plugins::TestEngine;
use plugbox::capability::Reply;
use plugbox::manifest::Grants;
use serde_json::Value;
use std::time::{Duration, Instant};

pub const ECHO: &str = "import plugbox, os, time\n@plugbox.command\ndef echo(x):\n    return x\n@plugbox.command\ndef pid():\n    return os.getpid()\n@plugbox.command\ndef nap(s):\n    time.sleep(s)\n    return os.getpid()\n";

/// Holds the GIL for ever (catastrophic backtracking in C): no thread of the plugin runs
/// again, so it answers neither a cancel nor a ping.
pub const GIL_HOG: &str = "import re\n    re.match(r'(a*)*$', 'a' * 40 + 'b')\n";

pub fn all() -> Grants {
    Grants::all_requested()
}

/// Pids of every `spawn` record, in order.
pub fn spawned_pids(te: &TestEngine) -> Vec<i32> {
    te.events("spawn")
        .iter()
        .map(|r| r["detail"]["pid"].as_i64().unwrap() as i32)
        .collect()
}

/// `(instance, to)` of every `state` record.
pub fn transitions(te: &TestEngine) -> Vec<(String, String)> {
    te.events("state")
        .iter()
        .map(|r| {
            (
                r["plugin"]["instance"].as_str().unwrap().to_owned(),
                r["detail"]["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

pub async fn gone_within(pid: i32, limit: Duration) -> bool {
    let start = Instant::now();
    while alive(pid) {
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

pub fn pid_of(reply: Reply) -> i64 {
    match reply {
        Reply::Json(Value::Number(n)) => n.as_i64().unwrap(),
        other => panic!("{other:?}"),
    }
}
