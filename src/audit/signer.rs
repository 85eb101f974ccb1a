//! The writer's side of checkpoints: when one is due, the head is taken under the writer's
//! lock, signed outside it (other records go on meanwhile), and the `checkpoint` record
//! appended under the lock again; then the checkpoint is exported ([`super::anchors`]).
//! Right before a seal the closing checkpoint is signed under the lock, since nothing may
//! come between it and the seal. A timer thread signs an idle log's unsigned tail, so no
//! record waits longer than the interval for its checkpoint.

use super::anchors::Export;
use super::chain::{self, GENESIS};
use super::checkpoint::{Checkpoint, Interval};
use super::keys::AuditKey;
use super::lines::{open_log, parse_head, Line, LineReader};
use super::options::{AuditError, AuditOptions};
use super::record::{EventKind, Record};
use super::writer::{engine_subject, Core, State};
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// How far back (in records) a checkpoint may sign: the verifier keeps this many hashes.
pub const MAX_CHECKPOINT_LAG: u64 = 4096;

/// Checkpoint signing for one writer.
#[derive(Debug)]
pub(super) struct Signer {
    key: Arc<AuditKey>,
    every: Interval,
    export: Export,
    /// Dropped to stop the timer thread.
    stop: Mutex<Option<mpsc::Sender<()>>>,
}

/// A head taken for signing.
#[derive(Debug)]
pub(super) struct Head {
    log: String,
    seq: u64,
    hash: String,
}

impl Signer {
    /// The signer `options` ask for, if any (opens the anchors file).
    pub(super) fn new(options: &AuditOptions) -> Result<Option<Self>, AuditError> {
        let Some(key) = options.key.clone() else {
            return Ok(None);
        };
        let sync = options.durability == super::options::Durability::Fsync;
        let export = Export::open(
            options.anchors.as_deref(),
            options.on_checkpoint.clone(),
            sync,
        )
        .map_err(|source| AuditError::Open {
            path: options.anchors.clone().unwrap_or_default(),
            source,
        })?;
        Ok(Some(Self {
            key,
            every: Interval {
                records: options.checkpoint_records.max(1),
                interval: options.checkpoint_interval.max(Duration::from_millis(1)),
            },
            export,
            stop: Mutex::new(None),
        }))
    }

    /// After a record: the head to sign if a checkpoint is due by count. A record that finds
    /// the timer asleep with nothing to sign wakes it, so it signs that record within the
    /// interval even if no other record follows.
    pub(super) fn due(&self, state: &mut State) -> Option<Head> {
        let seq = state.next_seq - 1;
        if state.marks.log.is_empty() && seq == 1 {
            state.marks.log = state.prev.clone();
        }
        if state.marks.due(&self.every) {
            return Some(head(state));
        }
        if state.marks.timer_idle {
            state.marks.timer_idle = false;
            if let Some(timer) = self.stop.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                let _ = timer.send(());
            }
        }
        None
    }

    /// The closing checkpoint: signed, written and exported under the lock.
    pub(super) fn closing(&self, core: &Core, state: &mut State) -> Result<Checkpoint, AuditError> {
        let h = head(state);
        let c = Checkpoint::sign(&self.key, &h.log, h.seq, &h.hash, true);
        core.append(state, &checkpoint_record(&c))?;
        if let Err(source) = self.export.to_file(&c) {
            return Err(self.export_failed(core, state, source));
        }
        Ok(c)
    }

    /// The log is sealed: stop the timer, hand the closing checkpoint to the host.
    pub(super) fn stop_and_hook(&self, c: &Checkpoint) {
        self.stop.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.export.to_hook(c);
    }

    fn export_failed(&self, core: &Core, state: &mut State, source: std::io::Error) -> AuditError {
        let path = self.export.path().unwrap_or(Path::new("")).to_owned();
        core.fail(
            state,
            format!("anchor export to {} failed: {source}", path.display()),
        );
        AuditError::Write {
            seq: state.next_seq - 1,
            path,
            source,
        }
    }
}

fn head(state: &State) -> Head {
    let log = match state.marks.log.as_str() {
        "" => GENESIS.to_owned(),
        log => log.to_owned(),
    };
    Head {
        log,
        seq: state.next_seq - 1,
        hash: state.prev.clone(),
    }
}

fn checkpoint_record(c: &Checkpoint) -> Record {
    let mut r = Record::new(EventKind::Checkpoint, engine_subject());
    r.detail = serde_json::to_value(c).ok();
    r
}

impl Core {
    /// Signs `head` (outside the lock), writes the checkpoint record, exports it. A checkpoint
    /// overtaken by a seal is dropped (the seal wrote its own); one that fell more than
    /// [`MAX_CHECKPOINT_LAG`] records behind is dropped and the next record takes a new head.
    pub(super) fn checkpoint(&self, head: Head) -> Result<(), AuditError> {
        let Some(signer) = &self.signer else {
            return Ok(());
        };
        let c = Checkpoint::sign(&signer.key, &head.log, head.seq, &head.hash, false);
        let mut state = self.lock();
        state.marks.signing = false;
        if state.closed.is_some() {
            return Ok(());
        }
        if state.next_seq - head.seq > MAX_CHECKPOINT_LAG / 2 {
            state.marks.since = signer.every.records;
            return Ok(());
        }
        self.append(&mut state, &checkpoint_record(&c))?;
        drop(state);
        if let Err(source) = signer.export.to_file(&c) {
            return Err(signer.export_failed(self, &mut self.lock(), source));
        }
        signer.export.to_hook(&c);
        Ok(())
    }

    /// For the timer: the head to sign now, or how long to wait (`None`: the log is closed).
    fn tail_due(&self) -> Option<Result<Head, Duration>> {
        let signer = self.signer.as_ref()?;
        let mut state = self.lock();
        if state.closed.is_some() {
            return None;
        }
        let marks = &mut state.marks;
        let left = signer.every.interval.saturating_sub(marks.at.elapsed());
        if marks.since == 0 {
            // Nothing unsigned: sleep until the next record wakes the timer.
            marks.timer_idle = true;
            return Some(Err(signer.every.interval));
        }
        if marks.signing {
            return Some(Err(signer.every.interval)); // a signature is on its way
        }
        if !left.is_zero() {
            return Some(Err(left));
        }
        state.marks.taken();
        Some(Ok(head(&state)))
    }
}

/// Starts the thread that signs an idle log's unsigned tail once it is `interval` old. It
/// holds the writer's core by `Weak`, never the handle whose drop seals, and ends when the
/// log is sealed, fails, or is dropped.
pub(super) fn start_timer(core: &Arc<Core>) {
    let Some(signer) = &core.signer else {
        return;
    };
    let (tx, rx) = mpsc::channel::<()>();
    *signer.stop.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    let weak: Weak<Core> = Arc::downgrade(core);
    let mut wait = Duration::ZERO;
    let spawned = std::thread::Builder::new()
        .name("plugbox-audit-checkpoint".into())
        .spawn(move || loop {
            // A wake (the first unsigned record) or the wait's end: look again.
            if let Err(mpsc::RecvTimeoutError::Disconnected) = rx.recv_timeout(wait) {
                return;
            }
            let Some(core) = weak.upgrade() else {
                return;
            };
            wait = match core.tail_due() {
                None => return,
                Some(Err(wait)) => wait,
                Some(Ok(head)) => match core.checkpoint(head) {
                    Ok(()) => signer_interval(&core),
                    Err(_) => return,
                },
            };
        });
    if let Err(e) = spawned {
        tracing::warn!("audit: no checkpoint timer ({e}); checkpoints follow records only");
    }
}

fn signer_interval(core: &Core) -> Duration {
    core.signer
        .as_ref()
        .map_or(Duration::from_secs(1), |s| s.every.interval)
}

/// What the `open` record says about signing: the key's fingerprint and the interval.
pub(super) fn open_detail(
    detail: Option<serde_json::Value>,
    core: &Core,
) -> Option<serde_json::Value> {
    let Some(signer) = &core.signer else {
        return detail;
    };
    let mut detail = detail.unwrap_or_else(|| serde_json::json!({}));
    if let Some(map) = detail.as_object_mut() {
        map.insert("checkpoint_key".into(), signer.key.fingerprint().into());
        map.insert("checkpoint_records".into(), signer.every.records.into());
        let ms = u64::try_from(signer.every.interval.as_millis()).unwrap_or(u64::MAX);
        map.insert("checkpoint_interval_ms".into(), ms.into());
    }
    Some(detail)
}

/// The hash of the log's first record (seq 1), from its oldest archive or the file itself;
/// empty if the log is new (its `open` record will be the first).
pub(super) fn genesis_of(path: &Path) -> String {
    let oldest = super::rotated::archives(path)
        .into_iter()
        .next()
        .map(|(_, p)| p)
        .unwrap_or_else(|| path.to_owned());
    let first = || -> std::io::Result<Option<String>> {
        let mut lines = LineReader::new(open_log(&oldest)?);
        Ok(match lines.next_line()? {
            Some((_, Line::Complete(line))) if parse_head(line).is_some_and(|h| h.seq == 1) => {
                chain::check(line)
            }
            _ => None,
        })
    };
    first().ok().flatten().unwrap_or_default()
}
