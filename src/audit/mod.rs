//! Audit: structured, hash-chained records of every decision, written before the decision
//! takes effect (`docs/audit.md`).

pub mod chain;
mod clock;
pub mod lines;
mod options;
pub mod record;
mod reopen;
pub mod rotated;
pub mod verify;
pub mod writer;

pub use record::{escape_text, EventKind, Record, Subject};
pub use writer::{AuditError, AuditLog, AuditOptions, Durability};
