//! `plugbox audit verify|show`: reading tools for auditors (`summary` is in `audit_summary`).
//! They stream the log, one capped line at a time, so memory stays bounded whatever the log's
//! size or content.

use plugbox::audit::escape_text;
use plugbox::audit::lines::{open_log, Line, LineReader};
use plugbox::audit::record::MAX_RECORD_BYTES;
use plugbox::audit::rotated::chain_order;
use plugbox::audit::verify::{describe, verify};
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;

/// Filters of `audit show`.
pub struct ShowFilter {
    pub plugin: Option<String>,
    pub event: Option<String>,
    pub decision: Option<String>,
    pub since: Option<String>,
    pub json: bool,
    /// Keep reading the live log as it grows (`--follow`).
    pub follow: bool,
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
    Ok(print_verdict(&verdict, json))
}

/// Prints a verification verdict (JSON, or its notes and a description, escaped) and returns
/// the exit status: 0 intact, 1 broken.
pub(crate) fn print_verdict(verdict: &plugbox::audit::verify::Verdict, json: bool) -> ExitCode {
    if json {
        println!("{}", plugbox::display::json(verdict));
    } else {
        for note in &verdict.notes {
            println!("note: {}", plugbox::display::escape(note));
        }
        println!("{}", plugbox::display::escape_lines(&describe(verdict)));
    }
    if verdict.broken.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Calls `each` with every record of `files`, one line at a time (memory does not grow with
/// the log: each line is capped at the writer's largest record). A line that is not a record
/// is reported on stderr by file and line number and skipped; returns whether every line was
/// a record. A file that is not a regular file is an error.
pub(crate) fn for_each_record(
    files: &[PathBuf],
    mut each: impl FnMut(&Value),
) -> Result<bool, String> {
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
pub(crate) fn status(clean: bool) -> ExitCode {
    if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The string at `v`, or empty.
pub(crate) fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

impl ShowFilter {
    /// Does record `r` pass the filter?
    pub(crate) fn keep(&self, r: &Value) -> bool {
        self.plugin
            .as_deref()
            .is_none_or(|p| text(&r["plugin"]["name"]) == p)
            && self.event.as_deref().is_none_or(|e| text(&r["event"]) == e)
            && self
                .decision
                .as_deref()
                .is_none_or(|d| text(&r["decision"]) == d)
            && self.since.as_deref().is_none_or(|s| text(&r["ts"]) >= s)
    }

    /// Record `r` as `show` prints it (a table row, or a JSON line), every text escaped.
    pub(crate) fn format(&self, r: &Value) -> String {
        if self.json {
            plugbox::display::json(r)
        } else {
            row(r)
        }
    }
}

/// `audit show FILE...`: streams the records that pass the filter; with `--follow`, the
/// one live log's records, then each record appended to it ([`crate::audit_follow`]).
pub fn show(files: &[PathBuf], f: &ShowFilter) -> Result<ExitCode, String> {
    if f.follow {
        return crate::audit_follow::follow(files, f);
    }
    let clean = for_each_record(files, |r| {
        if f.keep(r) {
            println!("{}", f.format(r));
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
