//! File calls on descriptors for host-side work on files a plugin controls: opening one path
//! component without following a symlink, `mkdirat`, `fstat`, `ftruncate`, and clearing
//! `O_NONBLOCK`.

use super::check;
use std::ffi::CStr;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// What kind of file an `fstat` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file.
    Regular,
    /// A directory.
    Directory,
    /// A symbolic link (only an `O_PATH | O_NOFOLLOW` descriptor can refer to one).
    Symlink,
    /// A FIFO, socket, character or block device.
    Special,
}

/// The parts of `struct stat` host-side file work looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    /// The file's kind.
    pub kind: FileKind,
    /// `st_size`, bytes (meaningful for regular files only).
    pub size: u64,
    /// `st_nlink`: how many names the file has.
    pub nlink: u64,
    /// The permission bits of `st_mode` (`0o7777`).
    pub mode: u32,
    /// `st_dev`: the filesystem holding the file.
    pub dev: u64,
    /// `st_ino`: the file on that filesystem (with `dev`, its identity).
    pub ino: u64,
}

/// `openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY)`, with `dir` = `AT_FDCWD`
/// when `None`. `name` is meant to be one path component (or `/`); a symlink as its last
/// component fails with `ELOOP` (or opens the link itself with `O_PATH`, which the caller
/// must then refuse after [`fstat`]).
pub fn open_nofollow(
    dir: Option<BorrowedFd<'_>>,
    name: &CStr,
    flags: libc::c_int,
    mode: u32,
) -> io::Result<OwnedFd> {
    let dirfd = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    let extra = if flags & libc::O_PATH == 0 {
        libc::O_NOCTTY
    } else {
        0
    };
    // SAFETY: `name` is NUL-terminated and outlives the call; `dirfd` is AT_FDCWD or a
    // descriptor borrowed for the duration of the call; the mode is passed by value.
    let ret = unsafe {
        libc::openat(
            dirfd,
            name.as_ptr(),
            flags | extra | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    let fd = check(ret.into())?;
    // SAFETY: openat returned a new fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `fstat(fd)`: the kind and size of the file `fd` refers to.
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<FileStat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is writable memory of the size of `struct stat`, and `fd` is a descriptor
    // borrowed for the duration of the call.
    let ret = unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) };
    check(ret.into())?;
    // SAFETY: fstat returned 0, so it filled in the whole struct.
    let st = unsafe { st.assume_init() };
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => FileKind::Regular,
        libc::S_IFDIR => FileKind::Directory,
        libc::S_IFLNK => FileKind::Symlink,
        _ => FileKind::Special,
    };
    // `nlink_t` is 64 bits on x86-64 and 32 on arm64; `dev_t` and `ino_t` are 64 bits.
    #[allow(clippy::useless_conversion)]
    let (nlink, dev, ino) = (
        u64::from(st.st_nlink),
        u64::from(st.st_dev),
        u64::from(st.st_ino),
    );
    Ok(FileStat {
        kind,
        size: u64::try_from(st.st_size).unwrap_or(0),
        nlink,
        mode: st.st_mode & 0o7777,
        dev,
        ino,
    })
}

/// `mkdirat(dir, name, mode)`: creates one directory named `name` (one path component) in
/// the directory open on `dir`. An existing entry of that name fails with `EEXIST`, whatever
/// it is (a symlink is never followed).
pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call; `dir` is a descriptor borrowed
    // for the duration of the call; the mode is passed by value.
    let ret = unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t) };
    check(ret.into()).map(drop)
}

/// `ftruncate(fd, len)`: sets the length of the regular file open for writing on `fd`.
pub fn ftruncate(fd: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: ftruncate reads no memory of ours; `fd` is borrowed for the call.
    let ret = unsafe { libc::ftruncate(fd.as_raw_fd(), len) };
    check(ret.into()).map(drop)
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
