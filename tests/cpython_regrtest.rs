//! CPython's own regression tests, for a chosen set of standard library modules, pass under
//! `plugbox exec` with a policy granting one scratch directory read-write and subprocesses
//! (the standard library is in the baseline, read-only). The set is chosen to finish in
//! seconds and to cover what once broke in the sandbox: `/dev/null`, the user database,
//! `/proc/self`, xattr probing, subprocesses. `tests/cpython/run.sh` runs the full list, bare
//! and sandboxed, and prints the result per module.
//!
//! Needs Debian's `libpython3.11-testsuite` (`.ci/setup` installs it): without it this test
//! fails, it does not skip.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::{plugbox, PolicyFile, NOBODY, PYTHON};
use std::os::unix::fs::{chown, PermissionsExt};
use std::process::{Command, Stdio};

/// Fast modules (a few seconds in all on 2 cores) that exercise the fixed behaviours.
const MODULES: &[&str] = &[
    "test_pwd",
    "test_getpass",
    "test_posixpath",
    "test_tempfile",
    "test_shutil",
    "test_fileinput",
    "test_glob",
    "test_tarfile",
    "test_os",
    "test_json",
];

/// Tests in [`MODULES`] that need a permission the policy withholds, with the reason. They
/// are run apart and must fail fast (no hang), never pass silently into the main run.
const WITHHELD: &[(&str, &str)] = &[
    (
        "*test_chown_uid_gid_arguments_must_be_index",
        "chown (no @chown): EPERM",
    ),
    (
        "*TestInvalidFD.test_fchown",
        "chown (no @chown): EPERM, not EBADF",
    ),
    ("*TestMisc.test_chown", "chown (no @chown): EPERM"),
    ("*test_openpty", "/dev/ptmx is not granted: EACCES"),
    ("*test_memfd_create", "memfd_create is never allowed: EPERM"),
    (
        "*Pep383Tests.test_listdir",
        "listing / is not granted: EACCES",
    ),
    ("*test_setreuid_neg1", "setreuid is never allowed: EPERM"),
    ("*test_setregid_neg1", "setregid is never allowed: EPERM"),
    (
        "*test_set_get_priority",
        "setpriority on a pid other than 0: EPERM",
    ),
    ("*TestSendfile.*", "no network: socket() fails with EPERM"),
];

const TESTSUITE: &str = "/usr/lib/python3.11/test/libregrtest";

/// A scratch directory owned by the sandbox uid, and the policy granting it.
fn scratch_and_policy() -> (tempfile::TempDir, PolicyFile) {
    let scratch = tempfile::Builder::new()
        .prefix("plugbox-regrtest-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    chown(scratch.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    let dir = scratch.path().display().to_string();
    let policy = PolicyFile::raw(&format!(
        "schema = 1\n\
         [filesystem]\nwrite = [{dir:?}]\nexecute = [\"/usr/bin\"]\n\
         [process]\nsubprocesses = true\nmax_threads = 256\n\
         [limits]\nmemory_mib = 2048\ncpu_seconds = 300\nwall_seconds = 300\n\
         open_files = 1024\nfile_size_mib = 64\n"
    ));
    (scratch, policy)
}

/// `python3 -m test -W ARGS...` under `plugbox exec`: exit code, stdout and stderr.
fn regrtest(args: &[String]) -> (Option<i32>, String) {
    let (scratch, policy) = scratch_and_policy();
    let out = Command::new(plugbox())
        .args(["exec", "--policy"])
        .arg(policy.path())
        .arg("--env")
        .arg(format!("TMPDIR={}", scratch.path().display()))
        .args(["--", PYTHON, "-m", "test", "-W"])
        .args(args)
        .current_dir(scratch.path())
        .stdin(Stdio::null())
        .output()
        .expect("run plugbox");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

fn require_testsuite() {
    common::require_root();
    assert!(
        std::path::Path::new(TESTSUITE).is_dir(),
        "{TESTSUITE} is missing: CPython's test suite (Debian's libpython3.11-testsuite) is \
         needed; run .ci/setup"
    );
}

#[test]
fn cpython_regression_tests_pass_in_the_sandbox() {
    require_testsuite();
    let mut args: Vec<String> = Vec::new();
    for (pattern, _) in WITHHELD {
        args.extend(["--ignore".to_owned(), (*pattern).to_owned()]);
    }
    args.extend(MODULES.iter().map(|m| (*m).to_owned()));
    let (code, text) = regrtest(&args);
    assert_eq!(
        code,
        Some(0),
        "CPython regression tests failed in the sandbox:\n{text}"
    );
    assert!(text.contains("Tests result: SUCCESS"), "{text}");
}

/// The tests needing a withheld permission fail, each of them, and fast: the run ends with
/// regrtest's "tests failed" status, not killed by the wall-clock budget.
#[test]
fn tests_needing_a_withheld_permission_fail_fast() {
    require_testsuite();
    let mut args: Vec<String> = Vec::new();
    for (pattern, _) in WITHHELD {
        args.extend(["--match".to_owned(), (*pattern).to_owned()]);
    }
    args.extend(["test_os".to_owned(), "test_shutil".to_owned()]);
    let (code, text) = regrtest(&args);
    assert_eq!(
        code,
        Some(2),
        "expected failures, not a hang or a kill:\n{text}"
    );
    let failed = text
        .lines()
        .filter(|l| l.starts_with("ERROR: ") || l.starts_with("FAIL: "))
        .count();
    assert_eq!(failed, 14, "{text}");
}
