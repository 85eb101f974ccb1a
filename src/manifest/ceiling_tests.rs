//! Unit tests of the intersection (`ceiling.rs`, `ceiling_limits.rs`) and of grant checks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::{intersect, CeilingMode};
use crate::manifest::{GrantFile, Grants};
use crate::policy::file::{PolicyFile, RestartMode};
use std::path::PathBuf;

fn policy(text: &str) -> PolicyFile {
    toml::from_str(&format!("schema = 1\n{text}")).unwrap()
}

fn grants(text: &str) -> Grants {
    let file: GrantFile = toml::from_str(&format!("schema = 1\n{text}")).unwrap();
    Grants::from_file(file).unwrap()
}

fn shown(text: &str, grant: &str) -> Vec<String> {
    let c = intersect(&policy(text), &grants(grant));
    c.excess.iter().map(ToString::to_string).collect()
}

#[test]
fn read_passes_beneath_any_root_that_reads_write_and_execute_only_beneath_their_own() {
    let g = "[filesystem]\nwrite = [\"/tmp\"]\nexecute = [\"/usr/bin\"]\n";
    let c = intersect(
        &policy("[filesystem]\nread = [\"/tmp\", \"/usr/bin\"]\n"),
        &grants(g),
    );
    assert!(c.excess.is_empty(), "{:?}", c.excess);
    let asked = "[filesystem]\nwrite = [\"/usr/bin\"]\nexecute = [\"/tmp\"]\n";
    assert_eq!(
        shown(asked, g),
        [
            "filesystem.write \"/usr/bin\"",
            "filesystem.execute \"/tmp\""
        ]
    );
}

#[test]
fn paths_are_compared_resolved_not_as_written() {
    let c = intersect(
        &policy("[filesystem]\nread = [\"/etc/./\", \"/etc//ssl\"]\n"),
        &grants("[filesystem]\nread = [\"/etc/\"]\n"),
    );
    assert!(c.excess.is_empty(), "{:?}", c.excess);
    let want: Vec<PathBuf> = vec!["/etc".into(), "/etc/ssl".into()];
    assert_eq!(c.effective.filesystem.read, want);
    // A prefix that is not a path component is not beneath.
    assert_eq!(
        shown(
            "[filesystem]\nread = [\"/etcetera-missing\"]\n",
            "[filesystem]\nread = [\"/etc\"]\n"
        ),
        ["filesystem.read \"/etcetera-missing\" (cannot be resolved)"]
    );
    assert_eq!(
        shown(
            "[filesystem]\nread = [\"/usr\"]\n",
            "[filesystem]\nread = [\"/usr/lib\"]\n"
        ),
        ["filesystem.read \"/usr\""]
    );
}

#[test]
fn the_root_sys_and_dev_are_never_granted_but_the_baseline_devices_are_not_excess() {
    for everything in [
        grants("[filesystem]\nread = [\"/\"]\n"),
        Grants::all_requested(),
    ] {
        let c = intersect(
            &policy("[filesystem]\nread = [\"/\", \"/sys/kernel\", \"/dev\", \"/dev/null\"]\n"),
            &everything,
        );
        let forbidden: Vec<&str> = c
            .excess
            .iter()
            .filter(|e| e.forbidden)
            .map(|e| e.value.as_str())
            .collect();
        assert_eq!(forbidden, ["\"/\"", "\"/sys/kernel\"", "\"/dev\""]);
        assert!(
            c.refuses(CeilingMode::Clamp),
            "forbidden refuses even when clamping"
        );
    }
}

#[test]
fn ports_groups_and_subprocesses_pass_only_when_granted() {
    let asked = "[network]\nconnect_tcp = [443, 80]\nbind_tcp = [0]\n[syscalls]\nallow = [\"@sync\"]\n[process]\nsubprocesses = true\n";
    let g = "[network]\nconnect_tcp = [443]\n";
    assert_eq!(
        shown(asked, g),
        [
            "network.connect_tcp 80",
            "network.bind_tcp 0",
            "syscalls.allow \"@sync\"",
            "process.subprocesses"
        ]
    );
    let c = intersect(&policy(asked), &grants(g));
    assert_eq!(c.effective.network.connect_tcp, [443]);
    assert!(!c.effective.process.subprocesses);
    assert!(c.refuses(CeilingMode::Refuse) && !c.refuses(CeilingMode::Clamp));
    let all = "[network]\nconnect_tcp = [80, 443]\nbind_tcp = [0]\n[syscalls]\nallow = [\"@sync\"]\n[process]\nsubprocesses = true\n";
    assert!(shown(asked, all).is_empty());
}

/// A zygote shares memory layout and uid between instances: like subprocesses, only when the
/// grant allows it, and not with `Grants::none()` or a grant that allows only subprocesses.
#[test]
fn zygote_passes_only_when_granted() {
    let asked = "[process]\nzygote = true\n";
    assert_eq!(shown(asked, ""), ["process.zygote"]);
    assert_eq!(
        shown(asked, "[process]\nsubprocesses = true\n"),
        ["process.zygote"]
    );
    let c = intersect(&policy(asked), &Grants::none());
    assert!(!c.effective.process.zygote);
    assert_eq!(c.excess[0].field, "process.zygote");
    assert!(c.refuses(CeilingMode::Refuse) && !c.refuses(CeilingMode::Clamp));
    assert!(shown(asked, "[process]\nzygote = true\n").is_empty());
    let c = intersect(&policy(asked), &Grants::none().zygote());
    assert!(c.excess.is_empty() && c.effective.process.zygote);
    let c = intersect(&policy(asked), &Grants::all_requested());
    assert!(c.excess.is_empty() && c.effective.process.zygote);
    // Granted but not asked: stays off.
    let c = intersect(&policy(""), &Grants::none().zygote());
    assert!(!c.effective.process.zygote);
}

#[test]
fn identity_is_the_hosts() {
    assert_eq!(
        shown("[process]\nuid = 1000\ngid = 42\n", ""),
        ["process.uid 1000", "process.gid 42"]
    );
    let c = intersect(
        &policy("[process]\nuid = 1000\n"),
        &grants("[process]\nuid = 1000\ngid = 1000\n"),
    );
    assert!(c.excess.is_empty());
    assert_eq!(
        (c.effective.process.uid, c.effective.process.gid),
        (Some(1000), Some(1000))
    );
    let c = intersect(&policy(""), &grants(""));
    assert_eq!(
        (c.effective.process.uid, c.effective.process.gid),
        (None, None)
    );
}

#[test]
fn numbers_take_the_stricter_value_and_report_it() {
    let asked = "[limits]\nmemory_mib = 512\ncall_timeout_ms = 100\n[landlock]\nmin_abi = 7\n[process]\ninstances = 8\nmin_warm = 4\n[supervision]\nbackoff_ms = 100\nbackoff_max_ms = 200\n";
    let g = "[limits]\nmemory_mib = 128\ncall_timeout_ms = 1000\n[landlock]\nmin_abi = 6\n[process]\ninstances = 2\n[supervision]\nrestart = \"never\"\nbackoff_ms = 500\n";
    let c = intersect(&policy(asked), &grants(g));
    assert!(c.excess.is_empty());
    let e = &c.effective;
    assert_eq!(
        (
            e.limits.memory_mib,
            e.limits.call_timeout_ms,
            e.landlock.min_abi
        ),
        (128, 100, 7)
    );
    assert_eq!((e.process.instances, e.process.min_warm), (2, 2));
    assert_eq!(e.supervision.restart, RestartMode::Never);
    assert_eq!(
        (e.supervision.backoff_ms, e.supervision.backoff_max_ms),
        (500, 500)
    );
    let fields: Vec<&str> = c.stricter.iter().map(|s| s.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "limits.memory_mib",
            "process.instances",
            "process.min_warm",
            "supervision.restart",
            "supervision.backoff_ms",
            "supervision.backoff_max_ms"
        ]
    );
    assert!(crate::policy::Policy::from_file(c.effective).is_ok());
}

#[test]
fn a_wall_budget_bounds_a_manifest_that_asks_for_none() {
    let wall = |asked: &str, grant: &str| {
        let c = intersect(&policy(asked), &grants(grant));
        (c.effective.limits.wall_seconds, c.stricter.len())
    };
    // The default 0 is no budget at all: a grant of 600 must bound it, not lose to it.
    assert_eq!(wall("", "[limits]\nwall_seconds = 600\n"), (600, 1));
    assert_eq!(
        wall(
            "[limits]\nwall_seconds = 30\n",
            "[limits]\nwall_seconds = 600\n"
        ),
        (30, 0)
    );
    assert_eq!(
        wall(
            "[limits]\nwall_seconds = 900\n",
            "[limits]\nwall_seconds = 600\n"
        ),
        (600, 1)
    );
    // A grant of 0 (no budget) bounds nothing.
    assert_eq!(
        wall(
            "[limits]\nwall_seconds = 30\n",
            "[limits]\nwall_seconds = 0\n"
        ),
        (30, 0)
    );
}

#[test]
fn a_grant_is_checked_as_a_manifest_is() {
    for bad in [
        "[filesystem]\nread = [\"etc\"]\n",
        "[filesystem]\nread = [\"/etc/../root\"]\n",
        "[process]\nuid = 0\n",
        "[limits]\nmemory_mib = 1\n",
        "[syscalls]\nallow = [\"@nope\"]\n",
        "[supervision]\nhealth_interval_ms = 1\n",
    ] {
        let file: GrantFile = toml::from_str(&format!("schema = 1\n{bad}")).unwrap();
        let e = Grants::from_file(file).unwrap_err().to_string();
        assert!(e.starts_with("grant: "), "{bad}: {e}");
    }
}

#[test]
fn the_example_grant_file_parses() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/grant.example.toml");
    let grants = Grants::load(&path).unwrap();
    assert!(!grants.is_all_requested());
}
