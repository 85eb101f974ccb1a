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

/// Every leaf of a manifest file, with the keys that lead to it.
fn leaves(value: &serde_json::Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                path.push(key.clone());
                leaves(v, path, out);
                path.pop();
            }
        }
        _ => out.push(path.clone()),
    }
}

/// The field name `diff` uses for a leaf (capability names quoted).
fn field_name(keys: &[String]) -> String {
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            if i == 1 && keys[0] == "capabilities" {
                format!("{k:?}")
            } else {
                k.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Values to try in place of `old` at `field`: each a change a manifest may really make.
fn mutations(field: &str, old: &serde_json::Value) -> Vec<serde_json::Value> {
    use serde_json::{json, Value};
    match old {
        Value::Bool(b) => vec![json!(!b)],
        Value::Number(n) => {
            let n = n.as_u64().expect("numbers in a manifest are unsigned");
            let mut v = vec![json!(n + 1)];
            if n > 0 {
                v.push(json!(n - 1));
            }
            v
        }
        Value::Null => vec![json!(1), json!("changed")],
        Value::Array(items) => {
            let mut v: Vec<Value> = [json!("/tmp"), json!(8080), json!("@sync"), json!("other")]
                .into_iter()
                .map(|extra| {
                    let mut more = items.clone();
                    more.push(extra);
                    Value::Array(more)
                })
                .collect();
            if !items.is_empty() {
                v.push(Value::Array(items[1..].to_vec()));
            }
            v
        }
        Value::String(_) => match field {
            "plugin.name" => vec![json!("other-name")],
            "plugin.version" => vec![json!("9.9.9")],
            "plugin.api" => vec![json!("^9")],
            "plugin.entry" => vec![json!("other.py")],
            "plugin.runtime" => vec![json!("/usr/bin/python3")],
            "supervision.restart" => vec![json!("never"), json!("on-failure")],
            f if f.ends_with(".reason") => vec![json!("another reason")],
            f => panic!(
                "manifest field {f} is new: add a mutation here, and make sure `diff` judges it"
            ),
        },
        Value::Object(_) => unreachable!("leaves are not objects"),
    }
}

/// A field added to the manifest can never change silently: for every field of a manifest
/// with every section, some real change of it is reported by `diff`.
#[test]
fn every_field_of_the_manifest_is_compared() {
    let plugin = TestPlugin::new(
        "notes",
        "[capabilities]\n\"fs.read\" = { reason = \"r\", paths = [\"data\"], max_bytes = 1024 }\n\"kv.get\" = {}\n\
         [process]\ninstances = 2\n",
        "",
    );
    std::fs::write(plugin.path().join("other.py"), "").unwrap();
    let base = Manifest::load(plugin.path()).unwrap();
    let json = serde_json::to_value(&base.file).unwrap();
    let mut all = Vec::new();
    leaves(&json, &mut Vec::new(), &mut all);
    assert!(all.len() > 40, "{all:?}");
    for keys in all.iter().filter(|k| k[0] != "schema") {
        let field = field_name(keys);
        let pointer = format!("/{}", keys.join("/"));
        let mut tried = 0;
        let mut reported = false;
        for value in mutations(&field, json.pointer(&pointer).unwrap()) {
            let mut changed = json.clone();
            *changed.pointer_mut(&pointer).unwrap() = value;
            let Ok(file) = serde_json::from_value(changed) else {
                continue;
            };
            let Ok(other) = Manifest::validate(base.dir.clone(), file) else {
                continue;
            };
            tried += 1;
            reported |= diff(&base, &other)
                .iter()
                .any(|c| field == c.field || field.starts_with(&format!("{}.", c.field)));
        }
        assert!(tried > 0, "no valid change of {field} was tried");
        assert!(reported, "no change of {field} is reported by diff");
    }
}

/// Identity, entry, runtime and supervision changes ask for more; a version bump does not.
#[test]
fn identity_and_start_up_changes_escalate() {
    let old = TestPlugin::new("notes", "", "");
    let new = TestPlugin::new(
        "notes",
        "[process]\nuid = 1000\ngid = 42\n[limits]\ncall_burst = 100000\ncall_timeout_ms = 600000\n[supervision]\nmax_restarts = 1000\n",
        "",
    );
    let (o, n) = (
        Manifest::load(old.path()).unwrap(),
        Manifest::load(new.path()).unwrap(),
    );
    let escalations: Vec<String> = diff(&o, &n)
        .into_iter()
        .filter(|c| c.kind == "escalates")
        .map(|c| c.field)
        .collect();
    for f in [
        "process.uid",
        "process.gid",
        "limits.call_burst",
        "limits.call_timeout_ms",
        "supervision.max_restarts",
    ] {
        assert!(escalations.iter().any(|e| e == f), "{f}: {escalations:?}");
    }
    let mut bumped = o.file.clone();
    bumped.plugin.version = "9.9.9".into();
    let bumped = Manifest::validate(o.dir.clone(), bumped).unwrap();
    let changes = diff(&o, &bumped);
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(
        (changes[0].kind, changes[0].field.as_str()),
        ("changes", "plugin.version")
    );
}

/// `plugbox run` without `--grant` still runs (development), and says on stderr that the
/// plugin got everything it asked for; with a grant it says nothing of the kind (issue 10).
#[test]
fn run_without_a_grant_says_so() {
    let plugin = TestPlugin::new(
        "hello",
        "",
        "import plugbox\n@plugbox.command\ndef hi():\n    return 'hi'\n",
    );
    let work = tempfile::tempdir().unwrap();
    let grant = work.path().join("grant.toml");
    std::fs::write(&grant, "schema = 1\n").unwrap();
    for with_grant in [false, true] {
        let mut cmd = std::process::Command::new(common::plugbox());
        cmd.arg("run").arg(plugin.path());
        cmd.arg("--audit")
            .arg(work.path().join(format!("a{with_grant}.jsonl")));
        cmd.arg("--state").arg(work.path().join("state"));
        if with_grant {
            cmd.arg("--grant").arg(&grant);
        }
        let out = cmd.args(["--call", "hi"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert_eq!(
            stderr.contains("warning: no --grant"),
            !with_grant,
            "{stderr}"
        );
    }
}

/// Turning the zygote on (instances share a memory layout and uid) asks for more, like
/// subprocesses; turning it off asks for less.
#[test]
fn turning_the_zygote_on_escalates() {
    let old = TestPlugin::new("notes", "[process]\ninstances = 2\n", "");
    let new = TestPlugin::new("notes", "[process]\ninstances = 2\nzygote = true\n", "");
    let (o, n) = (
        Manifest::load(old.path()).unwrap(),
        Manifest::load(new.path()).unwrap(),
    );
    let on: Vec<(&str, String, String)> = diff(&o, &n)
        .into_iter()
        .map(|c| (c.kind, c.field, c.detail))
        .collect();
    assert_eq!(
        on,
        [(
            "escalates",
            "process.zygote".to_owned(),
            "false -> true".to_owned()
        )]
    );
    let off = diff(&n, &o);
    assert_eq!(off.len(), 1, "{off:?}");
    assert_eq!(
        (off[0].kind, off[0].field.as_str()),
        ("reduces", "process.zygote")
    );
}
