//! `plugbox exec` of a virtual environment's interpreter: the command runs through the path
//! given, so CPython finds `pyvenv.cfg` and the environment's packages (numpy, from the
//! package index) import; the sandbox reads the environment but never writes it, and the
//! enforcement report names it.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::{plugbox, require_root, PolicyFile, Run, PYTHON};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// One venv with numpy for this test binary: `/usr/bin/python3 -m venv`, then pip from the
/// base interpreter (wheels only). World-readable, so the sandbox uid can reach it, and its
/// site-packages world-writable, so that only Landlock can refuse a write there.
fn numpy_venv() -> &'static Path {
    static VENV: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &VENV
        .get_or_init(|| {
            require_root();
            let dir = tempfile::Builder::new()
                .prefix("plugbox-exec-venv-")
                .tempdir()
                .expect("tempdir");
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
            let venv = dir.path().join("venv");
            run_ok(
                Command::new(PYTHON)
                    .args(["-m", "venv", "--without-pip"])
                    .arg(&venv),
            );
            run_ok(
                Command::new(PYTHON)
                    .args(["-m", "pip", "--python"])
                    .arg(venv.join("bin/python"))
                    .args(["install", "-q", "--only-binary=:all:", "numpy"]),
            );
            let site = site_packages(&venv);
            std::fs::set_permissions(&site, std::fs::Permissions::from_mode(0o777)).expect("chmod");
            (dir, venv)
        })
        .1
}

fn site_packages(venv: &Path) -> PathBuf {
    let lib = venv.join("lib");
    let version = std::fs::read_dir(&lib).unwrap().next().unwrap().unwrap();
    version.path().join("site-packages")
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.stdin(Stdio::null()).output().expect("spawn");
    assert!(out.status.success(), "{cmd:?}: {out:?}");
}

fn exec(policy: &PolicyFile, report: Option<&Path>, argv: &[&str]) -> Run {
    let mut cmd = Command::new(plugbox());
    cmd.args(["exec", "--policy"]).arg(policy.path());
    if let Some(report) = report {
        cmd.arg("--report-json").arg(report);
    }
    cmd.arg("--").args(argv).stdin(Stdio::null());
    cmd.output().expect("run").into()
}

#[test]
fn a_venv_interpreter_imports_its_packages_under_a_baseline_policy() {
    let venv = numpy_venv();
    let python = venv.join("bin/python");
    let report = tempfile::NamedTempFile::new().unwrap();
    let run = exec(
        &PolicyFile::raw("schema = 1"),
        Some(report.path()),
        &[
            python.to_str().unwrap(),
            "-c",
            "import sys, numpy; print(sys.prefix == sys.base_prefix, int(numpy.arange(10).sum()))",
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout.trim(), "False 45", "{run:?}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.path()).unwrap()).unwrap();
    let env = &report["python_environment"];
    let root = venv.canonicalize().unwrap();
    assert_eq!(env["route"], "interpreter", "{report:#}");
    assert_eq!(env["root"], root.to_str().unwrap());
    assert_eq!(env["interpreter"], python.to_str().unwrap());
    assert_eq!(env["granted_read"][0], root.to_str().unwrap());
    // Executed through the venv's path; execute granted on the real interpreter only.
    assert_eq!(report["command"], python.to_str().unwrap());
    let real = python.canonicalize().unwrap();
    assert!(report["executables"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == real.to_str().unwrap()));
}

#[test]
fn a_policy_granting_read_on_the_venv_works_too() {
    let venv = numpy_venv();
    let policy = PolicyFile::new(&[venv.to_str().unwrap()], &[], "");
    let python = venv.join("bin/python");
    let run = exec(
        &policy,
        None,
        &[
            python.to_str().unwrap(),
            "-c",
            "import numpy; print(numpy.__name__)",
        ],
    );
    assert_eq!((run.code, run.stdout.trim()), (0, "numpy"), "{run:?}");
}

#[test]
fn the_venv_is_read_only_in_the_sandbox() {
    let venv = numpy_venv();
    let site = site_packages(venv);
    let target = site.join("planted.py");
    let python = venv.join("bin/python");
    let script = format!(
        "import errno\ntry:\n    open({:?}, 'w')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])\nelse:\n    print('written')",
        target.to_str().unwrap()
    );
    let run = exec(
        &PolicyFile::raw("schema = 1"),
        None,
        &[python.to_str().unwrap(), "-c", &script],
    );
    assert_eq!((run.code, run.stdout.trim()), (0, "EACCES"), "{run:?}");
    assert!(!target.exists());
}

#[test]
fn the_base_interpreter_is_no_environment() {
    let report = tempfile::NamedTempFile::new().unwrap();
    let run = exec(
        &PolicyFile::raw("schema = 1"),
        Some(report.path()),
        &[PYTHON, "-I", "-S", "-c", "pass"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.path()).unwrap()).unwrap();
    assert!(report.get("python_environment").is_none(), "{report:#}");
}
