//! Virtual environments with real packages from the package index, for the Python
//! environment suite and bench: built with `/usr/bin/python3 -m venv --without-pip` and
//! `pip --python`, in a world-readable directory (the sandbox uids read them).
//!
//! Each is built once per machine and reused while its marker holds the same specification:
//! built in a sibling directory and renamed into place, so two processes never see half of
//! one. Within one process a `OnceLock` per fixture avoids even the check.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The base interpreter: Debian's, executable by every uid.
pub const PYTHON: &str = "/usr/bin/python3";
/// Written last into a fixture; holds its specification.
const MARKER: &str = ".plugbox-fixture";

/// What the fixtures need, and where it comes from.
pub const TOOLING: &str = "the Python environment tests need Debian's python3-venv, \
     python3-pip, python3-setuptools and python3-wheel for /usr/bin/python3, and the package \
     index reachable (pip installs numpy, pillow and humanize): run `bash .ci/setup`";

/// Where fixtures live: a directory every uid can traverse.
pub fn root() -> PathBuf {
    let dir = std::env::temp_dir().join("plugbox-pyenv-fixtures");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Runs `/usr/bin/python3 ARGS`, failing with [`TOOLING`] and the output if it fails.
pub fn python3(args: &[&std::ffi::OsStr], what: &str) {
    let out = Command::new(PYTHON)
        .args(args)
        .env("PIP_NO_INPUT", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {PYTHON}: {e}; {TOOLING}"));
    assert!(
        out.status.success(),
        "{what} failed; {TOOLING}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `python -m venv --without-pip DIR`.
pub fn make_venv(dir: &Path) {
    python3(
        &[
            "-m".as_ref(),
            "venv".as_ref(),
            "--without-pip".as_ref(),
            dir.as_os_str(),
        ],
        "creating a venv",
    );
}

/// `pip --python DIR/bin/python install ARGS...` (wheels only: no package code runs).
pub fn pip_install(venv: &Path, args: &[&std::ffi::OsStr]) {
    let python = venv.join("bin/python");
    let mut all: Vec<&std::ffi::OsStr> =
        ["-m", "pip", "--disable-pip-version-check", "-q", "--python"]
            .iter()
            .map(|s| s.as_ref())
            .collect();
    all.push(python.as_os_str());
    all.extend(
        [
            "install",
            "--root-user-action=ignore",
            "--only-binary=:all:",
        ]
        .iter()
        .map(std::ffi::OsStr::new),
    );
    all.extend(args);
    python3(&all, "pip install");
}

/// The fixture `name` built by `build(dir)` (which makes the venv at `dir`), reused while
/// its marker holds `spec`.
pub fn cached(name: &str, spec: &str, build: impl FnOnce(&Path)) -> PathBuf {
    let dir = root().join(name);
    if std::fs::read_to_string(dir.join(MARKER)).ok().as_deref() == Some(spec) {
        return dir;
    }
    let building = root().join(format!("{name}.building-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    build(&building);
    std::fs::write(building.join(MARKER), spec).unwrap();
    let current = |d: &Path| std::fs::read_to_string(d.join(MARKER)).ok().as_deref() == Some(spec);
    // Never remove a copy another process just put in place (it may be in use).
    if !current(&dir) {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if std::fs::rename(&building, &dir).is_err() {
        // Another process put its copy in place first.
        let _ = std::fs::remove_dir_all(&building);
    }
    assert_eq!(
        std::fs::read_to_string(dir.join(MARKER)).ok().as_deref(),
        Some(spec),
        "fixture {name}"
    );
    dir
}

/// The `site-packages` of a venv.
pub fn site_packages(venv: &Path) -> PathBuf {
    venv.join("lib/python3.11/site-packages")
}

/// A venv with numpy and Pillow from the index, and a world-writable file and directory in
/// its `site-packages` (so only the sandbox can refuse a write there).
pub fn numpy_env() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        cached("numpy-pillow", "numpy pillow v1", |dir| {
            make_venv(dir);
            pip_install(dir, &["numpy".as_ref(), "pillow".as_ref()]);
            let site = site_packages(dir);
            let scratch = site.join("plugbox_scratch.txt");
            std::fs::write(&scratch, "untouched\n").unwrap();
            std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o666)).unwrap();
            let open = site.join("plugbox_open");
            std::fs::create_dir(&open).unwrap();
            std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        })
    })
}

/// A venv with humanize from the index (another plugin's environment).
pub fn humanize_env() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        cached("humanize", "humanize v1", |dir| {
            make_venv(dir);
            pip_install(dir, &["humanize".as_ref()]);
        })
    })
}

/// A distribution's files: `(relative path, contents)`.
type Files = &'static [(&'static str, &'static str)];

const PLUGIN_MAIN: &str = "import humanize\nimport plugbox\n\n\n@plugbox.command\ndef size(n: int) -> str:\n    return humanize.naturalsize(n)\n";

/// `plugbox-humane`: a plugin declared by a `plugbox.plugins` entry point, depending on
/// humanize from the index.
const ENTRY_POINT_DIST: Files = &[
    (
        "pyproject.toml",
        "[build-system]\nrequires = [\"setuptools>=61\"]\nbuild-backend = \"setuptools.build_meta\"\n\
         [project]\nname = \"plugbox-humane\"\nversion = \"1.0.0\"\ndependencies = [\"humanize\"]\n\
         [project.entry-points.\"plugbox.plugins\"]\nhumane = \"plugbox_humane\"\n\
         [tool.setuptools]\npackages = [\"plugbox_humane\"]\n\
         [tool.setuptools.package-data]\nplugbox_humane = [\"plugbox.toml\"]\n",
    ),
    ("plugbox_humane/__init__.py", ""),
    ("plugbox_humane/main.py", PLUGIN_MAIN),
    (
        "plugbox_humane/plugbox.toml",
        "schema = 1\n[plugin]\nname = \"humane\"\nversion = \"1.0.0\"\napi = \"^1\"\nentry = \"main.py\"\n",
    ),
];

/// `plugbox-ns-humane`: a plugin in the `plugbox_plugins` namespace, depending on humanize.
const NAMESPACE_DIST: Files = &[
    (
        "pyproject.toml",
        "[build-system]\nrequires = [\"setuptools>=61\"]\nbuild-backend = \"setuptools.build_meta\"\n\
         [project]\nname = \"plugbox-ns-humane\"\nversion = \"1.0.0\"\ndependencies = [\"humanize\"]\n\
         [tool.setuptools.packages.find]\ninclude = [\"plugbox_plugins.*\"]\nnamespaces = true\n\
         [tool.setuptools.package-data]\n\"plugbox_plugins.ns_humane\" = [\"plugbox.toml\"]\n",
    ),
    ("plugbox_plugins/ns_humane/__init__.py", ""),
    ("plugbox_plugins/ns_humane/main.py", PLUGIN_MAIN),
    (
        "plugbox_plugins/ns_humane/plugbox.toml",
        "schema = 1\n[plugin]\nname = \"ns-humane\"\nversion = \"1.0.0\"\napi = \"^1\"\nentry = \"main.py\"\n",
    ),
];

/// A venv into which pip installed both distributions above (built into wheels from local
/// sources by setuptools, no index) and their dependency humanize (from the index).
pub fn packaged_env() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let spec = format!("packaged v1 {ENTRY_POINT_DIST:?} {NAMESPACE_DIST:?}");
        cached("packaged", &spec, |dir| {
            let work = PathBuf::from(format!("{}.src", dir.display()));
            let _ = std::fs::remove_dir_all(&work);
            let mut sources = Vec::new();
            for (name, files) in [("humane", ENTRY_POINT_DIST), ("ns-humane", NAMESPACE_DIST)] {
                let src = work.join(name);
                for (path, text) in files {
                    let path = src.join(path);
                    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                    std::fs::write(path, text).unwrap();
                }
                sources.push(src);
            }
            let wheels = work.join("wheels");
            let mut args: Vec<&std::ffi::OsStr> = [
                "-m",
                "pip",
                "--isolated",
                "--disable-pip-version-check",
                "-q",
                "wheel",
                "--no-index",
                "--no-build-isolation",
                "--no-deps",
                "-w",
            ]
            .iter()
            .map(|s| s.as_ref())
            .collect();
            args.push(wheels.as_os_str());
            args.extend(sources.iter().map(|s| s.as_os_str()));
            python3(&args, "building the wheels (pip wheel, setuptools)");
            make_venv(dir);
            pip_install(
                dir,
                &[
                    "--find-links".as_ref(),
                    wheels.as_os_str(),
                    "plugbox-humane".as_ref(),
                    "plugbox-ns-humane".as_ref(),
                ],
            );
            let _ = std::fs::remove_dir_all(&work);
        })
    })
}
