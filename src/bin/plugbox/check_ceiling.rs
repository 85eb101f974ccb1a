//! `plugbox check --grant`: the sandbox sections side by side, requested, granted and
//! effective, one row per field, every cell escaped; then every excess and every value the
//! grant made stricter.

use plugbox::display::escape;
use plugbox::manifest::{Ceiling, Grants};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Prints the table for `ceiling` under `grants`.
pub fn print(ceiling: &Ceiling, grants: &Grants) {
    let requested = leaves(&serde_json::to_value(&ceiling.requested).unwrap_or(Value::Null));
    let effective = leaves(&serde_json::to_value(&ceiling.effective).unwrap_or(Value::Null));
    let granted = if grants.is_all_requested() {
        BTreeMap::new()
    } else {
        leaves(&granted_json(grants))
    };
    let width = 34;
    println!(
        "ceiling   {:<width$} {:<18} {:<18} effective",
        "field", "requested", "granted"
    );
    let mut fields: Vec<&String> = requested.keys().chain(effective.keys()).collect();
    fields.extend(granted.keys());
    fields.sort();
    fields.dedup();
    for field in fields.into_iter().filter(|f| f.as_str() != "schema") {
        let asked = requested.get(field).map_or("-", String::as_str);
        let grant = match granted.get(field) {
            Some(g) => g.clone(),
            None if grants.is_all_requested() => "(all requested)".to_owned(),
            None => "-".to_owned(),
        };
        let got = effective.get(field).cloned().unwrap_or_else(|| "-".into());
        println!(
            "  {:<width$} {:<18} {:<18} {}",
            escape(field),
            escape(asked),
            escape(&grant),
            escape(&got)
        );
    }
    for e in &ceiling.excess {
        println!("  beyond the grant: {}", escape(&e.to_string()));
    }
    for s in &ceiling.stricter {
        println!(
            "  made stricter: {} {} -> {}",
            escape(&s.field),
            escape(&s.requested),
            escape(&s.effective)
        );
    }
}

/// The grant's sandbox sections, named as the manifest's fields.
fn granted_json(grants: &Grants) -> Value {
    let g = grants.sandbox();
    json!({
        "landlock": g.landlock,
        "filesystem": g.filesystem,
        "network": g.network,
        "process": g.process,
        "syscalls": g.syscalls,
        "limits": g.limits,
        "supervision": g.supervision,
    })
}

/// Every leaf by dotted path, shown as compact JSON (`null` as `-`; identity absent in the
/// manifest reads `-`: the engine's own).
fn leaves(value: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    flatten("", value, &mut out);
    out
}

fn flatten(path: &str, value: &Value, out: &mut BTreeMap<String, String>) {
    match value {
        Value::Object(map) => flatten_object(path, map, out),
        Value::Null => {
            out.insert(path.to_owned(), "-".to_owned());
        }
        other => {
            out.insert(path.to_owned(), other.to_string());
        }
    }
}

fn flatten_object(path: &str, map: &Map<String, Value>, out: &mut BTreeMap<String, String>) {
    for (key, v) in map {
        let child = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        flatten(&child, v, out);
    }
}
