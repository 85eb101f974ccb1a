//! File metadata, which Landlock does not cover: setuid/setgid bits are refused everywhere, and
//! without a write grant no mode, owner, time or attribute changes at all (issue 9, finding 12).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::{assert_probe, probe, PolicyFile, Workspace, NOBODY};
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};

fn mode(ws: &Workspace, rel: &str) -> u32 {
    std::fs::metadata(ws.path(rel)).expect("stat").mode() & 0o7777
}

#[test]
fn setuid_and_setgid_bits_are_refused_in_a_write_grant() {
    let ws = Workspace::new();
    let policy = ws.policy("");
    let file = ws.p("rw/file");
    let before = mode(&ws, "rw/file");
    for m in ["4755", "2755", "6777"] {
        assert_probe(&policy, &["chmod", &file, m], "EPERM");
        assert_probe(&policy, &["fchmod", &file, m], "EPERM");
    }
    assert_eq!(mode(&ws, "rw/file"), before, "the mode is untouched");
    for (case, rel) in [
        ("create_mode", "rw/suid"),
        ("mkdir_mode", "rw/sgid-dir"),
        ("mkfifo_mode", "rw/suid-fifo"),
    ] {
        assert_probe(&policy, &[case, &ws.p(rel), "4755"], "EPERM");
        assert_probe(&policy, &[case, &ws.p(rel), "2755"], "EPERM");
        assert!(!ws.path(rel).exists(), "{rel} was not created");
    }
    assert_probe(&policy, &["tmpfile_mode", &ws.p("rw"), "4755"], "EPERM");
}

#[test]
fn ordinary_modes_and_copies_keep_working_in_a_write_grant() {
    let ws = Workspace::new();
    let policy = ws.policy("");
    assert_probe(&policy, &["chmod", &ws.p("rw/file"), "600"], "ok");
    assert_eq!(mode(&ws, "rw/file"), 0o600);
    assert_probe(&policy, &["create_mode", &ws.p("rw/new"), "755"], "ok");
    assert_probe(&policy, &["mkdir_mode", &ws.p("rw/dir"), "750"], "ok");
    assert_probe(&policy, &["utime", &ws.p("rw/file")], "ok");
    // shutil.copy copies the bytes, then the mode bits (chmod by path).
    assert_probe(&policy, &["copy", &ws.p("ro/file"), &ws.p("rw/copy")], "ok");
    assert_eq!(std::fs::read(ws.path("rw/copy")).unwrap(), b"data\n");
    assert_eq!(mode(&ws, "rw/copy"), 0o666);
}

#[test]
fn without_a_write_grant_owned_files_keep_their_metadata() {
    let ws = Workspace::new();
    // A read-only grant on files the sandbox uid owns: only seccomp can refuse here.
    let owned = ws.path("outside/file");
    chown(&owned, Some(NOBODY), Some(NOBODY)).unwrap();
    let before = std::fs::metadata(&owned).unwrap();
    let policy = PolicyFile::new(&[&ws.p("outside")], &[], "");
    let path = owned.display().to_string();
    assert_probe(&policy, &["read", &path], "ok");
    assert_probe(&policy, &["chmod", &path, "600"], "EPERM");
    assert_probe(&policy, &["chmod", &path, "4777"], "EPERM");
    assert_probe(&policy, &["fchmod", &path, "600"], "EPERM");
    assert_probe(&policy, &["utime", &path], "EPERM");
    let after = std::fs::metadata(&owned).unwrap();
    assert_eq!(after.permissions().mode(), before.permissions().mode());
    assert_eq!(after.mtime(), before.mtime());
    assert_eq!(after.mtime_nsec(), before.mtime_nsec());
}

#[test]
fn openat2_is_not_available() {
    let ws = Workspace::new();
    let run = probe(
        &ws.policy(""),
        &[
            "syscall",
            &libc::SYS_openat2.to_string(),
            "-100",
            "0",
            "0",
            "0",
        ],
    );
    assert_eq!(run.verdict(), "ENOSYS", "{run:?}");
}
