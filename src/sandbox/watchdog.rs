//! Host-death watchdog: when the host dies, every registered plugin process group dies too.
//!
//! A sandbox's first process has `PR_SET_PDEATHSIG(SIGKILL)`, but that is not inherited:
//! if the host is SIGKILLed, the plugin's own subprocesses (policies with
//! `subprocesses = true`) are orphaned and would live on. They all stay in the group the first
//! process created (seccomp refuses `setsid` and `setpgid`), so one small process that outlives
//! the host and kills those groups is enough.
//!
//! [`Watchdog::start`] forks that process once per host (an Engine, or `plugbox exec`). The
//! host tells it the groups to kill over a `SOCK_SEQPACKET` socket, one 8-byte record per
//! message (a native-endian `i64`: `pgid` registers, `-pgid` unregisters). When every copy of
//! the host's end is closed (the host died, however, or dropped its [`Watchdog`]), the watchdog
//! SIGKILLs every group still registered and exits.
//!
//! Choices, and what they cost:
//! - **No exec.** The watchdog is a forked copy of the host that only runs async-signal-safe
//!   raw syscalls (see `crate::sys::fork_watchdog`). It needs no binary on disk and starts in
//!   a fraction of a millisecond, but it shares the host's memory copy-on-write: pages the host
//!   later writes are copied, and the watchdog keeps the old ones. Start it early, while the
//!   host is small (before loading plugins), so that the pages it pins stay few.
//! - **Double fork.** The host reaps the intermediate child at once, so no zombie is left
//!   behind, and the watchdog is re-parented to the nearest subreaper or to init. If the host
//!   itself is a subreaper when it starts the watchdog, the watchdog becomes its child again;
//!   [`Drop`] then reaps it (waiting at most [`REAP_LIMIT`]). `plugbox exec` starts its
//!   watchdog *before* it becomes a subreaper, so its watchdog is not its child.
//! - **A socket, not a pipe.** `send(MSG_NOSIGNAL)` reports a dead watchdog as an error
//!   (`EPIPE`) instead of raising SIGPIPE, so a host need not ignore SIGPIPE; sends time out
//!   after [`SEND_TIMEOUT`] instead of blocking for ever if the watchdog is stopped.
//! - **Fail closed on capacity.** The watchdog's table is allocated before the fork and never
//!   grows; the host counts the registered groups and [`Watchdog::register`] refuses one past
//!   the capacity (`ErrorKind::StorageFull`), so the caller can refuse to start that plugin.
//! - **Unregister after teardown.** A group id is a pid, and pids are reused: unregister a
//!   group once it is empty, or the watchdog may one day kill a stranger that got its number.
//!   Between spawning a plugin and registering it there is a short window (its exec and the
//!   send) in which a host death would still orphan processes the plugin forked in it.

use crate::sys;
use std::collections::HashSet;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// How long a blocked `register`/`unregister` waits for the watchdog to read before failing.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`Drop`] waits for a watchdog that is the host's own child to exit.
pub const REAP_LIMIT: Duration = Duration::from_secs(1);

/// The host's handle on its watchdog process. `Send + Sync`: registrations from several
/// threads or tasks are serialised by an internal lock.
#[derive(Debug)]
pub struct Watchdog {
    /// The host's end of the socket (close-on-exec, so plugins never inherit it). `None`
    /// only inside `drop`.
    channel: Option<OwnedFd>,
    pid: libc::pid_t,
    capacity: usize,
    /// The groups registered, as the watchdog's table holds them.
    registered: Mutex<HashSet<libc::pid_t>>,
    /// The watchdog is this process's child (the host was a subreaper): reap it on drop.
    reap: bool,
}

impl Watchdog {
    /// Forks the watchdog, able to hold `capacity` process groups at once, and waits until it
    /// is running (its own session, signals blocked, no fd of the host's but the socket).
    ///
    /// This blocks for the two forks and one round trip (a fraction of a millisecond for a
    /// small host; fork's cost grows with the host's mapped memory).
    pub fn start(capacity: usize) -> io::Result<Watchdog> {
        if capacity == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "watchdog capacity must be at least 1",
            ));
        }
        let (host_end, watchdog_end) = sys::socketpair_seqpacket()?;
        let mut table: Vec<libc::pid_t> = vec![0; capacity];
        let reap = sys::is_child_subreaper()?;
        sys::fork_watchdog(watchdog_end.as_raw_fd(), &mut table)?;
        // Only the watchdog may hold its end now: if it died, the read below sees EOF.
        drop(watchdog_end);
        drop(table);
        let pid = match sys::recv_record(host_end.as_raw_fd())? {
            Some(pid) => libc::pid_t::try_from(pid)
                .map_err(|_| io::Error::from_raw_os_error(libc::EPROTO))?,
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the watchdog process ended before it was ready",
                ))
            }
        };
        let millis = u32::try_from(SEND_TIMEOUT.as_millis()).unwrap_or(u32::MAX);
        sys::set_send_timeout(host_end.as_raw_fd(), millis)?;
        Ok(Watchdog {
            channel: Some(host_end),
            pid,
            capacity,
            registered: Mutex::new(HashSet::with_capacity(capacity)),
            reap,
        })
    }

    /// Asks the watchdog to SIGKILL group `pgid` when the host dies or drops it. Registering a
    /// group twice is a no-op.
    ///
    /// Errors: `InvalidInput` for `pgid <= 1` (never a group to kill: `kill(-1)` would reach
    /// every process); `StorageFull` when `capacity` groups are registered; `BrokenPipe` or
    /// `ConnectionReset` when the watchdog is gone; `WouldBlock` when it did not read for
    /// [`SEND_TIMEOUT`]. On any error the group is not protected.
    pub fn register(&self, pgid: libc::pid_t) -> io::Result<()> {
        if pgid <= 1 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{pgid} is not a process group the watchdog may kill"),
            ));
        }
        let mut registered = self.lock();
        if registered.contains(&pgid) {
            return Ok(());
        }
        if registered.len() >= self.capacity {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!(
                    "the watchdog already guards {} process groups (its capacity)",
                    self.capacity
                ),
            ));
        }
        self.send(i64::from(pgid))?;
        registered.insert(pgid);
        Ok(())
    }

    /// Forgets group `pgid` (call it once the group is empty). Unknown groups are a no-op.
    pub fn unregister(&self, pgid: libc::pid_t) -> io::Result<()> {
        let mut registered = self.lock();
        if !registered.contains(&pgid) {
            return Ok(());
        }
        self.send(-i64::from(pgid))?;
        registered.remove(&pgid);
        Ok(())
    }

    /// The watchdog process's pid.
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// How many groups it can hold at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<libc::pid_t>> {
        // The set is only changed after a successful send, so a panic elsewhere while the
        // lock was held cannot have left it out of step with the watchdog.
        self.registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn send(&self, record: i64) -> io::Result<()> {
        match &self.channel {
            Some(fd) => sys::send_record(fd.as_raw_fd(), record),
            None => Err(io::Error::from_raw_os_error(libc::EBADF)),
        }
    }
}

impl Drop for Watchdog {
    /// Closes the host's end: the watchdog kills the groups still registered and exits. If it
    /// is this process's child, it is reaped too (waiting at most [`REAP_LIMIT`]).
    fn drop(&mut self) {
        drop(self.channel.take());
        if !self.reap {
            return;
        }
        // It is our child, so its pid cannot be reused before we reap it.
        if let Ok(pidfd) = sys::pidfd_open(self.pid) {
            let mut fds = [libc::pollfd {
                fd: pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            let limit = i32::try_from(REAP_LIMIT.as_millis()).unwrap_or(i32::MAX);
            let _ = sys::poll(&mut fds, limit);
        }
        let _ = sys::try_waitpid(self.pid);
    }
}

#[cfg(test)]
mod tests {
    use super::Watchdog;

    #[test]
    fn the_handle_can_be_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Watchdog>();
    }
}
