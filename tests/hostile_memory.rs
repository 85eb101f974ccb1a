//! Host memory held for a hostile plugin is bounded: a plugin that floods large granted calls
//! and never reads its replies makes the host hold at most `limits.pending_reply_mib`, and the
//! calls past the budget are refused (`rate_limited`, rule `limits.pending_reply_mib`).
//!
//! One test per file: it measures this process's peak RSS, which other tests would disturb.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::plugins::{TestEngine, TestPlugin};
use plugbox::manifest::Grants;

const MIB: u64 = 1024 * 1024;
/// Size of the file each call reads, and the capability's `max_bytes`.
const REPLY_MIB: u64 = 8;
/// Calls the hostile plugin sends without reading a reply.
const CALLS: u64 = 64;
/// The plugin's budget: room for four pending replies.
const BUDGET_MIB: u64 = 32;

/// Sends `CALLS` reads of `data/big` and never reads the channel again.
const HOARDER: &str = "import rawwire as w, time\nw.handshake()\nfor i in range(1, CALLS + 1):\n    w.call(i, 'fs.read', path='data/big')\ntime.sleep(120)\n";

/// A kernel counter of this process, bytes.
fn status_bytes(field: &str) -> u64 {
    common::status_bytes("self", field)
}

/// Resets this process's peak RSS (`VmHWM`) to its current RSS (`clear_refs` value 5).
fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

/// The hoarder, with `data/big` in its data directory under `te`.
fn hoarder(te: &TestEngine) -> TestPlugin {
    let manifest = format!(
        "[capabilities]\n\"fs.read\" = {{ paths = [\"data\"], max_bytes = {} }}\n\
         [limits]\ncalls_in_flight = {CALLS}\npending_reply_mib = {BUDGET_MIB}\ncall_timeout_ms = 3000\n",
        REPLY_MIB * MIB
    );
    let main = HOARDER.replace("CALLS", &CALLS.to_string());
    let plugin = TestPlugin::new("hoarder", &manifest, &main);
    let data = te.engine.data_dir(plugin.path()).unwrap().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("big"), vec![7u8; (REPLY_MIB * MIB) as usize]).unwrap();
    plugin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_stops_reading_makes_the_host_hold_at_most_its_reply_budget() {
    let te = TestEngine::new();
    let plugin = hoarder(&te);
    reset_peak_rss();
    let baseline = status_bytes("VmRSS:");
    let p = te
        .engine
        .spawn_instance(plugin.path(), &Grants::all_requested())
        .await
        .expect("load");
    let denied = te
        .wait_for("a call refused by the reply budget", |r| {
            r["event"] == "call" && r["rule"] == "limits.pending_reply_mib"
        })
        .await;
    assert_eq!(denied["decision"], "deny", "{denied}");
    // The plugin never reads: its first reply's write times out, and it is cut off.
    let exit = tokio::time::timeout(std::time::Duration::from_secs(60), p.wait())
        .await
        .expect("the stalled plugin is cut off");
    assert!(exit.cause.contains("stopped reading"), "{exit:?}");
    te.wait_for("the kill record", |r| r["event"] == "kill")
        .await;
    let peak_growth = status_bytes("VmHWM:").saturating_sub(baseline);

    let calls = te.events("call");
    let allowed = calls.iter().filter(|r| r["decision"] == "allow").count() as u64;
    let refusals: Vec<_> = calls
        .iter()
        .filter(|r| r["rule"] == "limits.pending_reply_mib")
        .collect();
    // The budget's worth of calls, plus at most one: a reply whose write has started gives
    // its reservation back (one reply per session may be in the writer outside the budget).
    let budgeted = BUDGET_MIB / REPLY_MIB;
    assert!(
        (budgeted..=budgeted + 1).contains(&allowed),
        "{allowed} calls ran, budget {budgeted} (+1 being written): {calls:#?}"
    );
    assert!(
        refusals.iter().all(|r| r["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("would exceed {}", BUDGET_MIB * MIB))),
        "{refusals:#?}"
    );
    let denied_outcomes = te
        .events("call_outcome")
        .iter()
        .filter(|r| r["call_id"] == denied["call_id"])
        .count();
    assert_eq!(denied_outcomes, 0, "a refused call never runs");
    // Unbounded, the host held CALLS x REPLY_MIB = 512 MiB here; bounded, the budget plus
    // the host's own noise (audit buffers, threads).
    let limit = (BUDGET_MIB + 64) * MIB;
    assert!(
        peak_growth < limit,
        "peak RSS grew by {} MiB (limit {} MiB)",
        peak_growth / MIB,
        limit / MIB
    );
    eprintln!(
        "peak RSS growth: {} MiB for {CALLS} x {REPLY_MIB} MiB calls, budget {BUDGET_MIB} MiB",
        peak_growth / MIB
    );
}
