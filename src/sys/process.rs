//! Processes from the parent's side: pipes, pidfds, waiting, signalling groups, pre-exec hooks.

use super::check;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// `pipe2(O_CLOEXEC)`: (read end, write end).
pub fn pipe_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a writable array of two ints, as pipe2 requires.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }.into())?;
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `pidfd_open(pid, 0)`: an fd that becomes readable when the process exits.
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: integer arguments only.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) })?;
    // SAFETY: pidfd_open returned a new fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `poll(fds, timeout_ms)`; EINTR is reported as zero ready fds.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: `fds` is a live, writable slice of pollfd of the given length.
    let ret = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    match check(ret.into()) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(e),
    }
}

/// How a reaped process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStatus {
    /// It called `exit(code)`.
    Exited(i32),
    /// It was killed by this signal.
    Signaled(i32),
}

/// `waitid(P_PID, pid, WEXITED | WNOWAIT)`: blocks until `pid` has ended but leaves it a
/// zombie, so its pid (and so its process-group id) cannot be reused yet.
pub fn wait_exited_keep_zombie(pid: libc::pid_t) -> io::Result<()> {
    loop {
        // SAFETY: siginfo_t is plain data; zeroed is a valid initial value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable siginfo_t for the duration of the call.
        let ret = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        match check(ret.into()) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `waitpid(pid, 0)`, retried on EINTR: reaps the process and returns how it ended.
pub fn waitpid(pid: libc::pid_t) -> io::Result<(libc::pid_t, WaitStatus)> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is a valid, writable int for the duration of the call.
        let ret = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        match check(ret.into()) {
            Ok(reaped) => return Ok((reaped as libc::pid_t, decode_status(status))),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

pub(super) fn decode_status(status: libc::c_int) -> WaitStatus {
    if libc::WIFSIGNALED(status) {
        WaitStatus::Signaled(libc::WTERMSIG(status))
    } else {
        WaitStatus::Exited(libc::WEXITSTATUS(status))
    }
}

/// `kill(-pgid, sig)`: signals a whole process group. `Ok(false)` when the group is empty.
pub fn kill_group(pgid: libc::pid_t, sig: libc::c_int) -> io::Result<bool> {
    // SAFETY: integer arguments only.
    match check(unsafe { libc::kill(-pgid, sig) }.into()) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `kill(pid, sig)`: signals one process. `Ok(false)` when it no longer exists.
pub fn kill_process(pid: libc::pid_t, sig: libc::c_int) -> io::Result<bool> {
    if pid <= 0 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: integer arguments only; `pid > 0` names one process, never a group.
    match check(unsafe { libc::kill(pid, sig) }.into()) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `prctl(PR_SET_CHILD_SUBREAPER, 1)`: orphaned descendants are re-parented to the caller.
pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
    check(ret.into()).map(drop)
}

/// Registers `step` to run in the child between `fork` and `exec`.
///
/// The closure runs in a forked copy of a possibly multi-threaded process, so it must be
/// async-signal-safe: only raw syscalls on data prepared before the fork, no allocation, no
/// locks. The sandbox's child plan (`sandbox::child`) is written to that rule.
pub fn register_pre_exec<F>(command: &mut Command, step: F)
where
    F: FnMut() -> io::Result<()> + Send + Sync + 'static,
{
    // SAFETY: the only caller passes `sandbox::child::ChildPlan::apply`, which performs raw
    // syscalls from this module on pre-computed data and never allocates or takes locks.
    unsafe {
        command.pre_exec(step);
    }
}
