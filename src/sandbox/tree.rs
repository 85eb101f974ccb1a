//! Parent side: tearing down a confined process tree so that nothing survives.
//!
//! Every process of a sandbox stays in the group its first process created with `setsid`
//! (seccomp refuses `setsid` and `setpgid` afterwards), so one group id reaches them all,
//! double-forked daemons included.

use crate::sys::{self, WaitStatus};
use std::io;
use std::time::{Duration, Instant};

/// How long teardown waits for members that are not our children to be reaped by their
/// new parent before giving up.
const TEARDOWN_LIMIT: Duration = Duration::from_secs(5);

/// Kills every process in group `pgid` and reaps those that are our children, until the
/// group is empty. Returns the status of `leader` if it was reaped here.
pub fn kill_tree(pgid: libc::pid_t, leader: libc::pid_t) -> io::Result<Option<WaitStatus>> {
    let deadline = Instant::now() + TEARDOWN_LIMIT;
    let mut leader_status = None;
    while sys::kill_group(pgid, libc::SIGKILL)? {
        match sys::waitpid(-pgid) {
            Ok((pid, status)) if pid == leader => leader_status = Some(status),
            Ok(_) => {}
            // The remaining members are not our children (no subreaper): their new parent
            // reaps them; poll until the group is gone.
            Err(e) if e.raw_os_error() == Some(libc::ECHILD) => {
                if Instant::now() > deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("process group {pgid} still has members after SIGKILL"),
                    ));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(leader_status)
}

/// What ends one instance: the process group its first process leads (an instance spawned
/// and confined by the host), or one process (an instance forked from a zygote template: it
/// stays in the template's group, and its policy allows it no subprocess).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tree {
    /// A process group and its leader.
    Group(libc::pid_t),
    /// One process, our child, in a group it does not lead.
    Process(libc::pid_t),
}

impl Tree {
    /// The pid of its first process.
    pub fn pid(self) -> libc::pid_t {
        match self {
            Tree::Group(pid) | Tree::Process(pid) => pid,
        }
    }

    /// Sends `sig` to all of it. `Ok(false)` when nothing was left to signal.
    pub fn signal(self, sig: libc::c_int) -> io::Result<bool> {
        match self {
            Tree::Group(pgid) => sys::kill_group(pgid, sig),
            Tree::Process(pid) => sys::kill_process(pid, sig),
        }
    }

    /// Kills all of it and reaps what is our child; the first process's status if reaped here.
    pub fn kill(self) -> io::Result<Option<WaitStatus>> {
        match self {
            Tree::Group(pgid) => kill_tree(pgid, pgid),
            Tree::Process(pid) => {
                sys::kill_process(pid, libc::SIGKILL)?;
                match sys::waitpid(pid) {
                    Ok((_, status)) => Ok(Some(status)),
                    Err(e) if e.raw_os_error() == Some(libc::ECHILD) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Is it a group the host-death watchdog holds?
    pub fn is_group(self) -> bool {
        matches!(self, Tree::Group(_))
    }
}
