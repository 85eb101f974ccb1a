//! Lifetime and isolation from the host: no survivors, no signals or ptrace out, no leaks.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::{alive, assert_probe, plugbox, probe, probes_dir, Workspace, PYTHON};
use plugbox::sandbox::Watchdog;
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
        "HOME LANG MALLOC_ARENA_MAX PATH PLUGIN_SETTING PYTHONDONTWRITEBYTECODE PYTHONUNBUFFERED TERM",
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

/// Live (non-zombie) `/usr/bin/sleep MARKER` processes.
fn processes_with(marker: &str) -> Vec<i32> {
    let cmdline = format!("/usr/bin/sleep\0{marker}\0");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c == cmdline.as_bytes())
                .unwrap_or(false)
        })
        .filter(|pid| alive(*pid))
        .collect()
}

/// Polls `check` every 10 ms until it holds or `limit` passes; returns whether it held.
fn eventually(limit: std::time::Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A marker no other process has: `4242.<pid><nanoseconds>` is also a valid `sleep` argument.
fn unique_marker() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("4242.{}{nanos:09}", std::process::id())
}

#[test]
fn killing_the_launcher_kills_daemonised_grandchildren() {
    let ws = Workspace::new();
    let policy = ws.policy("execute = [\"/usr/bin\"]\n[process]\nsubprocesses = true\n");
    let marker = unique_marker();
    // The subshell forks the sleep and exits: a daemon re-parented away from the command,
    // which the launcher's death (SIGKILL: no teardown) would orphan without the watchdog.
    let script = format!("( /usr/bin/sleep {marker} & ) ; exec /usr/bin/sleep 60");
    let mut launcher = Command::new(plugbox())
        .args(["exec", "--policy"])
        .arg(policy.path())
        .args(["--", "/usr/bin/sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn plugbox exec");
    let limit = std::time::Duration::from_secs(5);
    assert!(
        eventually(limit, || !processes_with(&marker).is_empty()),
        "the daemon never started"
    );
    let daemons = processes_with(&marker);
    // The launcher registers the group right after the command's exec; leave it a moment.
    std::thread::sleep(std::time::Duration::from_millis(50));
    launcher.kill().expect("SIGKILL plugbox exec");
    let status = launcher.wait().expect("wait");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    assert!(
        eventually(std::time::Duration::from_secs(3), || processes_with(
            &marker
        )
        .is_empty()),
        "daemons {daemons:?} survived the launcher's SIGKILL: {:?}",
        processes_with(&marker)
    );
}

/// A one-process group of our own (`sleep 30` leading its group), for the watchdog to kill.
fn own_group() -> std::process::Child {
    Command::new("/usr/bin/sleep")
        .arg("30")
        .process_group(0)
        .spawn()
        .expect("spawn sleep")
}

fn killed_by_sigkill(child: &mut std::process::Child) -> bool {
    let status = child.wait().expect("wait");
    std::os::unix::process::ExitStatusExt::signal(&status) == Some(libc::SIGKILL)
}

#[test]
fn dropping_the_watchdog_kills_registered_groups_only() {
    let watchdog = Watchdog::start(2).expect("start");
    let mut kept = own_group();
    let mut forgotten = own_group();
    watchdog.register(kept.id() as i32).expect("register");
    watchdog.register(forgotten.id() as i32).expect("register");
    watchdog
        .unregister(forgotten.id() as i32)
        .expect("unregister");
    drop(watchdog);
    assert!(killed_by_sigkill(&mut kept), "a registered group survived");
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(
        alive(forgotten.id() as i32),
        "an unregistered group was killed"
    );
    forgotten.kill().expect("kill");
    forgotten.wait().expect("wait");
}

#[test]
fn the_watchdog_is_alone_in_its_session_with_one_fd_and_ignores_sigterm() {
    let watchdog = Watchdog::start(1).expect("start");
    let pid = watchdog.pid();
    let fds: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("list fds")
        .map(|e| {
            std::fs::read_link(e.expect("entry").path())
                .expect("readlink")
                .display()
                .to_string()
        })
        .collect();
    assert_eq!(fds.len(), 1, "only its socket: {fds:?}");
    assert!(fds[0].starts_with("socket:"), "{fds:?}");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // After the state: ppid, pgrp, session.
    assert_eq!(fields[2], pid.to_string(), "own process group: {stat}");
    assert_eq!(fields[3], pid.to_string(), "own session: {stat}");
    assert_ne!(fields[1], std::process::id().to_string(), "not our child");
    plugbox::sys::kill_group(pid, libc::SIGTERM).expect("SIGTERM");
    plugbox::sys::kill_group(pid, libc::SIGINT).expect("SIGINT");
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(alive(pid), "the watchdog died of a catchable signal");
    drop(watchdog);
    assert!(
        eventually(std::time::Duration::from_secs(3), || !alive(pid)),
        "the watchdog outlived its handle"
    );
}

#[test]
fn registrations_past_the_capacity_or_of_no_group_are_refused() {
    let watchdog = Watchdog::start(2).expect("start");
    let mut groups = [own_group(), own_group(), own_group()];
    let [a, b, c] = [0, 1, 2].map(|i| groups[i].id() as i32);
    for bad in [-5, 0, 1] {
        let err = watchdog.register(bad).expect_err("no such group");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{bad}");
    }
    watchdog.register(a).expect("first");
    watchdog.register(b).expect("second");
    watchdog.register(a).expect("again: a no-op");
    let err = watchdog.register(c).expect_err("past the capacity");
    assert_eq!(err.kind(), std::io::ErrorKind::StorageFull, "{err}");
    watchdog.unregister(a).expect("unregister");
    watchdog.register(c).expect("a slot was freed");
    drop(watchdog);
    assert!(killed_by_sigkill(&mut groups[1]));
    assert!(killed_by_sigkill(&mut groups[2]));
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(alive(a), "the unregistered group was killed");
    groups[0].kill().expect("kill");
    groups[0].wait().expect("wait");
}

/// Set, to the test's name, in the re-executed test binary that plays the host.
const HOST_ROLE: &str = "PLUGBOX_TEST_WATCHDOG_HOST";

/// Is this process the host re-executed for test `name`?
fn playing_host(name: &str) -> bool {
    std::env::var_os(HOST_ROLE).is_some_and(|v| v == name)
}

/// Runs test `name` again in a fresh test process (a host whose process-wide state the
/// test may change) and asserts that it passed.
fn run_as_host(name: &str) {
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(HOST_ROLE, name)
        .stdin(Stdio::null())
        .output()
        .expect("run the host");
    let run: common::Run = out.into();
    assert_eq!(run.code, 0, "the host died: {run:?}");
    assert!(run.stdout.contains("host survived"), "{run:?}");
}

#[test]
fn a_subreaper_host_reaps_its_watchdog() {
    const NAME: &str = "a_subreaper_host_reaps_its_watchdog";
    if !playing_host(NAME) {
        return run_as_host(NAME);
    }
    plugbox::sys::set_child_subreaper().expect("subreaper");
    let watchdog = Watchdog::start(1).expect("start");
    let pid = watchdog.pid();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let ppid = stat.rsplit(')').next().unwrap().split_whitespace().nth(1);
    assert_eq!(
        ppid,
        Some(std::process::id().to_string().as_str()),
        "{stat}"
    );
    drop(watchdog);
    // Reaped by drop: no zombie is left, and it is no longer our child.
    let err = plugbox::sys::waitpid(pid).expect_err("already reaped");
    assert_eq!(err.raw_os_error(), Some(libc::ECHILD));
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    println!("host survived");
}

#[test]
fn a_dead_watchdog_is_an_error_not_a_sigpipe() {
    const NAME: &str = "a_dead_watchdog_is_an_error_not_a_sigpipe";
    if playing_host(NAME) {
        // The host: SIGPIPE at its default action, as in a host that does not ignore it.
        plugbox::sys::default_sigpipe();
        let watchdog = Watchdog::start(4).expect("start");
        let mut group = own_group();
        let pidfd = plugbox::sys::pidfd_open(watchdog.pid()).expect("pidfd");
        plugbox::sys::kill_group(watchdog.pid(), libc::SIGKILL).expect("SIGKILL the watchdog");
        let mut fds = [libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        assert_eq!(plugbox::sys::poll(&mut fds, 3000).expect("poll"), 1);
        let err = watchdog
            .register(group.id() as i32)
            .expect_err("the watchdog is dead");
        assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ),
            "{err:?}"
        );
        watchdog.unregister(12345).expect("unknown: a no-op");
        drop(watchdog);
        group.kill().expect("kill");
        group.wait().expect("wait");
        println!("host survived");
        return;
    }
    run_as_host(NAME);
}
