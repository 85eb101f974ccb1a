//! Resource limits: every bomb is contained, with the exact error or signal.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::{assert_probe, probe, Workspace};

#[test]
fn memory_bomb_gets_memory_error() {
    let ws = Workspace::new();
    let policy = ws.policy("[limits]\nmemory_mib = 128\n");
    assert_probe(&policy, &["memory_bomb", "64"], "allocated 64");
    assert_probe(&policy, &["memory_bomb", "512"], "MemoryError");
}

#[test]
fn cpu_spin_dies_of_sigxcpu() {
    let ws = Workspace::new();
    let policy = ws.policy("[limits]\ncpu_seconds = 1\nwall_seconds = 20\n");
    let run = probe(&policy, &["cpu_spin"]);
    assert_eq!(run.code, 128 + libc::SIGXCPU, "{run:?}");
}

#[test]
fn disk_fill_stops_at_file_size_with_efbig() {
    let ws = Workspace::new();
    let policy = ws.policy("[limits]\nfile_size_mib = 2\n");
    let target = ws.p("rw/big");
    assert_probe(&policy, &["disk_fill", &target, "8"], "EFBIG 2097152");
    assert_eq!(
        std::fs::metadata(ws.path("rw/big")).expect("stat").len(),
        2 * 1024 * 1024
    );
}

#[test]
fn fd_exhaustion_stops_at_open_files() {
    let ws = Workspace::new();
    let policy = ws.policy("[limits]\nopen_files = 32\n");
    // 32 minus stdin, stdout, stderr and the probe's own startup fds.
    let run = probe(&policy, &["fd_exhaust"]);
    let verdict: Vec<&str> = run.verdict().split(' ').collect();
    assert_eq!(verdict[0], "EMFILE", "{run:?}");
    let opened: u32 = verdict[1].parse().expect("count");
    assert!(
        (20..=29).contains(&opened),
        "opened {opened} of 32: {run:?}"
    );
}

#[test]
fn thread_bomb_stops_at_max_threads() {
    let ws = Workspace::new();
    // RLIMIT_NPROC counts every process of a uid: a uid of its own keeps parallel tests apart.
    let policy = ws.policy(
        "[process]\nmax_threads = 16\nuid = 61001\ngid = 61001\n[limits]\nmemory_mib = 4096\n",
    );
    let run = probe(&policy, &["thread_bomb"]);
    let started: u32 = run.verdict().parse().expect("count");
    assert!(
        started < 16,
        "{started} threads beside the main one: {run:?}"
    );
    assert!(
        started >= 8,
        "the limit counts this sandbox's threads, not others': {run:?}"
    );
}

#[test]
fn fork_bomb_stops_at_max_threads_with_eagain() {
    let ws = Workspace::new();
    let policy = ws.policy(
        "[process]\nsubprocesses = true\nmax_threads = 16\nuid = 61002\ngid = 61002\n[limits]\nwall_seconds = 20\n",
    );
    let run = probe(&policy, &["fork_bomb"]);
    let verdict: Vec<&str> = run.verdict().split(' ').collect();
    assert_eq!(verdict[0], "EAGAIN", "{run:?}");
    let forked: u32 = verdict[1].parse().expect("count");
    assert!(forked < 16, "forked {forked}: {run:?}");
}

#[test]
fn output_flood_is_cut_at_output_bytes() {
    let ws = Workspace::new();
    let policy = ws.policy("[limits]\noutput_bytes = 1000\n");
    let run = probe(&policy, &["flood", "10000000"]);
    assert_eq!(run.stdout.len(), 1000, "exactly output_bytes forwarded");
    assert!(run.stdout.bytes().all(|b| b == b'y'));
    // The probe sees EPIPE once the pipes are closed and exits 32.
    assert_eq!(run.code, 32, "{run:?}");
    assert!(
        run.stderr.contains("output_bytes (1000) reached"),
        "{run:?}"
    );
}
