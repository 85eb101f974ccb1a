//! Group commit: a background thread fsyncs the log at most every `group_delay` while
//! records arrive ([`super::Durability::Group`]).

use super::writer::{Core, SyncFile};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Group commit: fsync at most every `group_delay` while records arrive.
///
/// The thread holds the writer only through a `Weak` it upgrades on a failed fsync alone. It
/// holds the writer's core, not the [`super::AuditLog`] handle whose drop seals: the seal of a
/// log dropped without [`super::AuditLog::seal`] happens in the thread that dropped it, before
/// that thread goes on (to exit the process, say), never here where an exiting process would
/// cut it off.
pub(super) fn spawn_flusher(
    log: Weak<Core>,
    dirty: Arc<AtomicBool>,
    sync_file: SyncFile,
    delay: Duration,
) {
    let spawned = std::thread::Builder::new()
        .name("plugbox-audit-fsync".into())
        .spawn(move || loop {
            if log.strong_count() == 0 {
                return;
            }
            if dirty.swap(false, Ordering::AcqRel) {
                let file = {
                    let guard = sync_file.lock().unwrap_or_else(|p| p.into_inner());
                    match guard.as_ref() {
                        Some(f) => f.try_clone().ok(),
                        None => return, // sealed or failed: nothing more to sync
                    }
                };
                if let Some(Err(e)) = file.map(|f| f.sync_data()) {
                    if let Some(log) = log.upgrade() {
                        let mut state = log.lock();
                        log.fail(&mut state, format!("fsync failed: {e}"));
                    }
                    return;
                }
            }
            if sync_file.lock().map(|f| f.is_none()).unwrap_or(true) {
                return;
            }
            std::thread::sleep(delay);
        });
    if let Err(e) = spawned {
        tracing::warn!("audit: no group-commit thread ({e}); records are fsynced by the OS");
    }
}
