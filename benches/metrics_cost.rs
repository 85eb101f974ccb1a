//! What the metrics add to a call: the per-call recording (decision, in-flight gauge, the
//! plugin's counters, the per-method counts and duration histograms, the latency ring) for one
//! plugin→host call and one host→plugin call, against the same loop without the recording,
//! measured in the same run, interleaved in blocks (A B B A ...), from one thread and from two
//! threads recording into the same plugin at once (the shared counters' cache lines bounce).
//! Issue 12's bar: at most 1 µs on the warm call p50.
//!
//! Run: `cargo bench --bench metrics_cost` (`cargo test` runs it as a short smoke test).

use plugbox::broker::stats::{Meter, Stats};
use plugbox::ipc::ErrorCode;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One call each way, recorded as the broker records them.
fn record(meter: &Meter, took: Duration) {
    meter.decided(black_box("kv.get"), true);
    let guard = meter.in_flight(false);
    meter.finished(black_box("kv.get"), None, took);
    drop(guard);
    let guard = meter.in_flight(true);
    meter.invoked(black_box("run"), black_box(None::<ErrorCode>), took);
    drop(guard);
}

/// Nanoseconds per iteration of `n` iterations, with or without the recording.
fn block(meter: &Meter, n: u32, with: bool) -> f64 {
    let t = Instant::now();
    for i in 0..n {
        let took = Duration::from_micros(u64::from(black_box(i) % 200));
        if with {
            record(meter, took);
        } else {
            black_box(took);
        }
    }
    t.elapsed().as_nanos() as f64 / f64::from(n)
}

/// Per-block ns/iteration, `threads` threads at once, for each side, interleaved A B B A.
fn run(meter: &Meter, threads: usize, blocks: usize, n: u32) -> (Vec<f64>, Vec<f64>) {
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for b in 0..blocks {
        let order = if b % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for side in order {
            let per: Vec<f64> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..threads)
                    .map(|_| s.spawn(move || block(meter, n, side)))
                    .collect();
                hs.into_iter()
                    .map(|h| h.join().unwrap_or(f64::NAN))
                    .collect()
            });
            let mean = per.iter().sum::<f64>() / per.len() as f64;
            if side {
                with.push(mean)
            } else {
                without.push(mean)
            }
        }
    }
    (with, without)
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q) as usize]
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let (blocks, n) = if benching { (21, 200_000) } else { (2, 1_000) };
    let stats = Arc::new(Stats::default());
    let capabilities: Vec<String> = ["fs.read", "kv.get", "kv.set", "log"]
        .map(String::from)
        .into();
    let meter = stats.meter(&capabilities, &["run".to_owned(), "stats".to_owned()]);
    println!("metrics recording per call pair (one plugin->host + one host->plugin call):");
    for threads in [1, 2] {
        let (mut with, mut without) = run(&meter, threads, blocks, n);
        let added: Vec<f64> = with.iter().zip(&without).map(|(w, o)| w - o).collect();
        let mut added = added;
        println!(
            "  {threads} thread(s), {blocks} blocks x {n}: with p50 {:.0} ns p99 {:.0} ns, \
             without p50 {:.1} ns; added p50 {:.0} ns per pair, {:.0} ns per call \
             (target <= 1000 ns per call)",
            quantile(&mut with, 0.5),
            quantile(&mut with, 0.99),
            quantile(&mut without, 0.5),
            quantile(&mut added, 0.5),
            quantile(&mut added, 0.5) / 2.0,
        );
    }
    let s = stats.snapshot();
    assert!(s.calls > 0 && s.invokes == s.calls && s.calls_in_flight == 0);
}
