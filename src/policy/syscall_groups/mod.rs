//! The named syscall groups a policy is built from (x86-64 numbers).
//!
//! The vocabulary follows systemd's `SystemCallFilter=` groups. The baseline groups are
//! always granted: together they are what CPython needs to start, import the standard
//! library, run threads and talk over an inherited socket. Optional groups are granted only
//! when a policy names them in `[syscalls] allow`. Syscalls in [`NEVER`] can be granted by no
//! policy and fail with `EPERM`; every syscall in no group fails with `ENOSYS` (see
//! `sandbox::seccomp`).

/// One syscall: its name and its number on this architecture.
pub type Syscall = (&'static str, i64);

/// Syscall numbers: libc's, plus the few it does not name yet.
#[allow(non_upper_case_globals)]
mod nr {
    pub use libc::*;
    pub const SYS_io_pgetevents: i64 = 333;
    pub const SYS_map_shadow_stack: i64 = 453;
}

macro_rules! syscalls {
    ($($name:ident),* $(,)?) => { &[$((strip_prefix(stringify!($name)), nr::$name)),*] };
}

/// `"SYS_read"` to `"read"`, at compile time.
const fn strip_prefix(name: &'static str) -> &'static str {
    let (_, rest) = name.as_bytes().split_at(4);
    match std::str::from_utf8(rest) {
        Ok(rest) => rest,
        Err(_) => name,
    }
}

mod never;
mod optional;
pub use never::NEVER;
pub use optional::{optional_group, CHOWN, OPTIONAL, SUBPROCESSES, XATTR_WRITE};

/// A named set of syscalls with the reason it exists.
#[derive(Debug)]
pub struct SyscallGroup {
    /// The name a policy uses, such as `"@sync"`.
    pub name: &'static str,
    /// Why a program needs it, and what granting it exposes.
    pub about: &'static str,
    /// Its members.
    pub syscalls: &'static [Syscall],
}

/// Groups granted to every program.
pub const BASELINE: &[SyscallGroup] = &[
    SyscallGroup {
        name: "@default",
        about: "process bookkeeping every program does: exit, ids, futexes, rseq, randomness",
        syscalls: syscalls![
            SYS_exit,
            SYS_exit_group,
            SYS_rt_sigreturn,
            SYS_restart_syscall,
            SYS_brk,
            SYS_arch_prctl,
            SYS_set_tid_address,
            SYS_set_robust_list,
            SYS_rseq,
            SYS_futex,
            SYS_futex_waitv,
            SYS_getpid,
            SYS_gettid,
            SYS_getppid,
            SYS_getuid,
            SYS_geteuid,
            SYS_getgid,
            SYS_getegid,
            SYS_getresuid,
            SYS_getresgid,
            SYS_getgroups,
            SYS_getpgrp,
            SYS_getpgid,
            SYS_getsid,
            SYS_getrandom,
            SYS_uname,
            SYS_sysinfo,
            SYS_getcpu,
            SYS_membarrier,
            SYS_sched_yield,
            SYS_capget,
            SYS_getrlimit,
            SYS_getrusage,
            SYS_times,
            SYS_map_shadow_stack,
        ],
    },
    SyscallGroup {
        name: "@basic-io",
        about: "reading and writing open descriptors; ioctl is argument-filtered",
        syscalls: syscalls![
            SYS_read,
            SYS_write,
            SYS_readv,
            SYS_writev,
            SYS_pread64,
            SYS_pwrite64,
            SYS_preadv,
            SYS_pwritev,
            SYS_preadv2,
            SYS_pwritev2,
            SYS_close,
            SYS_close_range,
            SYS_dup,
            SYS_dup2,
            SYS_dup3,
            SYS_lseek,
            SYS_pipe,
            SYS_pipe2,
            SYS_sendfile,
            SYS_splice,
            SYS_tee,
            SYS_copy_file_range,
            SYS_fcntl,
            SYS_ioctl,
        ],
    },
    SyscallGroup {
        name: "@file-system",
        about: "path operations; Landlock decides which paths they reach",
        syscalls: syscalls![
            SYS_open,
            SYS_openat,
            SYS_creat,
            SYS_stat,
            SYS_fstat,
            SYS_lstat,
            SYS_newfstatat,
            SYS_statx,
            SYS_statfs,
            SYS_fstatfs,
            SYS_access,
            SYS_faccessat,
            SYS_faccessat2,
            SYS_getdents,
            SYS_getdents64,
            SYS_getcwd,
            SYS_chdir,
            SYS_fchdir,
            SYS_mkdir,
            SYS_mkdirat,
            SYS_rmdir,
            SYS_rename,
            SYS_renameat,
            SYS_renameat2,
            SYS_link,
            SYS_linkat,
            SYS_unlink,
            SYS_unlinkat,
            SYS_symlink,
            SYS_symlinkat,
            SYS_readlink,
            SYS_readlinkat,
            SYS_chmod,
            SYS_fchmod,
            SYS_fchmodat,
            SYS_fchmodat2,
            SYS_umask,
            SYS_truncate,
            SYS_ftruncate,
            SYS_fallocate,
            SYS_fadvise64,
            SYS_flock,
            SYS_fsync,
            SYS_fdatasync,
            SYS_sync_file_range,
            SYS_utime,
            SYS_utimes,
            SYS_utimensat,
            SYS_futimesat,
            SYS_mknod,
            SYS_mknodat,
            SYS_getxattr,
            SYS_lgetxattr,
            SYS_fgetxattr,
            SYS_listxattr,
            SYS_llistxattr,
            SYS_flistxattr,
        ],
    },
    SyscallGroup {
        name: "@io-event",
        about: "waiting on descriptors",
        syscalls: syscalls![
            SYS_poll,
            SYS_ppoll,
            SYS_select,
            SYS_pselect6,
            SYS_epoll_create,
            SYS_epoll_create1,
            SYS_epoll_ctl,
            SYS_epoll_wait,
            SYS_epoll_pwait,
            SYS_epoll_pwait2,
            SYS_eventfd,
            SYS_eventfd2,
        ],
    },
    SyscallGroup {
        name: "@memory",
        about: "mapping memory; RLIMIT_AS bounds the total",
        syscalls: syscalls![
            SYS_mmap,
            SYS_munmap,
            SYS_mprotect,
            SYS_mremap,
            SYS_madvise,
            SYS_msync,
            SYS_mincore,
            SYS_mseal,
        ],
    },
    SyscallGroup {
        name: "@signal",
        about: "signal handling; Landlock's signal scope keeps signals inside the sandbox",
        syscalls: syscalls![
            SYS_rt_sigaction,
            SYS_rt_sigprocmask,
            SYS_rt_sigpending,
            SYS_rt_sigsuspend,
            SYS_rt_sigtimedwait,
            SYS_sigaltstack,
            SYS_signalfd,
            SYS_signalfd4,
            SYS_kill,
            SYS_tkill,
            SYS_tgkill,
            SYS_rt_sigqueueinfo,
            SYS_rt_tgsigqueueinfo,
            SYS_pause,
        ],
    },
    SyscallGroup {
        name: "@timer",
        about: "clocks, sleeps and timers (reading clocks only; setting them is never allowed)",
        syscalls: syscalls![
            SYS_nanosleep,
            SYS_clock_nanosleep,
            SYS_clock_gettime,
            SYS_clock_getres,
            SYS_gettimeofday,
            SYS_time,
            SYS_alarm,
            SYS_getitimer,
            SYS_setitimer,
            SYS_timer_create,
            SYS_timer_settime,
            SYS_timer_gettime,
            SYS_timer_getoverrun,
            SYS_timer_delete,
            SYS_timerfd_create,
            SYS_timerfd_settime,
            SYS_timerfd_gettime,
        ],
    },
    SyscallGroup {
        name: "@network-io",
        about: "socket I/O; socket() and socketpair() are filtered by family, type and protocol",
        syscalls: syscalls![
            SYS_socket,
            SYS_socketpair,
            SYS_bind,
            SYS_listen,
            SYS_accept,
            SYS_accept4,
            SYS_connect,
            SYS_getsockname,
            SYS_getpeername,
            SYS_setsockopt,
            SYS_getsockopt,
            SYS_sendto,
            SYS_recvfrom,
            SYS_sendmsg,
            SYS_recvmsg,
            SYS_sendmmsg,
            SYS_recvmmsg,
            SYS_shutdown,
        ],
    },
    SyscallGroup {
        name: "@process-self",
        about: "threads and the caller's own attributes; pid arguments must be 0 (self)",
        syscalls: syscalls![
            SYS_clone,
            SYS_execve,
            SYS_wait4,
            SYS_waitid,
            SYS_prctl,
            SYS_prlimit64,
            SYS_sched_getaffinity,
            SYS_sched_setaffinity,
            SYS_sched_getparam,
            SYS_sched_getscheduler,
            SYS_sched_get_priority_max,
            SYS_sched_get_priority_min,
            SYS_getpriority,
            SYS_setpriority,
            SYS_personality,
            SYS_get_robust_list,
        ],
    },
];
