//! `plugbox diff`: what a new version asks for beyond the old one.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
use common::plugins::TestPlugin;
use plugbox::manifest::{diff::diff, Manifest};

#[test]
fn escalations_are_listed_and_an_identical_upgrade_is_clean() {
    let old = TestPlugin::new(
        "notes",
        "[capabilities]\n\"log\" = {}\n\"fs.read\" = { paths = [\"data\"], max_bytes = 1024 }\n\"kv.get\" = { optional = true }\n",
        "",
    );
    let new = TestPlugin::new(
        "notes",
        "[capabilities]\n\"log\" = {}\n\"fs.read\" = { paths = [\"data\", \"secrets\"], max_bytes = 4096 }\n\"kv.get\" = {}\n\"kv.set\" = {}\n[network]\nconnect_tcp = [443]\n[process]\nsubprocesses = true\n[limits]\nmemory_mib = 2048\n",
        "",
    );
    let (o, n) = (
        Manifest::load(old.path()).unwrap(),
        Manifest::load(new.path()).unwrap(),
    );
    let fields: Vec<String> = diff(&o, &n)
        .into_iter()
        .filter(|c| c.kind == "escalates")
        .map(|c| c.field)
        .collect();
    for expected in [
        "capabilities.\"fs.read\".paths",
        "capabilities.\"fs.read\".max_bytes",
        "capabilities.\"kv.get\".optional",
        "capabilities.\"kv.set\"",
        "network.connect_tcp",
        "process.subprocesses",
        "limits.memory_mib",
    ] {
        assert!(
            fields.iter().any(|f| f == expected),
            "{expected} missing from {fields:?}"
        );
    }
    assert!(diff(&o, &o).is_empty());
    let out = std::process::Command::new(common::plugbox())
        .arg("diff")
        .arg(old.path())
        .arg(new.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "an escalating upgrade exits 1");
    let same = std::process::Command::new(common::plugbox())
        .arg("diff")
        .arg(old.path())
        .arg(old.path())
        .output()
        .unwrap();
    assert_eq!(same.status.code(), Some(0));
}
