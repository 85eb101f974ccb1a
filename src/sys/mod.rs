//! Raw system calls: the only module allowed to contain `unsafe`.
//!
//! Every function here is a thin wrapper over one syscall (or libc call that is a single
//! syscall). Functions used between `fork` and `exec` are async-signal-safe: they do not
//! allocate, lock or touch thread-local state beyond `errno`.
//!
//! One submodule is more than a wrapper: [`fork_watchdog`] (in `sys/watchdog.rs`) forks the
//! host-death watchdog and holds the code that process runs, under the same rules.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

mod watchdog;
pub use watchdog::{
    fork_watchdog, is_child_subreaper, recv_record, send_record, set_send_timeout,
    socketpair_seqpacket, try_waitpid,
};

/// One classic-BPF instruction, as the kernel's `struct sock_filter`.
pub use seccompiler::sock_filter as SockFilter;

/// Converts a `-1`-means-error return value into an `io::Result` without allocating.
fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `close_range(first, ~0, CLOSE_RANGE_CLOEXEC)`: marks every fd from `first` up close-on-exec.
pub fn close_range_cloexec(first: u32) -> io::Result<()> {
    // SAFETY: close_range takes plain integers and touches only this process's fd table.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    check(ret).map(drop)
}

/// Clears `FD_CLOEXEC` on one fd, so that it survives `exec`.
pub fn clear_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl(F_SETFD) on an integer fd; an invalid fd yields EBADF, nothing else.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }.into()).map(drop)
}

/// `setsid()`: a new session and process group led by the caller.
pub fn setsid() -> io::Result<()> {
    // SAFETY: setsid has no arguments and no memory effects.
    check(unsafe { libc::setsid() }.into()).map(drop)
}

/// `prctl(PR_SET_PDEATHSIG, SIGKILL)`: the caller is killed when its parent thread exits.
pub fn set_parent_death_kill() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) }.into()).map(drop)
}

/// `getppid()`.
pub fn getppid() -> libc::pid_t {
    // SAFETY: getppid cannot fail and has no memory effects.
    unsafe { libc::getppid() }
}

/// `getpid()`.
pub fn getpid() -> libc::pid_t {
    // SAFETY: getpid cannot fail and has no memory effects.
    unsafe { libc::getpid() }
}

/// `geteuid()`.
pub fn geteuid() -> libc::uid_t {
    // SAFETY: geteuid cannot fail and has no memory effects.
    unsafe { libc::geteuid() }
}

/// `getegid()`.
pub fn getegid() -> libc::gid_t {
    // SAFETY: getegid cannot fail and has no memory effects.
    unsafe { libc::getegid() }
}

/// `setrlimit(resource, {soft, hard})`.
pub fn setrlimit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `lim` is a valid, initialised rlimit that outlives the call.
    check(unsafe { libc::setrlimit(resource, &lim) }.into()).map(drop)
}

/// `prctl(PR_CAPBSET_DROP, cap)`: removes one capability from the bounding set.
pub fn capbset_drop(cap: u32) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap)) }.into()).map(drop)
}

/// `prctl(PR_SET_SECUREBITS, bits)`.
pub fn set_securebits(bits: u32) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_SECUREBITS, libc::c_ulong::from(bits)) }.into())
        .map(drop)
}

/// `setgroups(0, NULL)`: drops every supplementary group.
pub fn clear_groups() -> io::Result<()> {
    // SAFETY: a zero-length list with a null pointer is the documented way to clear groups.
    check(unsafe { libc::setgroups(0, std::ptr::null()) }.into()).map(drop)
}

/// `setresgid(gid, gid, gid)`.
pub fn set_all_gids(gid: libc::gid_t) -> io::Result<()> {
    // SAFETY: integer arguments only.
    check(unsafe { libc::setresgid(gid, gid, gid) }.into()).map(drop)
}

/// `setresuid(uid, uid, uid)`.
pub fn set_all_uids(uid: libc::uid_t) -> io::Result<()> {
    // SAFETY: integer arguments only.
    check(unsafe { libc::setresuid(uid, uid, uid) }.into()).map(drop)
}

/// `capset` with every set (effective, permitted, inheritable) empty.
pub fn clear_capabilities() -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: header and data are valid for the v3 ABI (one header, two data words) and live
    // for the whole call; the kernel only reads `data` and may write `header.version`.
    let ret = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    check(ret).map(drop)
}

/// `prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)`.
pub fn clear_ambient_capabilities() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    check(ret.into()).map(drop)
}

/// `prctl(PR_SET_NO_NEW_PRIVS, 1)`.
pub fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe {
        libc::prctl(
            libc::PR_SET_NO_NEW_PRIVS,
            1 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    check(ret.into()).map(drop)
}

/// `prctl(PR_GET_NO_NEW_PRIVS)`.
pub fn no_new_privs() -> io::Result<bool> {
    // SAFETY: prctl with integer arguments only.
    let ret = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) };
    check(ret.into()).map(|v| v == 1)
}

/// `landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)`: the kernel's ABI
/// version, or the errno (`ENOSYS`: not built, `EOPNOTSUPP`: disabled at boot).
pub fn landlock_abi_version() -> io::Result<i64> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: a null attribute pointer with size 0 and the VERSION flag is the documented query.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    check(ret)
}

/// `landlock_restrict_self(ruleset_fd, 0)`.
pub fn landlock_restrict_self(ruleset_fd: RawFd) -> io::Result<()> {
    // SAFETY: integer arguments only; the kernel validates the fd.
    let ret = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset_fd, 0u32) };
    check(ret).map(drop)
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, 0, prog)`. The raw syscall, not `prctl`, so that the
/// installing call itself does not depend on `prctl` being allowed.
pub fn seccomp_set_filter(program: &[SockFilter]) -> io::Result<()> {
    #[repr(C)]
    struct SockFprog {
        len: libc::c_ushort,
        filter: *const SockFilter,
    }
    let len = libc::c_ushort::try_from(program.len())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let prog = SockFprog {
        len,
        filter: program.as_ptr(),
    };
    // SAFETY: `prog` points at `len` valid instructions that outlive the call; the kernel
    // copies the program before returning.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0u32,
            &prog as *const SockFprog,
        )
    };
    check(ret).map(drop)
}

/// `prctl(PR_GET_SECCOMP)`: 0 when the caller is not filtered.
pub fn seccomp_mode() -> io::Result<i64> {
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) }.into())
}

/// One `write(2)`; used in the child to report a failed step (async-signal-safe).
pub fn write_once(fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: the pointer and length describe a live byte slice.
    let ret = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    check(ret as libc::c_long).map(|n| n as usize)
}

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

fn decode_status(status: libc::c_int) -> WaitStatus {
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

/// `socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC)`: the IPC channel's two ends.
pub fn socketpair_stream() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a writable array of two ints, as socketpair requires.
    let ret = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    check(ret.into())?;
    // SAFETY: socketpair succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// What one `recvmsg` on the IPC channel produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes of data read (0: end of stream).
    pub bytes: usize,
    /// The peer passed file descriptors (`SCM_RIGHTS`), or control data was cut; any fds
    /// received have already been closed.
    pub passed_fds: bool,
}

/// `recvmsg(fd, buf, MSG_DONTWAIT | MSG_CMSG_CLOEXEC)` with room for ancillary data, so that
/// descriptors a peer passes are detected and closed instead of silently piling up.
pub fn recv_checking_fds(fd: RawFd, buf: &mut [u8]) -> io::Result<Received> {
    // SAFETY: an initialised byte slice is also a valid slice of possibly-uninitialised bytes,
    // and the kernel only writes bytes into it.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) };
    recv_uninit_checking_fds(fd, uninit)
}

/// [`recv_checking_fds`] into a tokio read buffer's unfilled (possibly uninitialised) part,
/// without zeroing it first; advances the buffer by the bytes received.
pub fn recv_into_read_buf(fd: RawFd, buf: &mut tokio::io::ReadBuf<'_>) -> io::Result<Received> {
    // SAFETY: the kernel writes only initialised bytes into the region, and only the `bytes`
    // it reports are marked filled below.
    let received = recv_uninit_checking_fds(fd, unsafe { buf.unfilled_mut() })?;
    // SAFETY: recvmsg initialised exactly `received.bytes` bytes at the start of the region.
    unsafe { buf.assume_init(received.bytes) };
    buf.advance(received.bytes);
    Ok(received)
}

fn recv_uninit_checking_fds(
    fd: RawFd,
    buf: &mut [std::mem::MaybeUninit<u8>],
) -> io::Result<Received> {
    const CONTROL_BYTES: usize = 256;
    let mut control = [0u64; CONTROL_BYTES / 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = CONTROL_BYTES;
    // SAFETY: `msg` points at `iov` (a live, writable buffer) and `control` (a live, aligned,
    // writable buffer of `msg_controllen` bytes), both outliving the call.
    let ret = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC) };
    let bytes = check(ret as libc::c_long)? as usize;
    let mut passed_fds = msg.msg_flags & libc::MSG_CTRUNC != 0;
    // SAFETY: the kernel filled `msg`'s control area; CMSG_FIRSTHDR/NXTHDR walk it within
    // `msg_controllen`, and each SCM_RIGHTS payload holds whole c_ints.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                passed_fds = true;
                let data = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
                let header = libc::CMSG_LEN(0) as usize;
                let count = ((*cmsg).cmsg_len as usize).saturating_sub(header) / 4;
                for i in 0..count {
                    libc::close(std::ptr::read_unaligned(data.add(i)));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(Received { bytes, passed_fds })
}

/// `openat2(dirfd, path, {flags, mode, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
/// RESOLVE_NO_MAGICLINKS})`: opens `path` strictly beneath `dir`, never through a symlink.
pub fn open_beneath(
    dir: RawFd,
    path: &std::ffi::CStr,
    flags: libc::c_int,
    mode: u32,
) -> io::Result<OwnedFd> {
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
    const RESOLVE_NO_SYMLINKS: u64 = 0x04;
    const RESOLVE_BENEATH: u64 = 0x08;
    let how = OpenHow {
        // O_PATH accepts only O_DIRECTORY, O_NOFOLLOW and O_CLOEXEC beside it.
        flags: (flags
            | libc::O_CLOEXEC
            | if flags & libc::O_PATH == 0 {
                libc::O_NOCTTY
            } else {
                0
            }) as u64,
        // openat2 rejects a mode without O_CREAT/O_TMPFILE (O_TMPFILE includes the
        // O_DIRECTORY bit, so it is tested whole).
        mode: if flags & libc::O_CREAT != 0 || flags & libc::O_TMPFILE == libc::O_TMPFILE {
            u64::from(mode)
        } else {
            0
        },
        resolve: RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: `path` is NUL-terminated, `how` is a valid open_how of the size passed, and both
    // outlive the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    let fd = check(ret)?;
    // SAFETY: openat2 returned a new fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Registers an owned fd (a pidfd) with the tokio reactor for readability.
pub fn async_owned_fd(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an `OwnedFd` is a valid open descriptor that nobody else can close, and its
    // `as_raw_fd` always returns the same number, for as long as the AsyncFd owns it.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// Sets a socket's send and receive buffers to `bytes`: `SO_*BUFFORCE` (past the sysctl cap)
/// when the caller may, the capped `SO_*BUF` otherwise.
pub fn set_socket_buffers(fd: RawFd, bytes: i32) -> io::Result<()> {
    let set = |opt: libc::c_int| {
        // SAFETY: `bytes` is a live c_int and the length passed is its size.
        let ret = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&bytes as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        };
        check(ret.into()).map(drop)
    };
    set(libc::SO_SNDBUFFORCE).or_else(|_| set(libc::SO_SNDBUF))?;
    set(libc::SO_RCVBUFFORCE).or_else(|_| set(libc::SO_RCVBUF))
}

/// Restores the default SIGPIPE action (Rust ignores it), so a reporting command whose output
/// pipe closes (`plugbox audit show ... | head`) ends quietly like other Unix tools.
pub fn default_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_DFL installs no handler and touches no
    // memory; it is called before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
