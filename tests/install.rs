//! `plugbox install`: building a plugin's Python environment never runs package code
//! unconfined, and the store holds exactly what a key names, world-readable, byte-compiled,
//! shared, installed once. Uses real pip: bundled wheels offline, a lock from the package
//! index (pip's cache keeps reruns fast), a source distribution built in the sandbox.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::plugins::TestPlugin;
use common::{plugbox, Run, PYTHON};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The pinned dependency the tests install.
const HUMANIZE: &str = "humanize==4.9.0";

/// A directory holding the humanize wheel, downloaded once per test run.
fn humanize_wheels() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("plugbox-install-wheels-{}", std::process::id()));
        let out = Command::new(PYTHON)
            .args([
                "-m",
                "pip",
                "download",
                "-q",
                "--only-binary=:all:",
                "--no-deps",
                "-d",
            ])
            .arg(&dir)
            .arg(HUMANIZE)
            .output()
            .expect("pip download");
        assert!(out.status.success(), "pip download: {out:?}");
        dir
    })
}

fn humanize_wheel() -> PathBuf {
    std::fs::read_dir(humanize_wheels())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .expect("the humanize wheel")
}

/// `sha256:<hex>` of a file, as `pip hash` prints it.
fn pip_hash(file: &Path) -> String {
    let out = Command::new(PYTHON)
        .args(["-m", "pip", "hash", "-a", "sha256"])
        .arg(file)
        .output()
        .expect("pip hash");
    let text = String::from_utf8_lossy(&out.stdout);
    let hash = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("--hash="))
        .expect("pip hash output");
    hash.to_owned()
}

/// A plugin whose manifest has `python` as its `[python]` section.
fn plugin(python: &str) -> TestPlugin {
    TestPlugin::new("deps", &format!("[python]\n{python}"), "import plugbox\n")
}

/// Copies the humanize wheel into `DIR/wheels/`.
fn bundle_humanize(dir: &Path) {
    let wheels = dir.join("wheels");
    std::fs::create_dir_all(&wheels).unwrap();
    let wheel = humanize_wheel();
    std::fs::copy(&wheel, wheels.join(wheel.file_name().unwrap())).unwrap();
}

fn store() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("plugbox-store-")
        .tempdir()
        .unwrap()
}

fn install(dir: &Path, store: &Path) -> Run {
    Command::new(plugbox())
        .arg("install")
        .arg(dir)
        .arg("--store")
        .arg(store)
        .stdin(Stdio::null())
        .output()
        .expect("plugbox install")
        .into()
}

fn installed_path(run: &Run) -> PathBuf {
    assert_eq!(run.code, 0, "{run:?}");
    PathBuf::from(run.stdout.trim())
}

/// Entries of the store other than environments (scratch leftovers).
fn leftovers(store: &Path) -> Vec<String> {
    std::fs::read_dir(store)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-"))
        .collect()
}

/// Runs `code` with the environment's interpreter under `plugbox exec`, granted read on the
/// environment only.
fn run_in(env: &Path, code: &str) -> Run {
    let policy = tempfile::NamedTempFile::new().unwrap();
    let text = format!(
        "schema = 1\n[filesystem]\nread = [{:?}]\n",
        env.display().to_string()
    );
    std::fs::write(policy.path(), text).unwrap();
    Command::new(plugbox())
        .args(["exec", "--policy"])
        .arg(policy.path())
        .arg("--")
        .arg(env.join("bin/python"))
        .args(["-I", "-c", code])
        .stdin(Stdio::null())
        .output()
        .expect("plugbox exec")
        .into()
}

// ---- source distributions: their code runs only inside the build sandbox ----

/// Writes `NAME-1.0.tar.gz` whose `setup.py` tries to write `host_marker` (an absolute path
/// outside any scratch, in a world-writable directory so only the sandbox can refuse) and
/// writes `cwd-marker` in its working directory; the package it builds records what
/// happened: `HOST_WRITE` ("written" or the errno name) and `CWD`.
fn hostile_sdist(dir: &Path, host_marker: &Path) -> PathBuf {
    let setup = format!(
        r#"import errno, os
from setuptools import setup
try:
    with open({host:?}, "w") as f:
        f.write("escaped")
    outcome = "written"
except OSError as e:
    outcome = errno.errorcode.get(e.errno, str(e.errno))
with open("cwd-marker", "w") as f:
    f.write(outcome)
os.makedirs("probe_pkg", exist_ok=True)
with open("probe_pkg/__init__.py", "w") as f:
    f.write(f"HOST_WRITE = {{outcome!r}}\nCWD = {{os.getcwd()!r}}\n")
setup(name="probe_pkg", version="1.0", packages=["probe_pkg"])
"#,
        host = host_marker.display().to_string()
    );
    let sdist = dir.join("probe_pkg-1.0.tar.gz");
    let script = r#"import io, sys, tarfile
out, setup = sys.argv[1], sys.argv[2].encode()
pkg_info = b"Metadata-Version: 1.0\nName: probe_pkg\nVersion: 1.0\n"
with tarfile.open(out, "w:gz") as tar:
    for name, data in (("setup.py", setup), ("PKG-INFO", pkg_info)):
        info = tarfile.TarInfo("probe_pkg-1.0/" + name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
"#;
    let status = Command::new(PYTHON)
        .args(["-I", "-c", script])
        .arg(&sdist)
        .arg(setup)
        .status()
        .unwrap();
    assert!(status.success());
    sdist
}

/// A world-writable directory outside the store, for the host marker.
fn open_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("plugbox-host-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

#[test]
fn a_bundled_sdist_without_the_opt_in_is_refused_and_runs_nothing() {
    let host = open_dir();
    let marker = host.path().join("marker");
    let p = plugin("wheels = \"wheels\"\n");
    std::fs::create_dir(p.path().join("wheels")).unwrap();
    hostile_sdist(&p.path().join("wheels"), &marker);
    let store = store();
    let run = install(p.path(), store.path());
    assert_eq!(run.code, 125, "{run:?}");
    assert!(
        run.stderr
            .contains("probe_pkg-1.0.tar.gz is a source distribution")
            && run.stderr.contains("build_sdists = true"),
        "{run:?}"
    );
    assert!(!marker.exists(), "setup.py ran");
    assert_eq!(
        std::fs::read_dir(store.path()).unwrap().count(),
        0,
        "nothing stored"
    );
}

#[test]
fn an_opted_in_sdist_is_built_confined_and_never_writes_the_host() {
    let host = open_dir();
    let marker = host.path().join("marker");
    let p = plugin("wheels = \"wheels\"\nbuild_sdists = true\n");
    std::fs::create_dir(p.path().join("wheels")).unwrap();
    hostile_sdist(&p.path().join("wheels"), &marker);
    let store = store();
    let env = installed_path(&install(p.path(), store.path()));
    assert!(!marker.exists(), "the build wrote outside its sandbox");
    // What the build saw, recorded in the package it built: the host write was refused by
    // Landlock (EACCES), and it ran in the install's scratch directory.
    let run = run_in(
        &env,
        "import probe_pkg as p; print(p.HOST_WRITE); print(p.CWD)",
    );
    assert_eq!(run.code, 0, "{run:?}");
    let mut lines = run.stdout.lines();
    assert_eq!(lines.next(), Some("EACCES"), "{run:?}");
    let cwd = lines.next().unwrap();
    let scratch = store.path().canonicalize().unwrap().join(".tmp-");
    assert!(cwd.starts_with(scratch.to_str().unwrap()), "built in {cwd}");
    assert!(
        leftovers(store.path()).is_empty(),
        "{:?}",
        leftovers(store.path())
    );
}

// ---- bundled wheels, offline ----

#[test]
fn bundled_wheels_install_offline_world_readable_compiled_and_marked() {
    let p = plugin("wheels = \"wheels\"\n");
    bundle_humanize(p.path());
    let store = store();
    let env = installed_path(&install(p.path(), store.path()));
    let key = env.file_name().unwrap().to_str().unwrap().to_owned();
    assert_eq!(env.parent().unwrap(), store.path().canonicalize().unwrap());
    assert_eq!(
        std::fs::read_to_string(env.join(".plugbox-installed")).unwrap(),
        key
    );
    let run = run_in(
        &env,
        "import humanize; print(humanize.naturalsize(1000000))",
    );
    assert_eq!((run.code, run.stdout.trim()), (0, "1.0 MB"), "{run:?}");
    let (mut py, mut pyc) = (0, 0);
    walk(&env, &mut |path, meta| {
        if !meta.file_type().is_symlink() {
            assert_eq!(
                meta.mode() & 0o022,
                0,
                "{} is writable by others",
                path.display()
            );
            assert_eq!(
                meta.mode() & 0o444,
                0o444,
                "{} is not world-readable",
                path.display()
            );
        }
        if path.extension().is_some_and(|x| x == "py") {
            py += 1;
            let cache = path.parent().unwrap().join("__pycache__").join(format!(
                "{}.cpython-311.pyc",
                path.file_stem().unwrap().to_str().unwrap()
            ));
            assert!(cache.is_file(), "no pyc for {}", path.display());
            pyc += 1;
        }
    });
    assert!(py > 0 && py == pyc);
    assert!(
        leftovers(store.path()).is_empty(),
        "{:?}",
        leftovers(store.path())
    );
}

fn walk(dir: &Path, f: &mut impl FnMut(&Path, &std::fs::Metadata)) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let meta = path.symlink_metadata().unwrap();
        f(&path, &meta);
        if meta.is_dir() {
            walk(&path, f);
        }
    }
}

#[test]
fn a_second_install_is_a_cache_hit_that_rebuilds_nothing() {
    let p = plugin("wheels = \"wheels\"\n");
    bundle_humanize(p.path());
    let store = store();
    let first = install(p.path(), store.path());
    let env = installed_path(&first);
    let before = env.join(".plugbox-installed").metadata().unwrap();
    let second = install(p.path(), store.path());
    assert_eq!(installed_path(&second), env);
    assert_eq!(second.stderr, "", "a hit builds nothing: {second:?}");
    let after = env.join(".plugbox-installed").metadata().unwrap();
    assert_eq!(
        (before.ino(), before.mtime_nsec()),
        (after.ino(), after.mtime_nsec())
    );
    // A changed input is another environment.
    std::fs::write(p.path().join("wheels/README"), "changed").unwrap();
    let third = installed_path(&install(p.path(), store.path()));
    assert_ne!(third, env);
}

// ---- a lock with hashes, from the package index ----

fn lock_plugin(lock: &str) -> TestPlugin {
    let p = plugin("requirements = \"requirements.txt\"\n");
    std::fs::write(p.path().join("requirements.txt"), lock).unwrap();
    p
}

#[test]
fn a_lock_line_without_a_hash_is_refused_naming_the_line() {
    let hash = pip_hash(&humanize_wheel());
    let p = lock_plugin(&format!("# pinned\nidna==3.6 --hash={hash}\n{HUMANIZE}\n"));
    let store = store();
    let run = install(p.path(), store.path());
    assert_eq!(run.code, 125, "{run:?}");
    assert!(
        run.stderr.contains("requirements.txt: line 3: no --hash") && run.stderr.contains(HUMANIZE),
        "{run:?}"
    );
    assert!(leftovers(store.path()).is_empty());
}

#[test]
fn a_lock_with_a_wrong_hash_is_refused_by_pip() {
    let wrong = format!("sha256:{}", "0".repeat(64));
    let p = lock_plugin(&format!("{HUMANIZE} --hash={wrong}\n"));
    let store = store();
    let run = install(p.path(), store.path());
    assert_eq!(run.code, 125, "{run:?}");
    assert!(
        run.stderr
            .to_lowercase()
            .contains("do not match the hashes"),
        "{run:?}"
    );
    assert!(leftovers(store.path()).is_empty());
}

#[test]
fn a_hashed_lock_installs_from_the_index_and_concurrent_installs_share_one_env() {
    let hash = pip_hash(&humanize_wheel());
    let p = lock_plugin(&format!("{HUMANIZE} \\\n    --hash={hash}\n"));
    let store = store();
    let spawn = || {
        Command::new(plugbox())
            .arg("install")
            .arg(p.path())
            .arg("--store")
            .arg(store.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let a: Run = a.wait_with_output().unwrap().into();
    let b: Run = b.wait_with_output().unwrap().into();
    let env = installed_path(&a);
    assert_eq!(installed_path(&b), env);
    let envs: Vec<_> = std::fs::read_dir(store.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name() != ".keys")
        .collect();
    assert_eq!(envs.len(), 1, "one environment, no scratch left: {envs:?}");
    let run = run_in(&env, "import humanize; print(humanize.intcomma(1234567))");
    assert_eq!((run.code, run.stdout.trim()), (0, "1,234,567"), "{run:?}");
}

// ---- what check shows ----

#[test]
fn check_shows_whether_the_environment_is_installed() {
    let p = plugin("wheels = \"wheels\"\n");
    bundle_humanize(p.path());
    let store = store();
    let check = || -> Run {
        Command::new(plugbox())
            .arg("check")
            .arg(p.path())
            .arg("--store")
            .arg(store.path())
            .output()
            .unwrap()
            .into()
    };
    let before = check();
    assert!(before.stdout.contains("not installed"), "{before:?}");
    let env = installed_path(&install(p.path(), store.path()));
    let after = check();
    let line = after
        .stdout
        .lines()
        .find(|l| l.starts_with("environment"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        line.contains(&env.display().to_string())
            && line.contains("installed")
            && !line.contains("not installed"),
        "{after:?}"
    );
}

#[test]
fn list_shows_each_plugins_environment_and_whether_it_is_installed() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("deps");
    std::fs::create_dir(&dir).unwrap();
    let p = plugin("wheels = \"wheels\"\n");
    for f in ["plugbox.toml", "main.py"] {
        std::fs::copy(p.path().join(f), dir.join(f)).unwrap();
    }
    bundle_humanize(&dir);
    let store = store();
    let list = || -> Run {
        Command::new(plugbox())
            .args(["list", "--path"])
            .arg(parent.path())
            .arg("--store")
            .arg(store.path())
            .output()
            .unwrap()
            .into()
    };
    let before = list();
    assert!(
        before.stdout.contains("deps") && before.stdout.contains("not installed"),
        "{before:?}"
    );
    let env = installed_path(&install(&dir, store.path()));
    let after = list();
    assert!(
        after
            .stdout
            .contains(&format!("environment: {}", env.display()))
            && !after.stdout.contains("not installed"),
        "{after:?}"
    );
}

// ---- leftovers and hostile inputs ----

/// The store key of the plugin in `dir`, as `plugbox install` computes it.
fn key_of(dir: &Path) -> String {
    let manifest = plugbox::manifest::Manifest::load_for_host(dir).unwrap();
    let base = plugbox::pyenv::store::base_python(&manifest).unwrap();
    plugbox::pyenv::store::key(&manifest, &base)
        .unwrap()
        .unwrap()
}

#[test]
fn a_killed_installs_scratch_and_an_unmarked_target_do_not_break_the_next_install() {
    let p = plugin("wheels = \"wheels\"\n");
    bundle_humanize(p.path());
    let store = store();
    let key = key_of(p.path());
    // A scratch directory of a dead process (pid_max is below 2^22), and a directory at the
    // key's place without the marker (an interrupted copy by hand).
    let stale = store.path().join(format!(".tmp-{key}-4194305"));
    std::fs::create_dir_all(stale.join("env/lib")).unwrap();
    std::fs::create_dir_all(store.path().join(&key).join("lib")).unwrap();
    let env = installed_path(&install(p.path(), store.path()));
    assert_eq!(env.file_name().unwrap().to_str(), Some(key.as_str()));
    assert!(!stale.exists(), "the stale scratch was removed");
    assert_eq!(
        std::fs::read_to_string(env.join(".plugbox-installed")).unwrap(),
        key
    );
    assert!(
        leftovers(store.path()).is_empty(),
        "{:?}",
        leftovers(store.path())
    );
}

#[test]
fn lock_options_and_symlinked_inputs_are_refused_before_pip_runs() {
    let store = store();
    let p = lock_plugin("-r /etc/shadow\n");
    let run = install(p.path(), store.path());
    assert_eq!(run.code, 125, "{run:?}");
    assert!(
        run.stderr.contains("line 1: options are not allowed")
            && run.stderr.contains("/etc/shadow"),
        "{run:?}"
    );
    // A wheels directory that is a symlink to somewhere else on the host.
    let p = plugin("wheels = \"wheels\"\n");
    std::os::unix::fs::symlink(humanize_wheels(), p.path().join("wheels")).unwrap();
    let run = install(p.path(), store.path());
    assert_eq!(run.code, 125, "{run:?}");
    assert!(
        run.stderr.contains("must not pass through a symlink"),
        "{run:?}"
    );
    assert!(leftovers(store.path()).is_empty());
}

#[test]
fn an_environment_path_with_terminal_escapes_is_shown_escaped() {
    let p = plugin("environment = \"venv\\u001b]0;owned\\u0007\\u001b[2J\"\n");
    let run: Run = Command::new(plugbox())
        .arg("check")
        .arg(p.path())
        .output()
        .unwrap()
        .into();
    for text in [&run.stdout, &run.stderr] {
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "raw control characters: {run:?}"
        );
    }
    assert!(
        run.stdout.contains("environment") || run.stderr.contains("environment"),
        "{run:?}"
    );
}

#[test]
fn a_locked_requirement_with_only_an_sdist_on_the_index_is_refused_naming_it() {
    // humanize 0.5.1 was only ever published as a source distribution.
    let p = lock_plugin(&format!(
        "humanize==0.5.1 --hash=sha256:{}\n",
        "a".repeat(64)
    ));
    let store = store();
    let run = install(p.path(), store.path());
    assert_eq!(run.code, 125, "{run:?}");
    assert!(
        run.stderr.contains("no wheel of humanize==0.5.1")
            && run.stderr.contains("build_sdists = true"),
        "{run:?}"
    );
    assert!(leftovers(store.path()).is_empty());
}

#[test]
fn a_store_the_sandbox_uids_cannot_reach_is_refused_and_a_tight_umask_changes_nothing() {
    let p = plugin("wheels = \"wheels\"\n");
    bundle_humanize(p.path());
    let closed = store();
    std::fs::set_permissions(closed.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let run = install(p.path(), closed.path());
    assert_eq!(run.code, 125, "{run:?}");
    assert!(
        run.stderr.contains("not readable by the sandbox uids") && run.stderr.contains("mode 700"),
        "{run:?}"
    );
    // umask 077: every directory plugbox creates (the store included) still gets its mode.
    let parent = store();
    let root = parent.path().join("a/b/store");
    let run: Run = Command::new("/bin/sh")
        .args(["-c", "umask 077; exec \"$0\" install \"$1\" --store \"$2\""])
        .arg(plugbox())
        .arg(p.path())
        .arg(&root)
        .output()
        .unwrap()
        .into();
    let env = installed_path(&run);
    for dir in [
        parent.path().join("a"),
        parent.path().join("a/b"),
        root.clone(),
        env.clone(),
    ] {
        assert_eq!(
            dir.metadata().unwrap().mode() & 0o777,
            0o755,
            "{}",
            dir.display()
        );
    }
    let run = run_in(&env, "import humanize");
    assert_eq!(run.code, 0, "{run:?}");
}
