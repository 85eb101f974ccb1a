//! Issue 10, item 3: plugin data lives outside its code. `fs.*` resolve beneath the plugin's
//! data directory (`<state>/<name>-<id>/data/`), so `fs.write` never changes a pinned plugin's
//! digest, and no attempt reaches the plugin directory: `..`, absolute paths, a symlink or a
//! hard link planted in the data directory, a symlinked root, or a `[filesystem] write` rule
//! over the code. Real engine, real sandboxed plugins.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::plugins::{TestEngine, TestPlugin};
use plugbox::capability::fs::DataDirError;
use plugbox::capability::Reply;
use plugbox::engine::{Instance, LoadError};
use plugbox::manifest::digest::code_digest;
use plugbox::manifest::Grants;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Long enough for any honest call on a loaded machine; only turns a hang into a failure.
const HANG: Duration = Duration::from_secs(60);

/// The plugin of `tests/hostile_fs.rs`: commands that try one `fs.*` call and return
/// `{"ok": result}` or `{"code", "message"}`.
const FS_PLUGIN: &str = include_str!("plugins/hostile_fs.py");

/// `fs.read`, `fs.write` and `fs.list` on the root `out`.
const FS_OUT: &str = "[capabilities]\n\"fs.read\" = { paths = [\"out\"] }\n\"fs.write\" = { paths = [\"out\"] }\n\"fs.list\" = { paths = [\"out\"] }\n";

/// Every file beneath `dir` (relative path → bytes), `__pycache__` included.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                walk(base, &path, out);
            } else {
                let rel = path.strip_prefix(base).unwrap().to_owned();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// A grant file for [`FS_OUT`] pinned to `digest`, loaded as the host would.
fn pinned(digest: &str) -> (tempfile::NamedTempFile, Grants) {
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    let text = format!(
        "schema = 1\ncode_digest = \"{digest}\"\n[capabilities]\n\"fs.read\" = {{}}\n\"fs.write\" = {{}}\n\"fs.list\" = {{}}\n"
    );
    std::fs::write(file.path(), text).unwrap();
    let grants = Grants::load(file.path()).unwrap();
    (file, grants)
}

async fn load(te: &TestEngine, p: &TestPlugin) -> Instance {
    te.engine
        .spawn_instance(p.path(), &Grants::all_requested())
        .await
        .expect("load")
}

/// Calls `command` and returns its JSON result, failing on a hang.
async fn call(plugin: &Instance, command: &str, args: Value) -> Value {
    match tokio::time::timeout(HANG, plugin.call(command, args))
        .await
        .unwrap_or_else(|_| panic!("{command} hung"))
    {
        Ok(Reply::Json(v)) => v,
        other => panic!("{command}: {other:?}"),
    }
}

/// Asserts a `{"code", "message"}` result with `code` and a message containing `part`.
#[track_caller]
fn assert_refused(result: &Value, code: &str, part: &str) {
    assert_eq!(result["code"], code, "{result}");
    let message = result["message"].as_str().unwrap_or_default();
    assert!(message.contains(part), "{result}");
}

/// A pinned plugin writes 200 files (named like its own code) through `fs.write`, is
/// unloaded and loaded again under the same pin: same digest, load accepted, the data still
/// there, and every byte of the plugin directory as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_write_never_changes_a_pinned_plugins_digest() {
    let te = TestEngine::new();
    let p = TestPlugin::new("pinned", FS_OUT, FS_PLUGIN);
    let dir = p.path().canonicalize().unwrap();
    let digest = code_digest(&dir).unwrap();
    let before = snapshot(&dir);
    let (_file, grants) = pinned(&digest);
    let plugin = te.engine.load(&dir, &grants).await.expect("pinned load");
    for i in 0..200 {
        let name = ["main.py", "plugbox.toml", "rawwire.py", "other"][i % 4];
        let data = format!("overwritten {i}");
        let reply = plugin
            .call(
                "write",
                json!({"path": format!("out/{name}"), "text": data}),
            )
            .await
            .unwrap();
        assert_eq!(
            reply,
            Reply::Json(json!({"ok": {"written": data.len()}})),
            "{i}"
        );
    }
    assert!(te.engine.unload("pinned").await);
    assert_eq!(code_digest(&dir).unwrap(), digest);
    assert_eq!(snapshot(&dir), before, "the plugin directory changed");
    let data = te.engine.data_dir(&dir).unwrap();
    assert_eq!(
        std::fs::read(data.join("out/main.py")).unwrap(),
        b"overwritten 196"
    );

    let again = te.engine.load(&dir, &grants).await.expect("reload");
    let read = again
        .call("read", json!({"path": "out/plugbox.toml"}))
        .await
        .unwrap();
    assert_eq!(read, Reply::Json(json!({"ok": "overwritten 197"})));
    assert!(te.engine.unload("pinned").await);
}

/// `..`, absolute paths and a path naming the plugin directory's files are refused `denied`
/// at the gate; the plugin directory is byte-identical afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_and_absolute_paths_never_reach_the_plugin_directory() {
    let te = TestEngine::new();
    let p = TestPlugin::new("climber", FS_OUT, FS_PLUGIN);
    let dir = p.path().canonicalize().unwrap();
    let before = snapshot(&dir);
    let plugin = load(&te, &p).await;
    let data = te.engine.data_dir(&dir).unwrap();
    let up = "../".repeat(data.components().count());
    let main = dir.join("main.py").display().to_string();
    let climbs = [
        (format!("out/../../../{}", "main.py"), "'..' is not allowed"),
        (
            format!("out/{up}{}", main.trim_start_matches('/')),
            "'..' is not allowed",
        ),
        (main.clone(), "absolute paths are not allowed"),
        ("main.py".to_owned(), "outside the granted roots"),
    ];
    for (path, why) in &climbs {
        let wrote = call(&plugin, "write", json!({"path": path, "text": "pwned"})).await;
        assert_refused(&wrote, "denied", why);
        let read = call(&plugin, "read", json!({"path": path})).await;
        assert_refused(&read, "denied", why);
    }
    plugin.shutdown().await;
    assert_eq!(snapshot(&dir), before, "the plugin directory changed");
}

/// Symlinks planted in the data directory (as an attacker with write access there would):
/// one to the plugin directory, one to its `main.py`. Every `fs.*` through them is refused
/// `denied` (`openat2` `RESOLVE_NO_SYMLINKS`), and the plugin's files do not change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_symlink_in_the_data_directory_is_refused() {
    let te = TestEngine::new();
    let p = TestPlugin::new("linked", FS_OUT, FS_PLUGIN);
    let dir = p.path().canonicalize().unwrap();
    let before = snapshot(&dir);
    let plugin = load(&te, &p).await;
    let out = te.engine.data_dir(&dir).unwrap().join("out");
    std::os::unix::fs::symlink(&dir, out.join("code")).unwrap();
    std::os::unix::fs::symlink(dir.join("main.py"), out.join("main.py")).unwrap();
    for path in ["out/code/main.py", "out/main.py"] {
        let wrote = call(&plugin, "write", json!({"path": path, "text": "pwned"})).await;
        assert_refused(&wrote, "denied", "symlink");
        let read = call(&plugin, "read", json!({"path": path})).await;
        assert_refused(&read, "denied", "symlink");
    }
    let listed = call(&plugin, "ls", json!({"path": "out/code"})).await;
    assert_refused(&listed, "denied", "symlink");
    plugin.shutdown().await;
    assert_eq!(snapshot(&dir), before, "the plugin directory changed");
}

/// A hard link to the plugin's `main.py` planted in the data directory (the test, as root,
/// plays the attacker): `fs.write` and `fs.read` refuse a file with more than one name
/// (`denied`) before touching it, so `main.py` keeps every byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_hard_link_to_plugin_code_is_never_written() {
    let te = TestEngine::new();
    let p = TestPlugin::new("hardlinked", FS_OUT, FS_PLUGIN);
    let dir = p.path().canonicalize().unwrap();
    let before = snapshot(&dir);
    let plugin = load(&te, &p).await;
    let out = te.engine.data_dir(&dir).unwrap().join("out");
    std::fs::hard_link(dir.join("main.py"), out.join("copy.py")).unwrap();
    let wrote = call(
        &plugin,
        "write",
        json!({"path": "out/copy.py", "text": "pwned"}),
    )
    .await;
    assert_refused(&wrote, "denied", "hard links");
    let read = call(&plugin, "read", json!({"path": "out/copy.py"})).await;
    assert_refused(&read, "denied", "hard links");
    plugin.shutdown().await;
    assert_eq!(snapshot(&dir), before, "the plugin directory changed");
}

/// A data directory, or an `fs.*` root in it, that is a symlink (to the plugin directory)
/// when the plugin loads refuses the load with a typed error naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlinked_data_directory_or_root_refuses_the_load() {
    let te = TestEngine::new();
    let p = TestPlugin::new("swapped", FS_OUT, FS_PLUGIN);
    let dir = p.path().canonicalize().unwrap();
    let before = snapshot(&dir);
    let data = te.engine.data_dir(&dir).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    std::os::unix::fs::symlink(&dir, data.join("out")).unwrap();
    let grants = Grants::all_requested();
    match te.engine.spawn_instance(&dir, &grants).await {
        Err(LoadError::DataDir(e @ DataDirError::Root { .. })) => {
            assert!(e.to_string().contains("\"out\""), "{e}");
        }
        other => panic!("{:?}", other.err()),
    }
    std::fs::remove_file(data.join("out")).unwrap();
    std::fs::remove_dir(&data).unwrap();
    std::os::unix::fs::symlink(&dir, &data).unwrap();
    match te.engine.spawn_instance(&dir, &grants).await {
        Err(e @ LoadError::DataDir(DataDirError::Component { .. })) => {
            assert!(e.to_string().contains("\"data\""), "{e}");
            assert_eq!(e.step(), "validate");
        }
        other => panic!("{:?}", other.err()),
    }
    let refused = te.events("load_refused");
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert_eq!(snapshot(&dir), before, "the plugin directory changed");
}

/// A `[filesystem] write` rule on the plugin directory's parent, on the directory, on a
/// directory inside it, or on the SDK every plugin runs refuses the load, naming the rule and
/// the directory it reaches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_grant_over_the_plugin_directory_refuses_the_load() {
    let te = TestEngine::new();
    // The SDK the engine runs plugins with (compiled in, written out when the engine started).
    let sdk = plugbox::engine::sdk_location(plugbox::engine::default_sdk_dir().as_deref())
        .canonicalize()
        .unwrap();
    for (rule, reaches) in [
        ("{parent}", "covers the plugin directory {dir}"),
        ("{dir}", "covers the plugin directory {dir}"),
        ("{dir}/cache", "lies inside the plugin directory {dir}"),
        ("{sdk}/plugbox", "lies inside the SDK directory {sdk}"),
    ] {
        let p = TestPlugin::new("overreach", "", FS_PLUGIN);
        let dir = p.path().canonicalize().unwrap();
        std::fs::create_dir(dir.join("cache")).unwrap();
        let fill = |text: &str| {
            text.replace("{parent}", &dir.parent().unwrap().display().to_string())
                .replace("{dir}", &dir.display().to_string())
                .replace("{sdk}", &sdk.display().to_string())
        };
        let (rule, reaches) = (fill(rule), fill(reaches));
        let manifest = std::fs::read_to_string(dir.join("plugbox.toml")).unwrap();
        let manifest = format!("{manifest}[filesystem]\nwrite = [\"{rule}\"]\n");
        std::fs::write(dir.join("plugbox.toml"), manifest).unwrap();
        match te
            .engine
            .spawn_instance(&dir, &Grants::all_requested())
            .await
        {
            Err(e @ LoadError::CodeWritable(_)) => {
                let text = e.to_string();
                assert!(text.contains("filesystem.write[0]"), "{text}");
                assert!(text.contains(&reaches), "{text}");
                assert_eq!(e.step(), "validate");
            }
            other => panic!("{rule}: {:?}", other.err()),
        }
        let refused = te.events("load_refused");
        let last = refused.last().unwrap();
        assert!(
            last["reason"].as_str().unwrap().contains(&reaches),
            "{last}"
        );
    }
}

/// Two plugins of the same name in different directories get different data directories:
/// neither sees the other's file, and each keeps its own after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_is_separate_per_plugin_directory() {
    let te = TestEngine::new();
    let a = TestPlugin::new("twin", FS_OUT, FS_PLUGIN);
    let b = TestPlugin::new("twin", FS_OUT, FS_PLUGIN);
    let (da, db) = (
        te.engine.data_dir(a.path()).unwrap(),
        te.engine.data_dir(b.path()).unwrap(),
    );
    assert_ne!(da, db);
    for round in 0..2 {
        let (ia, ib) = (load(&te, &a).await, load(&te, &b).await);
        if round == 0 {
            let wa = call(&ia, "write", json!({"path": "out/who", "text": "a"})).await;
            assert_eq!(wa["ok"], json!({"written": 1}), "{wa}");
            let wb = call(&ib, "write", json!({"path": "out/who", "text": "bb"})).await;
            assert_eq!(wb["ok"], json!({"written": 2}), "{wb}");
        }
        let ra = call(&ia, "read", json!({"path": "out/who"})).await;
        let rb = call(&ib, "read", json!({"path": "out/who"})).await;
        assert_eq!(
            (ra["ok"].as_str(), rb["ok"].as_str()),
            (Some("a"), Some("bb"))
        );
        ia.shutdown().await;
        ib.shutdown().await;
    }
    assert_eq!(std::fs::read(da.join("out/who")).unwrap(), b"a");
    assert_eq!(std::fs::read(db.join("out/who")).unwrap(), b"bb");
    for d in [&da, &db] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", d.display());
    }
}

/// The shell recipe of `docs/data-dir.md` names the directory the engine uses, so an operator
/// migrating by hand copies to the right place.
#[test]
fn the_documented_shell_recipe_names_the_engines_data_directory() {
    let p = TestPlugin::new("recipe", "", FS_PLUGIN);
    let state = tempfile::tempdir().unwrap();
    let engine = plugbox::engine::plugin_data_dir(state.path(), p.path()).unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"printf %s "$(realpath "$1")" | sha256sum | cut -c1-16"#)
        .arg("sh")
        .arg(p.path())
        .output()
        .unwrap();
    let id = String::from_utf8(out.stdout).unwrap();
    let recipe = state.path().join(format!("recipe-{}/data", id.trim()));
    assert_eq!(engine, recipe);
}
