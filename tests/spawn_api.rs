//! The library spawn path: a failing confinement step aborts the exec and names itself.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use plugbox::policy::Policy;
use plugbox::sandbox::child::Step;
use plugbox::sandbox::{spawn, Environment, Prepared, SpawnError, SpawnRequest};
use std::ffi::OsStr;
use std::process::Stdio;

fn request(keep_fd: Option<i32>) -> SpawnRequest {
    SpawnRequest {
        args: vec!["-I".into(), "-S".into(), "-c".into(), "print('ran')".into()],
        env: Environment::clean(),
        stdin: Stdio::null(),
        stdout: Stdio::piped(),
        stderr: Stdio::piped(),
        keep_fd,
        ids: None,
    }
}

#[test]
fn a_failed_step_never_execs_and_names_the_step() {
    let prepared =
        Prepared::new(Policy::strictest(), OsStr::new("/usr/bin/python3"), None).expect("prepare");
    // fd 999 is not open: the KeepChannel step fails with EBADF before anything runs.
    match spawn(&prepared, request(Some(999))) {
        Err(SpawnError::Step { step, source }) => {
            assert_eq!(step, Step::KeepChannel);
            assert_eq!(source.raw_os_error(), Some(libc::EBADF));
        }
        other => panic!("expected a step failure, got {other:?}"),
    }
}

#[test]
fn one_preparation_serves_many_spawns() {
    let prepared =
        Prepared::new(Policy::strictest(), OsStr::new("/usr/bin/python3"), None).expect("prepare");
    for _ in 0..3 {
        let child = spawn(&prepared, request(None)).expect("spawn");
        let out = child.child.wait_with_output().expect("wait");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ran\n");
    }
}
