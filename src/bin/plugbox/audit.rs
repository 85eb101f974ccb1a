//! `plugbox audit verify|show|summary`: reading tools for auditors. They stream the log, one
//! capped line at a time, so memory stays bounded whatever the log's size or content.

use plugbox::audit::escape_text;
use plugbox::audit::lines::{open_log, Line, LineReader};
use plugbox::audit::record::MAX_RECORD_BYTES;
use plugbox::audit::rotated::chain_order;
use plugbox::audit::verify::{describe, verify};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

/// Filters of `audit show`.
pub struct ShowFilter {
    pub plugin: Option<String>,
    pub event: Option<String>,
    pub decision: Option<String>,
    pub since: Option<String>,
    pub json: bool,
}

/// `audit verify FILE...`: exit 0 intact and sealed, 1 broken, 125 unreadable. The files are
/// put in chain order first, and a live log brings its rotated archives along
/// ([`chain_order`]), so `verify audit.jsonl` and `verify audit.jsonl*` both walk the set.
pub fn verify_cmd(files: &[PathBuf], json: bool) -> Result<ExitCode, String> {
    let ordered = chain_order(files).map_err(|e| format!("audit: {e}"))?;
    let mut verdict = verify(&ordered).map_err(|e| format!("audit: {e}"))?;
    if ordered != files {
        let names: Vec<String> = ordered.iter().map(|f| f.display().to_string()).collect();
        verdict
            .notes
            .push(format!("verified in chain order: {}", names.join(" ")));
    }
    if json {
        println!("{}", plugbox::display::json(&verdict));
    } else {
        for note in &verdict.notes {
            println!("note: {}", plugbox::display::escape(note));
        }
        println!("{}", plugbox::display::escape_lines(&describe(&verdict)));
    }
    Ok(if verdict.broken.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Calls `each` with every record of `files`, one line at a time (memory does not grow with
/// the log: each line is capped at the writer's largest record). A line that is not a record
/// is reported on stderr by file and line number and skipped; returns whether every line was
/// a record. A file that is not a regular file is an error.
fn for_each_record(files: &[PathBuf], mut each: impl FnMut(&Value)) -> Result<bool, String> {
    let mut clean = true;
    for f in files {
        let err = |e: std::io::Error| format!("audit: {e}");
        let mut lines = LineReader::new(open_log(f).map_err(err)?);
        while let Some((number, line)) = lines.next_line().map_err(err)? {
            let problem = match line {
                Line::Complete(bytes) | Line::Partial(bytes) => {
                    match serde_json::from_slice::<Value>(bytes) {
                        Ok(v) => {
                            each(&v);
                            continue;
                        }
                        Err(_) => "not a record".to_owned(),
                    }
                }
                Line::TooLong { bytes } => format!(
                    "a line of {bytes} bytes, longer than any record ({MAX_RECORD_BYTES} bytes)"
                ),
            };
            clean = false;
            eprintln!(
                "plugbox: audit: error: {}:{number}: {problem} (skipped; run verify)",
                escape_text(&f.display().to_string())
            );
        }
    }
    Ok(clean)
}

/// Exit 0 when every line was read as a record, 1 when some were skipped.
fn status(clean: bool) -> ExitCode {
    if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// `audit show FILE...`: streams the records that pass the filter.
pub fn show(files: &[PathBuf], f: &ShowFilter) -> Result<ExitCode, String> {
    let clean = for_each_record(files, |r| {
        let keep = f
            .plugin
            .as_deref()
            .is_none_or(|p| text(&r["plugin"]["name"]) == p)
            && f.event.as_deref().is_none_or(|e| text(&r["event"]) == e)
            && f.decision
                .as_deref()
                .is_none_or(|d| text(&r["decision"]) == d)
            && f.since.as_deref().is_none_or(|s| text(&r["ts"]) >= s);
        if keep && f.json {
            println!("{}", plugbox::display::json(r));
        } else if keep {
            println!("{}", row(r));
        }
    })?;
    Ok(status(clean))
}

/// One record as a table row; every text column escaped for the terminal.
fn row(r: &Value) -> String {
    let verdict = [&r["decision"], &r["outcome"]]
        .into_iter()
        .map(text)
        .find(|s| !s.is_empty())
        .unwrap_or("");
    let why = [&r["rule"], &r["reason"]]
        .into_iter()
        .map(text)
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(": ");
    // Lifecycle records say what moved where; the instance column names the plugin
    // for plugin-level ones.
    let (instance, what) = match text(&r["event"]) {
        "state" => (
            match text(&r["plugin"]["instance"]) {
                "-" => text(&r["plugin"]["name"]),
                i => i,
            },
            format!(
                "{} -> {}",
                r["detail"]["from"].as_str().unwrap_or("(new)"),
                text(&r["detail"]["to"])
            ),
        ),
        "circuit" => (
            text(&r["plugin"]["name"]),
            text(&r["detail"]["circuit"]).to_owned(),
        ),
        "calls_suppressed" => (
            text(&r["plugin"]["instance"]),
            format!("{} calls", r["detail"]["suppressed"]),
        ),
        _ => (
            text(&r["plugin"]["instance"]),
            text(&r["capability"]).to_owned(),
        ),
    };
    format!(
        "{:>7}  {}  {:<18} {:<14} {:<24} {:<8} {}",
        r["seq"],
        escape_text(text(&r["ts"]).get(..23).unwrap_or("")),
        escape_text(instance),
        escape_text(text(&r["event"])),
        escape_text(&what),
        escape_text(verdict),
        escape_text(&why)
    )
}

/// Distinct keys kept per summary table; further ones are counted under `(other)`, so a log
/// with endless distinct (plugin-controlled) capability names cannot grow memory.
const MAX_KEYS: usize = 10_000;
const OTHER: &str = "(other)";

/// The counter for `key` in `map`, or for `other` once the map is full.
fn slot<K: Ord, V: Default>(map: &mut BTreeMap<K, V>, key: K, other: impl FnOnce() -> K) -> &mut V {
    let key = if map.len() >= MAX_KEYS && !map.contains_key(&key) {
        other()
    } else {
        key
    };
    map.entry(key).or_default()
}

/// The counts `audit summary` prints.
#[derive(Default)]
struct Tally {
    records: u64,
    by_plugin: BTreeMap<String, BTreeMap<&'static str, u64>>,
    by_capability: BTreeMap<(String, String), BTreeMap<String, u64>>,
    denied: BTreeMap<(String, String, String), u64>,
}

impl Tally {
    fn add(&mut self, r: &Value) {
        self.records += 1;
        let plugin = escape_text(text(&r["plugin"]["name"]));
        let event = text(&r["event"]);
        let counts = slot(&mut self.by_plugin, plugin.clone(), || OTHER.into());
        *counts.entry("records").or_default() += 1;
        match event {
            "call" => {
                let decision = escape_text(text(&r["decision"]));
                let kind = if decision == "allow" {
                    "allowed"
                } else {
                    "denied"
                };
                *counts.entry(kind).or_default() += 1;
                let cap = escape_text(text(&r["capability"]));
                let key = (plugin.clone(), cap.clone());
                let per = slot(&mut self.by_capability, key, || {
                    (OTHER.into(), OTHER.into())
                });
                *slot(per, decision.clone(), || OTHER.into()) += 1;
                if decision == "deny" {
                    let rule = escape_text(text(&r["rule"]));
                    let other = || (OTHER.into(), OTHER.into(), OTHER.into());
                    *slot(&mut self.denied, (plugin, cap, rule), other) += 1;
                }
            }
            "calls_suppressed" => {
                let n = r["detail"]["suppressed"].as_u64().unwrap_or(0);
                *counts.entry("denied").or_default() += n;
                let rule = escape_text(text(&r["rule"]));
                let key = (plugin, "(suppressed)".to_owned(), rule);
                let other = || (OTHER.into(), OTHER.into(), OTHER.into());
                *slot(&mut self.denied, key, other) += n;
            }
            "kill" | "protocol_violation" | "limit" | "load_refused" | "timeout" => {
                *counts.entry("incidents").or_default() += 1;
            }
            _ => {}
        }
    }

    fn print(&self) {
        println!("{} records", self.records);
        println!("\nper plugin:");
        for (plugin, c) in &self.by_plugin {
            let g = |k| c.get(k).copied().unwrap_or(0);
            println!(
                "  {plugin:<24} {:>8} records {:>8} calls allowed {:>8} denied {:>6} incidents",
                g("records"),
                g("allowed"),
                g("denied"),
                g("incidents")
            );
        }
        println!("\nper capability:");
        for ((plugin, cap), d) in &self.by_capability {
            let parts: Vec<String> = d.iter().map(|(k, v)| format!("{k} {v}")).collect();
            println!("  {plugin:<24} {cap:<20} {}", parts.join(", "));
        }
        println!("\ndenied calls:");
        if self.denied.is_empty() {
            println!("  none");
        }
        for ((plugin, cap, rule), n) in &self.denied {
            println!("  {plugin:<24} {cap:<20} {n:>6} x  rule {rule}");
        }
    }
}

/// `audit summary FILE...`: counts per plugin, capability and decision, streaming (calls
/// refused without a record of their own are counted from their `calls_suppressed` records).
pub fn summary(files: &[PathBuf]) -> Result<ExitCode, String> {
    let mut tally = Tally::default();
    let clean = for_each_record(files, |r| tally.add(r))?;
    tally.print();
    Ok(status(clean))
}
