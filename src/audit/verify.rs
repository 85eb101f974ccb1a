//! `plugbox audit verify`: walks the hash chain of one or more log files (oldest first) and
//! reports the first broken link: edited, deleted, inserted, reordered, truncated or unsealed.

use super::chain::{self, GENESIS};
use serde::Serialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// What kind of damage was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Damage {
    /// A line's content no longer matches its own hash.
    Edited,
    /// One or more records are missing (a sequence gap).
    Deleted,
    /// A line that the writer did not produce here (duplicate sequence or broken link).
    Inserted,
    /// Records are out of order.
    Reordered,
    /// The file ends inside a line (or a rotated file ends without its rotate record).
    Truncated,
    /// The log ends without a seal: the host crashed, or whole records were cut off.
    Unsealed,
    /// A line is not a JSON record.
    Corrupt,
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Records that verified.
    pub records: u64,
    /// Files walked.
    pub files: usize,
    /// `None` when intact and sealed.
    pub broken: Option<Broken>,
    /// Informational notes (a chain that starts mid-way, for example).
    pub notes: Vec<String>,
}

/// The first broken link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Broken {
    /// What kind.
    pub damage: Damage,
    /// In which file.
    pub file: PathBuf,
    /// At which line (1-based).
    pub line: usize,
    /// Human detail.
    pub detail: String,
}

struct Line {
    file: usize,
    number: usize,
    bytes: Vec<u8>,
}

/// Verifies `files` as one chain, oldest first.
pub fn verify(files: &[PathBuf]) -> std::io::Result<Verdict> {
    let mut lines = Vec::new();
    let mut partial = None;
    for (fi, path) in files.iter().enumerate() {
        let data = std::fs::read(path)?;
        let mut parts: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
        let tail = parts.pop().unwrap_or_default();
        for (i, part) in parts.into_iter().enumerate() {
            lines.push(Line {
                file: fi,
                number: i + 1,
                bytes: part.to_vec(),
            });
        }
        if !tail.is_empty() {
            let number = data.iter().filter(|&&b| b == b'\n').count() + 1;
            partial = Some((fi, number));
            if fi + 1 != files.len() {
                return Ok(broken(
                    files,
                    fi,
                    number,
                    Damage::Truncated,
                    "partial line in a file that is not the last",
                    0,
                ));
            }
        }
    }
    let seqs: Vec<Option<u64>> = lines
        .iter()
        .map(|l| parsed(&l.bytes).map(|(s, _, _)| s))
        .collect();
    let mut verdict = Verdict {
        records: 0,
        files: files.len(),
        broken: None,
        notes: Vec::new(),
    };
    let mut last_hash: Option<String> = None;
    let mut expected: Option<u64> = None;
    let mut last_event = String::new();
    let mut seen = HashSet::new();
    for (i, line) in lines.iter().enumerate() {
        let fail = |damage, detail: String| {
            Ok(broken(
                files,
                line.file,
                line.number,
                damage,
                &detail,
                verdict.records,
            ))
        };
        if i > 0
            && line.file != lines[i - 1].file
            && !matches!(last_event.as_str(), "rotate" | "seal")
        {
            let prev = &lines[i - 1];
            return Ok(broken(
                files,
                prev.file,
                prev.number,
                Damage::Truncated,
                "rotated file does not end with its rotate record",
                verdict.records,
            ));
        }
        let Some((seq, prev, event)) = parsed(&line.bytes) else {
            return fail(Damage::Corrupt, "not a JSON audit record".into());
        };
        let Some(hash) = chain::check(&line.bytes) else {
            return fail(
                Damage::Edited,
                format!("record seq {seq} does not match its hash"),
            );
        };
        match (expected, &last_hash) {
            (None, _) if prev != GENESIS => verdict.notes.push(format!(
                "the chain starts mid-way at seq {seq} (prev {}...); earlier files were not given",
                &prev[..prev.len().min(12)]
            )),
            (Some(e), Some(h)) if seq == e && prev != *h => {
                return fail(
                    Damage::Inserted,
                    format!("record seq {seq} does not link to the record before it"),
                );
            }
            (Some(e), _) if seq > e => {
                let later = seqs[i + 1..].contains(&Some(e));
                return if later {
                    fail(
                        Damage::Reordered,
                        format!("seq {seq} appears where {e} was expected; {e} comes later"),
                    )
                } else {
                    fail(
                        Damage::Deleted,
                        format!("records {e}..={} are missing", seq - 1),
                    )
                };
            }
            (Some(e), _) if seq < e => {
                let kind = if seen.contains(&seq) {
                    Damage::Inserted
                } else {
                    Damage::Reordered
                };
                return fail(kind, format!("seq {seq} appears after seq {}", e - 1));
            }
            _ => {}
        }
        seen.insert(seq);
        last_hash = Some(hash);
        expected = Some(seq + 1);
        last_event = event;
        verdict.records += 1;
    }
    if let Some((fi, number)) = partial {
        return Ok(broken(
            files,
            fi,
            number,
            Damage::Truncated,
            "the last line is incomplete",
            verdict.records,
        ));
    }
    if last_event != "seal" {
        let (file, number) = lines
            .last()
            .map_or((files.len().saturating_sub(1), 0), |l| (l.file, l.number));
        return Ok(broken(
            files,
            file,
            number,
            Damage::Unsealed,
            "the log ends without a seal record (crash, or its tail was cut)",
            verdict.records,
        ));
    }
    Ok(verdict)
}

fn parsed(bytes: &[u8]) -> Option<(u64, String, String)> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    Some((
        v["seq"].as_u64()?,
        v["prev"].as_str()?.to_owned(),
        v["event"].as_str()?.to_owned(),
    ))
}

fn broken(
    files: &[PathBuf],
    file: usize,
    line: usize,
    damage: Damage,
    detail: &str,
    records: u64,
) -> Verdict {
    Verdict {
        records,
        files: files.len(),
        broken: Some(Broken {
            damage,
            file: files.get(file).cloned().unwrap_or_default(),
            line,
            detail: detail.to_owned(),
        }),
        notes: Vec::new(),
    }
}

/// One line of text for the verdict.
pub fn describe(v: &Verdict) -> String {
    match &v.broken {
        None => format!(
            "intact: {} records in {} file(s), sealed",
            v.records, v.files
        ),
        Some(b) => format!(
            "broken: {} at {}:{}: {} ({} records verified before it)",
            format!("{:?}", b.damage).to_lowercase(),
            b.file.display(),
            b.line,
            b.detail,
            v.records
        ),
    }
}

/// Convenience for one file.
pub fn verify_file(path: &Path) -> std::io::Result<Verdict> {
    verify(&[path.to_owned()])
}
