//! The standard library behaves in the sandbox as it does outside (issue 11, item 5), without
//! weakening isolation: `/dev/null` is writable but `/dev` is not; the program knows who it
//! is from a generated user database that holds none of the host's users; it reads its own
//! `/proc/self` but no other process exists there; xattr changes fail with `EOPNOTSUPP`.
//! Every case runs `tests/probes/stdlib_compat.py` under the real `plugbox exec`.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::{plugbox, probe, probes_dir, PolicyFile, Workspace, NOBODY, PYTHON};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The compat probe, copied beside `probe.py` (a directory every uid can read).
fn compat_script() -> PathBuf {
    let dst = probes_dir().join("stdlib_compat.py");
    if !dst.exists() {
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/probes/stdlib_compat.py");
        let tmp = probes_dir().join(format!(
            "stdlib_compat.{:?}.tmp",
            std::thread::current().id()
        ));
        std::fs::copy(src, &tmp).expect("copy stdlib_compat.py");
        std::fs::rename(&tmp, &dst).expect("rename");
    }
    dst
}

/// Runs one case of the compat probe under `policy`; returns its JSON verdict.
fn compat(policy: &PolicyFile, args: &[&str]) -> Value {
    let out = Command::new(plugbox())
        .args(["exec", "--policy"])
        .arg(policy.path())
        .args(["--", PYTHON, "-I", "-S"])
        .arg(compat_script())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run plugbox");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {stdout}\n{stderr}");
    let last = stdout.trim_end().lines().last().unwrap_or("");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}\n{stderr}"))
}

fn subprocess_policy(ws: &Workspace) -> PolicyFile {
    ws.policy("[process]\nsubprocesses = true\n")
}

#[test]
fn dev_null_and_dev_zero_are_writable_and_nothing_else_in_dev() {
    let ws = Workspace::new();
    let v = compat(&subprocess_policy(&ws), &["devices"]);
    assert_eq!(v["devnull_write"], "ok", "{v}");
    assert_eq!(v["devnull_rw"], "ok", "{v}");
    assert_eq!(v["devzero_write"], "ok", "{v}");
    assert_eq!(v["subprocess_devnull"], 0, "{v}");
    // Still read-only, or not granted at all.
    assert_eq!(v["urandom_write"], "EACCES", "{v}");
    assert_eq!(v["full_write"], "EACCES", "{v}");
    assert_eq!(v["dev_listdir"], "EACCES", "{v}");
    assert_eq!(v["dev_create"], "EACCES", "{v}");
}

fn host_names(path: &str) -> BTreeSet<String> {
    std::fs::read_to_string(path)
        .expect("read host file")
        .lines()
        .filter_map(|l| l.split(':').next())
        .filter(|n| !n.is_empty() && !n.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

fn names(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|n| n.as_str().expect("str").to_owned())
        .collect()
}

#[test]
fn the_user_database_names_the_sandbox_and_no_host_user() {
    let ws = Workspace::new();
    let before = std::fs::read("/etc/passwd").unwrap();
    let v = compat(&ws.policy(""), &["userdb"]);
    assert_eq!(v["name"], "nobody", "{v}");
    assert_eq!(v["getuser"], "nobody", "{v}");
    assert_eq!(v["group"], "nogroup", "{v}");
    // HOME and the database agree: absent, as Debian's nobody.
    assert_eq!(v["dir"], "/nonexistent", "{v}");
    assert_eq!(v["home"], "/nonexistent", "{v}");
    assert_eq!(v["expanduser"], "/nonexistent", "{v}");
    let allowed: BTreeSet<String> = ["root", "nobody"].map(str::to_owned).into();
    assert_eq!(names(&v["users"]), allowed, "{v}");
    let host = host_names("/etc/passwd");
    assert!(
        host.difference(&allowed).count() > 0,
        "the host lists other users, so hiding them means something: {host:?}"
    );
    let allowed_groups: BTreeSet<String> = ["root", "nogroup"].map(str::to_owned).into();
    assert_eq!(names(&v["groups"]), allowed_groups, "{v}");
    assert_eq!(v["passwd_write"], "EACCES", "{v}");
    assert_eq!(v["passwd_shadow"], "EACCES", "{v}");
    assert_eq!(std::fs::read("/etc/passwd").unwrap(), before);
}

#[test]
fn another_sandbox_identity_is_named_plugbox() {
    let ws = Workspace::new();
    let v = compat(
        &ws.policy("[process]\nuid = 4242\ngid = 4243\n"),
        &["userdb"],
    );
    assert_eq!(v["name"], "plugbox", "{v}");
    assert_eq!(v["group"], "plugbox", "{v}");
    let allowed: BTreeSet<String> = ["root", "plugbox", "nobody"].map(str::to_owned).into();
    assert_eq!(names(&v["users"]), allowed, "{v}");
}

/// A process of the sandbox's own uid outside any sandbox, killed on drop.
struct Sleeper(Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A second sandbox of the same uid, waiting on its stdin; returns it and its pid.
fn other_sandbox(policy: &PolicyFile) -> (Sleeper, String) {
    let mut child = Command::new(plugbox())
        .args(["exec", "--policy"])
        .arg(policy.path())
        .args(["--", PYTHON, "-I", "-S", "-c"])
        .arg("import os, sys; print(os.getpid(), flush=True); sys.stdin.read()")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("pid line");
    (Sleeper(child), line.trim().to_owned())
}

#[test]
fn own_proc_self_is_readable_and_no_other_process_exists() {
    let ws = Workspace::new();
    let policy = subprocess_policy(&ws);
    let host_same_uid = Sleeper(
        Command::new("/usr/bin/sleep")
            .arg("60")
            .uid(NOBODY)
            .gid(NOBODY)
            .spawn()
            .expect("sleep"),
    );
    let (_sandbox, sandbox_pid) = other_sandbox(&policy);
    let host_pid = host_same_uid.0.id().to_string();
    let me = std::process::id().to_string();
    let v = compat(&policy, &["proc", "1", &me, &host_pid, &sandbox_pid]);
    let pid = v["pid"].as_u64().unwrap();
    let expected: BTreeSet<String> =
        ["self".to_owned(), "thread-self".to_owned(), pid.to_string()].into();
    assert_eq!(names(&v["listing"]), expected, "{v}");
    assert_eq!(v["self_status_pid"], pid, "{v}");
    assert_eq!(v["thread_self_status_pid"], pid, "{v}");
    assert_eq!(v["fds"], serde_json::json!([0, 1, 2, 3]), "{v}");
    assert_eq!(v["maps_has_python"], true, "{v}");
    assert_eq!(v["cmdline"], "-I", "{v}");
    assert_eq!(v["child_sees_itself"], true, "{v}");
    // Read-only (a read-only mount): its own procfs files cannot be written either.
    assert_eq!(v["oom_write"], "EROFS", "{v}");
    // init, the host test process, a host process of the same uid, another sandbox of the
    // same uid: none exists in this /proc.
    for other in ["1", &me, &host_pid, &sandbox_pid] {
        assert_eq!(v["others"][other], "ENOENT", "{other}: {v}");
    }
    assert_eq!(v["meminfo"], "ENOENT", "{v}");
    assert_eq!(v["sys"], "ENOENT", "{v}");
}

/// Python names errno 95 `ENOTSUP` (on Linux `EOPNOTSUPP` is the same number).
#[test]
fn xattr_changes_fail_with_eopnotsupp_unless_granted() {
    let ws = Workspace::new();
    let status = Command::new(PYTHON)
        .args([
            "-c",
            "import os, sys; os.setxattr(sys.argv[1], 'user.copied', b'v')",
        ])
        .arg(ws.path("ro/file"))
        .status()
        .expect("host setxattr");
    assert!(status.success());
    let v = compat(&ws.policy(""), &["xattr", &ws.p("rw"), &ws.p("ro/file")]);
    for call in [
        "setxattr",
        "lsetxattr",
        "fsetxattr",
        "removexattr",
        "fremovexattr",
        "setxattr_readonly",
        "setxattrat",
        "removexattrat",
    ] {
        assert_eq!(v[call], "ENOTSUP", "{call}: {v}");
    }
    assert_eq!(v["getxattr"], "ok", "{v}");
    // shutil.copy2 copies what it can and skips the attributes, as on a filesystem
    // without xattr support.
    assert_eq!(v["copy2_of_xattr_file"], "ok", "{v}");
    assert!(ws.path("rw/copy").exists());

    let granted = compat(
        &ws.policy("[syscalls]\nallow = [\"@xattr-write\"]\n"),
        &["xattr", &ws.p("rw"), &ws.p("ro/file")],
    );
    assert_eq!(granted["setxattr"], "ok", "{granted}");
    assert_eq!(granted["removexattr"], "ok", "{granted}");
}

#[test]
fn without_a_write_path_xattr_changes_also_fail_with_eopnotsupp() {
    let ws = Workspace::new();
    let policy = PolicyFile::new(
        &[&ws.p("ro")],
        &[],
        "[syscalls]\nallow = [\"@xattr-write\"]\n",
    );
    for nr in [
        libc::SYS_setxattr,
        libc::SYS_fsetxattr,
        libc::SYS_removexattr,
    ] {
        let run = probe(
            &policy,
            &["syscall", &nr.to_string(), "0", "0", "0", "0", "0"],
        );
        assert_eq!(run.verdict(), "ENOTSUP", "{nr}: {run:?}");
    }
}

#[test]
fn mimetypes_guesses_types_as_outside() {
    let out = Command::new(plugbox())
        .args(["exec", "--policy"])
        .arg(PolicyFile::raw("schema = 1").path())
        .args(["--", PYTHON, "-I", "-S", "-c"])
        .arg("import mimetypes; print(mimetypes.guess_type('a.png')[0], mimetypes.guess_type('b.tar.gz'))")
        .stdin(Stdio::null())
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout.trim(),
        "image/png ('application/x-tar', 'gzip')",
        "{out:?}"
    );
}

#[test]
fn the_report_says_the_private_view_is_enabled() {
    let ws = Workspace::new();
    let report = ws.path("rw/report.json");
    let out = Command::new(plugbox())
        .args(["exec", "--policy"])
        .arg(ws.policy("").path())
        .arg("--report-json")
        .arg(&report)
        .args(["--", PYTHON, "-I", "-S", "-c", "pass"])
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(report["private_view"], "enabled");
}

/// Under the engine each instance spawns with a uid of its own from one preparation: each
/// sees its own name, and only its own identity besides root and nobody.
#[test]
fn each_per_spawn_identity_sees_its_own_entry() {
    use plugbox::policy::Policy;
    use plugbox::sandbox::{spawn, Environment, Prepared, SpawnRequest};
    common::require_root();
    let prepared =
        Prepared::new(Policy::strictest(), std::ffi::OsStr::new(PYTHON), None).expect("prepare");
    let script = "import os, pwd; print(os.getuid(), pwd.getpwuid(os.getuid()).pw_name, \
                  sorted(p.pw_uid for p in pwd.getpwall()))";
    for uid in [4301u32, 4302, 4301] {
        let child = spawn(
            &prepared,
            SpawnRequest {
                args: vec!["-I".into(), "-S".into(), "-c".into(), script.into()],
                env: Environment::clean(),
                stdin: Stdio::null(),
                stdout: Stdio::piped(),
                stderr: Stdio::piped(),
                keep_fd: None,
                ids: Some((uid, uid)),
            },
        )
        .expect("spawn");
        let out = child.child.wait_with_output().expect("wait");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{uid} plugbox [0, {uid}, 65534]\n"),
            "{out:?}"
        );
    }
}

/// Without `@chown`, giving a file away is "not permitted" (`EPERM`), with or without a write
/// path, as for an unprivileged user outside: not the `ENOSYS` of an unknown syscall.
#[test]
fn chown_without_the_group_fails_with_eperm() {
    let ws = Workspace::new();
    let own = ws.path("rw/file").display().to_string();
    for policy in [ws.policy(""), PolicyFile::new(&[&ws.p("ro")], &[], "")] {
        for nr in [libc::SYS_chown, libc::SYS_lchown, libc::SYS_fchownat] {
            let run = probe(&policy, &["syscall", &nr.to_string(), "0", "0", "0", "0"]);
            assert_eq!(run.verdict(), "EPERM", "{nr}: {run:?}");
        }
    }
    let owner = std::fs::metadata(&own).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&owner), NOBODY);
}
