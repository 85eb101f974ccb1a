//! `plugbox audit show --follow`: the live log's records, then each record as it is appended,
//! until interrupted or until stdout closes.
//!
//! It sleeps in inotify ([`DirWatch`], on the log's directory) between appends: no polling,
//! and no append is missed, since the watch exists before the first read. It follows the
//! path, not the file: when rotation (or a new log after an unsealed one was moved aside)
//! puts another file at the path, it reads the old file to its end (the `rotate` record is
//! written before the rename) and goes on with the new one. Lines are capped at the writer's
//! largest record, so memory stays bounded whatever is appended; every text is escaped for
//! the terminal exactly as `show` escapes it.

use crate::audit::ShowFilter;
use plugbox::audit::escape_text;
use plugbox::audit::lines::open_log;
use plugbox::audit::record::MAX_RECORD_BYTES;
use plugbox::audit::rotated::archives;
use plugbox::sys::DirWatch;
use serde_json::Value;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Bytes read from the log at a time.
const CHUNK: usize = 64 * 1024;

/// One line of the followed file.
enum Piece<'a> {
    /// A complete line, without its newline.
    Line(&'a [u8]),
    /// A line longer than the cap, skipped: its length in bytes.
    TooLong(u64),
}

/// The open file at the followed path, and the bytes of its last line not yet complete.
struct Tail {
    file: File,
    /// `(st_dev, st_ino)` of `file`, to tell when the path names another file.
    id: (u64, u64),
    pending: Vec<u8>,
    /// Set while skipping an over-long line: its bytes so far.
    skipping: Option<u64>,
    number: usize,
    cap: usize,
}

impl Tail {
    /// Opens `path` (a regular file only, as every reading tool) from its start.
    fn open(path: &Path, cap: usize) -> io::Result<Self> {
        let file = open_log(path)?;
        let meta = file.metadata()?;
        Ok(Self {
            file,
            id: (meta.dev(), meta.ino()),
            pending: Vec::new(),
            skipping: None,
            number: 0,
            cap,
        })
    }

    /// Reads everything appended since the last call, handing `each` every completed line
    /// with its number. Returns false as soon as `each` does (stdout closed).
    fn read_appended(
        &mut self,
        each: &mut dyn FnMut(usize, Piece<'_>) -> bool,
    ) -> io::Result<bool> {
        let mut chunk = vec![0u8; CHUNK];
        loop {
            let n = match self.file.read(&mut chunk) {
                Ok(0) => return Ok(true),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let mut rest = &chunk[..n];
            while let Some(end) = rest.iter().position(|&b| b == b'\n') {
                if !self.take(&rest[..end], true, each) {
                    return Ok(false);
                }
                rest = &rest[end + 1..];
            }
            self.take(rest, false, each);
        }
    }

    /// Adds `bytes` to the line being read (skipping it once past the cap); if `ends`, the line
    /// is complete and goes to `each`.
    fn take(
        &mut self,
        bytes: &[u8],
        ends: bool,
        each: &mut dyn FnMut(usize, Piece<'_>) -> bool,
    ) -> bool {
        let len = bytes.len() as u64;
        if let Some(skipped) = self.skipping.as_mut() {
            *skipped += len;
        } else if self.pending.len() + bytes.len() > self.cap {
            self.skipping = Some(self.pending.len() as u64 + len);
            self.pending = Vec::new();
        } else {
            self.pending.extend_from_slice(bytes);
        }
        if !ends {
            return true;
        }
        self.number += 1;
        let go_on = match self.skipping.take() {
            Some(bytes) => each(self.number, Piece::TooLong(bytes)),
            None => each(self.number, Piece::Line(&self.pending)),
        };
        self.pending.clear();
        go_on
    }

    /// Does `path` name another file than the one open (rotated away, or replaced)? A path
    /// that names nothing yet (between a rotation's rename and its create) does not.
    fn replaced(&self, path: &Path) -> io::Result<bool> {
        match std::fs::metadata(path) {
            Ok(m) => Ok((m.dev(), m.ino()) != self.id),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Bytes of a last line the file ended inside (the writer never leaves one there).
    fn unfinished(&self) -> Option<u64> {
        let bytes = self.skipping.unwrap_or(self.pending.len() as u64);
        (bytes > 0).then_some(bytes)
    }
}

/// `(st_dev, st_ino)` of the file at `path`, if there is one.
fn id_of(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The file that continues the one `tail` read to its end: when it was archived by rotation
/// and later archives exist too (the follower fell behind more than one rotation), the next
/// archive; else the live path (also when the file was moved aside rather than archived).
fn successor(path: &Path, tail: &Tail) -> PathBuf {
    let archived = archives(path);
    let mine = archived.iter().position(|(_, p)| id_of(p) == Some(tail.id));
    match mine.and_then(|i| archived.get(i + 1)) {
        Some((_, next)) => next.clone(),
        None => path.to_owned(),
    }
}

/// Opens `path`, waiting (in inotify) until it exists if it does not yet.
fn open_when_there(path: &Path, watch: &DirWatch, cap: usize) -> io::Result<Tail> {
    let mut said = false;
    loop {
        match Tail::open(path, cap) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !said {
                    eprintln!("plugbox: audit: waiting for {}", shown(path));
                    said = true;
                }
                watch.wait()?;
            }
            other => return other,
        }
    }
}

fn shown(path: &Path) -> String {
    escape_text(&path.display().to_string())
}

/// Prints each complete line that is a record passing `filter`; reports other lines on
/// stderr by number. Returns false once stdout is closed.
fn printer<'a>(
    filter: &'a ShowFilter,
    path: &'a Path,
    out: &'a mut impl Write,
) -> impl FnMut(usize, Piece<'_>) -> bool + 'a {
    move |number, piece| {
        let problem = match piece {
            Piece::Line(bytes) => match serde_json::from_slice::<Value>(bytes) {
                Ok(r) if !filter.keep(&r) => return true,
                Ok(r) => return writeln!(out, "{}", filter.format(&r)).is_ok(),
                Err(_) => "not a record".to_owned(),
            },
            Piece::TooLong(bytes) => format!(
                "a line of {bytes} bytes, longer than any record ({MAX_RECORD_BYTES} bytes)"
            ),
        };
        eprintln!(
            "plugbox: audit: error: {}:{number}: {problem} (skipped; run verify)",
            shown(path)
        );
        true
    }
}

/// `audit show --follow FILE`: see the module documentation. Ends (exit 0) when stdout is
/// closed; otherwise runs until interrupted.
pub fn follow(files: &[PathBuf], filter: &ShowFilter) -> Result<ExitCode, String> {
    follow_capped(files, filter, MAX_RECORD_BYTES)
}

fn follow_capped(files: &[PathBuf], filter: &ShowFilter, cap: usize) -> Result<ExitCode, String> {
    let [path] = files else {
        return Err("audit: --follow takes one file: the live log".into());
    };
    let err = |e: io::Error| format!("audit: {}: {e}", shown(path));
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // The watch first: whatever is appended after it wakes the wait below.
    let watch = DirWatch::new(dir).map_err(err)?;
    let mut tail = open_when_there(path, &watch, cap).map_err(err)?;
    let mut stdout = io::stdout().lock();
    let mut print = printer(filter, path, &mut stdout);
    loop {
        if !tail.read_appended(&mut print).map_err(err)? {
            return Ok(ExitCode::SUCCESS);
        }
        if !tail.replaced(path).map_err(err)? {
            watch.wait().map_err(err)?;
            continue;
        }
        // Another file is at the path: the old one was complete before it was renamed (the
        // writer writes `rotate` first), so read it to its end, then go on with the new one.
        if !tail.read_appended(&mut print).map_err(err)? {
            return Ok(ExitCode::SUCCESS);
        }
        if let Some(bytes) = tail.unfinished() {
            eprintln!(
                "plugbox: audit: error: {}: the file ended inside a line ({bytes} bytes) before it was replaced",
                shown(path)
            );
        }
        let next = successor(path, &tail);
        eprintln!(
            "plugbox: audit: {} was rotated or replaced; reading on in {}",
            shown(path),
            shown(&next)
        );
        tail = open_when_there(&next, &watch, cap).map_err(err)?;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn lines(tail: &mut Tail) -> Vec<String> {
        let mut got = Vec::new();
        tail.read_appended(&mut |n, piece| {
            got.push(match piece {
                Piece::Line(b) => format!("{n}:{}", String::from_utf8_lossy(b)),
                Piece::TooLong(b) => format!("{n}:too long {b}"),
            });
            true
        })
        .unwrap();
        got
    }

    #[test]
    fn partial_lines_wait_for_their_end_and_long_lines_are_skipped_in_bounded_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, b"one\ntw").unwrap();
        let mut tail = Tail::open(&path, 8).unwrap();
        assert_eq!(lines(&mut tail), ["1:one"]);
        assert_eq!(tail.unfinished(), Some(2));
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"o\n0123456789abcdef").unwrap();
        assert_eq!(lines(&mut tail), ["2:two"]);
        assert!(tail.pending.capacity() <= 16, "{}", tail.pending.capacity());
        f.write_all(b"ghij\nthree\n").unwrap();
        assert_eq!(lines(&mut tail), ["3:too long 20", "4:three"]);
        assert_eq!(tail.unfinished(), None);
    }

    #[test]
    fn a_renamed_path_is_seen_as_replaced_and_a_missing_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, b"").unwrap();
        let tail = Tail::open(&path, 8).unwrap();
        assert!(!tail.replaced(&path).unwrap());
        std::fs::rename(&path, dir.path().join("log.000001")).unwrap();
        assert!(!tail.replaced(&path).unwrap());
        std::fs::write(&path, b"").unwrap();
        assert!(tail.replaced(&path).unwrap());
    }

    #[test]
    fn a_follower_behind_by_two_rotations_reads_each_archive_in_turn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let archive = |n: u32| plugbox::audit::rotated::archive_name(&path, n);
        std::fs::write(&path, b"a\n").unwrap();
        let a = Tail::open(&path, 8).unwrap();
        std::fs::rename(&path, archive(1)).unwrap();
        std::fs::write(&path, b"b\n").unwrap();
        let b = Tail::open(&path, 8).unwrap();
        std::fs::rename(&path, archive(2)).unwrap();
        std::fs::write(&path, b"c\n").unwrap();
        assert_eq!(successor(&path, &a), archive(2));
        assert_eq!(successor(&path, &b), path);
        // A file moved aside (not an archive) is followed by the live path.
        std::fs::rename(archive(2), dir.path().join("log.unsealed-x")).unwrap();
        assert_eq!(successor(&path, &b), path);
    }

    #[test]
    fn more_than_one_file_is_refused() {
        let filter = ShowFilter {
            plugin: None,
            event: None,
            decision: None,
            since: None,
            json: false,
            follow: true,
        };
        let files = [PathBuf::from("a"), PathBuf::from("b")];
        let e = follow_capped(&files, &filter, 8).unwrap_err();
        assert!(e.contains("one file"), "{e}");
    }
}
