//! Audit: structured records of every decision, written before the decision takes effect.

pub mod record;
pub mod writer;

pub use record::{escape_text, EventKind, Record, Subject};
pub use writer::{AuditError, AuditLog};
