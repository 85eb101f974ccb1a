//! Reading audit log files as untrusted input: regular files only (opened non-blocking, so a
//! FIFO cannot hang the reader), one line at a time, each line capped at
//! [`MAX_RECORD_BYTES`], so memory stays bounded whatever the file holds.

use super::record::MAX_RECORD_BYTES;
use serde::Deserialize;
use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Opens an audit log file for reading. Refuses anything but a regular file (a FIFO, a device
/// such as `/dev/zero`, a directory) with an `InvalidInput` error naming it; the open itself
/// is non-blocking, so a FIFO without a writer does not hang it.
pub fn open_log(path: &Path) -> std::io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{}: not a regular file", path.display()),
        ));
    }
    Ok(file)
}

/// One line of a log, as read.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A complete line, without its newline.
    Complete(&'a [u8]),
    /// The file ended inside this line (no newline).
    Partial(&'a [u8]),
    /// The line was longer than the cap; it was skipped up to its newline (or the end).
    TooLong {
        /// Its length in bytes, newline excluded.
        bytes: u64,
    },
}

/// Reads lines with a cap, numbering them from 1.
pub struct LineReader<R> {
    inner: BufReader<R>,
    buf: Vec<u8>,
    cap: usize,
    number: usize,
}

impl<R: Read> LineReader<R> {
    /// Lines of `inner`, each capped at [`MAX_RECORD_BYTES`].
    pub fn new(inner: R) -> Self {
        Self::with_cap(inner, MAX_RECORD_BYTES)
    }

    /// Lines of `inner`, each capped at `cap` bytes.
    pub fn with_cap(inner: R, cap: usize) -> Self {
        Self {
            inner: BufReader::with_capacity(64 * 1024, inner),
            buf: Vec::new(),
            cap,
            number: 0,
        }
    }

    /// The number of the line last returned (1-based; 0 before the first).
    pub fn number(&self) -> usize {
        self.number
    }

    /// The next line with its number, or `None` at the end of the input.
    pub fn next_line(&mut self) -> std::io::Result<Option<(usize, Line<'_>)>> {
        self.buf.clear();
        let (mut bytes, mut ended) = (0u64, false);
        loop {
            let available = self.inner.fill_buf()?;
            if available.is_empty() {
                break;
            }
            let (take, newline) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (i, true),
                None => (available.len(), false),
            };
            if self.buf.len() + take <= self.cap && bytes == self.buf.len() as u64 {
                self.buf.extend_from_slice(&available[..take]);
            }
            bytes += take as u64;
            self.inner.consume(take + usize::from(newline));
            if newline {
                ended = true;
                break;
            }
        }
        if bytes == 0 && !ended {
            return Ok(None);
        }
        self.number += 1;
        let line = if bytes > self.buf.len() as u64 {
            Line::TooLong { bytes }
        } else if ended {
            Line::Complete(&self.buf)
        } else {
            Line::Partial(&self.buf)
        };
        Ok(Some((self.number, line)))
    }
}

/// The members of a record that chain verification reads.
#[derive(Debug, Deserialize)]
pub struct Head<'a> {
    /// Sequence number.
    pub seq: u64,
    /// `hash` of the previous record.
    #[serde(borrow)]
    pub prev: Cow<'a, str>,
    /// The event kind.
    #[serde(borrow)]
    pub event: Cow<'a, str>,
}

/// Parses the chain members of one line; `None` if it is not a JSON object with them (other
/// members are skipped without being kept; a duplicate member is refused).
pub fn parse_head(line: &[u8]) -> Option<Head<'_>> {
    serde_json::from_slice(line).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn all(input: &[u8], cap: usize) -> Vec<String> {
        let mut r = LineReader::with_cap(input, cap);
        let mut out = Vec::new();
        while let Some((number, line)) = r.next_line().unwrap() {
            out.push(format!("{number}:{line:?}"));
        }
        out
    }

    #[test]
    fn lines_are_capped_numbered_and_the_rest_still_read() {
        assert_eq!(
            all(b"ab\n\nabcdef\nxyz", 4),
            [
                "1:Complete([97, 98])",
                "2:Complete([])",
                "3:TooLong { bytes: 6 }",
                "4:Partial([120, 121, 122])"
            ]
        );
        assert_eq!(all(b"abcd\n", 4), ["1:Complete([97, 98, 99, 100])"]);
        assert!(all(b"", 4).is_empty());
    }

    #[test]
    fn special_files_are_refused() {
        let err = open_log(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("not a regular file"));
    }

    #[test]
    fn heads_parse_and_duplicates_do_not() {
        let h = parse_head(br#"{"seq":3,"event":"open","x":[1,{}],"prev":"00"}"#).unwrap();
        assert_eq!((h.seq, &*h.prev, &*h.event), (3, "00", "open"));
        assert!(parse_head(br#"{"seq":3,"seq":4,"event":"open","prev":"00"}"#).is_none());
    }
}
