//! `plugbox list`: discovery by reading files only. A package whose import (or `.pth` file)
//! would write a marker never runs, and one invalid plugin never hides the others.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use std::path::Path;
use std::process::Command;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn manifest(name: &str) -> String {
    format!("schema = 1\n[plugin]\nname = \"{name}\"\nversion = \"1.0.0\"\napi = \"^1\"\nentry = \"main.py\"\n[capabilities]\n\"log\" = {{}}\n")
}

#[test]
fn discovery_reads_manifests_and_never_imports_plugin_code() {
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join("MARKER");
    let trap = format!(
        "open({:?}, 'w').write('imported')\n",
        marker.display().to_string()
    );
    let site = tmp.path().join("site");
    // A valid plugin installed as a distribution with an entry point.
    write(
        &site.join("good_plugin-1.0.dist-info/entry_points.txt"),
        "[console_scripts]\nx = y:z\n\n[plugbox.plugins]\ngood = good_plugin:main\n",
    );
    write(&site.join("good_plugin/plugbox.toml"), &manifest("good"));
    write(&site.join("good_plugin/main.py"), &trap);
    write(&site.join("good_plugin/__init__.py"), &trap);
    // An invalid one, a distribution without a manifest, and a .pth that would run code.
    write(
        &site.join("bad_plugin-2.0.dist-info/entry_points.txt"),
        "[plugbox.plugins]\nbad = bad_plugin\n",
    );
    write(
        &site.join("bad_plugin/plugbox.toml"),
        "schema = 1\n[plugin]\nname = \"Bad Name\"\nadmin = true\n",
    );
    write(&site.join("bad_plugin/__init__.py"), &trap);
    write(
        &site.join("hollow-1.0.dist-info/entry_points.txt"),
        "[plugbox.plugins]\nhollow = hollow_pkg:run\n",
    );
    write(&site.join("evil.pth"), &format!("import os; {trap}"));
    // A namespace package plugin.
    write(
        &site.join("plugbox_plugins/ns_one/plugbox.toml"),
        &manifest("ns-one"),
    );
    write(&site.join("plugbox_plugins/ns_one/main.py"), &trap);
    write(&site.join("plugbox_plugins/__init__.py"), &trap);
    // Plugin directories, one hostile (a huge manifest).
    let dirs = tmp.path().join("plugins");
    write(&dirs.join("alpha/plugbox.toml"), &manifest("alpha"));
    write(&dirs.join("alpha/main.py"), &trap);
    write(
        &dirs.join("huge/plugbox.toml"),
        &format!("schema = 1\n# {}\n", "x".repeat(400 * 1024)),
    );

    let out = Command::new(common::plugbox())
        .args(["list", "--json", "--python", "/usr/bin/python3", "--path"])
        .arg(&dirs)
        .arg("--site")
        .arg(&site)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!marker.exists(), "discovery ran plugin code");
    let found: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let by = |loc: &str| {
        found
            .iter()
            .find(|f| f["location"].as_str().unwrap().ends_with(loc))
            .unwrap_or_else(|| panic!("{loc}: {found:#?}"))
    };
    assert_eq!(by("plugins/alpha")["name"], "alpha");
    assert!(by("plugins/huge")["error"]
        .as_str()
        .unwrap()
        .contains("limit"));
    assert_eq!(by("site/good_plugin")["name"], "good");
    assert_eq!(by("site/good_plugin")["route"], "entry-point");
    assert!(
        by("site/bad_plugin")["error"]
            .as_str()
            .unwrap()
            .contains("unknown field"),
        "{found:#?}"
    );
    assert!(by("site/hollow_pkg")["error"]
        .as_str()
        .unwrap()
        .contains("ships no plugbox.toml"));
    assert_eq!(by("plugbox_plugins/ns_one")["name"], "ns-one");
    assert_eq!(by("plugbox_plugins/ns_one")["route"], "namespace");
    assert_eq!(found.len(), 6);
}

/// What the packaging test needs from Debian, and where it comes from.
const TOOLING: &str = "building and installing examples/packaged/ needs Debian's python3-pip, \
     python3-setuptools, python3-wheel and python3-venv for /usr/bin/python3: run `bash .ci/setup`";

/// Runs `/usr/bin/python3 ARGS`, failing the test with `TOOLING` and the output if it fails.
fn python3(args: &[&std::ffi::OsStr], what: &str) {
    let out = Command::new(common::PYTHON)
        .args(args)
        .env("PIP_NO_INPUT", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {}: {e}; {TOOLING}", common::PYTHON));
    assert!(
        out.status.success(),
        "{what} failed; {TOOLING}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Copies a source tree, leaving out build leftovers.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let name = entry.file_name();
        let skip = name.to_string_lossy();
        if skip == "build" || skip == "__pycache__" || skip.ends_with(".egg-info") {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to.join(&name));
        } else {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

/// The packaged examples, built into wheels by setuptools from local sources (no index) and
/// installed by pip into a fresh virtual environment, are listed through that environment's
/// interpreter and run under the engine. An installed package whose import, entry file or
/// `.pth` file would write a marker is listed without any of them running.
#[test]
fn pip_installed_plugins_are_listed_through_their_venv_and_run() {
    use std::ffi::OsStr;
    use std::os::unix::fs::PermissionsExt;
    common::require_root(); // `plugbox run` switches to the sandbox uid
    let started = std::time::Instant::now();
    // Every uid must reach the installed plugin directories: the sandbox reads them.
    let tmp = tempfile::Builder::new()
        .prefix("plugbox-pkg-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let marker = tmp.path().join("MARKER");
    let trap = format!(
        "open({:?}, 'w').write('imported')\n",
        marker.display().to_string()
    );

    // Sources: copies of the examples (building writes into the source tree) and a trap.
    let src = tmp.path().join("src");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/packaged");
    for name in ["plugbox-hello", "plugbox-ns-hello"] {
        copy_tree(&examples.join(name), &src.join(name));
    }
    let trap_src = src.join("plugbox-trap");
    write(
        &trap_src.join("pyproject.toml"),
        "[build-system]\nrequires = [\"setuptools>=61\"]\nbuild-backend = \"setuptools.build_meta\"\n\
         [project]\nname = \"plugbox-trap\"\nversion = \"1.0.0\"\n\
         [project.entry-points.\"plugbox.plugins\"]\ntrap = \"plugbox_trap:main\"\n\
         [tool.setuptools]\npackages = [\"plugbox_trap\"]\n\
         [tool.setuptools.package-data]\nplugbox_trap = [\"plugbox.toml\"]\n",
    );
    write(&trap_src.join("plugbox_trap/__init__.py"), &trap);
    write(&trap_src.join("plugbox_trap/main.py"), &trap);
    write(
        &trap_src.join("plugbox_trap/plugbox.toml"),
        &manifest("trap"),
    );

    let pip = [
        "-m",
        "pip",
        "--isolated",
        "--disable-pip-version-check",
        "--no-cache-dir",
        "-q",
    ];
    let wheels = tmp.path().join("wheels");
    let mut args: Vec<&OsStr> = pip.iter().map(OsStr::new).collect();
    args.extend(
        [
            "wheel",
            "--no-index",
            "--no-build-isolation",
            "--no-deps",
            "-w",
        ]
        .iter()
        .map(OsStr::new),
    );
    args.push(wheels.as_os_str());
    let sources: Vec<_> = ["plugbox-hello", "plugbox-ns-hello", "plugbox-trap"]
        .iter()
        .map(|n| src.join(n))
        .collect();
    args.extend(sources.iter().map(|s| s.as_os_str()));
    python3(&args, "building the wheels (pip wheel, setuptools)");

    let venv = tmp.path().join("venv");
    python3(
        &["-m", "venv", "--without-pip"]
            .iter()
            .map(OsStr::new)
            .chain([venv.as_os_str()])
            .collect::<Vec<_>>(),
        "creating the venv",
    );
    let venv_python = venv.join("bin/python");
    let built: Vec<_> = std::fs::read_dir(&wheels)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(built.len(), 3, "{built:?}");
    let mut args: Vec<&OsStr> = pip.iter().map(OsStr::new).collect();
    args.extend([OsStr::new("--python"), venv_python.as_os_str()]);
    args.extend(
        [
            "install",
            "--no-index",
            "--no-deps",
            "--root-user-action=ignore",
        ]
        .iter()
        .map(OsStr::new),
    );
    args.extend(built.iter().map(|w| w.as_os_str()));
    python3(&args, "installing the wheels into the venv (pip --python)");

    // A `.pth` file runs when `site` processes the directory: discovery must not let it.
    let lib = venv.join("lib");
    let site = std::fs::read_dir(&lib)
        .unwrap()
        .flatten()
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| panic!("no site-packages under {}", lib.display()));
    write(&site.join("zz-trap.pth"), &format!("import os; {trap}"));

    let out = Command::new(common::plugbox())
        .args(["list", "--json", "--python"])
        .arg(&venv_python)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!marker.exists(), "discovery ran installed code");
    let found: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let by = |name: &str| {
        found
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("{name}: {found:#?}"))
    };
    // Only the venv's own site directory: not the base interpreter's.
    assert_eq!(found.len(), 3, "{found:#?}");
    for f in &found {
        let location = Path::new(f["location"].as_str().unwrap());
        assert!(location.starts_with(&site), "{found:#?}");
        assert!(f["error"].is_null(), "{found:#?}");
    }
    let hello = by("hello");
    assert_eq!(hello["route"], "entry-point");
    assert_eq!(hello["version"], "1.0.0");
    assert_eq!(hello["capabilities"], serde_json::json!(["log"]));
    assert_eq!(
        hello["location"],
        site.join("plugbox_hello").to_str().unwrap()
    );
    let ns = by("ns-hello");
    assert_eq!(ns["route"], "namespace");
    assert_eq!(ns["version"], "1.0.0");
    assert_eq!(
        ns["location"],
        site.join("plugbox_plugins/ns_hello").to_str().unwrap()
    );
    assert_eq!(by("trap")["route"], "entry-point");

    // The installed directories load and answer under the engine, read by the sandbox uid.
    for (plugin, expected) in [
        (&hello["location"], "hello, packaging"),
        (&ns["location"], "hello from the namespace, packaging"),
    ] {
        let out = Command::new(common::plugbox())
            .arg("run")
            .arg(plugin.as_str().unwrap())
            .args(["--call", "greet", "--args", r#"{"name": "packaging"}"#])
            .arg("--audit")
            .arg(tmp.path().join("audit.jsonl"))
            .arg("--state")
            .arg(tmp.path().join("state"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let line: serde_json::Value =
            serde_json::from_slice(out.stdout.split(|&b| b == b'\n').next().unwrap()).unwrap();
        assert_eq!(line["ok"], true, "{line}");
        assert_eq!(line["result"], expected, "{line}");
    }
    assert!(!marker.exists(), "installed trap code ran");
    eprintln!(
        "packaged plugins: built, installed, listed and run in {:?}",
        started.elapsed()
    );
}

/// `list` and `check` agree on validity: one refuses what the other refuses (issue 10).
#[test]
fn list_and_check_agree_on_the_host_api() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("future");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("plugbox.toml"),
        "schema = 1\n[plugin]\nname = \"future\"\nversion = \"1.0.0\"\napi = \"^2\"\nentry = \"main.py\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("main.py"), "").unwrap();
    let found = plugbox::discovery::in_directories(&[root.path().to_owned()]);
    let [one] = &found[..] else {
        panic!("{found:?}")
    };
    let listed = one.error.as_deref().expect("listed as invalid");
    assert!(listed.contains("requires host API ^2"), "{listed}");
    let check = Command::new(common::plugbox())
        .arg("check")
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(stderr.contains(listed), "{stderr} vs {listed}");
}

/// `check` compiles the entry file (in the strictest sandbox) and reports a syntax error, but
/// never runs it (issue 10).
#[test]
fn check_reports_a_syntax_error_and_never_runs_the_entry() {
    let root = tempfile::tempdir().unwrap();
    let manifest = "schema = 1\n[plugin]\nname = \"p\"\nversion = \"1.0.0\"\napi = \"^1\"\nentry = \"main.py\"\n";
    let marker = root.path().join("ran");
    for (name, source, broken) in [
        (
            "broken",
            "import plugbox\ndef f(:\n    pass\n".to_owned(),
            true,
        ),
        (
            "runs",
            format!("open({:?}, 'w').write('x')\n", marker.display().to_string()),
            false,
        ),
    ] {
        let dir = root.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("plugbox.toml"), manifest).unwrap();
        std::fs::write(dir.join("main.py"), source).unwrap();
        let out = Command::new(common::plugbox())
            .arg("check")
            .arg(&dir)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if broken {
            assert_eq!(out.status.code(), Some(125), "{stderr}");
            assert!(
                stderr.contains("SyntaxError") && stderr.contains("line 2"),
                "{stderr}"
            );
        } else {
            assert_eq!(out.status.code(), Some(0), "{stderr}");
        }
    }
    assert!(!marker.exists(), "check ran the entry file");
}
