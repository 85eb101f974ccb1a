//! The append-only audit writer: JSON Lines, one record per line, stamped with a contiguous
//! sequence number, a timestamp and the host id, and hash-chained ([`super::chain`]), all
//! under one lock, so many plugins writing through one writer get a total order.
//!
//! Writing is fail-closed: an error is returned to the caller, which must not perform the
//! action the record describes, and the writer stays failed (every later write errors too, and
//! [`AuditLog::failed`] resolves so supervisors stop their plugins). Each record reaches the
//! kernel with its own `write(2)` before the call returns, so a crash of the host loses no
//! record; what a power failure may lose depends on [`Durability`].

pub use super::clock::rfc3339_now;
pub use super::options::{AuditError, AuditOptions, Durability};

use super::chain::{self, GENESIS};
use super::checkpoint::Marks;
use super::flusher::spawn_flusher;
use super::record::{EventKind, Record, Subject, MAX_RECORD_BYTES, RECORD_SCHEMA};
use super::reopen::{open_append, reopen_or_start};
use super::rotated;
use super::signer::{self, Signer};
use serde::Serialize;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::watch;

mod ending;

/// Where audit records go. Dropping the last handle seals the log (in the dropping thread).
#[derive(Debug)]
pub struct AuditLog {
    core: Arc<Core>,
}

/// The writer behind the handle. Background threads (group commit, checkpoint timer) hold it
/// by `Weak` and may upgrade it; only the handle's drop seals, so a seal never moves to them.
#[derive(Debug)]
pub(super) struct Core {
    path: PathBuf,
    host: String,
    options: AuditOptions,
    pub(super) state: Mutex<State>,
    dirty: Arc<AtomicBool>,
    sync_file: SyncFile,
    failed: watch::Sender<Option<String>>,
    /// Checkpoint signing, when a key is set.
    pub(super) signer: Option<Signer>,
    written: super::written::Written,
}

/// The descriptor the group-commit thread fsyncs (`None` once the log is sealed or failed).
pub(super) type SyncFile = Arc<Mutex<Option<File>>>;

#[derive(Debug)]
pub(super) struct State {
    file: Option<File>,
    pub(super) closed: Option<String>,
    pub(super) next_seq: u64,
    pub(super) prev: String,
    bytes_in_file: u64,
    /// When the current file was opened or started by rotation (for `rotate_age`).
    opened_at: Instant,
    rotations: u32,
    line: Vec<u8>,
    /// Checkpoint bookkeeping.
    pub(super) marks: Marks,
}

#[derive(Serialize)]
struct Stamped<'a> {
    v: u32,
    seq: u64,
    ts: String,
    host: &'a str,
    #[serde(flatten)]
    record: &'a Record,
    prev: &'a str,
}

impl AuditLog {
    /// Opens the log at `path` with default options.
    pub fn open(path: &Path) -> Result<Arc<Self>, AuditError> {
        Self::open_with(path, AuditOptions::default())
    }

    /// Opens the log at `path` (created mode 0600; a symlink as the last component is
    /// refused). An existing log whose chain verifies and ends with a seal is appended to: the
    /// new session's `open` record links to the seal (`detail.after_seal`). Any other
    /// non-empty log (unsealed: its writer crashed; or damaged) is moved aside as
    /// `PATH.unsealed-STAMP` or `PATH.damaged-STAMP`, never continued, and the new log starts
    /// at genesis with an `open` record naming it (`docs/audit.md`, "Reopening and rotation").
    /// With [`AuditOptions::key`], the `open` record names the key's fingerprint and the
    /// writer signs checkpoints (`docs/audit.md`, "Checkpoints").
    pub fn open_with(path: &Path, options: AuditOptions) -> Result<Arc<Self>, AuditError> {
        let open_err = |source| AuditError::Open {
            path: path.to_owned(),
            source,
        };
        if options.danger_disabled {
            return Ok(Arc::new(Self {
                core: Arc::new(Core::inert(path, options)),
            }));
        }
        let signer = Signer::new(&options)?;
        let (file, start) = reopen_or_start(path).map_err(open_err)?;
        let sync = file.try_clone().map_err(open_err)?;
        let core = Arc::new(Core {
            path: path.to_owned(),
            host: host_id(),
            state: Mutex::new(State {
                file: Some(file),
                closed: None,
                next_seq: start.next_seq,
                prev: start.prev,
                bytes_in_file: start.bytes_in_file,
                opened_at: Instant::now(),
                rotations: rotated::next_archive_number(path).saturating_sub(1),
                line: Vec::with_capacity(1024),
                marks: Marks::new(match &signer {
                    Some(_) => signer::genesis_of(path),
                    None => String::new(),
                }),
            }),
            dirty: Arc::new(AtomicBool::new(false)),
            sync_file: Arc::new(Mutex::new(Some(sync))),
            failed: watch::channel(None).0,
            signer,
            written: Default::default(),
            options,
        });
        if core.options.durability == Durability::Group {
            let (dirty, sync) = (Arc::clone(&core.dirty), Arc::clone(&core.sync_file));
            spawn_flusher(Arc::downgrade(&core), dirty, sync, core.options.group_delay);
        }
        let log = Arc::new(Self { core });
        let mut r = Record::new(EventKind::Open, engine_subject());
        r.detail = signer::open_detail(start.detail, &log.core);
        log.write(&r)?;
        signer::start_timer(&log.core);
        Ok(log)
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.core.path
    }

    /// The host id stamped on every record.
    pub fn host(&self) -> &str {
        &self.core.host
    }

    /// Resolves when the log has failed (with the reason); never if it stays healthy.
    pub async fn failed(&self) -> String {
        let mut rx = self.core.failed.subscribe();
        loop {
            if let Some(why) = rx.borrow_and_update().clone() {
                return why;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// `(records, bytes)` this writer appended since it opened (checkpoints and seal
    /// included), for the engine's metrics.
    pub fn written(&self) -> (u64, u64) {
        self.core.written.get()
    }

    /// Whether the log has failed (a write error) and refuses records.
    pub fn is_failed(&self) -> bool {
        self.core.failed.borrow().is_some()
    }

    /// Writes one record; returns its sequence number. On error, nothing the record describes
    /// may happen. When a checkpoint is due, this call also signs one (outside the lock) and
    /// writes it.
    pub fn write(&self, record: &Record) -> Result<u64, AuditError> {
        self.core.write(record)
    }

    /// Writes the closing checkpoint (when signing) and the `seal` record (a clean
    /// shutdown), fsyncs, and closes the log.
    pub fn seal(&self) -> Result<u64, AuditError> {
        self.core.seal()
    }
}

impl Core {
    fn inert(path: &Path, options: AuditOptions) -> Self {
        Self {
            path: path.to_owned(),
            host: host_id(),
            options,
            state: Mutex::new(State {
                file: None,
                closed: None,
                next_seq: 1,
                prev: GENESIS.to_owned(),
                bytes_in_file: 0,
                opened_at: Instant::now(),
                rotations: 0,
                line: Vec::new(),
                marks: Marks::new(String::new()),
            }),
            dirty: Arc::new(AtomicBool::new(false)),
            sync_file: Arc::new(Mutex::new(None)),
            failed: watch::channel(None).0,
            signer: None,
            written: Default::default(),
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn closed_error(&self, why: &str) -> AuditError {
        AuditError::Closed {
            path: self.path.clone(),
            why: why.to_owned(),
        }
    }

    fn write(&self, record: &Record) -> Result<u64, AuditError> {
        let mut state = self.lock();
        if self.options.danger_disabled {
            state.next_seq += 1;
            return Ok(state.next_seq - 1);
        }
        if let Some(why) = &state.closed {
            return Err(self.closed_error(why));
        }
        let too_big = self
            .options
            .rotate_bytes
            .is_some_and(|limit| state.bytes_in_file >= limit);
        let too_old = self
            .options
            .rotate_age
            .is_some_and(|age| state.opened_at.elapsed() >= age);
        // A session's open record follows its seal directly, and a seal ends its file.
        let boundary = matches!(record.event, EventKind::Seal | EventKind::Open);
        if (too_big || too_old) && !boundary {
            self.rotate(&mut state)?;
        }
        let seq = self.append(&mut state, record)?;
        let head = self.signer.as_ref().and_then(|s| s.due(&mut state));
        drop(state);
        if let Some(observe) = &self.options.on_record {
            observe(record, seq);
        }
        if let Some(head) = head {
            self.checkpoint(head)?;
        }
        Ok(seq)
    }

    pub(super) fn append(&self, state: &mut State, record: &Record) -> Result<u64, AuditError> {
        let seq = state.next_seq;
        let ts = rfc3339_now();
        state.line.clear();
        let stamped = Stamped {
            v: RECORD_SCHEMA,
            seq,
            ts,
            host: &self.host,
            record,
            prev: &state.prev,
        };
        let result =
            serde_json::to_writer(&mut state.line, &stamped).map_err(std::io::Error::other);
        let hash = chain::seal(&mut state.line);
        state.line.push(b'\n');
        if state.line.len() > MAX_RECORD_BYTES {
            let bytes = state.line.len();
            state.line = Vec::with_capacity(1024);
            return Err(AuditError::TooLarge { seq, bytes });
        }
        let result = result.and_then(|()| match state.file.as_mut() {
            Some(file) => file.write_all(&state.line),
            None => Err(std::io::Error::other("no open file")),
        });
        let result = result.and_then(|()| match (self.options.durability, state.file.as_ref()) {
            (Durability::Fsync, Some(file)) => file.sync_data(),
            _ => Ok(()),
        });
        match result {
            Ok(()) => {
                state.next_seq += 1;
                state.prev = hash;
                state.bytes_in_file += state.line.len() as u64;
                self.written.add(state.line.len());
                self.dirty.store(true, Ordering::Release);
                Ok(seq)
            }
            Err(source) => {
                let why = format!("write of record {seq} failed: {source}");
                self.fail(state, why);
                Err(AuditError::Write {
                    seq,
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }

    pub(super) fn fail(&self, state: &mut State, why: String) {
        state.file = None;
        self.close_sync_file();
        state.closed = Some(why.clone());
        self.failed.send_replace(Some(why));
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        let open = self
            .core
            .state
            .lock()
            .map(|s| s.closed.is_none())
            .unwrap_or(false);
        if open {
            let _ = self.core.seal();
        }
    }
}

/// The subject of records the engine itself writes (open, rotate, checkpoint, seal).
pub(super) fn engine_subject() -> Subject {
    Subject {
        name: "plugbox".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        instance: "-".into(),
        digest: None,
    }
}

/// The host's name (kernel hostname), or `unknown`.
fn host_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests;
