//! `plugbox audit summary`: counts per plugin, capability and decision, the denied calls with
//! their rules, and each plugin's incidents (crashes, kills, call timeouts, health failures,
//! restarts, circuit openings, denials, refused loads, protocol violations, limits hit).
//! Streaming, with every table bounded, so a hostile log cannot grow memory.

use crate::audit::{for_each_record, status, text};
use plugbox::audit::escape_text;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

/// Distinct keys kept per summary table; further ones are counted under `(other)`, so a log
/// with endless distinct (plugin-controlled) capability names cannot grow memory.
const MAX_KEYS: usize = 10_000;
/// Distinct breakdowns (signals, exit statuses, kill causes) kept per incident kind.
const MAX_BREAKDOWN: usize = 32;
const OTHER: &str = "(other)";

/// The counter for `key` in `map`, or for `other` once the map holds `max` keys.
fn slot_of<K: Ord, V: Default>(
    map: &mut BTreeMap<K, V>,
    max: usize,
    key: K,
    other: impl FnOnce() -> K,
) -> &mut V {
    let key = if map.len() >= max && !map.contains_key(&key) {
        other()
    } else {
        key
    };
    map.entry(key).or_default()
}

fn slot<K: Ord, V: Default>(map: &mut BTreeMap<K, V>, key: K, other: impl FnOnce() -> K) -> &mut V {
    slot_of(map, MAX_KEYS, key, other)
}

/// `n` with the singular or plural noun: "1 incident", "2 incidents".
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A kind of incident, in the order the summary prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Incident {
    /// The plugin ended by itself with a non-zero status, or by a signal the host did not send
    /// (`exit` record): broken down by `SIGABRT`, `exit status 3`, ...
    Crash,
    /// The host killed the plugin's process tree (`kill` record): broken down by cause.
    Kill,
    /// A host→plugin call passed `limits.call_timeout_ms` (`invoke` outcome `limit`).
    CallTimeout,
    /// A health ping missed its deadline.
    HealthFailure,
    /// A replacement instance after a failure (a planned recycle is not counted).
    Restart,
    /// The restart circuit opened.
    CircuitOpen,
    /// A plugin→host call refused (recorded, or counted in `calls_suppressed`).
    Denial,
    /// A plugin (or one instance of it) refused or failed before it ran.
    RefusedLoad,
    /// The plugin broke the protocol.
    ProtocolViolation,
    /// A limit was hit (`limit` record; the grant's ceiling report is not an incident).
    Limit,
}

impl Incident {
    /// The singular and plural nouns.
    fn nouns(self) -> (&'static str, &'static str) {
        match self {
            Incident::Crash => ("crash", "crashes"),
            Incident::Kill => ("kill", "kills"),
            Incident::CallTimeout => ("call timeout", "call timeouts"),
            Incident::HealthFailure => ("health failure", "health failures"),
            Incident::Restart => ("restart", "restarts"),
            Incident::CircuitOpen => ("circuit opening", "circuit openings"),
            Incident::Denial => ("denial", "denials"),
            Incident::RefusedLoad => ("refused load", "refused loads"),
            Incident::ProtocolViolation => ("protocol violation", "protocol violations"),
            Incident::Limit => ("limit hit", "limits hit"),
        }
    }
}

/// The incident a record stands for, its breakdown label if any, and how many it counts.
pub fn classify(r: &Value) -> Option<(Incident, Option<String>, u64)> {
    let one = |kind, label: Option<String>| Some((kind, label, 1));
    match text(&r["event"]) {
        "exit" => crash_label(&r["detail"]).map(|how| (Incident::Crash, Some(how), 1)),
        "kill" => one(
            Incident::Kill,
            Some(kill_cause(text(&r["reason"])).to_owned()),
        ),
        "invoke" if text(&r["outcome"]) == "limit" => {
            let reason = r["reason"].as_str();
            // Older logs carry no reason; a limit there was almost always the call timeout.
            let timeout = reason.is_none_or(|why| why.starts_with("limits.call_timeout_ms"));
            timeout.then_some((Incident::CallTimeout, None, 1))
        }
        "health_failure" => one(Incident::HealthFailure, None),
        "restart" if !text(&r["reason"]).starts_with("recycle") => one(Incident::Restart, None),
        "circuit" if text(&r["detail"]["circuit"]) == "open" => one(Incident::CircuitOpen, None),
        "call" if text(&r["decision"]) == "deny" => one(Incident::Denial, None),
        "calls_suppressed" => {
            let n = r["detail"]["suppressed"].as_u64().unwrap_or(0);
            Some((Incident::Denial, None, n))
        }
        "load_refused" => one(Incident::RefusedLoad, None),
        "protocol_violation" => one(Incident::ProtocolViolation, None),
        "limit" if text(&r["rule"]) != "grant.ceiling" => {
            one(Incident::Limit, Some(escape_text(text(&r["rule"]))))
        }
        _ => None,
    }
}

/// How an `exit` record's process ended, if that was a crash: `SIGABRT`, `exit status 3`.
fn crash_label(detail: &Value) -> Option<String> {
    if let Some(sig) = detail["signal"].as_i64() {
        let name = i32::try_from(sig).map_or("other", plugbox::engine::signal_name);
        return Some(match name {
            "other" => format!("signal {sig}"),
            name => name.to_owned(),
        });
    }
    match detail["exit_code"].as_i64() {
        Some(0) | None => None,
        Some(code) => Some(format!("exit status {code}")),
    }
}

/// The cause of a host kill, from the `kill` record's reason (`Ending::cause` in the engine).
fn kill_cause(reason: &str) -> &'static str {
    const CAUSES: &[(&str, &str)] = &[
        ("health check failed", "health check"),
        ("not answered after cancel", "ignored cancel"),
        ("limits.wall_seconds", "wall clock"),
        ("protocol violation", "protocol violation"),
        ("the plugin stopped reading", "stopped reading"),
        ("audit log failed", "audit log failed"),
        ("shutdown", "shutdown"),
    ];
    CAUSES
        .iter()
        .find(|(text, _)| reason.contains(text))
        .map_or("other", |(_, label)| label)
}

/// One plugin's incidents: per kind, the count and its breakdown.
#[derive(Default)]
pub struct Incidents {
    kinds: BTreeMap<Incident, (u64, BTreeMap<String, u64>)>,
}

impl Incidents {
    /// Counts one incident.
    pub fn add(&mut self, kind: Incident, label: Option<String>, n: u64) {
        let (total, labels) = self.kinds.entry(kind).or_default();
        *total += n;
        if let Some(label) = label {
            *slot_of(labels, MAX_BREAKDOWN, label, || OTHER.into()) += n;
        }
    }

    /// The number of incidents of every kind.
    pub fn total(&self) -> u64 {
        self.kinds.values().map(|(n, _)| n).sum()
    }

    /// `2 incidents: 1 crash (SIGABRT), 1 restart`, or `0 incidents`.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .kinds
            .iter()
            .map(|(kind, (n, labels))| {
                let (one, many) = kind.nouns();
                let mut part = count(*n, one, many);
                if !labels.is_empty() {
                    let each: Vec<String> = labels
                        .iter()
                        .map(|(label, k)| match (labels.len(), *k == *n) {
                            (1, true) => label.clone(),
                            _ => format!("{k} {label}"),
                        })
                        .collect();
                    part = format!("{part} ({})", each.join(", "));
                }
                part
            })
            .collect();
        let total = count(self.total(), "incident", "incidents");
        if parts.is_empty() {
            total
        } else {
            format!("{total}: {}", parts.join(", "))
        }
    }
}

/// The counts `audit summary` prints.
#[derive(Default)]
struct Tally {
    records: u64,
    by_plugin: BTreeMap<String, BTreeMap<&'static str, u64>>,
    incidents: BTreeMap<String, Incidents>,
    by_capability: BTreeMap<(String, String), BTreeMap<String, u64>>,
    denied: BTreeMap<(String, String, String), u64>,
}

impl Tally {
    fn add(&mut self, r: &Value) {
        self.records += 1;
        let plugin = escape_text(text(&r["plugin"]["name"]));
        let counts = slot(&mut self.by_plugin, plugin.clone(), || OTHER.into());
        *counts.entry("records").or_default() += 1;
        if let Some((kind, label, n)) = classify(r) {
            slot(&mut self.incidents, plugin.clone(), || OTHER.into()).add(kind, label, n);
        }
        match text(&r["event"]) {
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
            _ => {}
        }
    }

    fn print(&self) {
        println!("{}", count(self.records, "record", "records"));
        println!("\nper plugin:");
        for (plugin, c) in &self.by_plugin {
            let g = |k| c.get(k).copied().unwrap_or(0);
            let incidents = self.incidents.get(plugin).map_or(0, Incidents::total);
            println!(
                "  {plugin:<24} {:>16} {:>8} calls allowed {:>8} denied {:>16}",
                count(g("records"), "record", "records"),
                g("allowed"),
                g("denied"),
                count(incidents, "incident", "incidents"),
            );
        }
        println!("\nincidents:");
        let any: Vec<_> = self
            .incidents
            .iter()
            .filter(|(_, i)| i.total() > 0)
            .collect();
        if any.is_empty() {
            println!("  none");
        }
        for (plugin, incidents) in any {
            println!("  {plugin:<24} {}", incidents.describe());
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

/// `audit summary FILE...`: counts per plugin, capability and decision, and incidents per
/// plugin, streaming (calls refused without a record of their own are counted from their
/// `calls_suppressed` records).
pub fn summary(files: &[PathBuf]) -> Result<ExitCode, String> {
    let mut tally = Tally::default();
    let clean = for_each_record(files, |r| tally.add(r))?;
    tally.print();
    Ok(status(clean))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn describe(records: &[Value]) -> String {
        let mut incidents = Incidents::default();
        for r in records {
            if let Some((kind, label, n)) = classify(r) {
                incidents.add(kind, label, n);
            }
        }
        incidents.describe()
    }

    #[test]
    fn singular_and_plural() {
        assert_eq!(count(1, "incident", "incidents"), "1 incident");
        assert_eq!(count(0, "incident", "incidents"), "0 incidents");
        assert_eq!(count(2, "crash", "crashes"), "2 crashes");
        assert_eq!(describe(&[]), "0 incidents");
    }

    #[test]
    fn each_kind_of_record_is_classified() {
        let records = [
            json!({"event": "exit", "detail": {"signal": 6}}),
            json!({"event": "exit", "detail": {"exit_code": 3}}),
            json!({"event": "exit", "detail": {"exit_code": 0}}),
            json!({"event": "kill", "reason": "health check failed: no reply"}),
            json!({"event": "kill", "reason": "call 4 not answered after cancel"}),
            json!({"event": "invoke", "outcome": "limit", "reason": "limits.call_timeout_ms (300 ms) exceeded"}),
            json!({"event": "invoke", "outcome": "limit", "reason": "p#1: limits.cpu_seconds reached"}),
            json!({"event": "invoke", "outcome": "ok"}),
            json!({"event": "health_failure"}),
            json!({"event": "restart", "reason": "restart after a failure"}),
            json!({"event": "restart", "reason": "recycle after limits.wall_seconds"}),
            json!({"event": "circuit", "detail": {"circuit": "open"}}),
            json!({"event": "circuit", "detail": {"circuit": "closed"}}),
            json!({"event": "call", "decision": "deny"}),
            json!({"event": "call", "decision": "allow"}),
            json!({"event": "calls_suppressed", "detail": {"suppressed": 5}}),
            json!({"event": "load_refused"}),
            json!({"event": "protocol_violation"}),
            json!({"event": "limit", "rule": "limits.output_bytes"}),
            json!({"event": "limit", "rule": "grant.ceiling"}),
        ];
        assert_eq!(
            describe(&records),
            "17 incidents: 2 crashes (1 SIGABRT, 1 exit status 3), \
             2 kills (1 health check, 1 ignored cancel), 1 call timeout, 1 health failure, \
             1 restart, 1 circuit opening, 6 denials, 1 refused load, 1 protocol violation, \
             1 limit hit (limits.output_bytes)"
        );
        let one = describe(&[json!({"event": "exit", "detail": {"signal": 6}})]);
        assert_eq!(one, "1 incident: 1 crash (SIGABRT)");
    }

    #[test]
    fn breakdowns_are_bounded() {
        let mut incidents = Incidents::default();
        for code in 0..1000 {
            incidents.add(Incident::Crash, Some(format!("exit status {code}")), 1);
        }
        let (n, labels) = &incidents.kinds[&Incident::Crash];
        assert_eq!(*n, 1000);
        assert_eq!(labels.len(), MAX_BREAKDOWN + 1);
        assert_eq!(labels[OTHER], 1000 - MAX_BREAKDOWN as u64);
    }
}
