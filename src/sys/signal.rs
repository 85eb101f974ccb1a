//! Termination signals as bytes on a pipe (the self-pipe trick): the handler only `write`s
//! the signal's number, so the host can stop in order (unload, seal the audit log) on an
//! ordinary task instead of dying with the log unsealed.

use super::check;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// The pipe's write end, once installed (never closed: a handler may run at any time).
static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);
/// The process that installed the handlers: a child forked from it runs them too until it
/// execs, and must not write into its parent's pipe.
static OWNER: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = PIPE_WRITE.load(Ordering::Acquire);
    // SAFETY: getpid is async-signal-safe and takes no arguments.
    if fd < 0 || unsafe { libc::getpid() } != OWNER.load(Ordering::Acquire) {
        return;
    }
    // SAFETY: __errno_location returns this thread's errno, valid for the thread's life;
    // saving and restoring it keeps the interrupted code's errno intact.
    let saved = unsafe { *libc::__errno_location() };
    let byte = u8::try_from(sig).unwrap_or(u8::MAX);
    // SAFETY: write is async-signal-safe; `byte` is a live one-byte buffer; the pipe is
    // non-blocking, so a full pipe (signals already pending) drops the byte, never blocks.
    unsafe { libc::write(fd, std::ptr::from_ref(&byte).cast(), 1) };
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
}

/// Installs a handler for each of `signals` that writes the signal's number as one byte to a
/// new pipe, and returns the pipe's read end (non-blocking, close-on-exec). Interrupted
/// system calls restart (`SA_RESTART`). Once per process: a second call fails with
/// `AlreadyExists`.
pub fn termination_pipe(signals: &[libc::c_int]) -> io::Result<OwnedFd> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a writable array of two ints, as pipe2 requires.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) }.into())?;
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: getpid takes no arguments.
    OWNER.store(unsafe { libc::getpid() }, Ordering::Release);
    let raw = write.as_raw_fd();
    if PIPE_WRITE
        .compare_exchange(-1, raw, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "termination signal handlers are already installed",
        ));
    }
    // Kept open for the life of the process: a handler may write to it at any time.
    let _ = write.into_raw_fd();
    for &sig in signals {
        // SAFETY: sigaction is plain data; zeroed is a valid value (no flags, empty mask).
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        // SAFETY: `action` is a live sigaction whose handler only makes async-signal-safe
        // calls; the old action is not asked for (null).
        check(unsafe { libc::sigaction(sig, &action, std::ptr::null_mut()) }.into())?;
    }
    Ok(read)
}

/// Reads one signal number from the pipe [`termination_pipe`] returned (`WouldBlock` when
/// none is pending).
pub fn read_signal(fd: BorrowedFd<'_>) -> io::Result<libc::c_int> {
    let mut byte = 0u8;
    // SAFETY: `byte` is a live, writable one-byte buffer; `fd` is open for the borrow.
    let n = check(
        unsafe { libc::read(fd.as_raw_fd(), std::ptr::from_mut(&mut byte).cast(), 1) }
            as libc::c_long,
    )?;
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(libc::c_int::from(byte))
}
