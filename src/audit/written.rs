//! Records and bytes a writer has appended since it opened, for the engine's metrics
//! (`plugbox_audit_records_total`, `plugbox_audit_bytes_total`).

use std::sync::atomic::{AtomicU64, Ordering};

/// Two relaxed counters, added to once per record appended.
#[derive(Debug, Default)]
pub struct Written {
    records: AtomicU64,
    bytes: AtomicU64,
}

impl Written {
    /// One record of `bytes` bytes (its line, newline included) was appended.
    pub fn add(&self, bytes: usize) {
        self.records.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// `(records, bytes)` appended so far.
    pub fn get(&self) -> (u64, u64) {
        (
            self.records.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}
