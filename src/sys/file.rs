//! Opening files a plugin author controls: `openat` without following a final symlink, and
//! the file-status flag the reader may need to clear.

use super::check;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `openat(dir or AT_FDCWD, path, flags | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY)`: a final
/// symlink fails with `ELOOP`; a special file is not waited on when `flags` holds
/// `O_NONBLOCK`. No mode: never creates.
pub fn open_nofollow(
    dir: Option<BorrowedFd<'_>>,
    path: &CStr,
    flags: libc::c_int,
) -> io::Result<OwnedFd> {
    let dirfd = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    let flags = (flags | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY) & !libc::O_CREAT;
    // SAFETY: `path` is a NUL-terminated string that outlives the call; `dirfd` is either
    // AT_FDCWD or an fd borrowed for the duration of the call; without O_CREAT/O_TMPFILE the
    // variadic mode argument is not read.
    let fd = unsafe { libc::openat(dirfd, path.as_ptr(), flags & !libc::O_TMPFILE) };
    check(fd.into())?;
    // SAFETY: openat succeeded, so `fd` is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Clears `O_NONBLOCK` on an open file description (`fcntl(F_GETFL)` then `F_SETFL`).
pub fn clear_nonblock(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_GETFL takes no argument and reads only the borrowed, open descriptor.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    check(flags.into())?;
    // SAFETY: F_SETFL takes an int of status flags; `fd` is borrowed and open.
    let ret = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) };
    check(ret.into()).map(|_| ())
}
