//! Audit: structured, hash-chained records of every decision, written before the decision
//! takes effect (`docs/audit.md`).

pub mod anchors;
pub mod chain;
pub mod checkpoint;
mod clock;
mod flusher;
pub mod keys;
pub mod lines;
mod options;
pub mod record;
mod reopen;
pub mod rotated;
pub mod signed;
mod signer;
pub mod verify;
pub mod writer;
mod written;

pub use checkpoint::Checkpoint;
pub use keys::{AuditKey, KeyError, PublicKey};
pub use options::{OnRecord, DEFAULT_CHECKPOINT_INTERVAL, DEFAULT_CHECKPOINT_RECORDS};
pub use record::{escape_text, EventKind, Record, Subject};
pub use writer::{AuditError, AuditLog, AuditOptions, Durability};
