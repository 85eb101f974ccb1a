//! inotify(7): waiting for a change among the files of one directory without polling (`plugbox
//! audit show --follow` sleeps here until the log is appended to, rotated or replaced).

use super::check;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// What a [`DirWatch`] wakes up for: a file in the directory written or closed after writing,
/// created, moved in or out, or deleted; or the directory itself deleted or moved.
const MASK: u32 = libc::IN_MODIFY
    | libc::IN_CLOSE_WRITE
    | libc::IN_CREATE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR;

/// Room for at least one event with the longest name (`sizeof(struct inotify_event)` is 16,
/// `NAME_MAX` 255); more events wait in the kernel's queue for the next read.
const EVENT_BUFFER: usize = 4096;

/// An inotify instance watching one directory. Events queue in the kernel from the moment it
/// is made, so a change made after [`DirWatch::new`] returns is never missed by a later
/// [`DirWatch::wait`], however long the caller takes in between.
#[derive(Debug)]
pub struct DirWatch {
    fd: OwnedFd,
}

impl DirWatch {
    /// Watches `dir` (which must be a directory: `IN_ONLYDIR`).
    pub fn new(dir: &Path) -> io::Result<Self> {
        let path = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the path"))?;
        // SAFETY: inotify_init1 takes only flags and returns a new descriptor or -1; it touches
        // no memory of ours.
        let raw = check(unsafe { libc::inotify_init1(libc::IN_CLOEXEC) }.into())?;
        let raw = i32::try_from(raw).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
        // SAFETY: `raw` is the descriptor inotify_init1 just returned: open, and owned by
        // nothing else, so the OwnedFd is its only owner and closes it once.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: `path` is a NUL-terminated string that lives across the call, which only
        // reads it; `fd` is the open inotify descriptor above.
        check(unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), MASK) }.into())?;
        Ok(Self { fd })
    }

    /// Blocks until at least one event is queued, and consumes the events that fit in one
    /// read (the caller looks at the files itself; which event woke it does not matter).
    /// Retries on `EINTR`.
    pub fn wait(&self) -> io::Result<()> {
        let mut buf = [0u8; EVENT_BUFFER];
        loop {
            // SAFETY: `buf` is writable for `buf.len()` bytes and outlives the call; the kernel
            // writes at most that many. `fd` is the open inotify descriptor.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            match check(n as libc::c_long) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_change_made_before_waiting_is_not_missed() {
        let dir = tempfile::tempdir().unwrap();
        let watch = DirWatch::new(dir.path()).unwrap();
        std::fs::write(dir.path().join("log"), b"line\n").unwrap();
        watch.wait().unwrap(); // returns at once: the events were queued
    }

    #[test]
    fn a_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"").unwrap();
        let e = DirWatch::new(&file).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTDIR));
    }
}
