//! The files of one log: the live file `PATH` and the files rotation archived before it,
//! `PATH.000001`, `PATH.000002`, … (six or more digits, zero-padded, so shell-glob order is
//! chain order), and putting a set given in any order back into chain order for `verify`.

use super::lines::{open_log, parse_head, Line, LineReader};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Digits of an archive number (zero-padded, so names sort in chain order).
const DIGITS: usize = 6;

/// The name rotation gives the `number`th archive of `path`: `PATH.000042`.
pub fn archive_name(path: &Path, number: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{number:0DIGITS$}"));
    PathBuf::from(name)
}

/// The archive number of `candidate` if it is an archive of `path` (`PATH.` then digits only).
fn archive_number(path: &Path, candidate: &Path) -> Option<u32> {
    let base = path.file_name()?.as_encoded_bytes();
    let name = candidate.file_name()?.as_encoded_bytes();
    let digits = name.strip_prefix(base)?.strip_prefix(b".")?;
    if digits.len() < DIGITS || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The archives of `path` that exist, oldest (lowest number) first.
pub fn archives(path: &Path) -> Vec<(u32, PathBuf)> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let candidate = dir.join(entry.file_name());
            let number = archive_number(path, &candidate)?;
            Some((number, archive_name(path, number)))
        })
        .collect();
    found.sort();
    found
}

/// The number the next rotation of `path` takes: one past the highest archive there, so a
/// new archive always sorts after the older ones, even when some were deleted.
pub fn next_archive_number(path: &Path) -> u32 {
    archives(path)
        .last()
        .map_or(1, |(n, _)| n.saturating_add(1))
}

/// `files` in chain order, for `plugbox audit verify`: each live file given brings in its
/// archives (files rotated out of it before it), duplicates are dropped, and the set is sorted
/// by the sequence number of each file's first record (files whose first line is not a
/// record keep their place at the end, in the order given, and verification reports them).
pub fn chain_order(files: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut all: Vec<PathBuf> = Vec::new();
    for f in files {
        let is_archive = f
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.rsplit_once('.'))
            .is_some_and(|(_, d)| d.len() >= DIGITS && d.bytes().all(|b| b.is_ascii_digit()));
        if !is_archive {
            all.extend(archives(f).into_iter().map(|(_, p)| p));
        }
        all.push(f.clone());
    }
    let mut seen: Vec<OsString> = Vec::new();
    all.retain(|p| {
        let key = p.as_os_str().to_owned();
        let new = !seen.contains(&key);
        seen.push(key);
        new
    });
    let mut keyed = Vec::with_capacity(all.len());
    for (i, p) in all.into_iter().enumerate() {
        keyed.push((first_seq(&p)?.unwrap_or(u64::MAX), i, p));
    }
    keyed.sort();
    Ok(keyed.into_iter().map(|(_, _, p)| p).collect())
}

/// The sequence number of a file's first record, if its first line is one.
fn first_seq(path: &Path) -> std::io::Result<Option<u64>> {
    let mut lines = LineReader::new(open_log(path)?);
    Ok(match lines.next_line()? {
        Some((_, Line::Complete(line))) => parse_head(line).map(|h| h.seq),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_names_sort_in_number_order_and_are_recognised() {
        let p = Path::new("/var/lib/plugbox/audit.jsonl");
        assert_eq!(
            archive_name(p, 7),
            Path::new("/var/lib/plugbox/audit.jsonl.000007")
        );
        assert!(archive_name(p, 9) < archive_name(p, 10));
        assert_eq!(archive_number(p, &archive_name(p, 12)), Some(12));
        assert_eq!(
            archive_number(p, Path::new("/x/audit.jsonl.1234567")),
            Some(1_234_567)
        );
        for other in ["audit.jsonl.12", "audit.jsonl.00001x", "audit.json.000001"] {
            assert_eq!(archive_number(p, Path::new(other)), None, "{other}");
        }
    }

    #[test]
    fn the_next_number_follows_the_highest_archive() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("audit.jsonl");
        assert_eq!(next_archive_number(&log), 1);
        for n in [1, 3] {
            std::fs::write(archive_name(&log, n), b"").expect("write");
        }
        std::fs::write(dir.path().join("audit.jsonl.unsealed"), b"").expect("write");
        assert_eq!(next_archive_number(&log), 4);
        let found: Vec<u32> = archives(&log).into_iter().map(|(n, _)| n).collect();
        assert_eq!(found, [1, 3]);
    }
}
