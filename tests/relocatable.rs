//! A `plugbox` binary copied anywhere runs plugins: the SDK ships inside it. Proven by running
//! a copy of the binary in a private mount namespace where the source tree's `python/` is
//! hidden under an empty tmpfs and no `PLUGBOX_SDK` is set.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
use common::plugins::TestPlugin;
use std::path::Path;
use std::process::Command;

#[test]
fn a_copied_binary_runs_a_plugin_with_the_source_trees_sdk_out_of_reach() {
    let plugin = TestPlugin::new(
        "relocated",
        "",
        "import plugbox\n@plugbox.command\ndef where():\n    return plugbox.__file__\n",
    );
    let work = tempfile::tempdir().unwrap();
    let binary = work.path().join("plugbox");
    std::fs::copy(common::plugbox(), &binary).unwrap();
    let source_sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("python");
    // The mount is private to this command: other tests keep seeing the source tree.
    let script = r#"mount -t tmpfs none "$1" && test ! -e "$1/plugbox" && shift && exec "$@""#;
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(&source_sdk)
        .arg(&binary)
        .arg("run")
        .arg(plugin.path())
        .arg("--audit")
        .arg(work.path().join("audit.jsonl"))
        .arg("--state")
        .arg(work.path().join("state"))
        .args(["--call", "where"])
        .env_remove("PLUGBOX_SDK")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}\n{stdout}\n{stderr}", out.status);
    let expected = format!("/{}/plugbox/__init__.py", plugbox::sdk::dir_name());
    assert!(
        stdout.contains(&expected),
        "imported from the materialised SDK: {stdout}"
    );
    assert!(
        !stdout.contains(&source_sdk.display().to_string()),
        "{stdout}"
    );
}
