//! A plugin runs in its own Python environment (issue 11, item 2), in the real sandbox, with
//! real packages from the package index (numpy, Pillow, humanize). The attacks first: what
//! the plugin must not read, write or import, and what the host refuses to load (an
//! environment outside the grant, a `.pth` reaching outside it, an environment not
//! installed); then the routes that work: a declared environment, a venv runtime, one
//! shipped in the plugin directory, and pip-installed distributions (entry point, namespace)
//! whose dependencies import.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
#[path = "pyenv_fixtures/harness.rs"]
mod harness;
mod pyenv_fixtures;

use common::plugins::{TestEngine, TestPlugin};
use harness::*;
use plugbox::engine::LoadError;
use plugbox::manifest::{CeilingMode, Grants};
use pyenv_fixtures as fx;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

#[tokio::test]
async fn it_cannot_read_outside_or_write_into_its_environment() {
    let env = fx::numpy_env();
    let site = fx::site_packages(env);
    let p = plugin(&declared(env));
    let (_keep, secret) = outside_file();
    let scratch = site.join("plugbox_scratch.txt");
    let grants = Grants::none().filesystem_read(env);
    let replies = run(
        p.path(),
        &grants,
        &[
            ("read", json!({ "path": secret })),
            ("read", json!({ "path": site.join("numpy/__init__.py") })),
            ("append", json!({ "path": scratch })),
            (
                "append",
                json!({ "path": site.join("plugbox_open/new.py") }),
            ),
            ("append", json!({ "path": site.join("numpy/__init__.py") })),
        ],
    )
    .await;
    // Outside: EACCES from Landlock (the file is world-readable). Its own env: readable.
    // Into its env: EACCES, on a world-writable file and in a world-writable directory.
    assert_eq!(replies, ["EACCES", "ok", "EACCES", "EACCES", "EACCES"]);
    assert_eq!(std::fs::read_to_string(&scratch).unwrap(), "untouched\n");
    assert!(!site.join("plugbox_open/new.py").exists());
}

#[tokio::test]
async fn a_filesystem_write_reaching_its_environment_is_refused() {
    let env = fx::numpy_env();
    let site = fx::site_packages(env);
    let extra = format!(
        "{}[filesystem]\nwrite = [{:?}]\n",
        declared(env),
        site.join("plugbox_open").display().to_string()
    );
    let p = plugin(&extra);
    let e = refusal(p.path(), &Grants::all_requested(), |_| {}).await;
    assert!(matches!(e, LoadError::CodeWritable(_)), "{e}");
    let text = e.to_string();
    assert!(text.contains("the Python environment"), "{text}");
    assert!(text.contains(&env.display().to_string()), "{text}");
}

#[tokio::test]
async fn it_cannot_import_from_another_plugins_environment() {
    let env = fx::numpy_env();
    let other = fx::humanize_env();
    let other_site = fx::site_packages(other);
    let p = plugin(&declared(env));
    let replies = run(
        p.path(),
        &Grants::none().filesystem_read(env),
        &[
            ("imports", json!({ "name": "humanize" })),
            (
                "imports",
                json!({ "name": "humanize", "extra": other_site }),
            ),
            (
                "read",
                json!({ "path": other_site.join("humanize/__init__.py") }),
            ),
        ],
    )
    .await;
    // The import system lists the other site-packages, gets EACCES and finds nothing there.
    assert_eq!(
        replies,
        ["ModuleNotFoundError", "ModuleNotFoundError", "EACCES"]
    );
}

#[tokio::test]
async fn an_absolute_environment_outside_the_grant_is_refused_naming_it() {
    let env = fx::numpy_env();
    let p = plugin(&declared(env));
    for mode in [CeilingMode::Refuse, CeilingMode::Clamp] {
        let e = refusal(p.path(), &Grants::none(), |c| c.ceiling = mode).await;
        assert!(matches!(e, LoadError::PythonEnv(_)), "{e}");
        let text = e.to_string();
        assert!(
            text.contains(&format!(
                "{} (from python.environment) is not within the grant's [filesystem] read",
                env.display()
            )),
            "{text}"
        );
        assert_eq!(e.step(), "validate");
    }
    // A venv runtime is the same environment, on the same authority.
    let runtime = format!(
        "runtime = {:?}\n",
        env.join("bin/python").display().to_string()
    );
    let manifest = std::fs::read_to_string(p.path().join("plugbox.toml")).unwrap();
    let manifest = manifest.replace(&declared(env), "").replace(
        "entry = \"main.py\"\n",
        &format!("entry = \"main.py\"\n{runtime}"),
    );
    std::fs::write(p.path().join("plugbox.toml"), manifest).unwrap();
    let e = refusal(p.path(), &Grants::none(), |_| {}).await;
    assert!(e.to_string().contains("(from plugin.runtime)"), "{e}");
}

#[tokio::test]
async fn an_editable_install_pointing_outside_gets_the_documented_error() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let env = tmp.path().join("env");
    fx::make_venv(&env);
    // What `pip install -e` leaves: a .pth naming the source tree (a path line), and
    // setuptools' finder mapping a package to it.
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("mylib")).unwrap();
    std::fs::write(src.join("mylib/__init__.py"), "X = 1\n").unwrap();
    let site = fx::site_packages(&env);
    let pth = site.join("__editable__.mylib-1.0.pth");
    std::fs::write(&pth, format!("{}\n", src.display())).unwrap();
    let p = probe_plugin(&declared(&env));
    let grants = Grants::none().filesystem_read(&env);
    let e = refusal(p.path(), &grants, |_| {}).await;
    assert!(matches!(e, LoadError::PythonEnv(_)), "{e}");
    let expected = format!(
        "{} line 1 adds {} to sys.path, outside the environment and the grant's [filesystem] read",
        pth.display(),
        src.display()
    );
    assert!(e.to_string().contains(&expected), "{e}");

    // The finder form (PEP 660, setuptools' strict mode) is read the same way.
    std::fs::remove_file(&pth).unwrap();
    let finder = site.join("__editable___mylib_1_0_finder.py");
    std::fs::write(
        &finder,
        format!(
            "import sys\nMAPPING: dict[str, str] = {{'mylib': '{}'}}\n",
            src.join("mylib").display()
        ),
    )
    .unwrap();
    let e = refusal(p.path(), &grants, |_| {}).await;
    assert!(
        e.to_string()
            .contains(&format!("{} line 2 adds", finder.display())),
        "{e}"
    );

    // Granted by the operator, it loads and the package imports from the source tree.
    std::fs::remove_file(&finder).unwrap();
    std::fs::write(&pth, format!("{}\n", src.display())).unwrap();
    let grants = grants.filesystem_read(&src);
    let replies = run(
        p.path(),
        &grants,
        &[("imports", json!({ "name": "mylib" }))],
    )
    .await;
    assert_eq!(replies, ["ok"]);
}

#[tokio::test]
async fn a_requirements_plugin_whose_environment_is_not_installed_names_plugbox_install() {
    let p = plugin("[python]\nrequirements = \"requirements.txt\"\n");
    std::fs::write(
        p.path().join("requirements.txt"),
        "humanize==4.9.0 --hash=sha256:00\n",
    )
    .unwrap();
    let store = tempfile::tempdir().unwrap();
    let store_path = store.path().to_owned();
    let e = refusal(p.path(), &Grants::all_requested(), |c| {
        c.env_store = store_path
    })
    .await;
    assert!(matches!(e, LoadError::PythonEnv(_)), "{e}");
    let dir = p.path().canonicalize().unwrap();
    assert!(
        e.to_string()
            .contains(&format!("run `plugbox install {}`", dir.display())),
        "{e}"
    );
}

#[tokio::test]
async fn numpy_and_pillow_from_its_own_environment_compute_a_known_result() {
    let env = fx::numpy_env();
    let p = plugin(&declared(env));
    let te = TestEngine::new();
    let plugin = te
        .engine
        .load(p.path(), &Grants::none().filesystem_read(env))
        .await
        .unwrap();
    let stats = json_of(plugin.call("stats", json!({ "n": 101 })).await.unwrap());
    assert_eq!(
        stats,
        json!({ "sum": 5050, "size": [10, 5], "pixel": [10, 20, 30] })
    );
    let where_ = json_of(plugin.call("where", json!({})).await.unwrap());
    te.engine.shutdown().await.unwrap();
    assert_eq!(where_["prefix"], env.to_str().unwrap());
    assert_eq!(where_["flags_no_site"], 0);
    let path: Vec<&str> = where_["path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    let site = fx::site_packages(env);
    let at = |s: &str| {
        path.iter()
            .position(|p| *p == s)
            .unwrap_or_else(|| panic!("{s} not in {path:?}"))
    };
    let sdk = path
        .iter()
        .position(|p| Path::new(p).join("plugbox/_runtime.py").exists())
        .unwrap();
    assert!(
        sdk < at(site.to_str().unwrap()),
        "the SDK comes first: {path:?}"
    );
    // The spawn record names the environment and what it read.
    let spawn = &te.events("spawn")[0]["detail"];
    let env_report = &spawn["python_env"];
    assert_eq!(env_report["root"], env.to_str().unwrap());
    assert_eq!(
        env_report["interpreter"],
        env.join("bin/python").to_str().unwrap()
    );
    assert_eq!(env_report["origin"], "declared");
    assert_eq!(env_report["read_on"], "grant");
    assert_eq!(
        env_report["granted_read"],
        json!([env, "/usr/lib/python3.11"])
    );
    assert_eq!(env_report["without_bytecode"], json!([]));
    assert_eq!(
        spawn["enforcement"]["command"],
        env.join("bin/python").to_str().unwrap()
    );
}

#[tokio::test]
async fn a_venv_runtime_and_an_environment_in_the_plugin_directory_work() {
    // plugin.runtime naming a venv's interpreter: that environment, granted.
    let env = fx::numpy_env();
    let runtime = format!(
        "runtime = {:?}\n",
        env.join("bin/python").display().to_string()
    );
    let p = TestPlugin::new("numpy-stats", "", &plugin_source());
    let manifest = std::fs::read_to_string(p.path().join("plugbox.toml")).unwrap();
    let manifest = manifest.replace(
        "entry = \"main.py\"\n",
        &format!("entry = \"main.py\"\n{runtime}"),
    );
    std::fs::write(p.path().join("plugbox.toml"), manifest).unwrap();
    let replies = run(
        p.path(),
        &Grants::none().filesystem_read(env),
        &[("stats", json!({ "n": 4 }))],
    )
    .await;
    assert_eq!(replies[0]["sum"], 6);

    // A venv shipped in the plugin directory is read on the host's authority: no grant.
    let q = TestPlugin::new(
        "bundled",
        "[python]\nenvironment = \"venv\"\n",
        "import plugbox, tiny\n@plugbox.command\ndef value():\n    return tiny.VALUE\n",
    );
    // The code digest covers the plugin directory and refuses symlinks: a venv shipped there
    // is made with copies, without the `lib64` link (CPython does not need it).
    let venv = q.path().join("venv");
    fx::python3(
        &[
            "-m".as_ref(),
            "venv".as_ref(),
            "--copies".as_ref(),
            "--without-pip".as_ref(),
            venv.as_os_str(),
        ],
        "creating a venv with copies",
    );
    std::fs::remove_file(venv.join("lib64")).unwrap();
    for extra in ["python3", "python3.11"] {
        std::fs::remove_file(venv.join("bin").join(extra)).unwrap();
    }
    std::fs::write(fx::site_packages(&venv).join("tiny.py"), "VALUE = 42\n").unwrap();
    let replies = run(q.path(), &Grants::none(), &[("value", json!({}))]).await;
    assert_eq!(replies, [42]);
}

#[test]
fn a_pip_installed_entry_point_plugin_imports_its_dependency() {
    list_and_run("humane", "entry-point");
}

#[test]
fn a_namespace_package_plugin_imports_its_dependency() {
    list_and_run("ns-humane", "namespace");
}

#[tokio::test]
async fn a_real_pip_editable_install_is_refused_naming_its_source_tree() {
    // `pip install -e` of a setuptools project (setuptools from the index, built in the
    // environment): the .pth imports a finder whose MAPPING names the source tree.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let env = tmp.path().join("env");
    fx::make_venv(&env);
    fx::pip_install(&env, &["setuptools".as_ref()]);
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("mylib")).unwrap();
    std::fs::write(src.join("mylib/__init__.py"), "X = 1\n").unwrap();
    std::fs::write(
        src.join("pyproject.toml"),
        "[build-system]\nrequires = [\"setuptools>=64\"]\nbuild-backend = \"setuptools.build_meta\"\n\
         [project]\nname = \"mylib\"\nversion = \"1.0\"\n[tool.setuptools]\npackages = [\"mylib\"]\n",
    )
    .unwrap();
    let python = env.join("bin/python");
    fx::python3(
        &[
            "-m".as_ref(),
            "pip".as_ref(),
            "-q".as_ref(),
            "--disable-pip-version-check".as_ref(),
            "--python".as_ref(),
            python.as_os_str(),
            "install".as_ref(),
            "--root-user-action=ignore".as_ref(),
            "--no-build-isolation".as_ref(),
            "--no-deps".as_ref(),
            "-e".as_ref(),
            src.as_os_str(),
        ],
        "pip install -e",
    );
    let p = probe_plugin(&declared(&env));
    let e = refusal(p.path(), &Grants::none().filesystem_read(&env), |_| {}).await;
    assert!(matches!(e, LoadError::PythonEnv(_)), "{e}");
    let finder = fx::site_packages(&env).join("__editable___mylib_1_0_finder.py");
    // The line number is setuptools' (its MAPPING line); the file and the path are named.
    let text = e.to_string();
    assert!(text.contains(&format!("{} line ", finder.display())), "{e}");
    let adds = format!("adds {} to sys.path", src.join("mylib").display());
    assert!(text.contains(&adds), "{e}");
}

#[tokio::test]
async fn an_installed_store_environment_is_read_on_the_host_authority() {
    // What `plugbox install` leaves in the store: ROOT/<key>/ with the marker written last.
    let p = probe_plugin("[python]\nrequirements = \"requirements.txt\"\n");
    std::fs::write(
        p.path().join("requirements.txt"),
        "tiny==1.0 --hash=sha256:00\n",
    )
    .unwrap();
    let store = tempfile::tempdir().unwrap();
    std::fs::set_permissions(store.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let manifest = plugbox::manifest::Manifest::load(p.path()).unwrap();
    let base = std::fs::canonicalize("/usr/bin/python3").unwrap();
    let key = plugbox::pyenv::store::key(&manifest, &base)
        .unwrap()
        .unwrap();
    let env = store.path().join(&key);
    fx::make_venv(&env);
    let site = fx::site_packages(&env);
    std::fs::write(site.join("tiny.py"), "VALUE = 42\n").unwrap();
    // A package installed without byte-code: named in the record (it compiles every start).
    std::fs::create_dir(site.join("slowpkg")).unwrap();
    std::fs::write(site.join("slowpkg/__init__.py"), "").unwrap();
    std::fs::write(env.join(plugbox::pyenv::store::COMPLETE_MARKER), &key).unwrap();

    let store_path = store.path().to_owned();
    let te = TestEngine::with(|c| c.env_store = store_path);
    // No [filesystem] grant at all: the store is the host's.
    let plugin = te.engine.load(p.path(), &Grants::none()).await.unwrap();
    let reply = plugin
        .call("imports", json!({ "name": "tiny" }))
        .await
        .unwrap();
    assert_eq!(json_of(reply), "ok");
    te.engine.shutdown().await.unwrap();
    let report = &te.events("spawn")[0]["detail"]["python_env"];
    assert_eq!(report["origin"], "store", "{report:#}");
    assert_eq!(report["read_on"], "host", "{report:#}");
    assert_eq!(report["root"], env.to_str().unwrap(), "{report:#}");
    assert_eq!(report["without_bytecode"], json!(["slowpkg"]), "{report:#}");
}

#[tokio::test]
async fn a_pyvenv_cfg_cannot_widen_reads_and_special_pth_files_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let env = tmp.path().join("env");
    fx::make_venv(&env);
    let p = probe_plugin(&declared(&env));
    let grants = Grants::none().filesystem_read(&env);

    // `home` names another "installation": its lib/python3.11 is not the baseline's, so the
    // grant must cover it; it does not, and the load is refused naming it.
    let fake = tmp.path().join("elsewhere");
    std::fs::create_dir_all(fake.join("bin")).unwrap();
    std::fs::create_dir_all(fake.join("lib/python3.11")).unwrap();
    let cfg = env.join("pyvenv.cfg");
    let original = std::fs::read_to_string(&cfg).unwrap();
    let home = format!("home = {}\n", fake.join("bin").display());
    std::fs::write(&cfg, original.replace("home = /usr/bin\n", &home)).unwrap();
    let e = refusal(p.path(), &grants, |_| {}).await;
    let stdlib = fake.join("lib/python3.11");
    assert!(
        e.to_string()
            .contains(&format!("read: {}", stdlib.display())),
        "{e}"
    );
    std::fs::write(&cfg, &original).unwrap();

    // A FIFO named .pth would block a reader; a huge one would flood it: both refused.
    let site = fx::site_packages(&env);
    let fifo = site.join("blocking.pth");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let e = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        refusal(p.path(), &grants, |_| {}),
    )
    .await
    .expect("a FIFO .pth must not hang the load");
    assert!(e.to_string().contains("blocking.pth: is a"), "{e}");
    std::fs::remove_file(&fifo).unwrap();
    let huge = site.join("huge.pth");
    std::fs::write(&huge, "#".repeat(1024 * 1024)).unwrap();
    let e = refusal(p.path(), &grants, |_| {}).await;
    assert!(e.to_string().contains("too large"), "{e}");
}
