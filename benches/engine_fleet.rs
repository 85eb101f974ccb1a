//! Engine benchmarks, one interleaved run, medians and ratios against baselines measured in
//! the same run:
//! - warm call: host → managed `Plugin::call` → a warm instance → result, for an echo command
//!   (target p50 <= 150 us), against the same call on an unmanaged `Instance` (no pool);
//! - cold load-to-ready (validate, prepare, spawn, handshake, first health probe, register)
//!   for 1 plugin and for 64 plugins in parallel, against bare `python3 -I -S -c pass` started
//!   the same way (1, and 64 in parallel);
//! - host RSS per live plugin, with 64 loaded.
//!
//! Run: `cargo bench --bench engine_fleet` (`cargo test` runs it as a short smoke test).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::{median, ms, pct, status_kib};

use futures_util::future::join_all;
use plugbox::manifest::Grants;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const PYTHON: &str = "/usr/bin/python3";
const FLEET: usize = 64;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let (calls, starts, rounds) = if benching { (5000, 20, 5) } else { (50, 2, 1) };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = tempfile::tempdir().expect("tmp");
    let engine = common::echo_engine(work.path());
    let grants = Grants::all_requested();
    let fleet_dir = tempfile::Builder::new()
        .prefix("plugbox-fleet-")
        .tempdir()
        .expect("tmp");
    std::fs::set_permissions(fleet_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dirs: Vec<PathBuf> = (0..FLEET)
        .map(|i| copy_echo(root, fleet_dir.path(), &format!("bench-echo-{i:02}")))
        .collect();

    // Warm calls, interleaved in blocks: managed plugin vs unmanaged instance.
    let plugin = engine.load(&dirs[0], &grants).await.expect("load");
    let instance = engine
        .spawn_instance(&dirs[1], &grants)
        .await
        .expect("instance");
    let args = json!({ "x": "x".repeat(80) });
    let (mut managed, mut single) = (Vec::with_capacity(calls), Vec::with_capacity(calls));
    for block in 0..10 {
        for _ in 0..calls / 10 {
            if block % 2 == 0 {
                managed.push(timed(plugin.call("echo", args.clone())).await);
                single.push(timed(instance.call("echo", args.clone())).await);
            } else {
                single.push(timed(instance.call("echo", args.clone())).await);
                managed.push(timed(plugin.call("echo", args.clone())).await);
            }
        }
    }
    let (m50, m99) = (pct(&mut managed, 0.5), pct(&mut managed, 0.99));
    let (s50, s99) = (pct(&mut single, 0.5), pct(&mut single, 0.99));
    println!("warm call, 80-byte echo ({calls} calls each, interleaved):");
    println!(
        "  managed Plugin::call    p50 {m50:>7.1} us  p99 {m99:>7.1} us  (target p50 <= 150 us)"
    );
    println!(
        "  unmanaged Instance      p50 {s50:>7.1} us  p99 {s99:>7.1} us  ratio {:.2}x",
        m50 / s50
    );
    instance.shutdown().await;
    engine.unload(&plugin.name()).await;

    // Cold load to ready, one plugin, interleaved with bare interpreter start-up.
    let (mut bare, mut ready) = (Vec::new(), Vec::new());
    for _ in 0..starts {
        let t = Instant::now();
        assert!(Command::new(PYTHON)
            .args(["-I", "-S", "-c", "pass"])
            .status()
            .unwrap()
            .success());
        bare.push(t.elapsed());
        let t = Instant::now();
        let p = engine.load(&dirs[0], &grants).await.expect("load");
        ready.push(t.elapsed());
        engine.unload(&p.name()).await;
    }
    let (b, r) = (median(&mut bare), median(&mut ready));
    println!("cold load to ready, 1 plugin ({starts} interleaved):");
    println!("  bare python3 -I -S -c pass   {:>8.2} ms", ms(b));
    println!(
        "  Engine::load                 {:>8.2} ms   {:+.2} ms over bare",
        ms(r),
        ms(r) - ms(b)
    );

    // Cold load of the whole fleet in parallel, and host RSS per live plugin.
    let (mut bare, mut ready, mut rss) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        let children: Vec<_> = (0..FLEET)
            .map(|_| {
                Command::new(PYTHON)
                    .args(["-I", "-S", "-c", "pass"])
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut c in children {
            assert!(c.wait().unwrap().success());
        }
        bare.push(t.elapsed());
        let before = status_kib("VmRSS");
        let t = Instant::now();
        let loaded: Vec<_> = join_all(dirs.iter().map(|d| engine.load(d, &grants)))
            .await
            .into_iter()
            .map(|r| r.expect("load"))
            .collect();
        ready.push(t.elapsed());
        rss.push(Duration::from_micros(
            status_kib("VmRSS").saturating_sub(before) * 1024 / FLEET as u64,
        ));
        let names: Vec<String> = loaded.iter().map(|p| p.name()).collect();
        join_all(names.iter().map(|n| engine.unload(n))).await;
    }
    let (b, r, kib) = (median(&mut bare), median(&mut ready), median(&mut rss));
    println!("cold load to ready, {FLEET} plugins in parallel ({rounds} rounds):");
    println!("  {FLEET} bare interpreters         {:>8.2} ms", ms(b));
    println!(
        "  {FLEET} x Engine::load (join_all)  {:>8.2} ms   {:.2}x bare, {:.2} ms per plugin",
        ms(r),
        ms(r) / ms(b),
        ms(r) / FLEET as f64
    );
    println!(
        "host RSS per live plugin: {:.0} KiB (target <= 200 KiB; plugin processes not counted)",
        kib.as_micros() as f64 / 1024.0
    );
    engine.shutdown().await.expect("shutdown");
}

/// A copy of `benches/plugins/echo` named `name`, readable by every uid.
fn copy_echo(root: &Path, parent: &Path, name: &str) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir(&dir).unwrap();
    let src = root.join("benches/plugins/echo");
    let manifest = std::fs::read_to_string(src.join("plugbox.toml"))
        .unwrap()
        .replace("name = \"bench-echo\"", &format!("name = \"{name}\""));
    std::fs::write(dir.join("plugbox.toml"), manifest).unwrap();
    std::fs::copy(src.join("main.py"), dir.join("main.py")).unwrap();
    for f in ["plugbox.toml", "main.py"] {
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

async fn timed<T, E: std::fmt::Debug>(f: impl std::future::Future<Output = Result<T, E>>) -> u64 {
    let t = Instant::now();
    f.await.expect("call");
    t.elapsed().as_nanos() as u64
}
