//! Advisory whole-file locks (`flock`), for state shared by every engine on the host.

use super::check;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Takes an exclusive `flock` on `fd`'s open file description without waiting: `Ok(false)`
/// when another open file description holds a lock on the file. The lock lasts until every
/// descriptor of this open file description is closed (the kernel drops it when its holder
/// dies).
pub fn try_lock_exclusive(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: flock takes a descriptor borrowed for the duration of the call and an integer
    // operation; it touches no memory of ours.
    let ret = unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    match check(ret.into()) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e),
    }
}
