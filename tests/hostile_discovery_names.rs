//! `plugbox list --group G --namespace N`: an application's own entry-point group and
//! namespace package are searched as plugbox's are, by reading files only, refusing special
//! files and symlinks, and a group or namespace that is not a dotted identifier (a path, `..`,
//! a bracket that would change which `entry_points.txt` section matches) is refused.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn manifest(name: &str) -> String {
    format!("schema = 1\n[plugin]\nname = \"{name}\"\nversion = \"1.0.0\"\napi = \"^1\"\nentry = \"main.py\"\n")
}

/// `plugbox list --json ARGS`, turned into a failure if it hangs (a FIFO read would).
fn list(args: &[&str], site: &Path) -> Output {
    Command::new("timeout")
        .arg("60")
        .arg(common::plugbox())
        .args(["list", "--json", "--site"])
        .arg(site)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn an_application_group_and_namespace_are_read_as_files_only() {
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join("MARKER");
    let trap = format!("open({:?}, 'w').write('x')\n", marker.display().to_string());
    let site = tmp.path().join("site");
    write(
        &site.join("app_ep-1.0.dist-info/entry_points.txt"),
        "[plugbox.plugins]\nother = other_pkg\n[myapp.plugins]\nep = app_ep:main\n",
    );
    write(&site.join("app_ep/plugbox.toml"), &manifest("app-ep"));
    write(&site.join("app_ep/__init__.py"), &trap);
    write(&site.join("app_ep/main.py"), &trap);
    write(&site.join("other_pkg/plugbox.toml"), &manifest("other"));
    write(&site.join("other_pkg/main.py"), &trap);
    write(
        &site.join("myapp/plugins/ns/plugbox.toml"),
        &manifest("app-ns"),
    );
    write(&site.join("myapp/plugins/ns/main.py"), &trap);
    write(&site.join("myapp/__init__.py"), &trap);
    // Hostile: a FIFO as entry_points.txt, a symlinked manifest in the namespace.
    std::fs::create_dir_all(site.join("fifo-1.0.dist-info")).unwrap();
    let fifo = site.join("fifo-1.0.dist-info/entry_points.txt");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    std::fs::create_dir_all(site.join("myapp/plugins/evil")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", site.join("myapp/plugins/evil/plugbox.toml"))
        .unwrap();

    let out = list(
        &["--group", "myapp.plugins", "--namespace", "myapp.plugins"],
        &site,
    );
    assert!(out.status.success(), "{out:?}");
    assert!(!marker.exists(), "discovery ran plugin code");
    let found: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let by = |end: &str| {
        found
            .iter()
            .find(|f| f["location"].as_str().unwrap().ends_with(end))
            .unwrap_or_else(|| panic!("{end}: {found:#?}"))
    };
    assert_eq!(by("site/app_ep")["name"], "app-ep");
    assert_eq!(by("site/app_ep")["route"], "entry-point");
    assert_eq!(by("myapp/plugins/ns")["name"], "app-ns");
    assert_eq!(by("myapp/plugins/ns")["route"], "namespace");
    assert!(by("fifo-1.0.dist-info")["error"].is_string(), "{found:#?}");
    assert!(by("myapp/plugins/evil")["error"].is_string(), "{found:#?}");
    assert_eq!(
        found.len(),
        4,
        "plugbox.plugins is not searched: {found:#?}"
    );

    // The defaults still search plugbox's own group and namespace only.
    let own: Vec<Value> = serde_json::from_slice(&list(&[], &site).stdout).unwrap();
    let names: Vec<&Value> = own.iter().map(|f| &f["name"]).collect();
    assert!(names.contains(&&Value::from("other")), "{own:#?}");
    assert!(!names.contains(&&Value::from("app-ns")), "{own:#?}");
}

#[test]
fn a_group_or_namespace_that_is_not_a_dotted_identifier_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for (flag, bad) in [
        ("--namespace", "../../etc"),
        ("--namespace", "myapp/plugins"),
        ("--namespace", "a..b"),
        ("--group", "plugbox.plugins]\n[x"),
        ("--group", "my-app"),
        ("--group", ""),
    ] {
        let out = list(&[flag, bad], tmp.path());
        assert!(!out.status.success(), "{flag} {bad:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("dotted identifier"), "{flag} {bad:?}: {err}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "escaped, one line: {err}"
        );
    }
}
