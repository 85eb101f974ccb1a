//! `plugbox install` on a cache hit (the environment is already in the store), against the
//! floor of starting the binary at all (`plugbox --version`), in one interleaved run.
//!
//! Two plugins: one whose `[python] requirements` lock pins `humanize` (the case), and,
//! when benching, one bundling numpy's wheel (18 MB). Both are installed once first (from the
//! package index; pip's cache keeps reruns fast), their inputs left to settle so the key memo
//! (`pyenv::key_memo`) is written, then timed in blocks of 10, interleaved. The numpy plugin is
//! timed twice: with the memo (stat the inputs) and without it (its memo removed before each
//! run, untimed: sha256 of every bundled byte, then the memo written again).
//!
//! Run: `cargo bench --bench install` (`PLUGBOX_BENCH_ROUNDS`, default 200). Target: under
//! 50 ms at the median.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
use common::ms;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PYTHON: &str = "/usr/bin/python3";
const BLOCK: usize = 10;

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let rounds: usize = std::env::var("PLUGBOX_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 200 } else { 5 });
    let work = tempfile::tempdir().expect("tempdir");
    let store = work.path().join("store");
    let mut plugins = vec![("lock (humanize)", lock_plugin(work.path()))];
    if benching {
        plugins.push(("bundled numpy wheel", numpy_plugin(work.path())));
    }
    for (_, dir) in &plugins {
        let out = install(dir, &store).output().expect("install");
        assert!(out.status.success(), "first install: {out:?}");
    }
    // The memo is only written for inputs whose ctime is settled (not a synchronisation:
    // the kernel's clock has to move on).
    std::thread::sleep(plugbox::pyenv::key_memo::SETTLED + Duration::from_secs(1));
    for (_, dir) in &plugins {
        timed(&mut install(dir, &store));
    }
    let mut unmemoised = Vec::with_capacity(rounds);
    let mut floor = Vec::with_capacity(rounds);
    let mut hits: Vec<Vec<Duration>> = vec![Vec::with_capacity(rounds); plugins.len()];
    let version = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_plugbox"));
        c.arg("--version");
        c
    };
    for _ in 0..3 {
        timed(&mut version());
    }
    for _ in 0..rounds.div_ceil(BLOCK) {
        for _ in 0..BLOCK {
            floor.push(timed(&mut version()));
        }
        for ((_, dir), samples) in plugins.iter().zip(&mut hits) {
            for _ in 0..BLOCK {
                samples.push(timed(&mut install(dir, &store)));
            }
        }
        if let Some((_, dir)) = plugins.get(1) {
            for _ in 0..BLOCK {
                let _ = std::fs::remove_dir_all(store.join(plugbox::pyenv::key_memo::MEMO_DIR));
                unmemoised.push(timed(&mut install(dir, &store)));
            }
        }
    }
    let f50 = percentile(&mut floor, 0.5);
    println!(
        "plugbox install, cache hit, {} rounds in blocks of {BLOCK}, interleaved:",
        floor.len()
    );
    println!(
        "  {:<30} p50 {:>7.3} ms   p99 {:>7.3} ms",
        "plugbox --version (floor)",
        ms(f50),
        ms(percentile(&mut floor, 0.99))
    );
    for ((label, _), samples) in plugins.iter().zip(&mut hits) {
        let p50 = percentile(samples, 0.5);
        println!(
            "  {:<30} p50 {:>7.3} ms   p99 {:>7.3} ms   {:.2}x the floor   (target < 50 ms)",
            format!("install, {label}"),
            ms(p50),
            ms(percentile(samples, 0.99)),
            p50.as_secs_f64() / f50.as_secs_f64()
        );
    }
    if !unmemoised.is_empty() {
        let p50 = percentile(&mut unmemoised, 0.5);
        println!(
            "  {:<30} p50 {:>7.3} ms   p99 {:>7.3} ms   {:.2}x the floor",
            "install, numpy, no key memo",
            ms(p50),
            ms(percentile(&mut unmemoised, 0.99)),
            p50.as_secs_f64() / f50.as_secs_f64()
        );
    }
}

fn install(dir: &Path, store: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_plugbox"));
    c.arg("install").arg(dir).arg("--store").arg(store);
    c
}

fn timed(cmd: &mut Command) -> Duration {
    let start = Instant::now();
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("spawn");
    let elapsed = start.elapsed();
    assert!(status.success(), "{cmd:?} failed: {status}");
    elapsed
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p) as usize]
}

/// A plugin directory with `extra` in its `[python]` section.
fn plugin(parent: &Path, name: &str, python: &str) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = format!(
        "schema = 1\n[plugin]\nname = \"{name}\"\nversion = \"1.0.0\"\napi = \"^1\"\nentry = \"main.py\"\n[python]\n{python}"
    );
    std::fs::write(dir.join("plugbox.toml"), manifest).unwrap();
    std::fs::write(dir.join("main.py"), "import plugbox\n").unwrap();
    dir
}

/// Downloads `requirement`'s wheel into `dir`; returns its path.
fn download(requirement: &str, dir: &Path) -> PathBuf {
    let out = Command::new(PYTHON)
        .args([
            "-m",
            "pip",
            "download",
            "-q",
            "--only-binary=:all:",
            "--no-deps",
            "-d",
        ])
        .arg(dir)
        .arg(requirement)
        .output()
        .expect("pip download");
    assert!(out.status.success(), "pip download {requirement}: {out:?}");
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .unwrap()
}

fn lock_plugin(work: &Path) -> PathBuf {
    let wheel = download("humanize==4.9.0", &work.join("dl-humanize"));
    let out = Command::new(PYTHON)
        .args(["-m", "pip", "hash"])
        .arg(&wheel)
        .output()
        .expect("pip hash");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let hash = text.lines().find(|l| l.starts_with("--hash=")).unwrap();
    let dir = plugin(work, "lock", "requirements = \"requirements.txt\"\n");
    std::fs::write(
        dir.join("requirements.txt"),
        format!("humanize==4.9.0 {hash}\n"),
    )
    .unwrap();
    dir
}

fn numpy_plugin(work: &Path) -> PathBuf {
    let dir = plugin(work, "numpy", "wheels = \"wheels\"\n");
    download("numpy==1.26.4", &dir.join("wheels"));
    dir
}
