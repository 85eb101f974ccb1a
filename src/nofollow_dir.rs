//! Opening a directory named by an absolute path from `/`, one component at a time, each
//! `O_PATH | O_DIRECTORY | O_NOFOLLOW` relative to the one before: a symlink anywhere on the
//! way is refused, and no rename of a component after it was opened redirects the result. Used
//! for every host directory the engine keeps a descriptor of (the data directory's state
//! directory, the uid lock directory).

use crate::sys::{self, FileKind};
use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

/// Why [`open`] failed.
#[derive(Debug)]
pub(crate) enum WalkError {
    /// The path is not absolute, or holds `.`, `..` or a NUL.
    NotNormal,
    /// This component (`/` for the root) could not be opened, is not a directory, or failed
    /// the caller's check.
    Component(String, std::io::Error),
}

/// Opens `path` (absolute, normal components only) as described in the module
/// documentation; `check` runs on each component's descriptor once it is open, told whether
/// it is the last one, and refuses the walk by returning an error.
pub(crate) fn open(
    path: &Path,
    mut check: impl FnMut(BorrowedFd<'_>, bool) -> std::io::Result<()>,
) -> Result<OwnedFd, WalkError> {
    let flags = libc::O_PATH | libc::O_DIRECTORY;
    let mut components = path.components().peekable();
    if components.next() != Some(Component::RootDir) {
        return Err(WalkError::NotNormal);
    }
    let mut fd = sys::open_nofollow(None, c"/", flags, 0)
        .map_err(|e| WalkError::Component("/".into(), e))?;
    while let Some(component) = components.next() {
        let Component::Normal(name) = component else {
            return Err(WalkError::NotNormal);
        };
        let shown = name.to_string_lossy().into_owned();
        let c_name = CString::new(name.as_bytes()).map_err(|_| WalkError::NotNormal)?;
        let last = components.peek().is_none();
        fd = sys::open_nofollow(Some(fd.as_fd()), &c_name, flags, 0)
            .and_then(|fd| is_dir(fd.as_fd()).map(|()| fd))
            .and_then(|fd| check(fd.as_fd(), last).map(|()| fd))
            .map_err(|e| WalkError::Component(shown, e))?;
    }
    Ok(fd)
}

/// Belt and braces: `O_PATH | O_NOFOLLOW` opens a symlink itself, which `O_DIRECTORY` then
/// refuses; check the kind anyway.
pub(crate) fn is_dir(fd: BorrowedFd<'_>) -> std::io::Result<()> {
    match sys::fstat(fd)?.kind {
        FileKind::Directory => Ok(()),
        _ => Err(std::io::Error::from_raw_os_error(libc::ENOTDIR)),
    }
}
