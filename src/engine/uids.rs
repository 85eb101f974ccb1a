//! Per-instance identities: when the host is root, each plugin process gets a uid and gid of
//! its own from a reserved range, so `RLIMIT_NPROC` (counted per uid) bounds each plugin
//! separately, and no plugin can signal, trace or share files with another through its uid.

use std::sync::{Arc, Mutex};

/// A range of ids handed out one per live instance.
#[derive(Debug)]
pub(crate) struct UidPool {
    first: u32,
    free: Mutex<Vec<u32>>,
}

/// One id, returned to the pool when dropped (after the instance's process tree is gone).
#[derive(Debug)]
pub(crate) struct UidLease {
    pool: Arc<UidPool>,
    id: u32,
}

impl UidPool {
    /// `count` ids starting at `first`.
    pub(crate) fn new(first: u32, count: u32) -> Arc<Self> {
        // Handed out lowest first, so ids are reused rather than spread.
        let free = (0..count).rev().map(|i| first + i).collect();
        Arc::new(Self {
            first,
            free: Mutex::new(free),
        })
    }

    /// An unused id, if any is left.
    pub(crate) fn acquire(self: &Arc<Self>) -> Option<UidLease> {
        let id = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop()?;
        Some(UidLease {
            pool: Arc::clone(self),
            id,
        })
    }

    /// The first id of the range.
    pub(crate) fn first(&self) -> u32 {
        self.first
    }
}

impl UidLease {
    /// The uid (also used as the gid).
    pub(crate) fn id(&self) -> u32 {
        self.id
    }
}

impl Drop for UidLease {
    fn drop(&mut self) {
        self.pool
            .free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(self.id);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn leases_are_unique_and_come_back() {
        let pool = UidPool::new(5000, 2);
        let a = pool.acquire().unwrap();
        let b = pool.acquire().unwrap();
        assert_eq!((a.id(), b.id()), (5000, 5001));
        assert!(pool.acquire().is_none());
        drop(a);
        assert_eq!(pool.acquire().unwrap().id(), 5000);
    }
}
