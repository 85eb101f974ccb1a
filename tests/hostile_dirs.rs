//! Hostile plugin directories (issue 9, findings 3 and 4): special files and symlinks where a
//! manifest, discovery metadata or a module is expected never hang or flood the tools, and
//! the code-digest pin pins the code that runs (no implanted `__pycache__` bytecode, byte-exact
//! names, no symlinks, no FIFOs).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::plugins::{TestEngine, TestPlugin};
use plugbox::capability::Reply;
use plugbox::engine::LoadError;
use plugbox::manifest::digest::{code_digest, DigestError};
use plugbox::manifest::{Grants, Manifest, ManifestError};
use plugbox::untrusted_file::{FileKind, UntrustedFileError};
use serde_json::json;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Only turns a hang into a failure; every case here ends in milliseconds.
const HANG: Duration = Duration::from_secs(60);

const MODULE_PLUGIN: &str =
    "import plugbox, helper\n@plugbox.command\ndef value():\n    return helper.VALUE\n";

/// Runs `cmd` to completion; a child still running after [`HANG`] is killed and fails the test.
fn output_within(cmd: &mut Command) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(HANG) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{cmd:?} hung: still running after {HANG:?}");
        }
    }
}

/// Runs `f` on a thread; still running after [`HANG`] fails the test.
fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(f()));
    rx.recv_timeout(HANG).expect("hung")
}

fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(ok.success(), "mkfifo {}", path.display());
}

/// A plugin directory whose `plugbox.toml` is a FIFO (no writer ever opens it).
fn fifo_manifest_plugin() -> TestPlugin {
    let p = TestPlugin::new("fifo", "", "import plugbox\n");
    std::fs::remove_file(p.path().join("plugbox.toml")).unwrap();
    mkfifo(&p.path().join("plugbox.toml"));
    p
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn check_of_a_fifo_manifest_exits_promptly_naming_the_file_type() {
    let p = fifo_manifest_plugin();
    let out = output_within(Command::new(common::plugbox()).arg("check").arg(p.path()));
    assert!(!out.status.success(), "{out:?}");
    let err = stderr(&out);
    assert!(
        err.contains("plugbox.toml: is a FIFO (named pipe), not a regular file"),
        "{err}"
    );
}

#[test]
fn run_of_a_fifo_manifest_exits_promptly_naming_the_file_type() {
    let p = fifo_manifest_plugin();
    let tmp = tempfile::tempdir().unwrap();
    let out = output_within(
        Command::new(common::plugbox())
            .arg("run")
            .arg(p.path())
            .arg("--audit")
            .arg(tmp.path().join("audit.jsonl"))
            .arg("--state")
            .arg(tmp.path().join("state"))
            .args(["--call", "anything"]),
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr(&out).contains("is a FIFO (named pipe)"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_load_of_a_fifo_manifest_is_a_typed_error() {
    let te = TestEngine::new();
    let p = fifo_manifest_plugin();
    let result = tokio::time::timeout(HANG, te.engine.load(p.path(), &Grants::all_requested()))
        .await
        .expect("load hung on a FIFO manifest");
    match result {
        Err(LoadError::Manifest(ManifestError::File(UntrustedFileError::NotRegular {
            path,
            kind,
        }))) => {
            assert_eq!(kind, FileKind::Fifo);
            assert!(path.ends_with("plugbox.toml"), "{}", path.display());
        }
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("a FIFO manifest loaded"),
    }
    assert_eq!(te.events("load_refused").len(), 1);
}

#[test]
fn a_manifest_linked_to_dev_zero_or_pagemap_is_refused_in_bounded_memory() {
    for target in ["/dev/zero", "/proc/self/pagemap"] {
        let p = TestPlugin::new("linked", "", "import plugbox\n");
        let manifest = p.path().join("plugbox.toml");
        std::fs::remove_file(&manifest).unwrap();
        std::os::unix::fs::symlink(target, &manifest).unwrap();
        match Manifest::load(p.path()) {
            Err(ManifestError::File(UntrustedFileError::Symlink { path })) => {
                assert_eq!(path, p.path().canonicalize().unwrap().join("plugbox.toml"));
            }
            other => panic!("{target}: {other:?}"),
        }
        // The real binary, with its address space capped at 256 MiB: a reader that trusted
        // the reported size (0) would grow until it aborted instead of refusing.
        let out = output_within(
            Command::new("prlimit")
                .arg("--as=268435456")
                .arg("--")
                .arg(common::plugbox())
                .arg("check")
                .arg(p.path()),
        );
        assert_eq!(out.status.code(), Some(125), "{target}: {out:?}"); // refused, not aborted
        assert!(
            stderr(&out).contains("is a symbolic link; refused"),
            "{out:?}"
        );
    }
}

#[test]
fn the_reader_refuses_devices_and_caps_procfs_files_without_trusting_their_size() {
    use plugbox::untrusted_file::read;
    match read(Path::new("/dev/zero"), 1024) {
        Err(UntrustedFileError::NotRegular { kind, .. }) => assert_eq!(kind, FileKind::CharDevice),
        other => panic!("{other:?}"),
    }
    // procfs files are "regular" with st_size 0 and endless contents: the cap stops the read.
    assert_eq!(std::fs::metadata("/proc/self/pagemap").unwrap().len(), 0);
    match within(|| read(Path::new("/proc/self/pagemap"), 1024)) {
        Err(UntrustedFileError::TooLarge { limit, .. }) => assert_eq!(limit, 1024),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_regular_manifest_over_the_cap_is_refused_as_too_large() {
    let p = TestPlugin::new("big", "", "import plugbox\n");
    let manifest = p.path().join("plugbox.toml");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str(&format!("# {}\n", "x".repeat(300 * 1024)));
    std::fs::write(&manifest, text).unwrap();
    let err = Manifest::load(p.path()).expect_err("refused");
    assert!(
        matches!(err, ManifestError::File(UntrustedFileError::TooLarge { limit, .. }) if limit == 256 * 1024),
        "{err:?}"
    );
    assert!(err.to_string().contains("too large"), "{err}");
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn list_completes_and_reports_a_fifo_entry_points_txt_as_invalid() {
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    let manifest = "schema = 1\n[plugin]\nname = \"good\"\nversion = \"1.0.0\"\napi = \"^1\"\nentry = \"main.py\"\n";
    write(
        &site.join("good_plugin-1.0.dist-info/entry_points.txt"),
        "[plugbox.plugins]\ngood = good_plugin:main\n",
    );
    write(&site.join("good_plugin/plugbox.toml"), manifest);
    write(&site.join("good_plugin/main.py"), "");
    std::fs::create_dir_all(site.join("evil-1.0.dist-info")).unwrap();
    mkfifo(&site.join("evil-1.0.dist-info/entry_points.txt"));
    // And a plugin directory whose manifest is a FIFO: listed as invalid, not skipped.
    let dirs = tmp.path().join("plugins");
    std::fs::create_dir_all(dirs.join("piped")).unwrap();
    mkfifo(&dirs.join("piped/plugbox.toml"));

    let out = output_within(
        Command::new(common::plugbox())
            .args(["list", "--json", "--path"])
            .arg(&dirs)
            .arg("--site")
            .arg(&site),
    );
    assert!(out.status.success(), "{out:?}");
    let found: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let by = |loc: &str| {
        found
            .iter()
            .find(|f| f["location"].as_str().unwrap().ends_with(loc))
            .unwrap_or_else(|| panic!("{loc}: {found:#?}"))
    };
    assert_eq!(by("site/good_plugin")["name"], "good");
    let evil = by("evil-1.0.dist-info")["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        evil.contains("entry_points.txt: is a FIFO (named pipe)"),
        "{evil}"
    );
    let piped = by("plugins/piped")["error"].as_str().unwrap().to_owned();
    assert!(
        piped.contains("plugbox.toml: is a FIFO (named pipe)"),
        "{piped}"
    );
}

/// Writes an unchecked-hash pyc (PEP 552) for `module` into its `__pycache__`, compiled from
/// a malicious source, then restores the real source with its original times: what a party
/// that can write the plugin directory can do (no capability of the plugin can since issue
/// 10: `fs.*` work in its data directory, and a `[filesystem] write` over its code refuses
/// the load).
fn implant_unchecked_pyc(module: &Path, evil: &str) -> PathBuf {
    let script = r#"import importlib.util, os, py_compile, sys
src, evil = sys.argv[1], sys.argv[2]
real, st = open(src, "rb").read(), os.stat(src)
open(src, "w").write(evil)
pyc = importlib.util.cache_from_source(src)
py_compile.compile(src, cfile=pyc, doraise=True,
                   invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
open(src, "wb").write(real)
os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
print(pyc)
"#;
    let out = Command::new(common::PYTHON)
        .args(["-c", script])
        .arg(module)
        .arg(evil)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_implanted_unchecked_pyc_does_not_run_under_a_pinned_digest() {
    let te = TestEngine::new();
    let p = TestPlugin::new("pinned-pyc", "", MODULE_PLUGIN);
    let helper = p.path().join("helper.py");
    std::fs::write(&helper, "VALUE = 'source'\n").unwrap();
    let digest = code_digest(p.path()).unwrap();
    let pyc = implant_unchecked_pyc(&helper, "VALUE = 'implanted bytecode'\n");
    assert!(
        pyc.starts_with(p.path().join("__pycache__")),
        "{}",
        pyc.display()
    );
    // The attack is real: a plain interpreter runs the implanted bytecode...
    let plain = Command::new(common::PYTHON)
        .args([
            "-I",
            "-S",
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); import helper; print(helper.VALUE)",
        ])
        .arg(p.path())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&plain.stdout).trim(),
        "implanted bytecode"
    );
    // ...and the pin still matches, so only the import path can stop it.
    assert_eq!(code_digest(p.path()).unwrap(), digest);
    let pinned = Grants::all_requested().pin_digest(&digest);
    let instance = te
        .engine
        .spawn_instance(p.path(), &pinned)
        .await
        .expect("the pinned code loads");
    let reply = instance.call("value", json!({})).await.expect("call");
    instance.shutdown().await;
    assert!(
        matches!(&reply, Reply::Json(v) if v == "source"),
        "{reply:?}"
    );
}

#[test]
fn two_trees_differing_only_in_a_non_utf8_name_byte_have_different_digests() {
    let digests: Vec<String> = [b"mod\xff.py", b"mod\xfe.py"]
        .iter()
        .map(|name| {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(OsStr::from_bytes(*name)), "x = 1\n").unwrap();
            code_digest(dir.path()).unwrap()
        })
        .collect();
    assert_ne!(digests[0], digests[1]);
}

async fn refused_for_symlink(p: &TestPlugin, link: &str) {
    let te = TestEngine::new();
    let err = te
        .engine
        .spawn_instance(p.path(), &Grants::all_requested())
        .await
        .err()
        .expect("refused");
    match &err {
        LoadError::Manifest(ManifestError::Digest(DigestError::File(
            UntrustedFileError::Symlink { path },
        ))) => assert!(path.ends_with(link), "{}", path.display()),
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string().contains("is a symbolic link; refused"),
        "{err}"
    );
    assert_eq!(te.events("load_refused").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlinked_module_or_directory_is_refused_at_load() {
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::write(elsewhere.path().join("helper.py"), "VALUE = 'elsewhere'\n").unwrap();
    let p = TestPlugin::new("linked-module", "", MODULE_PLUGIN);
    std::os::unix::fs::symlink(
        elsewhere.path().join("helper.py"),
        p.path().join("helper.py"),
    )
    .unwrap();
    refused_for_symlink(&p, "helper.py").await;
    let p = TestPlugin::new("linked-dir", "", "import plugbox\n");
    std::os::unix::fs::symlink(elsewhere.path(), p.path().join("lib")).unwrap();
    refused_for_symlink(&p, "lib").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_in_the_plugin_tree_fails_the_digest_promptly() {
    let p = TestPlugin::new("fifo-tree", "", "import plugbox\n");
    std::fs::create_dir(p.path().join("data")).unwrap();
    mkfifo(&p.path().join("data/pipe"));
    let dir = p.path().to_owned();
    match within(move || code_digest(&dir)) {
        Err(DigestError::File(UntrustedFileError::NotRegular { path, kind })) => {
            assert_eq!(kind, FileKind::Fifo);
            assert!(path.ends_with("data/pipe"), "{}", path.display());
        }
        other => panic!("{other:?}"),
    }
    let te = TestEngine::new();
    let all = Grants::all_requested();
    let load = te.engine.spawn_instance(p.path(), &all);
    let err = tokio::time::timeout(HANG, load)
        .await
        .expect("load hung")
        .err();
    assert!(
        matches!(err, Some(LoadError::Manifest(ManifestError::Digest(_)))),
        "{err:?}"
    );
}
