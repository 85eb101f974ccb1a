//! Landlock filesystem confinement, checked with exact errnos from inside the real sandbox.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::{assert_probe, Workspace};

#[test]
fn reads_only_beneath_granted_paths() {
    let ws = Workspace::new();
    let policy = ws.policy("");
    assert_probe(&policy, &["read", &ws.p("ro/file")], "ok");
    assert_probe(&policy, &["read", &ws.p("outside/file")], "EACCES");
    assert_probe(&policy, &["read", "/etc/hostname"], "EACCES");
    assert_probe(&policy, &["listdir", "/"], "EACCES");
    assert_probe(&policy, &["listdir", &ws.p("outside")], "EACCES");
}

#[test]
fn writes_only_beneath_write_paths() {
    let ws = Workspace::new();
    let policy = ws.policy("");
    assert_probe(&policy, &["write", &ws.p("rw/new")], "ok");
    assert_probe(&policy, &["append", &ws.p("rw/file")], "ok");
    assert_probe(&policy, &["write", &ws.p("ro/file")], "EACCES");
    assert_probe(&policy, &["write", &ws.p("ro/new")], "EACCES");
    assert_probe(&policy, &["write", &ws.p("outside/new")], "EACCES");
    assert_probe(&policy, &["write", "/tmp/plugbox-escape"], "EACCES");
    assert!(!std::path::Path::new("/tmp/plugbox-escape").exists());
}

#[test]
fn truncate_of_read_only_file_is_refused() {
    let ws = Workspace::new();
    let policy = ws.policy("");
    assert_probe(&policy, &["truncate", &ws.p("ro/file")], "EACCES");
    assert_eq!(std::fs::read(ws.path("ro/file")).expect("read"), b"data\n");
    assert_probe(&policy, &["truncate", &ws.p("rw/file")], "ok");
}

#[test]
fn symlink_out_of_the_write_root_does_not_escape() {
    let ws = Workspace::new();
    let policy = ws.policy("");
    let link = ws.p("rw/link");
    assert_probe(
        &policy,
        &["symlink_read", &link, &ws.p("outside/file")],
        "EACCES",
    );
    let link2 = ws.p("rw/link2");
    assert_probe(
        &policy,
        &["symlink_read", &link2, "/etc/hostname"],
        "EACCES",
    );
}

#[test]
fn hard_link_and_rename_tricks_are_refused() {
    let ws = Workspace::new();
    let policy = ws.policy("");
    // Linking a file from outside into the write root would make it writable: Landlock's
    // refer check answers EXDEV.
    assert_probe(
        &policy,
        &["link", &ws.p("outside/file"), &ws.p("rw/stolen")],
        "EXDEV",
    );
    assert_probe(
        &policy,
        &["link", &ws.p("ro/file"), &ws.p("rw/stolen2")],
        "EXDEV",
    );
    // Renaming out of a read-only or ungranted directory needs remove rights there.
    assert_probe(
        &policy,
        &["rename", &ws.p("outside/file"), &ws.p("rw/moved")],
        "EACCES",
    );
    assert_probe(
        &policy,
        &["rename", &ws.p("ro/file"), &ws.p("rw/moved")],
        "EACCES",
    );
    // Renaming into a read-only directory needs create rights there.
    assert_probe(
        &policy,
        &["rename", &ws.p("rw/file"), &ws.p("ro/moved")],
        "EACCES",
    );
    assert!(ws.path("outside/file").exists() && ws.path("ro/file").exists());
}

#[test]
fn special_files_cannot_be_created() {
    let ws = Workspace::new();
    let policy = ws.policy("");
    assert_probe(&policy, &["mkfifo", &ws.p("rw/fifo")], "EACCES");
    assert_probe(&policy, &["mknod_char", &ws.p("rw/null")], "EACCES");
}

#[test]
fn exec_outside_execute_paths_is_refused() {
    let ws = Workspace::new();
    let subprocesses = ws.policy("[process]\nsubprocesses = true\n");
    // /usr/bin is not granted execute, nor is a readable directory.
    assert_probe(&subprocesses, &["exec", "/usr/bin/true"], "EACCES");
    std::fs::copy("/usr/bin/true", ws.path("ro/true")).expect("copy");
    assert_probe(&subprocesses, &["exec", &ws.p("ro/true")], "EACCES");
    // Without subprocesses the same holds: exec is refused by Landlock, not only by seccomp.
    assert_probe(&ws.policy(""), &["exec", "/usr/bin/true"], "EACCES");
}

#[test]
fn execute_paths_grant_execution() {
    let policy = common::PolicyFile::new(
        &[],
        &[],
        "execute = [\"/usr/bin/true\"]\n[process]\nsubprocesses = true\n",
    );
    let run = common::probe(&policy, &["exec", "/usr/bin/true"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout, "",
        "execv replaced the probe with /usr/bin/true: {run:?}"
    );
}

/// `/proc` is the sandbox's private procfs (`hidepid=invisible`): other processes do not
/// exist there. tests/stdlib_compat.rs checks what it does show.
#[test]
fn host_proc_is_not_readable() {
    let ws = Workspace::new();
    let policy = ws.policy("");
    assert_probe(&policy, &["read", "/proc/1/environ"], "ENOENT");
    assert_probe(&policy, &["read", "/proc/1/cmdline"], "ENOENT");
    assert_probe(&policy, &["read", "/proc/sys/kernel/hostname"], "ENOENT");
}

/// A grant of `/` reaches the host's `/proc/PID` files (a rule cannot exclude a subtree), and a
/// symlink can make any path mean `/` or a procfs directory; `/sys` and `/dev` beyond the
/// baseline are kernel state and devices: all are refused before any exec.
#[test]
fn grants_that_reach_the_host_proc_are_refused() {
    let ws = Workspace::new();
    std::os::unix::fs::symlink("/", ws.path("to-root")).unwrap();
    std::os::unix::fs::symlink("/proc/1", ws.path("to-proc")).unwrap();
    for (read, write) in [
        (vec!["/".to_owned()], vec![]),
        (vec![ws.p("to-root")], vec![]),
        (vec![ws.p("to-proc")], vec![]),
        (vec![], vec![ws.p("to-root")]),
        (vec!["/sys/kernel".to_owned()], vec![]),
        (vec!["/dev".to_owned()], vec![]),
        (vec!["/dev/tty".to_owned()], vec![]),
        (vec![], vec!["/dev/shm".to_owned()]),
    ] {
        let read: Vec<&str> = read.iter().map(String::as_str).collect();
        let write: Vec<&str> = write.iter().map(String::as_str).collect();
        let policy = common::PolicyFile::new(&read, &write, "");
        let run = common::probe(&policy, &["read", "/proc/1/cmdline"]);
        assert_eq!(run.code, 125, "{read:?} {write:?}: {run:?}");
        assert!(
            run.stderr.contains("would grant the host's /proc"),
            "{run:?}"
        );
        assert_eq!(run.stdout, "", "nothing ran: {run:?}");
    }
}
