//! The plugin author's inner loop, end to end with the real binary and the real sandbox:
//! `plugbox new` makes a plugin that `plugbox check` accepts, whose own pytest suite passes
//! against the SDK's fake host, and that `plugbox run --stub` runs; `new` never follows a
//! symlink and refuses bad names and non-empty directories; a stub answers only what the
//! gate allows, and every answer it gives is on record.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
use common::{plugbox, require_root};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch directory every uid can traverse (the plugin runs as another uid).
fn workspace() -> tempfile::TempDir {
    require_root();
    let dir = tempfile::Builder::new()
        .prefix("plugbox-author-")
        .tempdir()
        .expect("tmp");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

fn plugbox_cmd(args: &[&str], extra: &[&Path]) -> Output {
    Command::new(plugbox())
        .args(args)
        .args(extra)
        .output()
        .expect("plugbox")
}

fn new_plugin(ws: &Path, name: &str) -> PathBuf {
    let dir = ws.join(name);
    let out = plugbox_cmd(&["new", name, "--dir"], &[&dir]);
    assert!(out.status.success(), "{out:?}");
    dir
}

/// `plugbox run DIR --audit LOG --state ws/state ARGS...`.
fn run(ws: &Path, dir: &Path, log: &str, args: &[&str]) -> Output {
    Command::new(plugbox())
        .arg("run")
        .arg(dir)
        .arg("--audit")
        .arg(ws.join(log))
        .arg("--state")
        .arg(ws.join("state"))
        .args(args)
        .output()
        .expect("run")
}

fn stdout_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("record"))
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_new_plugin_checks_tests_and_runs_in_the_sandbox_with_a_stub() {
    let ws = workspace();
    let dir = new_plugin(ws.path(), "hello-world");
    let check = plugbox_cmd(&["check"], &[&dir]);
    assert!(check.status.success(), "{check:?}");
    assert!(String::from_utf8_lossy(&check.stdout).contains("app.user"));

    // Its own tests, against the fake host of the SDK in this repository (never written to
    // the plugin directory: no bytecode, no cache).
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
    let pytest = Command::new(common::PYTHON)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"])
        .current_dir(&dir)
        .env("PYTHONPATH", &sdk)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("pytest");
    assert!(pytest.status.success(), "{pytest:?}");
    assert!(
        String::from_utf8_lossy(&pytest.stdout).contains("3 passed"),
        "{pytest:?}"
    );

    let out = run(
        ws.path(),
        &dir,
        "audit.jsonl",
        &[
            "--stub",
            "app.user=\"Ada\"",
            "--call",
            "greet_user",
            "--call",
            "greet",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let lines = stdout_lines(&out);
    assert_eq!(lines[0]["result"], "Hello, Ada!", "{lines:?}");
    assert_eq!(lines[1]["result"], "Hello, world!", "{lines:?}");

    // The stubbed call is audited like a real one (decision before, outcome after), with the
    // stub's own record in between.
    let log = records(&ws.path().join("audit.jsonl"));
    let at = |event: &str| {
        log.iter()
            .position(|r| r["event"] == event && r["capability"] == "app.user")
            .unwrap_or_else(|| panic!("no {event} record for app.user: {log:?}"))
    };
    let (call, stub, outcome) = (at("call"), at("stub"), at("call_outcome"));
    assert!(call < stub && stub < outcome, "{call} {stub} {outcome}");
    assert_eq!(log[call]["decision"], "allow");
    assert_eq!(log[call]["rule"], "allow-list");
    assert_eq!(log[outcome]["outcome"], "ok");
    assert_eq!(log[stub]["plugin"]["instance"], "hello-world#1");
    assert_eq!(log[stub]["detail"]["stub"], true);
    let sha = plugbox::audit::chain::hex(&Sha256::digest(b"\"Ada\""));
    assert_eq!(log[stub]["detail"]["value_sha256"], sha.as_str());
    assert_eq!(log.iter().filter(|r| r["event"] == "stub").count(), 1);
    let verify = plugbox_cmd(&["audit", "verify"], &[&ws.path().join("audit.jsonl")]);
    assert!(verify.status.success(), "{verify:?}");
}

#[test]
fn without_a_stub_the_optional_capability_is_denied_and_audited() {
    let ws = workspace();
    let dir = new_plugin(ws.path(), "plain");
    let out = run(ws.path(), &dir, "audit.jsonl", &["--call", "greet_user"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(stdout_lines(&out)[0]["error"]["code"], "plugin_error");
    let log = records(&ws.path().join("audit.jsonl"));
    let denied = log
        .iter()
        .find(|r| r["event"] == "call" && r["capability"] == "app.user")
        .expect("a call record");
    assert_eq!(denied["decision"], "deny");
    assert!(log.iter().all(|r| r["event"] != "stub"));
}

#[test]
fn a_stub_the_grant_withholds_is_never_called_and_the_call_is_denied() {
    let ws = workspace();
    let dir = new_plugin(ws.path(), "withheld");
    let grant = ws.path().join("grant.toml");
    std::fs::write(&grant, "schema = 1\n[capabilities]\n\"log\" = {}\n").expect("grant");
    let out = run(
        ws.path(),
        &dir,
        "audit.jsonl",
        &[
            "--grant",
            grant.to_str().unwrap(),
            "--stub",
            "app.user=\"Ada\"",
            "--call",
            "greet_user",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let line = &stdout_lines(&out)[0];
    assert!(
        line["error"]["message"]
            .as_str()
            .unwrap()
            .contains("CapabilityDenied"),
        "{line:?}"
    );
    let log = records(&ws.path().join("audit.jsonl"));
    let call = log
        .iter()
        .find(|r| r["event"] == "call" && r["capability"] == "app.user")
        .expect("a call record");
    assert_eq!(call["decision"], "deny", "{call:?}");
    assert!(
        log.iter().all(|r| r["event"] != "stub"),
        "the stub answered a denied call"
    );
}

#[test]
fn stubs_the_plugin_cannot_call_are_refused_before_it_starts() {
    let ws = workspace();
    let dir = new_plugin(ws.path(), "refusals");
    for (stub, says) in [
        ("doc.get_text=1", "does not request \"doc.get_text\""),
        ("log=null", "a built-in capability"),
    ] {
        let out = run(
            ws.path(),
            &dir,
            "audit.jsonl",
            &["--stub", stub, "--call", "greet"],
        );
        assert_eq!(out.status.code(), Some(125), "{out:?}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!("--stub {}", stub.split('=').next().unwrap())),
            "{err}"
        );
        assert!(err.contains(says), "{err}");
        assert!(out.stdout.is_empty(), "the plugin ran: {out:?}");
    }
    let twice = run(
        ws.path(),
        &dir,
        "audit.jsonl",
        &[
            "--stub",
            "app.user=1",
            "--stub",
            "app.user=2",
            "--call",
            "greet",
        ],
    );
    assert_eq!(twice.status.code(), Some(125), "{twice:?}");
    assert!(stderr(&twice).contains("--stub app.user: given twice"));
    // Every refused run still sealed its log.
    let log = records(&ws.path().join("audit.jsonl"));
    assert_eq!(log.last().unwrap()["event"], "seal");
    assert!(
        log.iter().all(|r| r["event"] != "spawn"),
        "a plugin was started"
    );
}

#[test]
fn bad_stub_json_is_a_usage_error_naming_the_flag() {
    let ws = workspace();
    let dir = new_plugin(ws.path(), "badjson");
    for bad in [
        "app.user={bad",
        "app.user",
        "=1",
        "app.user={\"a\":1,\"a\":2}",
        "app.user=NaN",
    ] {
        let out = run(
            ws.path(),
            &dir,
            "audit.jsonl",
            &["--stub", bad, "--call", "greet"],
        );
        assert_eq!(out.status.code(), Some(2), "{bad}: {out:?}");
        assert!(
            stderr(&out).contains("'--stub <CAP=JSON>'"),
            "{bad}: {}",
            stderr(&out)
        );
    }
    assert!(
        !ws.path().join("audit.jsonl").exists(),
        "a usage error opened the log"
    );
}

#[test]
fn new_refuses_bad_names_and_non_empty_directories() {
    let ws = workspace();
    for bad in ["Hello", "a_b", "a.b", "", "x/y", &"a".repeat(65)] {
        let out = plugbox_cmd(&["new", bad, "--dir"], &[&ws.path().join("bad")]);
        assert_eq!(out.status.code(), Some(125), "{bad}: {out:?}");
        assert!(
            stderr(&out).contains("invalid plugin name"),
            "{}",
            stderr(&out)
        );
        assert!(!ws.path().join("bad").exists());
    }
    let full = ws.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("keep.txt"), "mine").unwrap();
    let out = plugbox_cmd(&["new", "full", "--dir"], &[&full]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        stderr(&out).contains("exists and is not empty"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_dir(&full).unwrap().count(), 1);
    assert_eq!(
        std::fs::read_to_string(full.join("keep.txt")).unwrap(),
        "mine"
    );

    let empty = ws.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = plugbox_cmd(&["new", "empty", "--dir"], &[&empty]);
    assert!(out.status.success(), "{out:?}");
    assert!(empty.join("plugbox.toml").is_file());
}

#[test]
fn new_never_follows_a_symlink() {
    let ws = workspace();
    let victim = ws.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    let link = ws.path().join("link");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let dangling = ws.path().join("dangling");
    std::os::unix::fs::symlink(ws.path().join("nowhere"), &dangling).unwrap();
    for path in [&link, &dangling] {
        let out = plugbox_cmd(&["new", "evil", "--dir"], &[path]);
        assert_eq!(out.status.code(), Some(125), "{out:?}");
        assert!(
            stderr(&out).contains("a symlink is never followed"),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(
        std::fs::read_dir(&victim).unwrap().count(),
        0,
        "wrote through a symlink"
    );
    assert!(
        !ws.path().join("nowhere").exists(),
        "created a symlink's target"
    );
    // A plain file is refused the same way, untouched.
    let file = ws.path().join("file");
    std::fs::write(&file, "data").unwrap();
    let out = plugbox_cmd(&["new", "evil", "--dir"], &[&file]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "data");
}

/// A plugin directory holding `manifest_extra` in `[plugin]` and `main` as its entry.
fn plugin_with(ws: &Path, name: &str, plugin_extra: &str, main: &str) -> PathBuf {
    let dir = ws.join(name);
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let manifest = format!(
        "schema = 1\n[plugin]\nname = \"{name}\"\nversion = \"1.0.0\"\napi = \"^1\"\n\
         entry = \"main.py\"\n{plugin_extra}\n"
    );
    std::fs::write(dir.join("plugbox.toml"), manifest).unwrap();
    std::fs::write(dir.join("main.py"), main).unwrap();
    dir
}

#[test]
fn check_prints_the_description_and_the_commands_with_their_signatures() {
    let ws = workspace();
    let dir = new_plugin(ws.path(), "described");
    let out = plugbox_cmd(&["check"], &[&dir]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("about     Greets people, and the application's user by name."),
        "{text}"
    );
    assert!(
        text.contains("commands  2 in the entry file (read, not run)"),
        "{text}"
    );
    assert!(
        text.contains("  greet(name: str='world') -> str  Returns a greeting for `name`."),
        "{text}"
    );
    assert!(text.contains("  greet_user() -> str  Greets"), "{text}");
}

#[test]
fn check_lists_commands_without_running_the_entry_and_escapes_them() {
    let ws = workspace();
    let marker = ws.path().join("ran");
    let mut main = format!(
        "import plugbox\nopen({:?}, 'w').write('ran')\n\n\
         @plugbox.command(name=\"word-stats\")\ndef stats(doc_id: int) -> dict:\n    \
         \"\"\"Counts\\x1b[2J words.\"\"\"\n    return {{}}\n\n\
         def helper(x):\n    return x\n",
        marker.to_str().unwrap()
    );
    for i in 0..300 {
        main.push_str(&format!("\n@plugbox.command\ndef c{i}(): pass\n"));
    }
    let dir = plugin_with(ws.path(), "lister", "", &main);
    let out = plugbox_cmd(&["check"], &[&dir]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!marker.exists(), "check ran the entry file");
    assert!(text.contains("commands  301 in the entry file"), "{text}");
    assert!(
        text.contains("  word-stats(doc_id: int) -> dict  Counts\\u{1b}[2J words."),
        "{text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "a raw escape reached the terminal"
    );
    assert!(!text.contains("helper"), "{text}");
    assert!(text.contains("  ... and 45 more"), "{text}");
}

#[test]
fn a_description_over_1024_characters_is_refused_naming_the_field() {
    let ws = workspace();
    let long = format!("description = \"{}\"", "x".repeat(1025));
    let dir = plugin_with(ws.path(), "wordy", &long, "import plugbox\n");
    let out = plugbox_cmd(&["check"], &[&dir]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        stderr(&out).contains("plugin.description"),
        "{}",
        stderr(&out)
    );
    let fits = format!("description = \"{}\"", "x".repeat(1024));
    let dir = plugin_with(ws.path(), "fits", &fits, "import plugbox\n");
    assert!(plugbox_cmd(&["check"], &[&dir]).status.success());
}
