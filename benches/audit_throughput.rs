//! Audit benchmarks in one interleaved run:
//! - records per second for each durability setting (one writer thread, and four threads
//!   sharing one log), with a typical call-decision record;
//! - the overhead audit adds to a plugin→host capability round trip (audit on with the
//!   default group commit, versus `danger_disabled`), interleaved;
//! - what signed checkpoints cost (group commit, default interval: a checkpoint every 1000
//!   records), with and without a key, interleaved in blocks.
//!
//! Run: `cargo bench --bench audit_throughput` (`cargo test` runs a short smoke test);
//! `cargo bench --bench audit_throughput -- signing` runs only the signing comparison.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use plugbox::audit::{AuditKey, AuditLog, AuditOptions, Durability, EventKind, Record, Subject};
use plugbox::capability::{typed, CallContext, CallError, Reply};
use plugbox::engine::{Engine, EngineConfig};
use plugbox::manifest::Grants;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

fn record(i: u64) -> Record {
    let mut r = Record::new(
        EventKind::Call,
        Subject {
            name: "word-count".into(),
            version: "1.4.2".into(),
            instance: "word-count#1".into(),
            digest: Some("ab".repeat(32)),
        },
    );
    r.capability = Some("doc.get_text".into());
    r.decision = Some("allow");
    r.rule = Some("allow-list");
    r.call_id = Some(i);
    r.request_bytes = Some(96);
    r.args_sha256 = Some("cd".repeat(32));
    r
}

fn rate(durability: Durability, threads: u64, per_thread: u64) -> f64 {
    signed_rate(durability, threads, per_thread, None)
}

fn signed_rate(
    durability: Durability,
    threads: u64,
    per_thread: u64,
    key: Option<(Arc<AuditKey>, u64)>,
) -> f64 {
    measured_rate(durability, threads, per_thread, key).0
}

/// This thread's time on a CPU so far, nanoseconds (`/proc/thread-self/schedstat`): what
/// the writers spend, less sensitive than wall time to other load on a shared machine.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Records per second, and the writer threads' CPU nanoseconds per record.
fn measured_rate(
    durability: Durability,
    threads: u64,
    per_thread: u64,
    key: Option<(Arc<AuditKey>, u64)>,
) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("tmp");
    let defaults = AuditOptions::default();
    let options = AuditOptions {
        durability,
        checkpoint_records: key.as_ref().map_or(defaults.checkpoint_records, |k| k.1),
        key: key.map(|k| k.0),
        ..defaults
    };
    let log = AuditLog::open_with(&dir.path().join("audit.jsonl"), options).expect("open");
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let cpu = thread_cpu_ns();
                for i in 0..per_thread {
                    log.write(&record(t * per_thread + i)).expect("write");
                }
                thread_cpu_ns() - cpu
            })
        })
        .collect();
    let cpu: u64 = handles.into_iter().map(|h| h.join().expect("join")).sum();
    let secs = start.elapsed().as_secs_f64();
    log.seal().expect("seal");
    let n = (threads * per_thread) as f64;
    (n / secs, cpu as f64 / n)
}

/// Records per second with and without a checkpoint key (group commit, default interval),
/// interleaved in blocks so drift on the shared machine hits both sides alike; the cost is
/// the median of the per-block ratios. Then the same with a checkpoint after every record,
/// which prices one checkpoint on the writer's path well above the noise, and the cost at
/// the default interval derived from it.
fn signing(n: u64, blocks: usize) {
    let key = Arc::new(AuditKey::generate().expect("key"));
    let start = Instant::now();
    let signs = 2000;
    for i in 0..signs {
        std::hint::black_box(key.sign(format!("checkpoint {i}").as_bytes()));
    }
    let per_sign = start.elapsed().as_secs_f64() * 1e6 / f64::from(signs);
    println!("one Ed25519 signature: {per_sign:.1} us");
    let every = AuditOptions::default().checkpoint_records;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for threads in [1u64, 4] {
        let (mut plain, mut signed, mut ratios, mut cpu) = (vec![], vec![], vec![], vec![]);
        let (mut each, mut per_record) = (vec![], vec![]);
        for b in 0..blocks {
            // Alternate which side runs first, so an ordering effect cancels out.
            let k = Some((Arc::clone(&key), every));
            let ((p, pc), (s, sc)) = if b % 2 == 0 {
                let p = measured_rate(Durability::Group, threads, n / threads, None);
                (p, measured_rate(Durability::Group, threads, n / threads, k))
            } else {
                let s = measured_rate(Durability::Group, threads, n / threads, k);
                (
                    measured_rate(Durability::Group, threads, n / threads, None),
                    s,
                )
            };
            let k1 = Some((Arc::clone(&key), 1));
            let (_, ec) = measured_rate(Durability::Group, threads, n / 50 / threads, k1);
            let (_, p2c) = measured_rate(Durability::Group, threads, n / 50 / threads, None);
            // Extra writer CPU per checkpoint, in microseconds.
            each.push((ec - p2c) / 1e3);
            ratios.push(1.0 - s / p);
            cpu.push(sc / pc - 1.0);
            per_record.push(pc);
            plain.push(p);
            signed.push(s);
        }
        let (p, s, r) = (median(plain), median(signed), median(ratios));
        let (c, e, pr) = (median(cpu), median(each), median(per_record));
        println!(
            "  {threads} thread(s), {n} records x {blocks} blocks: unsigned {p:>9.0}/s, \
             signed {s:>9.0}/s; cost: wall {:+.2}%, writer CPU {:+.2}% (medians of block \
             ratios; target <= 2%)",
            r * 100.0,
            c * 100.0
        );
        println!(
            "    one checkpoint costs the writers {e:.1} us of CPU: {:.2}% at one per {every} \
             records",
            e * 1e3 / (every as f64 * pr) * 100.0
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let n: u64 = if benching { 400_000 } else { 2_000 };
    println!("signed checkpoints (group commit, every 1000 records), interleaved:");
    signing(n, if benching { 15 } else { 1 });
    if std::env::args().any(|a| a == "signing") {
        return;
    }
    println!("audit records per second ({n} records per run; median of 3):");
    for (label, d) in [
        ("fsync every record", Durability::Fsync),
        ("group commit (default)", Durability::Group),
        ("os", Durability::Os),
    ] {
        let count = if d == Durability::Fsync { n / 100 } else { n };
        for threads in [1u64, 4] {
            let mut runs: Vec<f64> = (0..3).map(|_| rate(d, threads, count / threads)).collect();
            runs.sort_by(f64::total_cmp);
            println!(
                "  {label:<24} {threads} thread(s): {:>10.0} records/s{}",
                runs[1],
                if d == Durability::Group {
                    "  (target >= 200000)"
                } else {
                    ""
                }
            );
        }
    }

    // Round-trip overhead: audit on vs off, interleaved in blocks.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let plugin_dir = root.join("benches/plugins/echo");
    let calls = if benching { 3000 } else { 50 };
    let mut engines = Vec::new();
    for disabled in [false, true] {
        let dir = tempfile::tempdir().expect("tmp");
        let mut config =
            EngineConfig::new(dir.path().join("audit.jsonl"), dir.path().join("state"));
        config.audit.danger_disabled = disabled;
        let engine = Engine::new(config).expect("engine");
        engine
            .register(
                "bench.echo",
                typed(|_: CallContext, args: Value| async move {
                    Ok::<_, CallError>(args["x"].clone())
                }),
            )
            .expect("register");
        let plugin = engine
            .spawn_instance(&plugin_dir, &Grants::all_requested())
            .await
            .expect("load");
        engines.push((engine, plugin, dir, Vec::<u64>::new()));
    }
    let payload = "x".repeat(80);
    for _ in 0..5 {
        for (_, plugin, _, samples) in engines.iter_mut() {
            let Reply::Json(v) = plugin
                .call("host_loop", json!({"n": calls, "payload": payload}))
                .await
                .expect("loop")
            else {
                panic!()
            };
            samples.extend(v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()));
        }
    }
    let p50 = |v: &mut Vec<u64>| {
        v.sort_unstable();
        v[v.len() / 2] as f64 / 1e3
    };
    let on = p50(&mut engines[0].3);
    let off = p50(&mut engines[1].3);
    println!(
        "plugin->host round trip, {} calls each, interleaved:",
        engines[0].3.len()
    );
    println!("  audit on (group commit)  p50 {on:>7.1} us");
    println!("  audit off (danger)       p50 {off:>7.1} us");
    println!(
        "  overhead                 {:+.1}% (target <= 5%)",
        (on / off - 1.0) * 100.0
    );
    for (_, plugin, _, _) in engines {
        plugin.shutdown().await;
    }
}
