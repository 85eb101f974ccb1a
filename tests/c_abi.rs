//! The C ABI end to end: the C++ document editor (`examples/cpp/editor.cpp`) and the C
//! thread test (`tests/c/threads.c`) are compiled with g++ and gcc against the
//! `libplugbox.so` this test build produced, and run as real hosts of real sandboxed plugins.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The directory of the `libplugbox.so` built with this test: `target/<profile>/deps`, beside
/// this test binary (cargo builds the library's cdylib there for tests; `cargo build` also
/// copies it up to `target/<profile>`).
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let deps = exe.parent().expect("deps dir").to_owned();
    for dir in [deps.clone(), deps.parent().expect("profile dir").to_owned()] {
        if dir.join("libplugbox.so").is_file() {
            return dir;
        }
    }
    panic!("no libplugbox.so beside {}", exe.display());
}

/// Compiles `source` with `compiler` and `flags` against libplugbox into `out`.
fn compile(compiler: &str, flags: &[&str], source: &Path, out: &Path) {
    let lib = lib_dir();
    let status = Command::new(compiler)
        .args(flags)
        .args(["-Wall", "-Wextra", "-Werror", "-I"])
        .arg(root().join("include"))
        .arg(source)
        .arg("-L")
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(["-lplugbox", "-o"])
        .arg(out)
        .status()
        .unwrap_or_else(|e| panic!("{compiler}: {e} (is it installed? .ci/setup installs it)"));
    assert!(
        status.success(),
        "{compiler} failed on {}",
        source.display()
    );
}

/// Runs a host program, failing (not hanging) if it takes longer than two minutes.
fn run(program: &Path, args: &[&Path]) -> Output {
    let child = Command::new("timeout")
        .arg("120")
        .arg(program)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn host");
    child.wait_with_output().expect("host output")
}

fn require_root() {
    assert_eq!(
        plugbox::sys::geteuid(),
        0,
        "the C ABI tests load sandboxed plugins under uids of their own: run as root, as CI does"
    );
}

#[test]
fn the_cpp_editor_builds_runs_and_leaves_a_verified_audit_log() {
    require_root();
    let work = tempfile::tempdir().expect("tmp");
    let editor = work.path().join("editor");
    compile(
        "g++",
        &["-std=c++17"],
        &root().join("examples/cpp/editor.cpp"),
        &editor,
    );
    let state = work.path().join("run");
    std::fs::create_dir(&state).unwrap();
    let out = run(&editor, &[&root().join("examples/plugins"), &state]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "editor failed:\n{stdout}\n{stderr}");
    let line = |prefix: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} in:\n{stdout}"))
            .to_owned()
    };
    let count = line("word-count.count -> ");
    for field in ["\"words\":9", "\"lines\":2", "\"chars\":43"] {
        assert!(count.contains(field), "{count}");
    }
    assert!(line("loaded ").contains("\"name\":\"title-case\""));
    assert_eq!(line("title-case.apply -> "), "title-case.apply -> 9");
    assert!(stdout.contains("  (document rewritten by title-case)\n"));
    assert!(stdout.contains("document:\nThe Quick Brown Fox\nJumps Over The Lazy Dog\n"));
    assert_eq!(
        line("word-count.nope -> "),
        "word-count.nope -> error invalid"
    );
    assert_eq!(
        line("with only `log` granted: "),
        "with only `log` granted: load_failed"
    );
    let log = PathBuf::from(line("audit log: ").trim_start_matches("audit log: "));
    assert_eq!(log, state.join("audit.jsonl"));
    let verify = Command::new(env!("CARGO_BIN_EXE_plugbox"))
        .args(["audit", "verify"])
        .arg(&log)
        .output()
        .expect("plugbox audit verify");
    let verdict = String::from_utf8_lossy(&verify.stdout);
    assert_eq!(verify.status.code(), Some(0), "{verdict}");
    assert!(verdict.starts_with("intact: "), "{verdict}");
    let records = std::fs::read_to_string(&log).unwrap();
    assert!(
        records.contains("\"capability\":\"doc.set_text\""),
        "no doc.set_text record"
    );
}

#[test]
fn c_threads_call_one_plugin_and_its_host_callback_concurrently() {
    require_root();
    let work = tempfile::tempdir().expect("tmp");
    let threads = work.path().join("threads");
    compile(
        "gcc",
        &["-std=c11", "-pthread"],
        &root().join("tests/c/threads.c"),
        &threads,
    );
    let state = work.path().join("run");
    std::fs::create_dir(&state).unwrap();
    let plugin = root().join("tests/c/plugins/c-threads");
    let out = run(&threads, &[&plugin, &state]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "threads failed:\n{stdout}\n{stderr}");
    for expected in [
        "event \"event\":\"ready\",\"plugin\":\"c-threads\"",
        "echo: 8 threads x 200 calls checked",
        "double: 100 host callbacks, all on engine threads",
        "meet: two callbacks ran at once",
        "unknown command -> invalid",
        "null engine -> null_argument",
        "non-UTF-8 command -> not_utf8",
        "event \"event\":\"stopped\",\"plugin\":\"c-threads\"",
        "call after shutdown -> shut_down",
        "threads: all checks passed",
    ] {
        assert!(stdout.contains(expected), "{expected:?} missing:\n{stdout}");
    }
    let log = state.join("audit.jsonl");
    let verdict = plugbox::audit::verify::verify(std::slice::from_ref(&log)).expect("verify");
    assert!(verdict.broken.is_none(), "{verdict:?}");
}
