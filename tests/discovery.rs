//! `plugbox list`: discovery by reading files only. A package whose import (or `.pth` file)
//! would write a marker never runs, and one invalid plugin never hides the others.

#![allow(clippy::expect_used, clippy::unwrap_used)]

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
