//! `plugbox audit verify|show|summary`: reading tools for auditors.

use plugbox::audit::verify::{describe, verify};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::BufRead;
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

/// `audit verify FILE...`: exit 0 intact and sealed, 1 broken, 125 unreadable.
pub fn verify_cmd(files: &[PathBuf], json: bool) -> Result<ExitCode, String> {
    let verdict = verify(files).map_err(|e| format!("audit: {e}"))?;
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

fn records(files: &[PathBuf]) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for f in files {
        let file = std::fs::File::open(f).map_err(|e| format!("audit: {}: {e}", f.display()))?;
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|e| format!("audit: {}: {e}", f.display()))?;
            match serde_json::from_str(&line) {
                Ok(v) => out.push(v),
                Err(_) => eprintln!(
                    "plugbox: audit: {}:{}: not a record (skipped; run verify)",
                    plugbox::display::escape(&f.display().to_string()),
                    i + 1
                ),
            }
        }
    }
    Ok(out)
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// `audit show FILE...`.
pub fn show(files: &[PathBuf], f: &ShowFilter) -> Result<ExitCode, String> {
    for r in records(files)? {
        let keep = f
            .plugin
            .as_deref()
            .is_none_or(|p| text(&r["plugin"]["name"]) == p)
            && f.event.as_deref().is_none_or(|e| text(&r["event"]) == e)
            && f.decision
                .as_deref()
                .is_none_or(|d| text(&r["decision"]) == d)
            && f.since.as_deref().is_none_or(|s| text(&r["ts"]) >= s);
        if !keep {
            continue;
        }
        if f.json {
            println!("{}", plugbox::display::json(&r));
            continue;
        }
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
            _ => (
                text(&r["plugin"]["instance"]),
                text(&r["capability"]).to_owned(),
            ),
        };
        let line = format!(
            "{:>7}  {}  {:<18} {:<14} {:<24} {:<8} {}",
            r["seq"],
            text(&r["ts"]).get(..23).unwrap_or(""),
            instance,
            text(&r["event"]),
            what,
            verdict,
            why
        );
        println!("{}", plugbox::display::escape(&line));
    }
    Ok(ExitCode::SUCCESS)
}

/// `audit summary FILE...`.
pub fn summary(files: &[PathBuf]) -> Result<ExitCode, String> {
    let mut by_plugin: BTreeMap<String, BTreeMap<&'static str, u64>> = BTreeMap::new();
    let mut by_capability: BTreeMap<(String, String), BTreeMap<String, u64>> = BTreeMap::new();
    let mut denied: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    let all = records(files)?;
    for r in &all {
        let plugin = text(&r["plugin"]["name"]).to_owned();
        let event = text(&r["event"]);
        let counts = by_plugin.entry(plugin.clone()).or_default();
        *counts.entry("records").or_default() += 1;
        if event == "call" {
            let decision = text(&r["decision"]).to_owned();
            *counts
                .entry(if decision == "allow" {
                    "allowed"
                } else {
                    "denied"
                })
                .or_default() += 1;
            let cap = text(&r["capability"]).to_owned();
            *by_capability
                .entry((plugin.clone(), cap.clone()))
                .or_default()
                .entry(decision.clone())
                .or_default() += 1;
            if decision == "deny" {
                *denied
                    .entry((plugin, cap, text(&r["rule"]).to_owned()))
                    .or_default() += 1;
            }
        } else if matches!(
            event,
            "kill" | "protocol_violation" | "limit" | "load_refused" | "timeout"
        ) {
            *counts.entry("incidents").or_default() += 1;
        }
    }
    println!("{} records", all.len());
    println!("\nper plugin:");
    for (plugin, c) in &by_plugin {
        let g = |k| c.get(k).copied().unwrap_or(0);
        let plugin = plugbox::display::escape(plugin);
        println!(
            "  {plugin:<24} {:>8} records {:>8} calls allowed {:>8} denied {:>6} incidents",
            g("records"),
            g("allowed"),
            g("denied"),
            g("incidents")
        );
    }
    println!("\nper capability:");
    for ((plugin, cap), d) in &by_capability {
        let parts: Vec<String> = d.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let line = format!("  {plugin:<24} {cap:<20} {}", parts.join(", "));
        println!("{}", plugbox::display::escape(&line));
    }
    println!("\ndenied calls:");
    if denied.is_empty() {
        println!("  none");
    }
    for ((plugin, cap, rule), n) in &denied {
        let line = format!("  {plugin:<24} {cap:<20} {n:>6} x  rule {rule}");
        println!("{}", plugbox::display::escape(&line));
    }
    Ok(ExitCode::SUCCESS)
}
