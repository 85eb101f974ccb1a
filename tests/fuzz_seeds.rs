//! Replays every committed fuzz seed through the fuzz targets' library entry points, so CI
//! exercises them on a stable toolchain.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("seed dir")
        .map(|e| e.expect("entry").path())
        .collect();
    v.sort();
    v
}

fn replay(target: &str, run: fn(&[u8]), extra: Option<&str>) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut seeds = files(&root.join("fuzz/seeds").join(target));
    if let Some(extra) = extra {
        seeds.extend(files(&root.join(extra)));
    }
    for seed in &seeds {
        run(&std::fs::read(seed).expect("read seed"));
    }
    seeds.len()
}

#[test]
fn frame_stream_seeds() {
    assert!(replay("frame_stream", plugbox::fuzzing::frame_stream, None) >= 4);
}

#[test]
fn message_seeds_and_the_json_test_suite() {
    let n = replay(
        "message",
        plugbox::fuzzing::message,
        Some("tests/data/JSONTestSuite/test_parsing"),
    );
    assert!(n >= 318 + 10, "{n}");
}

#[test]
fn manifest_seeds() {
    assert!(replay("manifest", plugbox::fuzzing::manifest, None) >= 4);
}

#[test]
fn audit_line_seeds() {
    assert!(replay("audit_line", plugbox::fuzzing::audit_line, None) >= 5);
}

#[test]
fn lock_seeds() {
    assert!(replay("lock", plugbox::fuzzing::lock, None) >= 3);
}

#[test]
fn grant_seeds() {
    assert!(replay("grant", plugbox::fuzzing::grant, None) >= 3);
}

#[test]
fn the_grant_targets_request_is_a_valid_policy() {
    plugbox::policy::Policy::from_toml(plugbox::fuzzing::GRANT_FUZZ_REQUEST).expect("valid");
}

#[test]
fn serve_request_seeds_and_the_json_test_suite() {
    let n = replay(
        "serve_request",
        plugbox::fuzzing::serve_request,
        Some("tests/data/JSONTestSuite/test_parsing"),
    );
    assert!(n >= 318 + 5, "{n}");
}

#[test]
fn arg_schema_seeds() {
    assert!(replay("arg_schema", plugbox::fuzzing::arg_schema, None) >= 6);
}

#[test]
fn zygote_answer_seeds() {
    assert!(replay("zygote_answer", plugbox::fuzzing::zygote_answer, None) >= 5);
}
