//! The host-death watchdog's process: forked twice from the host and never exec'd.
//!
//! The host may be a multi-threaded tokio process, so everything that runs in the forked
//! children (the intermediate and the watchdog itself) is async-signal-safe: raw syscalls on
//! data prepared before the fork, no heap allocation, no locks, no std I/O, no panicking paths
//! (no slice indexing, no unchecked arithmetic), and the only way out is `_exit`.
//!
//! The safe owner of all this is `crate::sandbox::watchdog::Watchdog`, which documents the
//! protocol; this file only knows records of 8 bytes on a `SOCK_SEQPACKET` socket.

use super::{check, waitpid, WaitStatus};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Name the watchdog process shows in `ps` (at most 15 bytes plus the NUL).
const NAME: &[u8] = b"plugbox-watch\0";

/// `socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC)`: every `send` is one record, read whole
/// by one `recv`, and a closed peer shows as end-of-file.
pub fn socketpair_seqpacket() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a writable array of two ints, as socketpair requires.
    let ret = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    check(ret.into())?;
    // SAFETY: socketpair succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `setsockopt(SO_SNDTIMEO)`: a blocking `send` gives up with `EAGAIN` after `millis`.
pub fn set_send_timeout(fd: RawFd, millis: u32) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: libc::time_t::from(millis / 1000),
        tv_usec: libc::suseconds_t::from(millis % 1000) * 1000,
    };
    // SAFETY: `tv` is a live timeval and the length passed is its size.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    check(ret.into()).map(drop)
}

/// Sends one 8-byte record with `MSG_NOSIGNAL`: a closed peer yields `EPIPE` (or
/// `ECONNRESET`), never a SIGPIPE. Retried on EINTR.
pub fn send_record(fd: RawFd, value: i64) -> io::Result<()> {
    let bytes = value.to_ne_bytes();
    loop {
        // SAFETY: the pointer and length describe a live 8-byte array.
        let ret = unsafe { libc::send(fd, bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL) };
        match check(ret as libc::c_long) {
            // A seqpacket send is all or nothing.
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Receives one 8-byte record (blocking, retried on EINTR). `Ok(None)`: end of file.
/// A message of another length is an error (`EPROTO`).
pub fn recv_record(fd: RawFd) -> io::Result<Option<i64>> {
    let mut bytes = [0u8; 8];
    loop {
        // SAFETY: the pointer and length describe a live, writable 8-byte array; MSG_TRUNC
        // only changes the returned length to the message's real size.
        let ret =
            unsafe { libc::recv(fd, bytes.as_mut_ptr().cast(), bytes.len(), libc::MSG_TRUNC) };
        match check(ret as libc::c_long) {
            Ok(0) => return Ok(None),
            Ok(8) => return Ok(Some(i64::from_ne_bytes(bytes))),
            Ok(_) => return Err(io::Error::from_raw_os_error(libc::EPROTO)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `prctl(PR_GET_CHILD_SUBREAPER)`: is the caller a subreaper (so orphans come to it)?
pub fn is_child_subreaper() -> io::Result<bool> {
    let mut flag: libc::c_int = 0;
    // SAFETY: PR_GET_CHILD_SUBREAPER writes one int through the pointer, which is live and
    // writable for the call.
    let ret = unsafe {
        libc::prctl(
            libc::PR_GET_CHILD_SUBREAPER,
            &mut flag as *mut libc::c_int,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    check(ret.into()).map(|_| flag != 0)
}

/// `waitpid(pid, WNOHANG)`: reaps `pid` if it has ended. `Ok(None)`: still running.
pub fn try_waitpid(pid: libc::pid_t) -> io::Result<Option<WaitStatus>> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is a valid, writable int for the duration of the call.
        let ret = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG | libc::__WALL) };
        match check(ret.into()) {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(Some(super::process::decode_status(status))),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Forks the watchdog process by a double fork and returns once the intermediate child has
/// been reaped, so the host keeps no zombie and the watchdog has been re-parented to the
/// nearest subreaper (the host itself if it is one) or to init.
///
/// The watchdog keeps only `channel` (its end of a [`socketpair_seqpacket`]), sends its pid on
/// it once it is set up, then keeps the process groups the host registers in `table` (zeros,
/// allocated by the caller before this call; the watchdog writes to its copy-on-write copy and
/// never grows it). `watchdog_main` (private, beside this function) says what it does and in
/// which order.
///
/// If the intermediate could not fork, the error is its `fork` errno. Success only means the
/// watchdog was forked: the caller confirms it started by reading its pid from the channel.
pub fn fork_watchdog(channel: RawFd, table: &mut [libc::pid_t]) -> io::Result<()> {
    // Everything the children use is computed here, before the fork.
    let table_ptr = table.as_mut_ptr();
    let table_len = table.len();
    // SAFETY: fork has no memory effects on the caller. The child runs only
    // `intermediate_main`, which is async-signal-safe (raw syscalls, no allocation, no locks)
    // and ends in `_exit`, so it never returns into the host's code or runs its destructors.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => intermediate_main(channel, table_ptr, table_len),
        child => match waitpid(child)? {
            (_, WaitStatus::Exited(0)) => Ok(()),
            (_, WaitStatus::Exited(errno)) => Err(io::Error::from_raw_os_error(errno)),
            (_, WaitStatus::Signaled(_)) => Err(io::Error::from_raw_os_error(libc::ECHILD)),
        },
    }
}

/// The intermediate child: forks the watchdog and exits at once, so the watchdog is orphaned
/// and re-parented away from the host. Exits with `fork`'s errno if it fails.
fn intermediate_main(channel: RawFd, table: *mut libc::pid_t, len: usize) -> ! {
    // SAFETY: as in `fork_watchdog`: the grandchild runs only `watchdog_main`, which is
    // async-signal-safe and ends in `_exit`.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        watchdog_main(channel, table, len);
    }
    let code = if pid == -1 {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EAGAIN)
    } else {
        0
    };
    // SAFETY: _exit ends this forked copy without running any of the host's exit handlers
    // or destructors.
    unsafe { libc::_exit(code) }
}

/// The watchdog process. Steps, each in its place for a reason:
/// 1. `setsid`: a session of its own, so signals to the host's process group or terminal
///    (Ctrl-C, a `kill -- -pgid` of the host's group) do not reach it;
/// 2. block every catchable signal: it may end only by SIGKILL or on end of file (SIGSTOP
///    and SIGKILL cannot be blocked; a fault it causes itself is still fatal);
/// 3. `chdir("/")` and a recognisable name, so it pins no directory of the host's and shows
///    up as `plugbox-watch` in `ps`;
/// 4. close every fd except `channel`, stdio included: it must not keep the host's pipes
///    (a caller waiting for EOF on the host's stdout), plugin sockets or files open;
/// 5. send its pid on the channel: the host's `start` waits for that, so a returned
///    watchdog is already immune to the signals above and holds no stray fds;
/// 6. loop on records: `pgid > 1` registers, `-pgid` unregisters, anything else is ignored
///    (`kill(-1)` and `kill(0)` would hit every process or its own group);
/// 7. on end of file (every copy of the host's end is closed: the host died or dropped the
///    watchdog) or a hard error: SIGKILL every registered group, then `_exit(0)`.
fn watchdog_main(channel: RawFd, table: *mut libc::pid_t, len: usize) -> ! {
    // SAFETY: `table` and `len` describe the caller's slice, which this forked copy of the
    // host's memory owns exclusively (no other thread exists here, and the host's copy is
    // separate after fork). It is only read and written in place, never grown.
    let table = unsafe { std::slice::from_raw_parts_mut(table, len) };
    // Every unsafe block below is a raw syscall or a libc function POSIX lists as
    // async-signal-safe, on integers, on this stack frame's memory or on a static
    // NUL-terminated string; "see above" refers to this.
    // SAFETY: see above.
    unsafe {
        // 1. Errors are ignored: it cannot fail here (a fresh child is never a group leader).
        libc::setsid();
        // 2.
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
        // 3. Both best effort: neither affects what the watchdog guarantees.
        libc::chdir(c"/".as_ptr());
        libc::prctl(libc::PR_SET_NAME, NAME.as_ptr(), 0, 0, 0);
    }
    // 4.
    let fd = channel as libc::c_uint;
    // SAFETY: see above.
    let closed = unsafe {
        (fd == 0 || libc::syscall(libc::SYS_close_range, 0u32, fd - 1, 0u32) == 0)
            && libc::syscall(libc::SYS_close_range, fd + 1, u32::MAX, 0u32) == 0
    };
    if !closed {
        // Keeping a host fd open for good is worse than not starting: the host sees EOF
        // instead of a pid and reports the failure.
        // SAFETY: see above.
        unsafe { libc::_exit(1) }
    }
    // 5.
    // SAFETY: see above.
    let me = unsafe { libc::getpid() };
    if send_record(channel, i64::from(me)).is_err() {
        // SAFETY: see above.
        unsafe { libc::_exit(1) }
    }
    // 6.
    loop {
        match recv_record(channel) {
            Ok(Some(record)) => apply(table, record, me),
            // A message of another size: skipped.
            Err(e) if e.raw_os_error() == Some(libc::EPROTO) => {}
            Ok(None) | Err(_) => break,
        }
    }
    // 7.
    for &pgid in table.iter() {
        if pgid > 1 {
            // SAFETY: see above. ESRCH (the group is already gone) is fine.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
    // SAFETY: see above.
    unsafe { libc::_exit(0) }
}

/// Applies one record to the table, without allocating or panicking. A full table drops the
/// registration: the host counts and refuses registrations past the capacity, so it cannot
/// happen unless the host is broken.
fn apply(table: &mut [libc::pid_t], record: i64, me: libc::pid_t) {
    let register = record > 0;
    let Some(pgid) = record
        .checked_abs()
        .and_then(|v| libc::pid_t::try_from(v).ok())
    else {
        return;
    };
    if pgid <= 1 || pgid == me {
        return;
    }
    if register {
        if table.contains(&pgid) {
            return;
        }
        if let Some(slot) = table.iter_mut().find(|slot| **slot == 0) {
            *slot = pgid;
        }
    } else {
        for slot in table.iter_mut().filter(|slot| **slot == pgid) {
            *slot = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::apply;

    #[test]
    fn records_fill_and_empty_the_table_and_never_name_init_or_everyone() {
        let mut table = [0; 3];
        for record in [0, 1, -1, i64::MIN, i64::MAX, 7] {
            apply(&mut table, record, 7);
        }
        assert_eq!(
            table,
            [0, 0, 0],
            "0, 1, out of range and its own pid are ignored"
        );
        for record in [10, 11, 10, 12, 13] {
            apply(&mut table, record, 7);
        }
        assert_eq!(table, [10, 11, 12], "duplicates ignored, overflow dropped");
        apply(&mut table, -11, 7);
        apply(&mut table, 14, 7);
        assert_eq!(table, [10, 14, 12], "a freed slot is reused");
    }
}
