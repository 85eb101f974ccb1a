//! The IPC channel and file access beneath a root: sockets, `recvmsg` with fd detection,
//! `openat2`, socket buffers, and the SIGPIPE default for reporting commands.

use super::check;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

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
/// RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV})`: opens `path` strictly beneath `dir`, never
/// through a symlink and never across a mount point.
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
    const RESOLVE_NO_XDEV: u64 = 0x01;
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
        resolve: RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
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
    async_owned_fd_with(fd, tokio::io::Interest::READABLE)
}

/// Registers an owned fd (a socket used with `MSG_DONTWAIT`) with the tokio reactor for both
/// readability and writability.
pub fn async_owned_fd_rw(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    async_owned_fd_with(
        fd,
        tokio::io::Interest::READABLE | tokio::io::Interest::WRITABLE,
    )
}

fn async_owned_fd_with(
    fd: OwnedFd,
    interest: tokio::io::Interest,
) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an `OwnedFd` is a valid open descriptor that nobody else can close, and its
    // `as_raw_fd` always returns the same number, for as long as the AsyncFd owns it.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, interest) }
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

/// `sendmsg(fd, data, SCM_RIGHTS fds, MSG_DONTWAIT | MSG_NOSIGNAL)`: `data` with descriptors
/// attached to its first byte (a bulk body's memfd; a zygote instance's channel and output
/// pipes). Returns the bytes sent (the fds went with them if > 0). The descriptors stay open
/// here; the peer gets its own copies.
pub fn send_with_fds(fd: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    const MAX_FDS: usize = 8;
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many fds"));
    }
    // Room for one SCM_RIGHTS header and MAX_FDS ints, 8-byte aligned.
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let payload = std::mem::size_of_val(fds) as u32;
        // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic.
        let (space, len) = unsafe { (libc::CMSG_SPACE(payload), libc::CMSG_LEN(payload)) };
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as usize;
        // SAFETY: `control` is 64 bytes, 8-aligned, at least CMSG_SPACE(8 ints); CMSG_FIRSTHDR
        // points at its start and the payload, copied bytewise (no alignment assumed), stays
        // within `len` bytes of it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = len as usize;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(cmsg),
                payload as usize,
            );
        }
    }
    // SAFETY: `msg` points at `iov` (reading `data`, live for the call) and at `control`,
    // both outliving the call; the kernel only reads them.
    let ret = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    check(ret as libc::c_long).map(|n| n as usize)
}
