//! What a new version of a plugin asks for beyond the old one: capabilities, scopes, paths,
//! ports, process rights (subprocesses, zygote) and limits, judged by the rules here; then every other field of the
//! manifest that changed (`diff_fields.rs`), which counts as asking for more unless it
//! is known to be harmless. An upgrade with no `escalates` entry does not escalate.

use super::diff_fields::{self, Verdict};
use super::Manifest;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// One escalation (or relaxation) found between two manifests.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    /// `escalates` (asks for more), `reduces`, or `changes` (a harmless field, such as the
    /// version).
    pub kind: &'static str,
    /// What changed, such as `capabilities."fs.write"` or `limits.memory_mib`.
    pub field: String,
    /// Old and new value, in words.
    pub detail: String,
}

fn more(field: impl Into<String>, detail: impl Into<String>) -> Change {
    Change {
        kind: "escalates",
        field: field.into(),
        detail: detail.into(),
    }
}

fn less(field: impl Into<String>, detail: impl Into<String>) -> Change {
    Change {
        kind: "reduces",
        field: field.into(),
        detail: detail.into(),
    }
}

/// Every difference between `old` and `new` that changes what the plugin may do.
pub fn diff(old: &Manifest, new: &Manifest) -> Vec<Change> {
    let mut out = Vec::new();
    for (name, req) in &new.requested {
        let field = format!("capabilities.{name:?}");
        match old.requested.get(name) {
            None => out.push(more(
                field,
                if req.optional {
                    "new optional capability"
                } else {
                    "new capability"
                },
            )),
            Some(was) => {
                let added: Vec<&String> = req
                    .paths
                    .iter()
                    .filter(|p| !was.paths.contains(p))
                    .collect();
                if !added.is_empty() {
                    out.push(more(format!("{field}.paths"), format!("adds {added:?}")));
                }
                match (was.max_bytes, req.max_bytes) {
                    (Some(a), Some(b)) if b > a => {
                        out.push(more(format!("{field}.max_bytes"), format!("{a} -> {b}")))
                    }
                    (Some(a), None) => out.push(more(
                        format!("{field}.max_bytes"),
                        format!("{a} -> the engine default"),
                    )),
                    _ => {}
                }
                if was.optional && !req.optional {
                    out.push(more(format!("{field}.optional"), "now required"));
                }
            }
        }
    }
    for name in old
        .requested
        .keys()
        .filter(|n| !new.requested.contains_key(*n))
    {
        out.push(less(
            format!("capabilities.{name:?}"),
            "no longer requested",
        ));
    }
    let (o, n) = (&old.policy, &new.policy);
    paths(
        &mut out,
        "filesystem.read",
        &o.filesystem().read,
        &n.filesystem().read,
    );
    paths(
        &mut out,
        "filesystem.write",
        &o.filesystem().write,
        &n.filesystem().write,
    );
    paths(
        &mut out,
        "filesystem.execute",
        &o.filesystem().execute,
        &n.filesystem().execute,
    );
    ports(
        &mut out,
        "network.connect_tcp",
        &o.network().connect_tcp,
        &n.network().connect_tcp,
    );
    ports(
        &mut out,
        "network.bind_tcp",
        &o.network().bind_tcp,
        &n.network().bind_tcp,
    );
    if !o.process().subprocesses && n.process().subprocesses {
        out.push(more("process.subprocesses", "false -> true"));
    }
    if !o.process().zygote && n.process().zygote {
        out.push(more("process.zygote", "false -> true"));
    }
    let og: BTreeSet<&str> = o.syscall_groups().iter().map(|g| g.name).collect();
    for g in n
        .syscall_groups()
        .iter()
        .map(|g| g.name)
        .filter(|g| !og.contains(g))
    {
        out.push(more("syscalls.allow", format!("adds {g}")));
    }
    if n.min_landlock_abi() < o.min_landlock_abi() {
        out.push(more(
            "landlock.min_abi",
            format!("{} -> {}", o.min_landlock_abi(), n.min_landlock_abi()),
        ));
    }
    let (ol, nl) = (o.limits(), n.limits());
    let limits = [
        (
            "limits.memory_mib",
            ol.memory_bytes >> 20,
            nl.memory_bytes >> 20,
        ),
        ("limits.cpu_seconds", ol.cpu_seconds, nl.cpu_seconds),
        (
            "limits.wall_seconds",
            ol.wall_seconds_allowed(),
            nl.wall_seconds_allowed(),
        ),
        ("limits.open_files", ol.open_files, nl.open_files),
        (
            "limits.file_size_mib",
            ol.file_size_bytes >> 20,
            nl.file_size_bytes >> 20,
        ),
        (
            "limits.fs_quota_mib",
            ol.fs_quota_bytes >> 20,
            nl.fs_quota_bytes >> 20,
        ),
        ("limits.output_bytes", ol.output_bytes, nl.output_bytes),
        (
            "limits.calls_per_second",
            ol.calls_per_second.into(),
            nl.calls_per_second.into(),
        ),
        (
            "limits.calls_in_flight",
            ol.calls_in_flight.into(),
            nl.calls_in_flight.into(),
        ),
        (
            "limits.pending_reply_mib",
            ol.pending_reply_bytes >> 20,
            nl.pending_reply_bytes >> 20,
        ),
        (
            "process.max_threads",
            o.process().max_threads.into(),
            n.process().max_threads.into(),
        ),
        (
            "process.instances",
            o.process().instances.into(),
            n.process().instances.into(),
        ),
    ];
    for (field, a, b) in limits {
        if b > a {
            out.push(more(field, format!("{a} -> {b}")));
        }
    }
    unjudged(old, new, &mut out);
    out
}

/// Every changed field no rule above reported on: one a rule judged (and found to ask for
/// nothing more) as `reduces`, harmless ones as `changes`, the rest as asking for more.
fn unjudged(old: &Manifest, new: &Manifest, out: &mut Vec<Change>) {
    let reported: Vec<String> = out.iter().map(|c| c.field.clone()).collect();
    for (field, detail) in diff_fields::changed(&old.file, &new.file) {
        let covered = reported
            .iter()
            .any(|r| field == *r || field.starts_with(&format!("{r}.")));
        if covered {
            continue;
        }
        match diff_fields::verdict(&field) {
            Verdict::Judged => out.push(less(field, detail)),
            Verdict::Harmless => out.push(Change {
                kind: "changes",
                field,
                detail,
            }),
            Verdict::Unjudged => out.push(more(field, detail)),
        }
    }
}

fn paths(out: &mut Vec<Change>, field: &str, old: &[PathBuf], new: &[PathBuf]) {
    for p in new.iter().filter(|p| !old.iter().any(|o| p.starts_with(o))) {
        out.push(more(field, format!("adds {}", p.display())));
    }
}

fn ports(out: &mut Vec<Change>, field: &str, old: &[u16], new: &[u16]) {
    for p in new.iter().filter(|p| !old.contains(p)) {
        out.push(more(field, format!("adds port {p}")));
    }
}
