//! What the Python environment suite shares: the plugin sources (the numpy-stats example
//! plus errno probes), loading and refusing helpers, and the list-then-run check of the
//! pip-installed routes.
#![allow(dead_code)]

use super::common;
use super::common::plugins::{TestEngine, TestPlugin};
use super::fx;
use plugbox::capability::Reply;
use plugbox::engine::LoadError;
use plugbox::manifest::Grants;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The example plugin (numpy and Pillow) plus probes that report the errno of what they try.
pub fn plugin_source() -> String {
    let example = include_str!("../../examples/plugins/numpy-stats/main.py");
    format!("{example}\n{PROBES}")
}

pub const PROBES: &str = r#"
import errno, importlib, os, sys

def _errno(f):
    try:
        f()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))

@plugbox.command
def read(path):
    return _errno(lambda: open(path, "rb").read(1))

@plugbox.command
def append(path):
    return _errno(lambda: open(path, "a").write("changed\n"))

@plugbox.command
def imports(name, extra=None):
    if extra:
        sys.path.append(extra)
    try:
        importlib.import_module(name)
        return "ok"
    except Exception as e:
        return type(e).__name__

@plugbox.command
def where():
    return {"prefix": sys.prefix, "path": sys.path, "flags_no_site": sys.flags.no_site}
"#;

/// A plugin whose manifest adds `extra` (the `[python]` section and others).
pub fn plugin(extra: &str) -> TestPlugin {
    TestPlugin::new("numpy-stats", extra, &plugin_source())
}

/// The probes alone, for environments without numpy.
pub fn probe_plugin(extra: &str) -> TestPlugin {
    TestPlugin::new("probes", extra, &format!("import plugbox\n{PROBES}"))
}

pub fn json_of(reply: Reply) -> Value {
    match reply {
        Reply::Json(v) => v,
        other => panic!("not JSON: {other:?}"),
    }
}

pub fn declared(env: &Path) -> String {
    format!("[python]\nenvironment = {:?}\n", env.display().to_string())
}

/// Loads `dir` under `grants` and runs each `(command, args)`, returning the replies.
pub async fn run(dir: &Path, grants: &Grants, calls: &[(&str, Value)]) -> Vec<Value> {
    let te = TestEngine::new();
    let plugin = te.engine.load(dir, grants).await.unwrap();
    let mut out = Vec::new();
    for (command, args) in calls {
        out.push(json_of(plugin.call(command, args.clone()).await.unwrap()));
    }
    te.engine.shutdown().await.unwrap();
    out
}

/// The error of loading `dir` under `grants`.
pub async fn refusal(
    dir: &Path,
    grants: &Grants,
    adjust: impl FnOnce(&mut plugbox::engine::EngineConfig),
) -> LoadError {
    let te = TestEngine::with(adjust);
    let Err(e) = te.engine.load(dir, grants).await else {
        panic!("the load is not refused");
    };
    let refused = te.events("load_refused");
    assert_eq!(refused.len(), 1, "{refused:#?}");
    e
}

/// A world-readable file outside every grant: only Landlock can refuse it.
pub fn outside_file() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, "secret\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    (dir, file)
}

/// `plugbox list --json --python V`, then `plugbox run <location> --call size`, for the plugin
/// named `name`: it is listed by `route` and imports humanize from the venv it is installed in.
pub fn list_and_run(name: &str, route: &str) {
    common::require_root();
    let env = fx::packaged_env();
    let out = std::process::Command::new(common::plugbox())
        .args(["list", "--json", "--python"])
        .arg(env.join("bin/python"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let found: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let plugin = found
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed: {found:#?}"));
    assert_eq!(plugin["route"], route, "{plugin:#?}");
    assert!(plugin["error"].is_null(), "{plugin:#?}");
    let location = plugin["location"].as_str().unwrap();
    assert!(
        Path::new(location).starts_with(fx::site_packages(env)),
        "{location}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::plugbox())
        .arg("run")
        .arg(location)
        .args(["--call", "size", "--args", r#"{"n": 3000000}"#])
        .arg("--audit")
        .arg(tmp.path().join("audit.jsonl"))
        .arg("--state")
        .arg(tmp.path().join("state"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{out:?}");
    let line: Value =
        serde_json::from_slice(out.stdout.split(|&b| b == b'\n').next().unwrap()).unwrap();
    assert_eq!(line["ok"], true, "{line}");
    assert_eq!(line["result"], "3.0 MB", "{line}");
    // Starting with `site` printed nothing (no sitecustomize or .pth error).
    assert!(!stderr.contains("stderr"), "{stderr}");
    let audit = std::fs::read_to_string(tmp.path().join("audit.jsonl")).unwrap();
    let spawn: Value = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["event"] == "spawn")
        .unwrap();
    let report = &spawn["detail"]["python_env"];
    assert_eq!(report["origin"], "containing", "{report:#}");
    assert_eq!(report["read_on"], "host", "{report:#}");
    assert_eq!(report["root"], env.to_str().unwrap(), "{report:#}");
}
