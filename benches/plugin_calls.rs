//! Warm-call benchmarks against the honest baseline, in one run, interleaved in blocks.
//!
//! The baseline is the simplest blocking peer: a blocking Rust thread and a Python child doing
//! a length-prefixed JSON echo on a socketpair (`common::blocking`, `benches/raw_echo.py`; no
//! sandbox, no SDK, no async runtime). Each row alternates blocks of plugbox and baseline
//! calls (A B B A ...), prints p50 and p99 of each side and the ratios against the targets
//! (issue 13: p50 <= 1.3x, p99 <= 2x):
//! - host→plugin warm call through the Rust API (80 B), from a tokio task (`Instance::call`,
//!   `Plugin::call`) and from a thread outside the runtime (`block_on`);
//! - plugin→host capability call (SDK `plugbox.host.call` of an echo capability, timed inside
//!   the plugin) against the same echo in the other direction (timed by the Python side);
//! - both again while another thread keeps one CPU busy.
//!
//! Then, for reference, cold start to ready and 64 MiB of bulk bytes.
//!
//! Run: `cargo bench --bench plugin_calls` (`cargo test` runs it as a short smoke test).
//! `cargo bench --bench plugin_calls -- TEXT` runs only the rows whose label contains TEXT.
//! Diagnosis: `-- "tokio alone"` adds a row of the same echo driven by a tokio task without
//! plugbox (what the runtime alone costs), and `PLUGBOX_BENCH_AUDIT=fsync|group|os|off` sets
//! the engine's audit durability (`off`: no records at all, to see what they cost).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::blocking::BlockingPeer;
use common::blocks::{interleave, load, report, Spinner, Targets};
use common::{median, ms, status_kib, PYTHON};

use plugbox::capability::Reply;
use plugbox::engine::{Instance, Plugin};
use plugbox::ipc::frame::MAX_FRAME_BYTES;
use plugbox::manifest::Grants;
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;
use tokio::runtime::Runtime;

const TARGETS: Targets = Targets { p50: 1.3, p99: 2.0 };
const BASELINE: &str = "blocking Rust <-> Python echo, socketpair";

/// Blocks per side, calls per block, and the rows to run.
struct Sizes {
    blocks: usize,
    calls: usize,
    /// Run only rows whose label contains this (`cargo bench --bench plugin_calls -- TEXT`).
    only: Option<String>,
}

impl Sizes {
    fn runs(&self, label: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| label.contains(o.as_str()))
    }
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let only = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let (blocks, calls) = if benching { (10, 500) } else { (2, 20) };
    let sizes = Sizes {
        blocks,
        calls,
        only,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = tempfile::tempdir().expect("tmp");
    let engine = common::echo_engine(work.path());
    let plugin_dir = root.join("benches/plugins/echo");
    let grants = Grants::all_requested();
    let instance = Arc::new(
        rt.block_on(engine.spawn_instance(&plugin_dir, &grants))
            .expect("load"),
    );
    let managed = rt
        .block_on(engine.load(&plugin_dir, &grants))
        .expect("load");
    let mut peer = BlockingPeer::spawn(&root.join("benches/raw_echo.py"));
    let payload = "x".repeat(80);

    println!(
        "warm calls, {} blocks x {} calls per side, interleaved A B B A; {}",
        sizes.blocks,
        sizes.calls,
        load()
    );
    warm_rows(&rt, &instance, &managed, &mut peer, &sizes, &payload, "");
    {
        let _busy = Spinner::start();
        warm_rows(
            &rt,
            &instance,
            &managed,
            &mut peer,
            &sizes,
            &payload,
            ", one CPU busy",
        );
    }
    println!("after the warm rows: {}", load());
    drop(peer);

    let starts = if benching { 20 } else { 2 };
    if sizes.runs("cold start") {
        cold_start(&rt, &engine, &plugin_dir, &grants, starts);
    }
    if sizes.runs("bulk") {
        rt.block_on(bulk(&instance));
    }
    rt.block_on(instance.shutdown());
    rt.block_on(engine.unload("bench-echo"));
}

/// Every warm row, each against the blocking baseline in the same blocks.
fn warm_rows(
    rt: &Runtime,
    instance: &Arc<Instance>,
    managed: &Plugin,
    peer: &mut BlockingPeer,
    sizes: &Sizes,
    payload: &str,
    note: &str,
) {
    let n = sizes.calls;
    let mut row = |label: String, plugbox: &mut dyn FnMut() -> Vec<u64>, to_plugin: bool| {
        if !sizes.runs(&label) {
            return;
        }
        let (mut a, mut b) = interleave(sizes.blocks, plugbox, || match to_plugin {
            true => peer.rust_calls(n, payload),
            false => peer.python_calls(n, payload),
        });
        report(&label, BASELINE, &mut a, &mut b, &TARGETS);
    };
    let h2p = "host->plugin warm call, 80 B,";
    row(
        format!("{h2p} Instance::call from a tokio task{note}"),
        &mut || rt.block_on(calls_from_task(instance, n, payload)),
        true,
    );
    row(
        format!("{h2p} Instance::call from outside the runtime (block_on){note}"),
        &mut || calls_from_outside(rt, instance, n, payload),
        true,
    );
    row(
        format!("{h2p} Plugin::call from a tokio task{note}"),
        &mut || rt.block_on(managed_calls_from_task(managed, n, payload)),
        true,
    );
    if sizes
        .only
        .as_deref()
        .is_some_and(|o| o.contains("tokio alone"))
    {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/raw_echo.py");
        let mut echo = Some(rt.block_on(async { common::blocking::AsyncPeer::spawn(&script) }));
        row(
            format!("diagnosis: tokio alone, the same echo from a tokio task{note}"),
            &mut || {
                let (mut peer, owned) = (echo.take().expect("peer"), payload.to_owned());
                let task = tokio_task(rt, async move {
                    let v = peer.calls(n, &owned).await;
                    (peer, v)
                });
                echo = Some(task.0);
                task.1
            },
            true,
        );
    }
    row(
        format!("plugin->host capability call, 80 B, SDK plugbox.host.call, gate + audit{note}"),
        &mut || rt.block_on(host_loop(instance, n, payload)),
        false,
    );
}

/// Runs `f` as a task on `rt` and waits for it.
fn tokio_task<T: Send + 'static>(
    rt: &Runtime,
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    rt.block_on(async { tokio::spawn(f).await.expect("task") })
}

/// `n` calls of `echo` from a task on the runtime (the usual host: a server's handler).
async fn calls_from_task(instance: &Arc<Instance>, n: usize, payload: &str) -> Vec<u64> {
    let instance = Arc::clone(instance);
    let args = json!({ "x": payload });
    tokio::spawn(async move {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            instance.call("echo", args.clone()).await.expect("echo");
            out.push(t.elapsed().as_nanos() as u64);
        }
        out
    })
    .await
    .expect("task")
}

/// The same through the managed plugin's pool.
async fn managed_calls_from_task(plugin: &Plugin, n: usize, payload: &str) -> Vec<u64> {
    let plugin = plugin.clone();
    let args = json!({ "x": payload });
    tokio::spawn(async move {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            plugin.call("echo", args.clone()).await.expect("echo");
            out.push(t.elapsed().as_nanos() as u64);
        }
        out
    })
    .await
    .expect("task")
}

/// `n` calls of `echo`, each from this thread with `block_on` (a host outside the runtime).
fn calls_from_outside(rt: &Runtime, instance: &Instance, n: usize, payload: &str) -> Vec<u64> {
    let args = json!({ "x": payload });
    (0..n)
        .map(|_| {
            let t = Instant::now();
            rt.block_on(instance.call("echo", args.clone()))
                .expect("echo");
            t.elapsed().as_nanos() as u64
        })
        .collect()
}

/// `n` plugin→host calls of `bench.echo`, timed inside the plugin.
async fn host_loop(instance: &Instance, n: usize, payload: &str) -> Vec<u64> {
    let Reply::Json(v) = instance
        .call("host_loop", json!({"n": n, "payload": payload}))
        .await
        .expect("host_loop")
    else {
        panic!("bytes")
    };
    serde_json::from_value(v).expect("latencies")
}

/// Cold start to ready, interleaved with a bare interpreter start.
fn cold_start(
    rt: &Runtime,
    engine: &plugbox::engine::Engine,
    dir: &Path,
    grants: &Grants,
    starts: usize,
) {
    let (mut bare, mut ready) = (Vec::new(), Vec::new());
    for _ in 0..starts {
        let t = Instant::now();
        assert!(Command::new(PYTHON)
            .args(["-I", "-S", "-c", "pass"])
            .status()
            .expect("python")
            .success());
        bare.push(t.elapsed());
        let t = Instant::now();
        let p = rt
            .block_on(engine.spawn_instance(dir, grants))
            .expect("load");
        ready.push(t.elapsed());
        rt.block_on(p.shutdown());
    }
    let (b, r) = (median(&mut bare), median(&mut ready));
    println!("cold start to ready ({starts} interleaved, medians):");
    println!("  bare python3 -I -S -c pass  {:>8.3} ms", ms(b));
    println!(
        "  load to ready (handshake)   {:>8.3} ms   {:+.3} ms over bare",
        ms(r),
        ms(r) - ms(b)
    );
}

/// 64 MiB host→plugin→host in frame-sized chunks, and the host's peak RSS.
async fn bulk(plugin: &Instance) {
    let chunk = MAX_FRAME_BYTES as usize - 64 * 1024;
    let total = 64 << 20;
    let data = vec![7u8; chunk];
    let rss_before = status_kib("VmHWM");
    let t = Instant::now();
    let mut moved = 0usize;
    while moved < total {
        let n = chunk.min(total - moved);
        match plugin
            .call_with_body("echo_bytes", Default::default(), "data", data[..n].to_vec())
            .await
            .expect("bulk")
        {
            Reply::Bytes(b) => assert_eq!(b.len(), n),
            other => panic!("{other:?}"),
        }
        moved += n;
    }
    let secs = t.elapsed().as_secs_f64();
    let rss_after = status_kib("VmHWM");
    println!(
        "bulk: 64 MiB host->plugin->host in {} frames: {:.3} s, {:.2} GB/s; host peak RSS +{:.1} MiB",
        total.div_ceil(chunk),
        secs,
        total as f64 / secs / 1e9,
        (rss_after.saturating_sub(rss_before)) as f64 / 1024.0,
    );
}
