//! What a host chooses about its audit log (durability, rotation) and how writing it fails.

use super::anchors::OnCheckpoint;
use super::record::Record;

/// Called with every record once it is in the log, and its sequence number.
pub type OnRecord = Arc<dyn Fn(&Record, u64) + Send + Sync>;
use super::keys::{AuditKey, KeyError};
use super::record::MAX_RECORD_BYTES;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Default records between checkpoints.
pub const DEFAULT_CHECKPOINT_RECORDS: u64 = 1000;
/// Default time between checkpoints while records are written.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(10);

/// When records reach stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `fsync` after every record, before the action: power loss loses nothing acknowledged.
    Fsync,
    /// Group commit (default): `fsync` at most [`AuditOptions::group_delay`] after a record;
    /// power loss can lose that window, a host crash loses nothing.
    #[default]
    Group,
    /// Leave it to the OS (typically ≤ 30 s of dirty pages); a host crash loses nothing.
    Os,
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fsync" => Ok(Durability::Fsync),
            "group" => Ok(Durability::Group),
            "os" => Ok(Durability::Os),
            other => Err(format!("unknown durability {other:?}: fsync, group or os")),
        }
    }
}

/// Writer settings.
#[derive(Clone)]
pub struct AuditOptions {
    /// When records are fsynced.
    pub durability: Durability,
    /// Bound on the group-commit delay.
    pub group_delay: Duration,
    /// Rotate to a new file once the current one exceeds this many bytes.
    pub rotate_bytes: Option<u64>,
    /// Rotate to a new file once the current one has been written for this long (counted
    /// from when this writer opened it, or started it by rotating).
    pub rotate_age: Option<Duration>,
    /// Sign checkpoints with this key (`docs/audit.md`, "Checkpoints"): a `checkpoint`
    /// record every [`checkpoint_records`](Self::checkpoint_records) records or
    /// [`checkpoint_interval`](Self::checkpoint_interval), and one right before each seal.
    /// `None`: no checkpoints.
    pub key: Option<Arc<AuditKey>>,
    /// Records between checkpoints (at least 1).
    pub checkpoint_records: u64,
    /// Longest time a written record waits for a checkpoint.
    pub checkpoint_interval: Duration,
    /// Append every checkpoint to this file as well (`O_APPEND`, one JSON line each): keep it
    /// on another volume or host, where whoever can rewrite the log cannot rewrite it.
    pub anchors: Option<PathBuf>,
    /// Called with every checkpoint once it is in the log (outside the writer's lock, in the
    /// thread that wrote it; for the checkpoint before a seal, after the seal). It must not
    /// block for long; it may write to the log.
    pub on_checkpoint: Option<OnCheckpoint>,
    /// Called with every record once it is in the log (outside the writer's lock, in the
    /// thread that wrote it; not for checkpoints, open, rotate and seal records). It must not
    /// block; it must not write to the log. The engine uses it for its event stream
    /// (`Engine::events`).
    pub on_record: Option<OnRecord>,
    /// DANGER: write no records at all. Exists only so benchmarks can measure what auditing
    /// costs; never set it where the log matters.
    pub danger_disabled: bool,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Group,
            group_delay: Duration::from_millis(10),
            rotate_bytes: None,
            rotate_age: None,
            key: None,
            checkpoint_records: DEFAULT_CHECKPOINT_RECORDS,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            anchors: None,
            on_checkpoint: None,
            on_record: None,
            danger_disabled: false,
        }
    }
}

impl std::fmt::Debug for AuditOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditOptions")
            .field("durability", &self.durability)
            .field("group_delay", &self.group_delay)
            .field("rotate_bytes", &self.rotate_bytes)
            .field("rotate_age", &self.rotate_age)
            .field("key", &self.key)
            .field("checkpoint_records", &self.checkpoint_records)
            .field("checkpoint_interval", &self.checkpoint_interval)
            .field("anchors", &self.anchors)
            .field("on_checkpoint", &self.on_checkpoint.is_some())
            .field("on_record", &self.on_record.is_some())
            .field("danger_disabled", &self.danger_disabled)
            .finish()
    }
}

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
    /// A write or fsync failed; the log is now closed for good.
    #[error("audit: cannot write record {seq} to {path}: {source}")]
    Write {
        /// The record's sequence number.
        seq: u64,
        /// The log file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The record is longer than [`MAX_RECORD_BYTES`]: nothing was written, the log stays
    /// open, and the action the record describes must not happen.
    #[error("audit: record {seq} is {bytes} bytes, over the {MAX_RECORD_BYTES}-byte cap")]
    TooLarge {
        /// The sequence number it would have had.
        seq: u64,
        /// Its length.
        bytes: usize,
    },
    /// The checkpoint key could not be read.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// An earlier write failed, or the log was sealed.
    #[error("audit: the log {path} is closed ({why}); no further records are written")]
    Closed {
        /// The log file.
        path: PathBuf,
        /// Failed or sealed.
        why: String,
    },
}
