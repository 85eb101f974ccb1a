//! Exported anchors: each checkpoint, as it is made, also leaves the writer's log, to a
//! separate append-only file (one checkpoint JSON per line; keep it on another volume or
//! host) and to a host callback. A log rewritten after an anchor left it (even re-signed by a
//! thief of the key) no longer matches that anchor; [`read`] loads an anchors file for
//! `plugbox audit verify --anchors`.

use super::checkpoint::Checkpoint;
use super::keys::{unhex, PublicKey};
use super::lines::{open_log, Line, LineReader};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A host callback receiving each checkpoint as it is made.
pub type OnCheckpoint = Arc<dyn Fn(&Checkpoint) + Send + Sync>;

/// Longest anchor line read, bytes (real ones are about 420).
pub const MAX_ANCHOR_LINE_BYTES: usize = 4096;
/// Most anchors of one log kept in memory by [`read`] (about 60 bytes each).
pub const MAX_ANCHORS: usize = 1_000_000;

/// Where checkpoints go besides the log.
pub(crate) struct Export {
    file: Option<(PathBuf, Mutex<File>)>,
    hook: Option<OnCheckpoint>,
    /// `fdatasync` each anchor (the log's durability is `fsync`).
    sync: bool,
}

impl Export {
    /// Opens the anchors file (created 0600, appended with `O_APPEND`, never through a
    /// symlink) if one is given; `sync`: `fdatasync` each anchor.
    pub(crate) fn open(
        path: Option<&Path>,
        hook: Option<OnCheckpoint>,
        sync: bool,
    ) -> std::io::Result<Self> {
        let file = match path {
            None => None,
            Some(p) => {
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(p)?;
                if !f.metadata()?.is_file() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("anchors file {}: not a regular file", p.display()),
                    ));
                }
                Some((p.to_owned(), Mutex::new(f)))
            }
        };
        Ok(Self { file, hook, sync })
    }

    /// Appends `c` to the anchors file, if there is one: one `write(2)` (so it is out of the
    /// writer's reach once the destination has it), then `fdatasync` if the log's durability
    /// is `fsync` (otherwise the OS writes it back, as it does the log).
    pub(crate) fn to_file(&self, c: &Checkpoint) -> std::io::Result<()> {
        let Some((_, file)) = &self.file else {
            return Ok(());
        };
        let mut line = serde_json::to_vec(c).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let file = file.lock().unwrap_or_else(|p| p.into_inner());
        let mut f: &File = &file;
        f.write_all(&line)?;
        if self.sync {
            f.sync_data()?;
        }
        Ok(())
    }

    /// The anchors file, if there is one.
    pub(crate) fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(|(p, _)| p.as_path())
    }

    /// Hands `c` to the host's callback, if there is one.
    pub(crate) fn to_hook(&self, c: &Checkpoint) {
        if let Some(hook) = &self.hook {
            hook(c);
        }
    }
}

impl std::fmt::Debug for Export {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Export")
            .field("file", &self.file.as_ref().map(|(p, _)| p))
            .field("hook", &self.hook.is_some())
            .finish()
    }
}

/// The anchors of one log, read from an anchors file.
#[derive(Debug, Default)]
pub struct Anchors {
    /// seq → (hash, line of the anchors file).
    pub by_seq: HashMap<u64, ([u8; 32], usize)>,
    /// Anchors of other logs (another `log` hash), skipped.
    pub foreign: u64,
}

/// Reads the anchors of log `log` (its first record's hash) from `path`, streaming, each
/// line capped. A line that is not a well-formed checkpoint, an anchor of this log whose
/// signature does not verify with one of `keys` (when any are given), or two anchors naming
/// different hashes for one seq, is an error naming the line: the anchors file is damaged.
pub fn read(
    path: &Path,
    log: &str,
    keys: &[PublicKey],
) -> std::io::Result<Result<Anchors, String>> {
    let mut lines = LineReader::with_cap(open_log(path)?, MAX_ANCHOR_LINE_BYTES);
    let mut out = Anchors::default();
    while let Some((number, line)) = lines.next_line()? {
        let Line::Complete(bytes) = line else {
            return Ok(Err(format!("line {number} is cut or too long")));
        };
        let c = match Checkpoint::parse(bytes) {
            Ok(c) => c,
            Err(why) => return Ok(Err(format!("line {number}: {why}"))),
        };
        if c.log != log {
            out.foreign += 1;
            continue;
        }
        if let Err(why) = signed_by_one_of(&c, keys) {
            return Ok(Err(format!("line {number}: {why}")));
        }
        let hash = unhex::<32>(&c.hash).unwrap_or_default();
        if let Some((known, first)) = out.by_seq.get(&c.seq) {
            if *known != hash {
                return Ok(Err(format!(
                    "lines {first} and {number} name different hashes for seq {}",
                    c.seq
                )));
            }
            continue;
        }
        if out.by_seq.len() >= MAX_ANCHORS {
            return Ok(Err(format!(
                "more than {MAX_ANCHORS} anchors for one log: start a new anchors file with \
                 a new log"
            )));
        }
        out.by_seq.insert(c.seq, (hash, number));
    }
    Ok(Ok(out))
}

/// Checks `c`'s signature with the key among `keys` it names (none given: not checked).
pub fn signed_by_one_of(c: &Checkpoint, keys: &[PublicKey]) -> Result<(), String> {
    if keys.is_empty() {
        return Ok(());
    }
    match keys.iter().find(|k| k.fingerprint() == c.key) {
        Some(k) => c.check_signature(k),
        None => Err(format!(
            "signed by key {}, not by the given key{} {}",
            c.key,
            if keys.len() == 1 { "" } else { "s" },
            keys.iter()
                .map(|k| k.fingerprint())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}
