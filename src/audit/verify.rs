//! `plugbox audit verify`: walks the hash chain of one or more log files (oldest first) and
//! reports the first broken link: edited, deleted, inserted, reordered, truncated or unsealed.

use super::chain::{self, GENESIS};
use serde::Serialize;
use std::fs::File;
use std::io::{BufRead, BufReader};
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
    /// A line is not a JSON record (or is longer than any record the writer produces).
    Corrupt,
    /// The log does not start at the writer's first record (`open`, seq 1, genesis `prev`):
    /// records were cut off its head, or earlier files were not given.
    HeadMissing,
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

/// Verifies `files` as one chain, oldest first, streaming (memory does not grow with the log).
pub fn verify(files: &[PathBuf]) -> std::io::Result<Verdict> {
    let mut walk = Walk {
        files,
        verdict: Verdict {
            records: 0,
            files: files.len(),
            broken: None,
            notes: Vec::new(),
        },
        last_hash: None,
        expected: None,
        last_event: String::new(),
        seen_low: 0,
    };
    for (fi, path) in files.iter().enumerate() {
        let mut reader = BufReader::new(File::open(path)?);
        let mut line = Vec::new();
        let mut number = 0;
        if fi > 0
            && walk.expected.is_some()
            && !matches!(walk.last_event.as_str(), "rotate" | "seal")
        {
            let prev = fi - 1;
            let lines = count_lines(&files[prev])?;
            return Ok(walk.broken(
                prev,
                lines,
                Damage::Truncated,
                "rotated file does not end with its rotate record",
            ));
        }
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            number += 1;
            if line.last() != Some(&b'\n') {
                let detail = if fi + 1 == files.len() {
                    "the last line is incomplete"
                } else {
                    "partial line in a file that is not the last"
                };
                return Ok(walk.broken(fi, number, Damage::Truncated, detail));
            }
            line.pop();
            if let Some(done) = walk.step(fi, number, &line)? {
                return Ok(done);
            }
        }
    }
    if walk.last_event != "seal" {
        let last = files.len().saturating_sub(1);
        let lines = files
            .last()
            .map(|f| count_lines(f))
            .transpose()?
            .unwrap_or(0);
        return Ok(walk.broken(
            last,
            lines,
            Damage::Unsealed,
            "the log ends without a seal record (crash, or its tail was cut)",
        ));
    }
    Ok(walk.verdict)
}

struct Walk<'a> {
    files: &'a [PathBuf],
    verdict: Verdict,
    last_hash: Option<String>,
    expected: Option<u64>,
    last_event: String,
    seen_low: u64,
}

impl Walk<'_> {
    fn broken(&self, file: usize, line: usize, damage: Damage, detail: &str) -> Verdict {
        broken(self.files, file, line, damage, detail, self.verdict.records)
    }

    /// Checks one line; returns the verdict if it is broken.
    fn step(&mut self, fi: usize, number: usize, line: &[u8]) -> std::io::Result<Option<Verdict>> {
        let fail =
            |w: &Self, damage, detail: String| Ok(Some(w.broken(fi, number, damage, &detail)));
        let Some((seq, prev, event)) = parsed(line) else {
            return fail(self, Damage::Corrupt, "not a JSON audit record".into());
        };
        let Some(hash) = chain::check(line) else {
            return fail(
                self,
                Damage::Edited,
                format!("record seq {seq} does not match its hash"),
            );
        };
        match (self.expected, &self.last_hash) {
            (None, _) => {
                self.seen_low = seq;
                if prev != GENESIS {
                    self.verdict.notes.push(format!(
                        "the chain starts mid-way at seq {seq} (prev {}...); earlier files were not given",
                        &prev[..prev.len().min(12)]
                    ));
                }
            }
            (Some(e), Some(h)) if seq == e && prev != *h => {
                return fail(
                    self,
                    Damage::Inserted,
                    format!("record seq {seq} does not link to the record before it"),
                );
            }
            (Some(e), _) if seq > e => {
                return if appears_later(self.files, fi, number, e)? {
                    fail(
                        self,
                        Damage::Reordered,
                        format!("seq {seq} appears where {e} was expected; {e} comes later"),
                    )
                } else {
                    fail(
                        self,
                        Damage::Deleted,
                        format!("records {e}..={} are missing", seq - 1),
                    )
                };
            }
            (Some(e), _) if seq < e => {
                // Seen before (a duplicate) means inserted; otherwise the order is wrong.
                let kind = if seq >= self.seen_low {
                    Damage::Inserted
                } else {
                    Damage::Reordered
                };
                return fail(self, kind, format!("seq {seq} appears after seq {}", e - 1));
            }
            _ => {}
        }
        self.last_hash = Some(hash);
        self.expected = Some(seq + 1);
        self.last_event = event;
        self.verdict.records += 1;
        Ok(None)
    }
}

/// Does a record with `seq` appear after line `number` of file `fi`? (Only on a broken link.)
fn appears_later(files: &[PathBuf], fi: usize, number: usize, seq: u64) -> std::io::Result<bool> {
    for (i, path) in files.iter().enumerate().skip(fi) {
        let reader = BufReader::new(File::open(path)?);
        let skip = if i == fi { number } else { 0 };
        for line in reader.split(b'\n').skip(skip) {
            if parsed(&line?).is_some_and(|(s, _, _)| s == seq) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

fn count_lines(path: &Path) -> std::io::Result<usize> {
    Ok(BufReader::new(File::open(path)?).split(b'\n').count())
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
