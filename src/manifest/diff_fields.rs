//! The field-by-field half of the diff: every leaf of the manifest file, as written, that
//! differs between two versions. The rules in [`super::diff`] judge the fields they know
//! (more paths, a higher limit); any other changed field is reported here, so no field, not
//! even one added to the manifest later, can change silently. A field this file does not
//! know to be harmless counts as asking for more: a reload that changes it needs a new grant.

use super::file::ManifestFile;
use serde_json::Value;
use std::collections::BTreeMap;

/// Fields whose change never gives the plugin more: reported as `changes`.
const HARMLESS: [&str; 2] = ["plugin.version", "plugin.api"];

/// Fields the rules in [`super::diff`] judge (both ways): a change they do not report as an
/// escalation asks for nothing more. `*` stands for one capability name.
const JUDGED: [&str; 24] = [
    "capabilities.*.paths",
    "capabilities.*.max_bytes",
    "capabilities.*.optional",
    "filesystem.read",
    "filesystem.write",
    "filesystem.execute",
    "network.connect_tcp",
    "network.bind_tcp",
    "process.subprocesses",
    "process.zygote",
    "process.max_threads",
    "process.instances",
    "syscalls.allow",
    "landlock.min_abi",
    "limits.memory_mib",
    "limits.cpu_seconds",
    "limits.wall_seconds",
    "limits.open_files",
    "limits.file_size_mib",
    "limits.fs_quota_mib",
    "limits.output_bytes",
    "limits.calls_per_second",
    "limits.calls_in_flight",
    "limits.pending_reply_mib",
];

/// How a changed field the rules did not judge is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Harmless (`changes`).
    Harmless,
    /// Judged by a rule in `diff`, which found it asks for nothing more: `reduces`.
    Judged,
    /// Unknown to the rules: counts as asking for more.
    Unjudged,
}

/// Every leaf (scalar or array) of `file`, by dotted path; capability names are quoted, as
/// the rules name them (`capabilities."fs.read".paths`).
pub(super) fn leaves(file: &ManifestFile) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    flatten(
        "",
        &serde_json::to_value(file).unwrap_or(Value::Null),
        &mut out,
    );
    out
}

fn flatten(path: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let key = if path == "capabilities" {
                    format!("{key:?}")
                } else {
                    key.clone()
                };
                let child = if path.is_empty() {
                    key
                } else {
                    format!("{path}.{key}")
                };
                flatten(&child, v, out);
            }
        }
        other => {
            out.insert(path.to_owned(), other.clone());
        }
    }
}

/// Each leaf that differs between `old` and `new` (present in one only counts), with its old
/// and new value in words.
pub(super) fn changed(old: &ManifestFile, new: &ManifestFile) -> Vec<(String, String)> {
    let (o, n) = (leaves(old), leaves(new));
    let mut keys: Vec<&String> = o.keys().chain(n.keys()).collect();
    keys.sort();
    keys.dedup();
    let shown = |v: Option<&Value>| v.map_or_else(|| "(absent)".to_owned(), Value::to_string);
    keys.into_iter()
        .filter(|k| o.get(*k) != n.get(*k))
        .map(|k| {
            (
                k.clone(),
                format!("{} -> {}", shown(o.get(k)), shown(n.get(k))),
            )
        })
        .collect()
}

/// How a changed leaf at `field` is reported when no rule reported it.
pub(super) fn verdict(field: &str) -> Verdict {
    let generic = capability_pattern(field);
    let known = |list: &[&str]| list.iter().any(|f| *f == field || *f == generic);
    if known(&HARMLESS) || generic == "capabilities.*.reason" {
        Verdict::Harmless
    } else if known(&JUDGED) {
        Verdict::Judged
    } else {
        Verdict::Unjudged
    }
}

/// `capabilities."x".f` as `capabilities.*.f`; other fields unchanged.
fn capability_pattern(field: &str) -> String {
    let Some(rest) = field.strip_prefix("capabilities.\"") else {
        return field.to_owned();
    };
    match rest.rfind("\".") {
        Some(end) => format!("capabilities.*.{}", &rest[end + 2..]),
        None => "capabilities.*".to_owned(),
    }
}
