//! System V IPC removal: `shmctl`, `msgctl` and `semctl` with `IPC_RMID`, used to delete the
//! objects a plugin's uid left behind before that uid serves another plugin.

use super::check;
use std::io;

/// A kind of System V IPC object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SysvKind {
    /// A shared-memory segment (`/proc/sysvipc/shm`).
    Shm,
    /// A message queue (`/proc/sysvipc/msg`).
    Msg,
    /// A semaphore set (`/proc/sysvipc/sem`).
    Sem,
}

/// Removes the object `id` of `kind` (`IPC_RMID`). A shared-memory segment still attached
/// somewhere is destroyed once the last process detaches; its key is freed at once.
pub fn sysv_remove(kind: SysvKind, id: libc::c_int) -> io::Result<()> {
    let ret = match kind {
        // SAFETY: with IPC_RMID the kernel ignores the buffer argument; a null pointer is what
        // shmctl(2) documents for it. Integer arguments otherwise.
        SysvKind::Shm => unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) },
        // SAFETY: as for shmctl: msgctl ignores its buffer argument for IPC_RMID.
        SysvKind::Msg => unsafe { libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()) },
        // SAFETY: semctl's variadic fourth argument is not read for IPC_RMID, so none is passed;
        // integer arguments only.
        SysvKind::Sem => unsafe { libc::semctl(id, 0, libc::IPC_RMID) },
    };
    check(ret.into()).map(drop)
}
