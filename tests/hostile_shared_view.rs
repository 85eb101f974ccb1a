//! The private view (`/proc`, `/etc/passwd`, `/etc/group`) is built once per host process and
//! shared by every preparation: a sandbox must still see nothing of another preparation's
//! sandboxes, whether they run as the same uid or as another.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use plugbox::policy::Policy;
use plugbox::sandbox::{spawn, Environment, Prepared, Sandboxed, SpawnRequest};
use std::ffi::OsStr;
use std::io::Read;
use std::process::Stdio;

const PYTHON: &str = "/usr/bin/python3";

/// Prints the generated user database and what `/proc` shows, then tries to read `victim`'s
/// status file and prints the errno name (or `READ`).
const SPY: &str = r#"
import sys, errno
print(open("/etc/passwd").read().strip().replace("\n", "|"))
print(sorted(e for e in __import__("posix").listdir("/proc") if e.isdigit()))
try:
    open(f"/proc/{sys.argv[1]}/status").read()
    print("READ")
except OSError as e:
    print(errno.errorcode[e.errno])
"#;

/// Waits, holding its identity's files mounted, until its stdin closes.
const VICTIM: &str = "import sys; print('up', flush=True); sys.stdin.read()";

fn request(code: &str, arg: &str, ids: (u32, u32)) -> SpawnRequest {
    SpawnRequest {
        args: ["-I", "-S", "-c", code, arg]
            .iter()
            .map(Into::into)
            .collect(),
        env: Environment::clean(),
        stdin: Stdio::piped(),
        stdout: Stdio::piped(),
        stderr: Stdio::inherit(),
        keep_fd: None,
        ids: Some(ids),
    }
}

/// Two preparations of different policies (so nothing but the process-wide view is shared).
fn two_preparations() -> (Prepared, Prepared) {
    let other_policy = Policy::strictest().with_read_paths([std::env::temp_dir()]);
    let a = Prepared::new(Policy::strictest(), OsStr::new(PYTHON), None).expect("prepare a");
    let b = Prepared::new(other_policy, OsStr::new(PYTHON), None).expect("prepare b");
    (a, b)
}

/// Starts the victim and waits for it to say it runs (its view is attached by then).
fn start_victim(prepared: &Prepared, ids: (u32, u32)) -> Sandboxed {
    let mut victim = spawn(prepared, request(VICTIM, "", ids)).expect("spawn victim");
    let mut up = [0u8; 3];
    victim
        .child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut up)
        .unwrap();
    assert_eq!(&up, b"up\n");
    victim
}

fn spy(prepared: &Prepared, victim: libc::pid_t, ids: (u32, u32)) -> Vec<String> {
    let child = spawn(prepared, request(SPY, &victim.to_string(), ids)).expect("spawn spy");
    let out = child.child.wait_with_output().expect("wait");
    assert!(out.status.success(), "spy failed: {:?}", out.status);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn root() -> bool {
    if plugbox::sys::geteuid() != 0 {
        eprintln!("skipped: the private view needs a root host");
        return false;
    }
    true
}

#[test]
fn a_sandbox_of_another_preparation_is_invisible_even_with_the_same_uid() {
    if !root() {
        return;
    }
    let (a, b) = two_preparations();
    let ids = (1_900_047_001, 1_900_047_001);
    let mut victim = start_victim(&b, ids);
    let lines = spy(&a, victim.pid, ids);
    drop(victim.child.stdin.take());
    victim.child.wait().unwrap();
    assert_eq!(
        lines[2], "ENOENT",
        "the other sandbox's /proc entry: {lines:?}"
    );
    assert!(
        !lines[1].contains(&victim.pid.to_string()),
        "listed: {lines:?}"
    );
}

#[test]
fn each_identity_sees_its_own_user_database_only() {
    if !root() {
        return;
    }
    let (a, b) = two_preparations();
    let (mine, theirs) = (
        (1_900_047_002, 1_900_047_002),
        (1_900_047_003, 1_900_047_003),
    );
    let mut victim = start_victim(&b, theirs);
    let lines = spy(&a, victim.pid, mine);
    drop(victim.child.stdin.take());
    victim.child.wait().unwrap();
    assert!(lines[0].contains(":1900047002:"), "passwd: {}", lines[0]);
    assert!(!lines[0].contains("1900047003"), "passwd: {}", lines[0]);
    assert_eq!(lines[2], "ENOENT", "{lines:?}");
}
