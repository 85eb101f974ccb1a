//! Helpers for plugin tests: throwaway plugin directories, an engine per test, audit reading.

use plugbox::engine::{Engine, EngineConfig};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A plugin directory in a temporary location every uid can read.
pub struct TestPlugin {
    dir: tempfile::TempDir,
}

impl TestPlugin {
    /// `plugbox.toml` with `[plugin]` for `name` plus `extra` sections, `main.py` = `main`,
    /// and `rawwire.py` beside it.
    pub fn new(name: &str, extra: &str, main: &str) -> Self {
        super::require_root();
        let dir = tempfile::Builder::new()
            .prefix("plugbox-plugin-")
            .tempdir()
            .expect("tmp");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let extra = with_forced_zygote(extra);
        let manifest = format!(
            "schema = 1\n[plugin]\nname = \"{name}\"\nversion = \"1.0.0\"\napi = \"^1\"\nentry = \"main.py\"\n{extra}\n"
        );
        std::fs::write(dir.path().join("plugbox.toml"), manifest).expect("manifest");
        std::fs::write(dir.path().join("main.py"), main).expect("main");
        let rawwire = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/plugins/rawwire.py");
        std::fs::copy(rawwire, dir.path().join("rawwire.py")).expect("rawwire");
        for f in ["plugbox.toml", "main.py", "rawwire.py"] {
            std::fs::set_permissions(dir.path().join(f), std::fs::Permissions::from_mode(0o644))
                .expect("chmod");
        }
        Self { dir }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// With `PLUGBOX_TEST_ZYGOTE=1`, every test plugin that may have one gets a zygote, so that
/// a confinement suite runs against forked instances too (`.ci/test` runs some suites so).
fn with_forced_zygote(extra: &str) -> String {
    let forced = std::env::var("PLUGBOX_TEST_ZYGOTE").is_ok_and(|v| v == "1");
    if !forced || extra.contains("subprocesses = true") || extra.contains("zygote") {
        return extra.to_owned();
    }
    match extra.find("[process]\n") {
        Some(at) => {
            let end = at + "[process]\n".len();
            format!("{}zygote = true\n{}", &extra[..end], &extra[end..])
        }
        None => format!("{extra}\n[process]\nzygote = true\n"),
    }
}

/// An engine writing to a fresh audit log.
pub struct TestEngine {
    pub engine: Engine,
    _dir: tempfile::TempDir,
    pub audit: PathBuf,
}

impl TestEngine {
    /// A new engine with its own audit log and state directory.
    pub fn new() -> Self {
        Self::with(|_| {})
    }

    /// Like [`TestEngine::new`], with `adjust` applied to the configuration.
    pub fn with(adjust: impl FnOnce(&mut EngineConfig)) -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let audit = dir.path().join("audit.jsonl");
        let mut config = EngineConfig::new(&audit, dir.path().join("state"));
        adjust(&mut config);
        let engine = Engine::new(config).expect("engine");
        Self {
            engine,
            _dir: dir,
            audit,
        }
    }

    /// Every record written so far. The writer may be appending while this reads: a last
    /// line without its newline is not complete yet and is left out.
    pub fn records(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.audit).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .collect()
    }

    /// Records of `event`.
    pub fn events(&self, event: &str) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| r["event"] == event)
            .collect()
    }

    /// Waits (up to 10 s) until a record matching `pred` appears.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..1000 {
            if let Some(r) = self.records().into_iter().find(|r| pred(r)) {
                return r;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("no audit record for {what}; records: {:#?}", self.records());
    }
}
