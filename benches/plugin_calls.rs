//! Plugin benchmarks, one interleaved run, medians and ratios against baselines measured in
//! the same run:
//! - cold start to ready (sandbox + interpreter + SDK import + handshake) vs bare
//!   `python3 -I -S -c pass`;
//! - plugin→host capability round trip (80-byte echo through the gate, audit on) vs a raw
//!   Rust↔Python echo over the same socket and framing (same sandbox, no SDK, broker or audit);
//! - host→plugin call round trip, the same way;
//! - bulk: 64 MiB of bytes host→plugin→host in frame-sized chunks, and host peak RSS.
//!
//! Run: `cargo bench --bench plugin_calls` (`cargo test` runs it as a short smoke test).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::{median, ms, pct, status_kib};

use plugbox::capability::Reply;
use plugbox::ipc::frame::{FrameLimits, FrameReader, MAX_FRAME_BYTES};
use plugbox::ipc::Message;
use plugbox::manifest::Grants;
use plugbox::policy::Policy;
use plugbox::sandbox::{spawn, Environment, Prepared, SpawnRequest};
use serde_json::json;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;
use tokio::io::AsyncWriteExt;

const PYTHON: &str = "/usr/bin/python3";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let (starts, calls) = if benching { (30, 3000) } else { (3, 50) };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = tempfile::tempdir().expect("tmp");
    let engine = common::echo_engine(work.path());
    let plugin_dir = root.join("benches/plugins/echo");
    let grants = Grants::all_requested();
    let payload = "x".repeat(80);

    // Cold start, interleaved with bare interpreter start-up.
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
        let p = engine
            .spawn_instance(&plugin_dir, &grants)
            .await
            .expect("load");
        ready.push(t.elapsed());
        p.shutdown().await;
    }
    let (b, r) = (median(&mut bare), median(&mut ready));
    println!("cold start to ready ({starts} interleaved):");
    println!("  bare python3 -I -S -c pass  {:>8.3} ms", ms(b));
    println!(
        "  load to ready (handshake)   {:>8.3} ms   {:+.3} ms over bare (target <= +3 ms)",
        ms(r),
        ms(r) - ms(b)
    );

    let plugin = engine
        .spawn_instance(&plugin_dir, &grants)
        .await
        .expect("load");
    let raw_prepared = Prepared::new(
        Policy::strictest().with_read_paths([root.join("benches")]),
        PYTHON.as_ref(),
        None,
    )
    .expect("prepare raw");

    // Plugin→host, interleaved in blocks.
    let (mut gated, mut raw) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let Reply::Json(v) = plugin
            .call("host_loop", json!({"n": calls, "payload": payload}))
            .await
            .expect("host_loop")
        else {
            panic!("bytes")
        };
        gated.extend(v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()));
        raw.extend(raw_plugin_to_host(&raw_prepared, root, calls, &payload).await);
    }
    report(
        "plugin->host capability round trip (80 B, gate + audit)",
        &mut gated,
        &mut raw,
    );

    // Host→plugin.
    let (mut gated, mut raw) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        for _ in 0..calls {
            let t = Instant::now();
            plugin
                .call("echo", json!({"x": payload}))
                .await
                .expect("echo");
            gated.push(t.elapsed().as_nanos() as u64);
        }
        raw.extend(raw_host_to_plugin(&raw_prepared, root, calls, &payload).await);
    }
    report("host->plugin call round trip (80 B)", &mut gated, &mut raw);

    // Bulk.
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
        "bulk: 64 MiB host->plugin->host in {} frames: {:.3} s, {:.2} GB/s (target >= 1 GB/s)",
        total.div_ceil(chunk),
        secs,
        total as f64 / secs / 1e9
    );
    println!(
        "  host peak RSS {} -> {} KiB (+{:.1} MiB = {:.1}x the frame cap; target <= 10x)",
        rss_before,
        rss_after,
        (rss_after.saturating_sub(rss_before)) as f64 / 1024.0,
        (rss_after.saturating_sub(rss_before)) as f64 * 1024.0 / f64::from(MAX_FRAME_BYTES)
    );
    plugin.shutdown().await;
}

fn report(label: &str, gated: &mut [u64], raw: &mut [u64]) {
    let (g50, g99, r50) = (pct(gated, 0.5), pct(gated, 0.99), pct(raw, 0.5));
    let mean = gated.iter().sum::<u64>() as f64 / gated.len() as f64;
    println!("{label}:");
    println!(
        "  plugbox  p50 {g50:>7.1} us  p99 {g99:>7.1} us  ({:.0} calls/s)",
        1e9 / mean
    );
    println!(
        "  raw      p50 {r50:>7.1} us   ratio {:.2}x (target <= 1.3x)",
        g50 / r50
    );
}

/// Spawns `raw_echo.py MODE...` in the same sandbox with one end of a socketpair.
fn spawn_raw(
    prepared: &Prepared,
    root: &Path,
    args: &[&str],
) -> (plugbox::sandbox::Sandboxed, tokio::net::UnixStream) {
    let (host, child) = plugbox::sys::socketpair_stream().expect("socketpair");
    let mut env = Environment::clean();
    env.set(
        "PLUGBOX_FD".as_ref(),
        child.as_raw_fd().to_string().as_ref(),
    );
    let script: PathBuf = root.join("benches/raw_echo.py");
    let mut argv = vec!["-I".into(), "-S".into(), script.into_os_string()];
    argv.extend(args.iter().map(Into::into));
    let child_proc = spawn(
        prepared,
        SpawnRequest {
            args: argv,
            env,
            stdin: Stdio::null(),
            stdout: Stdio::piped(),
            stderr: Stdio::inherit(),
            keep_fd: Some(child.as_raw_fd()),
            ids: None,
        },
    )
    .expect("spawn raw");
    drop(child);
    let std_stream = std::os::unix::net::UnixStream::from(host);
    std_stream.set_nonblocking(true).expect("nonblocking");
    (
        child_proc,
        tokio::net::UnixStream::from_std(std_stream).expect("tokio"),
    )
}

/// Raw Python client → raw Rust server (decode, reply; nothing else).
async fn raw_plugin_to_host(prepared: &Prepared, root: &Path, n: usize, payload: &str) -> Vec<u64> {
    let (child, stream) = spawn_raw(prepared, root, &["client", &n.to_string(), payload]);
    let (rd, mut wr) = stream.into_split();
    let mut reader = FrameReader::new(rd, FrameLimits::default());
    while let Ok(Some(frame)) = reader.next().await {
        let Ok(Message::Call { id, args, .. }) = Message::decode(&frame.header) else {
            break;
        };
        let reply = Message::Result {
            id,
            result: Some(args["x"].clone()),
            body: false,
            bulk: None,
        };
        wr.write_all(&reply.encode(&[])).await.expect("reply");
    }
    drop(wr);
    let out = child.child.wait_with_output().expect("raw client");
    serde_json::from_slice(&out.stdout).expect("latencies")
}

/// Raw Rust client → raw Python server.
async fn raw_host_to_plugin(prepared: &Prepared, root: &Path, n: usize, payload: &str) -> Vec<u64> {
    let (mut child, stream) = spawn_raw(prepared, root, &["server"]);
    let (rd, mut wr) = stream.into_split();
    let mut reader = FrameReader::new(rd, FrameLimits::default());
    let mut out = Vec::with_capacity(n);
    for id in 1..=n as u64 {
        let t = Instant::now();
        let mut args = serde_json::Map::new();
        args.insert("x".into(), json!(payload));
        let call = Message::Call {
            id,
            method: "echo".into(),
            args,
            body: None,
            bulk: None,
        };
        wr.write_all(&call.encode(&[])).await.expect("call");
        let frame = reader.next().await.expect("reply").expect("frame");
        let _ = Message::decode(&frame.header).expect("decode");
        out.push(t.elapsed().as_nanos() as u64);
    }
    drop(wr);
    drop(reader);
    let _ = child.child.wait();
    out
}
