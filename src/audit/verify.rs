//! `plugbox audit verify`: walks the hash chain of one or more log files (oldest first) and
//! reports the first broken link: edited, deleted, inserted, reordered, truncated, unsealed,
//! corrupt, or a missing head (the first file does not start at the writer's genesis `open`).
//! A log reopened after a seal is one chain of several sessions: each session after the first
//! starts with an `open` record right after the previous session's `seal`.

use super::chain::{self, GENESIS};
use super::lines::{open_log, parse_head, Head, Line, LineReader};
use super::record::{escape_text, MAX_RECORD_BYTES};
use serde::Serialize;
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
    /// With a key: a session written without signing, or records after a closing checkpoint.
    Unsigned,
    /// With a key: a session or checkpoint signed by a key other than the given ones.
    WrongKey,
    /// With a key: a checkpoint whose signature does not verify, or that is not one.
    BadSignature,
    /// With a key: a checkpoint signs a head the log no longer has (rewritten and re-chained).
    CheckpointMismatch,
    /// With a key: a seal without the closing checkpoint right before it (cut and re-sealed,
    /// or records appended after the last checkpoint).
    CheckpointMissing,
    /// With anchors: a record differs from the anchor exported for it (rewritten after export).
    AnchorMismatch,
    /// With anchors: an anchor names a record the log no longer holds (cut after export), or
    /// no anchor belongs to the log.
    AnchorMissing,
}

impl Damage {
    /// Its name as in the JSON verdict (`head_missing`, `edited`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Damage::Edited => "edited",
            Damage::Deleted => "deleted",
            Damage::Inserted => "inserted",
            Damage::Reordered => "reordered",
            Damage::Truncated => "truncated",
            Damage::Unsealed => "unsealed",
            Damage::Corrupt => "corrupt",
            Damage::HeadMissing => "head_missing",
            Damage::Unsigned => "unsigned",
            Damage::WrongKey => "wrong_key",
            Damage::BadSignature => "bad_signature",
            Damage::CheckpointMismatch => "checkpoint_mismatch",
            Damage::CheckpointMissing => "checkpoint_missing",
            Damage::AnchorMismatch => "anchor_mismatch",
            Damage::AnchorMissing => "anchor_missing",
        }
    }
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Records that verified.
    pub records: u64,
    /// Files walked.
    pub files: usize,
    /// Writer sessions: `open` records (a sealed log reopened is appended to by a new one).
    pub sessions: u64,
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

/// Verifies `files` as one chain, oldest first, streaming: each line is read with a cap
/// ([`super::lines`]), so memory does not grow with the log or with a hostile line, and a file
/// that is not a regular file (a FIFO, `/dev/zero`) is an error, not a hang.
pub fn verify(files: &[PathBuf]) -> std::io::Result<Verdict> {
    let mut walk = Walk {
        files,
        verdict: Verdict {
            records: 0,
            files: files.len(),
            sessions: 0,
            broken: None,
            notes: Vec::new(),
        },
        last_hash: None,
        expected: None,
        last_event: String::new(),
        seen_low: 0,
    };
    for fi in 0..files.len() {
        if let Some(done) = walk.file(fi)? {
            return Ok(done);
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
    /// Walks file `fi`; returns the verdict if it is broken.
    fn file(&mut self, fi: usize) -> std::io::Result<Option<Verdict>> {
        if fi > 0
            && self.expected.is_some()
            && !matches!(self.last_event.as_str(), "rotate" | "seal")
        {
            let lines = count_lines(&self.files[fi - 1])?;
            return Ok(Some(self.broken(
                fi - 1,
                lines,
                Damage::Truncated,
                "rotated file does not end with its rotate record",
            )));
        }
        let mut lines = LineReader::new(open_log(&self.files[fi])?);
        while let Some((number, line)) = lines.next_line()? {
            let line = match line {
                Line::Complete(line) => line,
                Line::Partial(_) => {
                    let detail = if fi + 1 == self.files.len() {
                        "the last line is incomplete"
                    } else {
                        "partial line in a file that is not the last"
                    };
                    return Ok(Some(self.broken(fi, number, Damage::Truncated, detail)));
                }
                Line::TooLong { bytes } => {
                    let detail = format!(
                        "a line of {bytes} bytes, longer than any record ({MAX_RECORD_BYTES})"
                    );
                    return Ok(Some(self.broken(fi, number, Damage::Corrupt, &detail)));
                }
            };
            if let Some(done) = self.step(fi, number, line)? {
                return Ok(Some(done));
            }
        }
        Ok(None)
    }

    fn broken(&self, file: usize, line: usize, damage: Damage, detail: &str) -> Verdict {
        broken(self.files, file, line, damage, detail, self.verdict.records)
    }

    /// Checks one line; returns the verdict if it is broken.
    fn step(&mut self, fi: usize, number: usize, line: &[u8]) -> std::io::Result<Option<Verdict>> {
        let fail =
            |w: &Self, damage, detail: String| Ok(Some(w.broken(fi, number, damage, &detail)));
        let Some(Head { seq, prev, event }) = parse_head(line) else {
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
            (None, _) if seq != 1 || event != "open" || prev != GENESIS => {
                return fail(
                    self,
                    Damage::HeadMissing,
                    format!(
                        "the log starts at seq {seq} ({}), not at the writer's first record \
                         (seq 1, open, genesis prev): its head was cut off, or earlier files \
                         were not given",
                        escape_text(&event)
                    ),
                );
            }
            (None, _) => self.seen_low = seq,
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
        if let Some(why) = session_break(self.expected.is_some(), &self.last_event, &event, seq) {
            return fail(self, Damage::Inserted, why);
        }
        self.verdict.sessions += u64::from(event == "open");
        self.last_hash = Some(hash);
        self.expected = Some(seq + 1);
        self.last_event = event.into_owned();
        self.verdict.records += 1;
        Ok(None)
    }
}

/// The writer starts a session only with `open`, and only at genesis or right after a `seal`
/// (reopening a sealed log); it writes nothing after a seal but that `open`.
fn session_break(mid_chain: bool, last_event: &str, event: &str, seq: u64) -> Option<String> {
    match (last_event == "seal", event == "open") {
        (true, false) => Some(format!(
            "record seq {seq} follows a seal but is not the open record of a new session"
        )),
        (false, true) if mid_chain => Some(format!(
            "an open record (seq {seq}) that does not follow a seal"
        )),
        _ => None,
    }
}

/// Does a record with `seq` appear after line `number` of file `fi`? (Only on a broken link.)
fn appears_later(files: &[PathBuf], fi: usize, number: usize, seq: u64) -> std::io::Result<bool> {
    for (i, path) in files.iter().enumerate().skip(fi) {
        let mut lines = LineReader::new(open_log(path)?);
        let skip = if i == fi { number } else { 0 };
        while let Some((n, line)) = lines.next_line()? {
            if n <= skip {
                continue;
            }
            if let Line::Complete(line) = line {
                if parse_head(line).is_some_and(|h| h.seq == seq) {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

fn count_lines(path: &Path) -> std::io::Result<usize> {
    let mut lines = LineReader::new(open_log(path)?);
    while lines.next_line()?.is_some() {}
    Ok(lines.number())
}

pub(super) fn broken(
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
        sessions: 0,
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
            "intact: {} records in {} file(s), {} session(s), sealed",
            v.records, v.files, v.sessions
        ),
        Some(b) => format!(
            "broken: {} at {}:{}: {} ({} records verified before it)",
            b.damage.name(),
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
