//! Per-instance identities: when the host is root, each plugin process gets a uid and gid of
//! its own from a reserved range, so `RLIMIT_NPROC` (counted per uid) bounds each plugin
//! separately, and no plugin can signal, trace or share files with another through its uid.
//!
//! Before an id goes back to the pool, the System V IPC objects its instance left behind are
//! removed ([`crate::sandbox::sysv`]), so the next instance given the id finds none of them.
//! Pool ids are exclusive machine-wide, not only within this engine: each is also held through
//! a lock file shared by every engine on the host ([`super::uid_locks`]), and an id a crashed
//! holder may have left residue under is checked before it is used again.
//!
//! An id the pool does not own (a policy's explicit `[process] uid`, or 65534 without a pool)
//! is counted per live instance instead; its objects are removed when the last instance of
//! this engine running under it ends, unless the id is 0, the host's own, or 65534 (`nobody`,
//! which other software on the host may use: the engine cannot tell whose objects those are).

use super::uid_locks::{UidLock, UidLockError, UidLocks};
use crate::sandbox::sysv::{self, SysvRemoved};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

/// A range of ids handed out one per live instance, lowest free first.
#[derive(Debug)]
pub(crate) struct UidPool {
    first: u32,
    count: u32,
    /// Ids of the range this engine's instances hold now.
    held: Mutex<BTreeSet<u32>>,
    /// The host-wide locks (`None`: this engine's ids are exclusive within it only).
    locks: Option<UidLocks>,
}

/// Live instances per id the pool does not own.
#[derive(Debug, Default)]
pub(crate) struct SharedUids {
    live: Mutex<HashMap<u32, usize>>,
}

/// One instance's hold on its uid: a pool id, returned to the pool when dropped, or a count on
/// a shared id. Dropped only after the instance's process tree is gone; the drop removes the
/// id's System V IPC objects (see the module documentation for shared ids).
#[derive(Debug)]
pub(crate) struct UidLease {
    owner: Owner,
    id: u32,
    /// A pool id whose objects were already removed (by [`UidLease::clear_sysv`]).
    cleared: bool,
    /// The host-wide lock of a pool id; released marked free only when nothing of the
    /// instance is known to be left under the id.
    lock: Option<UidLock>,
    /// Did a removal of the id's System V IPC objects fail?
    residue: bool,
}

#[derive(Debug)]
enum Owner {
    Pool(Arc<UidPool>),
    Shared(Arc<SharedUids>),
}

impl UidPool {
    /// `count` ids starting at `first`, each also locked host-wide in `locks` if given.
    pub(crate) fn new(first: u32, count: u32, locks: Option<UidLocks>) -> Arc<Self> {
        Arc::new(Self {
            first,
            count: count.min(u32::MAX - first),
            held: Mutex::new(BTreeSet::new()),
            locks,
        })
    }

    /// The lowest id no instance of this or any other engine on the host holds, if any is
    /// left (handed out lowest first, so ids are reused rather than spread).
    pub(crate) fn acquire(self: &Arc<Self>) -> Result<Option<UidLease>, UidLockError> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        for id in self.first..self.first + self.count {
            if held.contains(&id) {
                continue;
            }
            let lock = match &self.locks {
                None => None,
                Some(locks) => match locks.try_take(id)? {
                    Some(lock) => Some(lock),
                    None => continue,
                },
            };
            held.insert(id);
            return Ok(Some(UidLease {
                owner: Owner::Pool(Arc::clone(self)),
                id,
                cleared: false,
                lock,
                residue: false,
            }));
        }
        Ok(None)
    }

    /// The first id of the range.
    pub(crate) fn first(&self) -> u32 {
        self.first
    }
}

impl SharedUids {
    /// Counts one more live instance running under `id`.
    pub(crate) fn hold(self: &Arc<Self>, id: u32) -> UidLease {
        *self.lock().entry(id).or_default() += 1;
        UidLease {
            owner: Owner::Shared(Arc::clone(self)),
            id,
            cleared: false,
            lock: None,
            residue: false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, usize>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl UidLease {
    /// The uid (also used as the gid).
    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    /// Is this id the instance's own (from the pool), rather than the policy's?
    pub(crate) fn is_pooled(&self) -> bool {
        matches!(self.owner, Owner::Pool(_))
    }

    /// Removes the id's System V IPC objects now (the instance's tree must be gone), if the
    /// id is this instance's alone: a pool id, or a shared id with no other live instance
    /// that is safe to clean (see the module documentation). `None` when nothing was tried.
    pub(crate) fn clear_sysv(&mut self) -> Option<SysvRemoved> {
        match &self.owner {
            Owner::Pool(_) => {
                self.cleared = true;
                let removed = sysv::remove_owned_by(self.id);
                self.residue |= removed.failed > 0;
                Some(removed)
            }
            Owner::Shared(shared) => clear_shared(&shared.lock(), self.id),
        }
    }
}

/// Removes a shared id's objects if no other instance lives under it and it is cleanable.
/// The caller holds the count's lock across the removal, so an instance starting under this
/// id waits for it.
fn clear_shared(live: &HashMap<u32, usize>, id: u32) -> Option<SysvRemoved> {
    let alone = live.get(&id).copied().unwrap_or(0) <= 1;
    (alone && shared_id_is_cleanable(id)).then(|| sysv::remove_owned_by(id))
}

/// May the objects of a shared id be removed? Only ids that are the plugins' alone: not
/// root, not the host's own uid, not `nobody`; and only when the host is root (the uid switch
/// happened, so the id is not the host's).
fn shared_id_is_cleanable(id: u32) -> bool {
    let host = crate::sys::geteuid();
    host == 0 && id != 0 && id != host && id != 65534
}

impl Drop for UidLease {
    fn drop(&mut self) {
        let id = self.id;
        let log = |r: Option<SysvRemoved>| {
            if let Some(r) = r.filter(|r| r.total() > 0 || r.failed > 0) {
                tracing::info!(uid = id, ?r, "removed System V IPC objects left by the uid");
            }
        };
        match &self.owner {
            Owner::Pool(pool) => {
                if !self.cleared {
                    let removed = sysv::remove_owned_by(id);
                    self.residue |= removed.failed > 0;
                    log(Some(removed));
                }
                // Marked free only when nothing is known to be left; else the next taker,
                // here or in another engine, checks the id first.
                if let Some(lock) = self.lock.take().filter(|_| !self.residue) {
                    lock.release_clean();
                }
                pool.held
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
            }
            Owner::Shared(shared) => {
                // One critical section: of instances ending together, the last one cleans.
                let mut live = shared.lock();
                log(clear_shared(&live, id));
                if let Some(n) = live.get_mut(&self.id) {
                    *n -= 1;
                    if *n == 0 {
                        live.remove(&self.id);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn leases_are_unique_and_come_back() {
        let pool = UidPool::new(5000, 2, None);
        let a = pool.acquire().unwrap().unwrap();
        let b = pool.acquire().unwrap().unwrap();
        assert_eq!((a.id(), b.id()), (5000, 5001));
        assert!(pool.acquire().unwrap().is_none());
        drop(a);
        assert_eq!(pool.acquire().unwrap().unwrap().id(), 5000);
    }

    #[test]
    fn two_pools_sharing_a_lock_directory_never_hand_out_one_id_twice() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("uids");
        let first = 1_234_560_000;
        let a = UidPool::new(first, 3, Some(UidLocks::open(&dir).unwrap()));
        let b = UidPool::new(first, 3, Some(UidLocks::open(&dir).unwrap()));
        let a1 = a.acquire().unwrap().unwrap();
        let b1 = b.acquire().unwrap().unwrap();
        let a2 = a.acquire().unwrap().unwrap();
        assert_eq!([a1.id(), b1.id(), a2.id()], [first, first + 1, first + 2]);
        assert!(
            b.acquire().unwrap().is_none(),
            "every id is held by one pool or the other"
        );
        drop(a1);
        assert_eq!(b.acquire().unwrap().unwrap().id(), first);
    }

    #[test]
    fn a_shared_id_is_cleaned_only_by_its_last_instance_and_never_for_nobody_or_root() {
        let unused = 1_234_567_890;
        let live = HashMap::from([(unused, 2), (65534, 1), (0, 1)]);
        assert_eq!(clear_shared(&live, unused), None, "another instance lives");
        assert_eq!(clear_shared(&live, 65534), None);
        assert_eq!(clear_shared(&live, 0), None);
        let alone = HashMap::from([(unused, 1)]);
        let expected = (crate::sys::geteuid() == 0).then(SysvRemoved::default);
        assert_eq!(clear_shared(&alone, unused), expected);
        let shared = Arc::new(SharedUids::default());
        let (a, b) = (shared.hold(unused), shared.hold(unused));
        assert!(!a.is_pooled());
        drop(a);
        assert_eq!(shared.lock().get(&unused), Some(&1));
        drop(b);
        assert!(shared.lock().is_empty());
    }
}
