//! The `plugbox exec` contract: exit codes, one-line errors naming the layer, the report.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::{plugbox, PolicyFile, Run, Workspace, PYTHON};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

fn exec(policy: &PolicyFile, argv: &[&str]) -> Run {
    Command::new(plugbox())
        .args(["exec", "--policy"])
        .arg(policy.path())
        .arg("--")
        .args(argv)
        .stdin(Stdio::null())
        .output()
        .expect("run")
        .into()
}

#[track_caller]
fn assert_engine_error(run: &Run, starts_with: &str) {
    assert_eq!(run.code, 125, "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "one line on stderr: {run:?}");
    assert!(
        run.stderr.starts_with(starts_with),
        "expected {starts_with:?}: {run:?}"
    );
}

#[test]
fn exit_status_is_the_commands_own() {
    let policy = PolicyFile::raw("schema = 1");
    assert_eq!(
        exec(&policy, &[PYTHON, "-I", "-S", "-c", "raise SystemExit(7)"]).code,
        7
    );
    assert_eq!(exec(&policy, &[PYTHON, "-I", "-S", "-c", "pass"]).code, 0);
    let killed = exec(
        &policy,
        &[
            PYTHON,
            "-I",
            "-S",
            "-c",
            "import os; os.kill(os.getpid(), 15)",
        ],
    );
    assert_eq!(killed.code, 128 + 15, "{killed:?}");
}

#[test]
fn stdio_passes_through() {
    let policy = PolicyFile::raw("schema = 1");
    let mut child = Command::new(plugbox())
        .args(["exec", "--policy"])
        .arg(policy.path())
        .args(["--", PYTHON, "-I", "-S", "-c"])
        .arg("import sys; d = sys.stdin.read(); print(d.upper()); print('err', file=sys.stderr)")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"hello")
        .expect("write");
    let run: Run = child.wait_with_output().expect("wait").into();
    assert_eq!(
        (run.code, run.stdout.as_str(), run.stderr.as_str()),
        (0, "HELLO\n", "err\n")
    );
}

#[test]
fn commands_are_resolved_through_path() {
    let policy = PolicyFile::raw("schema = 1");
    let run: Run = Command::new(plugbox())
        .args(["exec", "--policy"])
        .arg(policy.path())
        .args([
            "--",
            "python3.11",
            "-I",
            "-S",
            "-c",
            "import sys; print(sys.executable)",
        ])
        .env("PATH", "/usr/bin")
        .output()
        .expect("run")
        .into();
    assert_eq!(
        (run.code, run.stdout.trim()),
        (0, "/usr/bin/python3.11"),
        "{run:?}"
    );
    let missing = exec(&policy, &["no-such-program-xyz"]);
    assert_engine_error(
        &missing,
        "plugbox: command: \"no-such-program-xyz\" not found on PATH",
    );
}

#[test]
fn bad_policies_exit_125_naming_the_field() {
    let unknown = exec(
        &PolicyFile::raw("schema = 1\n[limits]\nram = 1\n"),
        &[PYTHON],
    );
    assert_engine_error(&unknown, "plugbox: policy: ");
    assert!(
        unknown.stderr.contains("unknown field `ram`"),
        "{unknown:?}"
    );
    let root = exec(
        &PolicyFile::raw("schema = 1\n[process]\nuid = 0\n"),
        &[PYTHON],
    );
    assert_engine_error(&root, "plugbox: policy: process.uid: 0 is root");
    let missing = exec(
        &PolicyFile::raw("schema = 1\n[filesystem]\nread = [\"/nonexistent/dir\"]\n"),
        &[PYTHON],
    );
    assert_engine_error(
        &missing,
        "plugbox: landlock: filesystem.read[0]: cannot open /nonexistent/dir",
    );
    let no_file: Run = Command::new(plugbox())
        .args(["exec", "--policy", "/nonexistent.toml", "--", PYTHON])
        .output()
        .expect("run")
        .into();
    assert_engine_error(&no_file, "plugbox: policy: cannot read /nonexistent.toml");
}

#[test]
fn an_interpreter_the_sandbox_uid_cannot_reach_is_a_clear_error() {
    // Like a pyenv shim under /root: a script in a directory only root may enter.
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let shim = dir.path().join("python3");
    std::fs::write(&shim, "#!/usr/bin/env bash\nexec /usr/bin/python3 \"$@\"\n").expect("write");
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let run: Run = Command::new(plugbox())
        .args(["exec", "--policy"])
        .arg(PolicyFile::raw("schema = 1").path())
        .args(["--", "python3", "-c", "pass"])
        .env("PATH", dir.path())
        .output()
        .expect("run")
        .into();
    assert_engine_error(&run, "plugbox: command: ");
    assert!(
        run.stderr.contains("is not reachable by sandbox uid 65534"),
        "{run:?}"
    );
    assert!(
        run.stderr
            .contains(&format!("{} (mode 700)", dir.path().display())),
        "{run:?}"
    );
}

#[test]
fn the_enforcement_report_says_what_was_applied() {
    let ws = Workspace::new();
    let policy = ws.policy("[network]\nconnect_tcp = [443]\n");
    let report_path = ws.path("report.json");
    let run: Run = Command::new(plugbox())
        .args(["exec", "--policy"])
        .arg(policy.path())
        .arg("--report-json")
        .arg(&report_path)
        .args(["--", PYTHON, "-I", "-S", "-c", "pass"])
        .output()
        .expect("run")
        .into();
    assert_eq!(run.code, 0, "{run:?}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).expect("read")).expect("json");
    assert_eq!(report["landlock"]["kernel_abi"], 7);
    assert_eq!(report["landlock"]["enforced_abi"], 7);
    assert_eq!(report["landlock"]["status"], "fully_enforced");
    assert_eq!(
        report["landlock"]["scoped"],
        serde_json::json!(["AbstractUnixSocket", "Signal"])
    );
    assert_eq!(report["landlock"]["connect_tcp"], serde_json::json!([443]));
    assert_eq!(report["seccomp"]["sha256"].as_str().map(str::len), Some(64));
    assert!(report["seccomp"]["instructions"].as_u64().unwrap_or(0) > 100);
    assert_eq!(report["seccomp"]["default_action"], "errno(ENOSYS)");
    assert_eq!(
        (report["uid"].as_u64(), report["gid"].as_u64()),
        (Some(65534), Some(65534))
    );
    assert_eq!(report["no_new_privs"], true);
    assert_eq!(report["capabilities"]["bounding_set_dropped"], true);
    assert_eq!(report["capabilities"]["effective"], serde_json::json!([]));
    let rlimits = report["rlimits"].as_array().expect("rlimits");
    assert!(rlimits
        .iter()
        .any(|r| r["resource"] == "RLIMIT_AS" && r["soft"] == 512u64 << 20));
    let executables = report["executables"].as_array().expect("executables");
    assert_eq!(executables[0], "/usr/bin/python3.11");
    assert!(
        executables[1].as_str().unwrap_or("").contains("ld-linux"),
        "{executables:?}"
    );
}

#[test]
fn probe_reports_this_kernel() {
    let run: Run = Command::new(plugbox())
        .args(["probe", "--json"])
        .output()
        .expect("run")
        .into();
    assert_eq!(run.code, 0, "{run:?}");
    let features: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    let landlock = features
        .as_array()
        .expect("list")
        .iter()
        .find(|f| f["name"] == "landlock")
        .expect("landlock");
    assert_eq!(landlock["available"], true);
    assert!(
        landlock["detail"]
            .as_str()
            .unwrap_or("")
            .starts_with("kernel ABI 7"),
        "{landlock}"
    );
}
