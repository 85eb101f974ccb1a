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
