//! The mount syscalls behind a sandbox's private view of `/proc` and of the user database.
//!
//! The parent builds detached mounts (new mount API: `fsopen`, `fsconfig`, `fsmount`), which
//! no path on the host reaches. The child, between `fork` and `exec` and still root, clones
//! them (`open_tree`) into a mount namespace of its own and attaches them (`move_mount`). The
//! child-side functions are async-signal-safe: raw syscalls on integers and static strings.

use super::check;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

/// `MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC | MOUNT_ATTR_RDONLY`.
pub const MOUNT_ATTR_LOCKED_DOWN: libc::c_uint = 0x1 | 0x2 | 0x4 | 0x8;
/// The same attributes without `MOUNT_ATTR_RDONLY`, for a mount its creator must fill first.
pub const MOUNT_ATTR_NO_SPECIAL: libc::c_uint = 0x2 | 0x4 | 0x8;

/// A detached mount of a new `fstype` superblock with string `options`, mounted with
/// `attributes` (`MOUNT_ATTR_*`). No path reaches it; it lives as long as the returned fd and
/// the clones made of it.
pub fn detached_mount(
    fstype: &CStr,
    options: &[(&CStr, &CStr)],
    attributes: libc::c_uint,
) -> io::Result<OwnedFd> {
    // SAFETY: fsopen reads one NUL-terminated string; the fd it returns is owned here at once.
    let context = unsafe {
        let fd = check(libc::syscall(
            libc::SYS_fsopen,
            fstype.as_ptr(),
            FSOPEN_CLOEXEC,
        ))?;
        OwnedFd::from_raw_fd(fd as RawFd)
    };
    for (key, value) in options {
        // SAFETY: fsconfig reads two NUL-terminated strings that outlive the call.
        check(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                context.as_raw_fd(),
                FSCONFIG_SET_STRING,
                key.as_ptr(),
                value.as_ptr(),
                0,
            )
        })?;
    }
    // SAFETY: fsconfig(CMD_CREATE) takes integers and null pointers only.
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            context.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    })?;
    // SAFETY: fsmount takes integers; the fd it returns is owned here at once.
    unsafe {
        let fd = check(libc::syscall(
            libc::SYS_fsmount,
            context.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            attributes,
        ))?;
        Ok(OwnedFd::from_raw_fd(fd as RawFd))
    }
}

/// `open_tree(fd, "", OPEN_TREE_CLONE | AT_EMPTY_PATH | OPEN_TREE_CLOEXEC)`: a detached copy
/// of the mount (or bind of the file) `fd` refers to. Async-signal-safe; the caller owns and
/// closes the raw fd returned.
pub fn clone_mount(fd: RawFd) -> io::Result<RawFd> {
    // SAFETY: open_tree reads one static NUL-terminated string; the result is a plain fd.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            fd,
            c"".as_ptr(),
            OPEN_TREE_CLONE | libc::AT_EMPTY_PATH as libc::c_uint | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    check(ret).map(|fd| fd as RawFd)
}

/// `move_mount(fd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH)`: attaches the detached
/// mount `fd` at `target` in the caller's mount namespace. Async-signal-safe.
pub fn attach_mount(fd: RawFd, target: &CStr) -> io::Result<()> {
    // SAFETY: move_mount reads two NUL-terminated strings that outlive the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd,
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
    .map(drop)
}

/// `unshare(CLONE_NEWNS)`, then every mount made a slave (`MS_REC | MS_SLAVE` on `/`): nothing
/// mounted here propagates back to the host, while the host's later mounts and unmounts still
/// reach this namespace (so a long-lived sandbox does not keep an unmounted filesystem busy).
/// Async-signal-safe.
pub fn unshare_mount_namespace() -> io::Result<()> {
    // SAFETY: unshare takes one integer flag.
    check(unsafe { libc::unshare(libc::CLONE_NEWNS) }.into())?;
    // SAFETY: mount reads one static NUL-terminated string; the other pointers are null.
    check(
        unsafe {
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_SLAVE,
                std::ptr::null(),
            )
        }
        .into(),
    )
    .map(drop)
}

/// `close(fd)` for a raw fd this process owns. Async-signal-safe.
pub fn close_raw(fd: RawFd) {
    // SAFETY: the caller owns `fd` and does not use it again; a failed close leaves nothing
    // to undo.
    unsafe { libc::close(fd) };
}

/// Creates the regular file `name` (no symlink followed, must not exist) in the directory
/// `dir` with `mode`, writes `contents`, and returns an `O_PATH` fd of it.
pub fn create_file_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    mode: libc::mode_t,
    contents: &[u8],
) -> io::Result<OwnedFd> {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: openat reads one NUL-terminated string; the fd it returns is owned here at once.
    let file = unsafe {
        let fd = check(libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode).into())?;
        std::fs::File::from_raw_fd(fd as RawFd)
    };
    std::io::Write::write_all(&mut &file, contents)?;
    drop(file);
    let flags = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: as above.
    unsafe {
        let fd = check(libc::openat(dir.as_raw_fd(), name.as_ptr(), flags).into())?;
        Ok(OwnedFd::from_raw_fd(fd as RawFd))
    }
}
