//! The policy file: defaults are the strictest values, errors name the field and the reason.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use plugbox::policy::{Policy, PolicyError};

fn error_of(text: &str) -> String {
    match Policy::from_toml(text) {
        Ok(p) => panic!("accepted: {p:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn defaults_are_the_strictest_values() {
    let p = Policy::from_toml("schema = 1").expect("valid");
    assert_eq!(p.min_landlock_abi(), 6);
    assert!(p.filesystem().read.is_empty() && p.filesystem().write.is_empty());
    assert!(p.filesystem().execute.is_empty());
    assert!(!p.network().any_tcp());
    assert!(!p.process().subprocesses);
    assert_eq!(
        (p.process().max_threads, p.process().uid, p.process().gid),
        (64, 65534, 65534)
    );
    assert!(p.syscall_groups().is_empty());
    let l = p.limits();
    assert_eq!(l.memory_bytes, 512 << 20);
    assert_eq!((l.cpu_seconds, l.wall_seconds, l.open_files), (10, 0, 64));
    assert_eq!((l.file_size_bytes, l.output_bytes), (16 << 20, 1_048_576));
    assert_eq!(l.wall_budget(), None);
    assert_eq!((l.calls_per_second, l.call_burst), (100_000, 10_000));
}

#[test]
fn the_shipped_default_policy_equals_the_built_in_defaults() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/default.toml");
    let shipped = Policy::load(&path).expect("policies/default.toml is valid");
    // The one difference: a wall-clock budget for `plugbox exec`'s one-shot commands.
    assert_eq!(shipped.limits().wall_seconds, 30);
    let shipped = format!("{shipped:?}").replace("wall_seconds: 30,", "wall_seconds: 0,");
    assert_eq!(shipped, format!("{:?}", Policy::strictest()));
}

#[test]
fn schema_version_is_required_and_checked() {
    assert!(error_of("").contains("missing field `schema`"));
    assert_eq!(
        error_of("schema = 2"),
        "policy: schema: unsupported version 2; this plugbox reads schema 1"
    );
}

#[test]
fn unknown_fields_are_rejected_with_their_name() {
    let e = error_of("schema = 1\n[filesystem]\nreed = []\n");
    assert!(e.contains("unknown field `reed`"), "{e}");
    let e = error_of("schema = 1\n[sandbox]\n");
    assert!(e.contains("unknown field `sandbox`"), "{e}");
    let e = error_of("schema = 1\n[limits]\nmemory = 5\n");
    assert!(e.contains("unknown field `memory`"), "{e}");
}

#[test]
fn wrong_types_are_rejected() {
    let e = error_of("schema = 1\n[limits]\nmemory_mib = \"lots\"\n");
    assert!(
        e.contains("memory_mib") || e.contains("invalid type"),
        "{e}"
    );
    let e = error_of("schema = 1\n[network]\nconnect_tcp = [70000]\n");
    assert!(e.contains("70000") || e.contains("invalid value"), "{e}");
}

#[test]
fn paths_must_be_absolute_and_plain() {
    assert_eq!(
        error_of("schema = 1\n[filesystem]\nread = [\"/usr\", \"data\"]\n"),
        "policy: filesystem.read[1]: \"data\" is not an absolute path"
    );
    assert!(
        error_of("schema = 1\n[filesystem]\nwrite = [\"/tmp/../etc\"]\n")
            .starts_with("policy: filesystem.write[0]: ")
    );
    assert!(
        error_of("schema = 1\n[filesystem]\nread = [\"/proc/self\"]\n")
            .contains("host's processes")
    );
}

#[test]
fn identities_and_limits_are_range_checked() {
    assert_eq!(
        error_of("schema = 1\n[process]\nuid = 0\n"),
        "policy: process.uid: 0 is root; plugins never run as root"
    );
    assert!(error_of("schema = 1\n[process]\ngid = 0\n").starts_with("policy: process.gid: "));
    assert_eq!(
        error_of("schema = 1\n[process]\nmax_threads = 0\n"),
        "policy: process.max_threads: 0 is outside 1..=4096"
    );
    assert!(error_of("schema = 1\n[limits]\nmemory_mib = 1\n")
        .starts_with("policy: limits.memory_mib: "));
    assert!(error_of("schema = 1\n[limits]\nwall_seconds = 86401\n")
        .starts_with("policy: limits.wall_seconds: "));
    assert!(
        error_of("schema = 1\n[landlock]\nmin_abi = 9\n").starts_with("policy: landlock.min_abi: ")
    );
    assert!(error_of("schema = 1\n[network]\nconnect_tcp = [0]\n")
        .starts_with("policy: network.connect_tcp[0]: "));
}

#[test]
fn syscall_groups_match_exactly() {
    let p =
        Policy::from_toml("schema = 1\n[syscalls]\nallow = [\"@sync\", \"@numa\", \"@sync\"]\n")
            .expect("valid");
    let names: Vec<&str> = p.syscall_groups().iter().map(|g| g.name).collect();
    assert_eq!(names, ["@sync", "@numa"]);
    for bad in ["@SYNC", "sync", " @sync", "@never", "@default"] {
        let e = error_of(&format!("schema = 1\n[syscalls]\nallow = [{bad:?}]\n"));
        assert!(
            e.starts_with("policy: syscalls.allow[0]: unknown group"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn oversized_policy_files_are_refused_before_reading() {
    let file = tempfile::NamedTempFile::new().expect("tmp");
    let big = format!("schema = 1\n# {}\n", "x".repeat(300 * 1024));
    std::fs::write(file.path(), big).expect("write");
    match Policy::load(file.path()) {
        Err(PolicyError::TooLarge { size, .. }) => assert!(size > 256 * 1024),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_committed_json_schema_is_the_generated_one() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/plugbox.schema.json");
    let committed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read schema")).expect("json");
    assert_eq!(
        committed,
        plugbox::policy::file::json_schema(),
        "regenerate with: cargo run -- schema > policies/plugbox.schema.json"
    );
}

#[test]
fn the_committed_manifest_and_audit_schemas_are_the_generated_ones() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (file, generated) in [
        (
            "docs/manifest.schema.json",
            plugbox::manifest::file::json_schema(),
        ),
        (
            "docs/audit-record.schema.json",
            plugbox::audit::record::json_schema(),
        ),
        (
            "docs/grant.schema.json",
            plugbox::manifest::grant_file::json_schema(),
        ),
        ("docs/serve.schema.json", plugbox::serve::json_schema()),
    ] {
        let committed: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(root.join(file)).expect("read"))
                .expect("json");
        assert_eq!(
            committed, generated,
            "regenerate {file} with: cargo run -- schema manifest|audit|grant|serve"
        );
    }
}

/// Errors about a grant file name the grant, not the manifest (issue 10).
#[test]
fn grant_file_errors_say_grant() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("section.toml", "schema = 1\n[nope]\nx = 1\n"),
        (
            "relative.toml",
            "schema = 1\n[filesystem]\nread = [\"etc\"]\n",
        ),
        ("root-uid.toml", "schema = 1\n[process]\nuid = 0\n"),
        ("range.toml", "schema = 1\n[limits]\nmemory_mib = 1\n"),
        (
            "group.toml",
            "schema = 1\n[syscalls]\nallow = [\"@nope\"]\n",
        ),
        ("schema.toml", "schema = 2\n"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let e = plugbox::manifest::Grants::load(&path)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!("grant: {}: ", path.display())),
            "{e}"
        );
    }
    let e = plugbox::manifest::Grants::load(&dir.path().join("missing.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("grant: ") && e.contains("cannot read"), "{e}");
}
