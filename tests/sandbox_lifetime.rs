//! Lifetime and isolation from the host: no survivors, no signals or ptrace out, no leaks.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::{alive, assert_probe, plugbox, probe, probes_dir, Workspace, PYTHON};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

fn grandchild_pid(stdout: &str) -> i32 {
    let line = stdout
        .lines()
        .find(|l| l.contains("setsid="))
        .expect("daemon line");
    line.split(' ')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("pid")
}

#[test]
fn no_process_survives_the_command() {
    let ws = Workspace::new();
    let policy = ws.policy("[process]\nsubprocesses = true\n");
    let run = probe(&policy, &["daemonize"]);
    assert_eq!(run.code, 0, "{run:?}");
    // The double-forked grandchild tried to leave the process group and was refused...
    assert!(run.stdout.contains("setsid=EPERM"), "{run:?}");
    // ...and was killed with the tree when the command exited.
    let pid = grandchild_pid(&run.stdout);
    assert!(!alive(pid), "grandchild {pid} survived");
}

#[test]
fn wall_seconds_kills_the_whole_tree() {
    let ws = Workspace::new();
    let policy = ws.policy("[process]\nsubprocesses = true\n[limits]\nwall_seconds = 1\n");
    let started = std::time::Instant::now();
    let probe_path = probes_dir().join("probe.py");
    let script = format!(
        "import runpy,sys; sys.argv=['probe','daemonize']; runpy.run_path({:?}); import time; time.sleep(60)",
        probe_path.display().to_string()
    );
    let out = Command::new(plugbox())
        .args(["exec", "--policy"])
        .arg(policy.path())
        .args(["--", PYTHON, "-I", "-S", "-c", &script])
        .output()
        .expect("run");
    let run: common::Run = out.into();
    assert_eq!(run.code, 128 + libc::SIGKILL, "{run:?}");
    assert!(run.stderr.contains("wall_seconds (1) reached"), "{run:?}");
    assert!(started.elapsed().as_secs() < 10);
    let pid = grandchild_pid(&run.stdout);
    assert!(!alive(pid), "grandchild {pid} survived the wall-clock kill");
}

/// A process of the same uid as the sandbox, outside it.
fn same_uid_neighbour() -> std::process::Child {
    Command::new("/usr/bin/sleep")
        .arg("30")
        .uid(common::NOBODY)
        .gid(common::NOBODY)
        .spawn()
        .expect("spawn neighbour")
}

#[test]
fn signals_cannot_leave_the_sandbox() {
    let ws = Workspace::new();
    let policy = ws.policy("");
    let mut neighbour = same_uid_neighbour();
    let pid = neighbour.id().to_string();
    // Same uid, so only Landlock's signal scope stands in the way.
    assert_probe(&policy, &["kill", &pid, "15"], "EPERM");
    assert_probe(&policy, &["kill", &pid, "0"], "EPERM");
    assert_probe(&policy, &["kill", "1", "15"], "EPERM");
    assert!(alive(neighbour.id() as i32));
    neighbour.kill().expect("kill");
    neighbour.wait().expect("wait");
}

#[test]
fn ptrace_of_the_host_is_refused() {
    let ws = Workspace::new();
    let policy = ws.policy("");
    let mut neighbour = same_uid_neighbour();
    assert_probe(&policy, &["ptrace", &neighbour.id().to_string()], "EPERM");
    assert_probe(&policy, &["ptrace", "1"], "EPERM");
    neighbour.kill().expect("kill");
    neighbour.wait().expect("wait");
}

#[test]
fn no_fd_and_no_secret_leaks_in() {
    let ws = Workspace::new();
    let policy = ws.policy("");
    let leaked = std::fs::File::open("/etc/hostname").expect("open");
    plugbox::sys::clear_cloexec(leaked.as_raw_fd()).expect("clear cloexec");
    let out = Command::new(plugbox())
        .args(["exec", "--env", "PLUGIN_SETTING=1", "--policy"])
        .arg(policy.path())
        .args(["--", PYTHON, "-I", "-S"])
        .arg(probes_dir().join("probe.py"))
        .arg("fds")
        .env("AWS_SECRET_ACCESS_KEY", "hunter2")
        .stdin(Stdio::null())
        .output()
        .expect("run");
    let run: common::Run = out.into();
    assert_eq!(run.verdict(), "none", "fds open beyond stdio: {run:?}");
    let out = Command::new(plugbox())
        .args(["exec", "--env", "PLUGIN_SETTING=1", "--policy"])
        .arg(policy.path())
        .args(["--", PYTHON, "-I", "-S"])
        .arg(probes_dir().join("probe.py"))
        .arg("env")
        .env_clear()
        .env("AWS_SECRET_ACCESS_KEY", "hunter2")
        .env("TERM", "xterm")
        .env("LANG", "C.UTF-8")
        .output()
        .expect("run");
    let run: common::Run = out.into();
    assert_eq!(
        run.verdict(),
        "HOME LANG MALLOC_ARENA_MAX PATH PLUGIN_SETTING PYTHONDONTWRITEBYTECODE TERM",
        "{run:?}"
    );
    drop(leaked);
}

#[test]
fn legitimate_programs_run_threads_and_allowed_subprocesses() {
    let ws = Workspace::new();
    assert_probe(&ws.policy(""), &["threads", "16"], "16");
    assert_probe(
        &ws.policy("[process]\nsubprocesses = true\n"),
        &["spawn"],
        "42",
    );
    let run = probe(&ws.policy(""), &["spawn"]);
    assert!(
        run.stderr.contains("PermissionError"),
        "subprocess without the grant: {run:?}"
    );
}
