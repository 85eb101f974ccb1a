//! Reopening an existing log. A file whose own chain verifies and ends with a `seal` is
//! appended to: the next session's `open` record links to the seal, so the file stays one
//! continuous chain across sessions. Any other non-empty file (it ends unsealed, because the
//! host that wrote it crashed or was killed; or a line is damaged) is never continued: it is
//! moved aside as `PATH.unsealed-STAMP` (or `PATH.damaged-STAMP`) for an auditor, and the
//! new log starts at genesis with an `open` record naming it and its last intact record.

use super::chain::{self, GENESIS};
use super::lines::{parse_head, Line, LineReader};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// What an existing log file holds, as far as continuing it goes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Tail {
    /// Empty: start at genesis.
    Empty,
    /// Its chain verifies and ends with the `seal` record `seq`, whose hash is `hash`.
    Sealed {
        /// The seal's sequence number.
        seq: u64,
        /// The seal's hash.
        hash: String,
    },
    /// Not to be continued: `why`, with the last record that verified (seq, hash).
    Unusable {
        /// `unsealed` or `damaged`.
        kind: &'static str,
        /// What is wrong, in words.
        why: String,
        /// The last record whose own hash and link verified.
        last: Option<(u64, String)>,
    },
}

/// Walks `file` from its start (its offset is moved) and says whether it can be continued.
/// Memory stays bounded: lines are read with the reader's cap.
pub(crate) fn inspect(file: &File) -> std::io::Result<Tail> {
    let mut reader = file.try_clone()?;
    reader.seek(SeekFrom::Start(0))?;
    let mut lines = LineReader::new(reader);
    let mut last: Option<(u64, String)> = None;
    let mut last_event = String::new();
    let damaged = |why: String, last| Tail::Unusable {
        kind: "damaged",
        why,
        last,
    };
    while let Some((number, line)) = lines.next_line()? {
        let Line::Complete(line) = line else {
            return Ok(damaged(format!("line {number} is cut or too long"), last));
        };
        let (Some(hash), Some(head)) = (chain::check(line), parse_head(line)) else {
            return Ok(damaged(
                format!("line {number} is not an intact record"),
                last,
            ));
        };
        if let Some((seq, prev)) = &last {
            if head.seq != seq + 1 || *head.prev != **prev {
                let why = format!(
                    "line {number} (seq {}) does not continue the chain",
                    head.seq
                );
                return Ok(damaged(why, last));
            }
        }
        last = Some((head.seq, hash));
        last_event = head.event.into_owned();
    }
    Ok(match last {
        None => Tail::Empty,
        Some((seq, hash)) if last_event == "seal" => Tail::Sealed { seq, hash },
        last => Tail::Unusable {
            kind: "unsealed",
            why: "it ends without a seal record: the host that wrote it crashed or was killed"
                .into(),
            last,
        },
    })
}

/// Where an unusable log is moved: `PATH.KIND-YYYYMMDDTHHMMSSZ` (with `-N` appended if taken).
/// Its name never looks like a rotation archive, so it is not taken into a rotated set.
pub(crate) fn aside_name(path: &Path, kind: &str) -> PathBuf {
    let stamp: String = super::writer::rfc3339_now()
        .chars()
        .take(19)
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect();
    let base = format!("{}.{kind}-{stamp}Z", path.display());
    (0..)
        .map(|n| match n {
            0 => PathBuf::from(&base),
            n => PathBuf::from(format!("{base}-{n}")),
        })
        .find(|p| std::fs::symlink_metadata(p).is_err())
        .unwrap_or_else(|| PathBuf::from(base))
}

/// Opens `path` for appending (created 0600, never through a symlink).
pub(super) fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Where a session starts: the chain position and what its `open` record says.
pub(super) struct Start {
    /// The first record's sequence number.
    pub(super) next_seq: u64,
    /// The hash the first record chains to.
    pub(super) prev: String,
    /// Bytes already in the file.
    pub(super) bytes_in_file: u64,
    /// The `open` record's detail.
    pub(super) detail: Option<serde_json::Value>,
}

/// Opens `path` for appending, continuing a sealed log or moving an unusable one aside.
pub(super) fn reopen_or_start(path: &Path) -> std::io::Result<(File, Start)> {
    let file = OpenOptions::new()
        .read(true)
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let meta = file.metadata()?;
    let fresh = Start {
        next_seq: 1,
        prev: GENESIS.to_owned(),
        bytes_in_file: 0,
        detail: None,
    };
    if !meta.is_file() || meta.len() == 0 {
        return Ok((file, fresh));
    }
    match inspect(&file)? {
        Tail::Empty => Ok((file, fresh)),
        Tail::Sealed { seq, hash } => Ok((
            file,
            Start {
                next_seq: seq + 1,
                prev: hash,
                bytes_in_file: meta.len(),
                detail: Some(serde_json::json!({ "after_seal": seq })),
            },
        )),
        Tail::Unusable { kind, why, last } => {
            drop(file);
            let aside = aside_name(path, kind);
            std::fs::rename(path, &aside)?;
            tracing::warn!(
                log = %path.display(),
                moved_to = %aside.display(),
                "audit: the existing log is {kind} ({why}); it was moved aside and a new log starts"
            );
            let detail = serde_json::json!({
                "previous_file": aside,
                "previous_state": kind,
                "previous_problem": why,
                "previous_last_seq": last.as_ref().map(|l| l.0),
                "previous_last_hash": last.map(|l| l.1),
            });
            Ok((
                open_append(path)?,
                Start {
                    detail: Some(detail),
                    ..fresh
                },
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sealed_line(seq: u64, event: &str, prev: &str) -> (Vec<u8>, String) {
        let mut line = format!(r#"{{"seq":{seq},"event":"{event}","prev":"{prev}"}}"#).into_bytes();
        let hash = chain::seal(&mut line);
        line.push(b'\n');
        (line, hash)
    }

    fn file_of(lines: &[Vec<u8>]) -> File {
        let mut f = tempfile::tempfile().expect("tmp");
        for l in lines {
            f.write_all(l).expect("write");
        }
        f
    }

    #[test]
    fn a_sealed_chain_is_continued_and_anything_else_is_not() {
        let (a, ha) = sealed_line(1, "open", chain::GENESIS);
        let (b, hb) = sealed_line(2, "seal", &ha);
        assert_eq!(inspect(&file_of(&[])).expect("inspect"), Tail::Empty);
        let sealed = inspect(&file_of(&[a.clone(), b.clone()])).expect("inspect");
        assert_eq!(sealed, Tail::Sealed { seq: 2, hash: hb });
        let Tail::Unusable { kind, last, .. } =
            inspect(&file_of(std::slice::from_ref(&a))).expect("i")
        else {
            panic!("unsealed must not be continued")
        };
        assert_eq!((kind, last), ("unsealed", Some((1, ha.clone()))));
        let (stray, _) = sealed_line(2, "seal", chain::GENESIS);
        let broken = inspect(&file_of(&[a.clone(), stray])).expect("inspect");
        assert!(
            matches!(
                broken,
                Tail::Unusable {
                    kind: "damaged",
                    ..
                }
            ),
            "{broken:?}"
        );
        let cut = b[..b.len() - 5].to_vec();
        let partial = inspect(&file_of(&[a, cut])).expect("inspect");
        assert!(
            matches!(
                partial,
                Tail::Unusable {
                    kind: "damaged",
                    ..
                }
            ),
            "{partial:?}"
        );
    }

    #[test]
    fn aside_names_are_stamped_and_never_archives() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("audit.jsonl");
        let first = aside_name(&log, "unsealed");
        let name = first.file_name().and_then(|n| n.to_str()).expect("utf-8");
        assert!(
            name.starts_with("audit.jsonl.unsealed-") && name.ends_with('Z'),
            "{name}"
        );
        std::fs::write(&first, b"x").expect("write");
        assert_ne!(aside_name(&log, "unsealed"), first);
        assert!(super::super::rotated::archives(&log).is_empty());
    }
}
