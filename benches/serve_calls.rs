//! `plugbox serve` warm calls against the baseline, in one run, interleaved in blocks:
//! a Python host (`benches/serve_host.py`) calls through `plugbox serve`'s JSON lines, and the
//! same host calls a plain Python child speaking JSON lines on pipes. Rows: host→plugin (the
//! plugin's `echo`, 80 B) and plugin→host (a `--capability` the host answers over the pipes,
//! timed inside the plugin). Prints p50 and p99 of each side and the ratios (issue 13's
//! target for serve: p50 <= 2x). This bench only measures.
//!
//! Run: `cargo bench --bench serve_calls` (`cargo test` runs it as a short smoke test).

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
use common::blocks::{load, report, Targets};
use common::PYTHON;

use serde_json::Value;
use std::path::Path;
use std::process::Command;

const TARGETS: Targets = Targets {
    p50: 2.0,
    p99: f64::INFINITY,
};
const BASELINE: &str = "Python host <-> Python child, JSON lines on pipes";

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let (blocks, calls) = if benching { (10, 500) } else { (2, 20) };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = tempfile::tempdir().expect("tmp");
    println!(
        "plugbox serve, {blocks} blocks x {calls} calls per side, interleaved A B B A; {}",
        load()
    );
    let out = Command::new(PYTHON)
        .args(["-I", "-S"])
        .arg(root.join("benches/serve_host.py"))
        .arg("host")
        .arg(env!("CARGO_BIN_EXE_plugbox"))
        .arg(work.path())
        .arg(root.join("benches/plugins/echo"))
        .args([blocks.to_string(), calls.to_string()])
        .output()
        .expect("serve_host.py");
    assert!(
        out.status.success(),
        "serve_host.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Value = serde_json::from_slice(&out.stdout).expect("rows");
    for (key, label) in [
        ("h2p", "host->plugin call through plugbox serve, 80 B"),
        (
            "p2h",
            "plugin->host capability call through plugbox serve, 80 B",
        ),
    ] {
        let side = |name: &str| -> Vec<u64> {
            serde_json::from_value(rows[key][name].clone()).expect("samples")
        };
        let (mut a, mut b) = (side("plugbox"), side("baseline"));
        report(label, BASELINE, &mut a, &mut b, &TARGETS);
    }
    println!("after: {}", load());
}
