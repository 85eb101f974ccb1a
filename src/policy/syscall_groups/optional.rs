//! The groups a policy may grant: `[syscalls] allow` and `[process] subprocesses`.

use super::{nr, strip_prefix, SyscallGroup};

/// Granted only with `[process] subprocesses = true`.
pub const SUBPROCESSES: SyscallGroup = SyscallGroup {
    name: "@process-spawn",
    about: "creating processes; clone without CLONE_THREAD is refused unless granted",
    syscalls: syscalls![SYS_fork, SYS_vfork],
};

/// The name of the group that lets a plugin change file owners.
pub const CHOWN: &str = "@chown";
/// The name of the group that lets a plugin set and remove extended attributes.
pub const XATTR_WRITE: &str = "@xattr-write";

/// Groups a policy may add with `[syscalls] allow`.
pub const OPTIONAL: &[SyscallGroup] = &[
    SyscallGroup {
        name: "@sync",
        about: "flushing whole filesystems (fsync and fdatasync are in the baseline)",
        syscalls: syscalls![SYS_sync, SYS_syncfs],
    },
    SyscallGroup {
        name: CHOWN,
        about: "changing file owners; without capabilities only to the caller's own ids \
                (without it, they fail with EPERM)",
        syscalls: syscalls![SYS_chown, SYS_fchown, SYS_lchown, SYS_fchownat],
    },
    SyscallGroup {
        name: XATTR_WRITE,
        about: "setting and removing extended attributes on writable files (without it, and \
                without a write path, they fail with EOPNOTSUPP)",
        syscalls: syscalls![
            SYS_setxattr,
            SYS_lsetxattr,
            SYS_fsetxattr,
            SYS_removexattr,
            SYS_lremovexattr,
            SYS_fremovexattr,
        ],
    },
    SyscallGroup {
        name: "@numa",
        about: "NUMA memory policy (numpy and BLAS libraries call mbind)",
        syscalls: syscalls![
            SYS_mbind,
            SYS_get_mempolicy,
            SYS_set_mempolicy,
            SYS_set_mempolicy_home_node,
        ],
    },
    SyscallGroup {
        name: "@file-watch",
        about: "inotify watches (reveal activity in readable directories)",
        syscalls: syscalls![
            SYS_inotify_init,
            SYS_inotify_init1,
            SYS_inotify_add_watch,
            SYS_inotify_rm_watch,
        ],
    },
    SyscallGroup {
        name: "@aio",
        about: "Linux native asynchronous I/O (not io_uring, which is never allowed)",
        syscalls: syscalls![
            SYS_io_setup,
            SYS_io_destroy,
            SYS_io_submit,
            SYS_io_cancel,
            SYS_io_getevents,
            SYS_io_pgetevents,
        ],
    },
    SyscallGroup {
        name: "@memlock",
        about: "locking pages in memory (bounded by RLIMIT_MEMLOCK)",
        syscalls: syscalls![
            SYS_mlock,
            SYS_mlock2,
            SYS_munlock,
            SYS_mlockall,
            SYS_munlockall
        ],
    },
    SyscallGroup {
        name: "@ipc-sysv",
        about:
            "System V IPC: WEAKENS isolation, since keys are shared by every process of the host",
        syscalls: syscalls![
            SYS_shmget,
            SYS_shmat,
            SYS_shmdt,
            SYS_shmctl,
            SYS_semget,
            SYS_semop,
            SYS_semtimedop,
            SYS_semctl,
            SYS_msgget,
            SYS_msgsnd,
            SYS_msgrcv,
            SYS_msgctl,
        ],
    },
];

/// Looks up an optional group by its exact name (no case folding).
pub fn optional_group(name: &str) -> Option<&'static SyscallGroup> {
    OPTIONAL.iter().find(|g| g.name == name)
}
