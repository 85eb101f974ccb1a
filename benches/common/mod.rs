//! What the plugin benchmarks share: an engine with the `bench.echo` host capability, and
//! the statistics they print (medians, percentiles, memory).

#![allow(dead_code, clippy::expect_used)]

pub mod blocking;
pub mod blocks;

use plugbox::capability::{typed, CallContext, CallError};
use plugbox::engine::{Engine, EngineConfig};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// The interpreter plugins run on.
pub const PYTHON: &str = "/usr/bin/python3";

/// An engine logging to `work`, with `bench.echo` (returns its argument `x`) registered.
pub fn echo_engine(work: &Path) -> Engine {
    let mut config = EngineConfig::new(work.join("audit.jsonl"), work.join("state"));
    // Diagnosis only: `PLUGBOX_BENCH_AUDIT=fsync|group|os|off` (default: the engine's).
    match std::env::var("PLUGBOX_BENCH_AUDIT").as_deref() {
        Ok("off") => config.audit.danger_disabled = true,
        Ok(d) => config.audit.durability = d.parse().expect("durability"),
        Err(_) => {}
    }
    let engine = Engine::new(config).expect("engine");
    engine
        .register(
            "bench.echo",
            typed(
                |_: CallContext, args: Value| async move { Ok::<_, CallError>(args["x"].clone()) },
            ),
        )
        .expect("register");
    engine
}

/// Milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The median (sorts `v`).
pub fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Percentile `p` (0..=1) of nanosecond samples, in microseconds (sorts `v`).
pub fn pct(v: &mut [u64], p: f64) -> f64 {
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p) as usize] as f64 / 1e3
}

/// A field of `/proc/self/status` in KiB, such as `VmRSS` or `VmHWM`.
pub fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)
                .and_then(|v| v.strip_prefix(':'))
                .map(|v| v.trim().trim_end_matches(" kB").parse().unwrap_or(0))
        })
        .unwrap_or(0)
}
