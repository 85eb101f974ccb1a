//! The append-only audit writer (first version): JSON Lines, one record per line, stamped
//! with a contiguous sequence number and a timestamp under one lock, so order is total.
//!
//! Writing is fail-closed: an error is returned to the caller, which must not perform the
//! action the record describes, and the writer stays failed (every later write errors too),
//! so a gap can never be followed by records that look complete.

use super::record::{Record, RECORD_SCHEMA};
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Why a record could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The log could not be opened.
    #[error("audit: cannot open {path}: {source}")]
    Open {
        /// The log file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A write failed; the log is now closed for good.
    #[error("audit: cannot write record {seq} to {path}: {source}")]
    Write {
        /// The record's sequence number.
        seq: u64,
        /// The log file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An earlier write failed.
    #[error("audit: the log {path} failed earlier; no further records are written")]
    Failed {
        /// The log file.
        path: PathBuf,
    },
}

/// Where audit records go.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    file: Option<File>,
    next_seq: u64,
    line: Vec<u8>,
}

#[derive(Serialize)]
struct Stamped<'a> {
    v: u32,
    seq: u64,
    ts: String,
    #[serde(flatten)]
    record: &'a Record,
}

impl AuditLog {
    /// Opens (creating, appending) the log at `path`.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| AuditError::Open {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            path: path.to_owned(),
            state: Mutex::new(State {
                file: Some(file),
                next_seq: 1,
                line: Vec::with_capacity(1024),
            }),
        })
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one record; returns its sequence number. On error, nothing the record describes
    /// may happen.
    pub fn write(&self, record: &Record) -> Result<u64, AuditError> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let state = &mut *state;
        let seq = state.next_seq;
        let Some(file) = state.file.as_mut() else {
            return Err(AuditError::Failed {
                path: self.path.clone(),
            });
        };
        state.line.clear();
        let stamped = Stamped {
            v: RECORD_SCHEMA,
            seq,
            ts: rfc3339_now(),
            record,
        };
        let result = serde_json::to_writer(&mut state.line, &stamped)
            .map_err(std::io::Error::other)
            .and_then(|()| {
                state.line.push(b'\n');
                file.write_all(&state.line)
            });
        match result {
            Ok(()) => {
                state.next_seq += 1;
                Ok(seq)
            }
            Err(source) => {
                state.file = None;
                Err(AuditError::Write {
                    seq,
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }
}

/// Now as RFC 3339 UTC with nanoseconds, e.g. `2026-11-22T04:22:28.123456789Z`.
pub fn rfc3339_now() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(now.as_secs(), now.subsec_nanos())
}

fn rfc3339(secs: u64, nanos: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's method).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::super::record::{EventKind, Subject};
    use super::*;

    fn subject() -> Subject {
        Subject {
            name: "p".into(),
            version: "1.0.0".into(),
            instance: "p#1".into(),
        }
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(1_795_321_348, 5), "2026-11-22T04:22:28.000000005Z");
        assert_eq!(rfc3339(951_782_400, 0), "2000-02-29T00:00:00.000000000Z");
    }

    #[test]
    fn records_are_numbered_lines() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = AuditLog::open(&dir.path().join("audit.jsonl")).expect("open");
        for _ in 0..3 {
            log.write(&Record::new(EventKind::Spawn, subject()))
                .expect("write");
        }
        let text = std::fs::read_to_string(log.path()).expect("read");
        let seqs: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).expect("json")["seq"]
                    .as_u64()
                    .expect("seq")
            })
            .collect();
        assert_eq!(seqs, [1, 2, 3]);
    }

    #[test]
    fn a_full_device_fails_closed_for_good() {
        let log = AuditLog::open(Path::new("/dev/full")).expect("open");
        assert!(matches!(
            log.write(&Record::new(EventKind::Spawn, subject())),
            Err(AuditError::Write { seq: 1, .. })
        ));
        assert!(matches!(
            log.write(&Record::new(EventKind::Spawn, subject())),
            Err(AuditError::Failed { .. })
        ));
    }
}
