//! The syscalls of the child's confinement steps, between `fork` and `exec`:
//! async-signal-safe wrappers only.

use super::{check, SockFilter};
use std::io;
use std::os::fd::RawFd;

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

/// `landlock_add_rule(ruleset, LANDLOCK_RULE_PATH_BENEATH, {access, fd})`: adds one rule to
/// an existing ruleset (rules added after a `landlock_restrict_self` apply to later ones only).
pub fn landlock_add_path_rule(ruleset: RawFd, fd: RawFd, access: u64) -> io::Result<()> {
    #[repr(C, packed)]
    struct PathBeneath {
        allowed_access: u64,
        parent_fd: i32,
    }
    let attr = PathBeneath {
        allowed_access: access,
        parent_fd: fd,
    };
    const LANDLOCK_RULE_PATH_BENEATH: libc::c_int = 1;
    // SAFETY: the kernel reads `attr`, a packed struct matching its ABI, during the call only.
    check(unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset,
            LANDLOCK_RULE_PATH_BENEATH,
            &attr as *const PathBeneath,
            0,
        )
    })
    .map(drop)
}
