//! The process group of one zygote template: the template and every instance it forked.

use super::super::uids::UidLease;
use crate::sandbox::{tree, Watchdog};
use std::sync::Arc;

/// A template's process group, held by the template's handle and by every instance forked from
/// it. When the last holder is gone, everything still in the group (the template, and any
/// process a hostile template forked unasked) is killed and reaped, the host-death watchdog
/// forgets the group, and the template's uid is cleaned and given back.
///
/// While it is held, the group id stays reserved: the template is never reaped before this
/// (a dead template stays a zombie), so the watchdog never names a reused group.
pub(crate) struct TemplateGroup {
    pgid: libc::pid_t,
    watchdog: Arc<Watchdog>,
    lease: Option<UidLease>,
}

impl TemplateGroup {
    /// The group led by the template `pgid`, already registered with `watchdog`, running as
    /// `lease`'s uid.
    pub(super) fn new(pgid: libc::pid_t, watchdog: Arc<Watchdog>, lease: Option<UidLease>) -> Self {
        Self {
            pgid,
            watchdog,
            lease,
        }
    }

    /// The template's pid, which is also the group id.
    pub(crate) fn pgid(&self) -> libc::pid_t {
        self.pgid
    }
}

impl Drop for TemplateGroup {
    fn drop(&mut self) {
        if let Err(e) = tree::kill_tree(self.pgid, self.pgid) {
            tracing::error!(pgid = self.pgid, "zygote template group: {e}");
        }
        if let Err(e) = self.watchdog.unregister(self.pgid) {
            tracing::error!(pgid = self.pgid, "host-death watchdog: {e}");
        }
        if let Some(lease) = self.lease.as_mut() {
            let _ = lease.clear_sysv();
        }
    }
}
