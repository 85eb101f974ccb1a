//! The plugin directory as the engine holds it: opened once per activation, component by
//! component from `/` without following a symlink, and kept as a descriptor. Every `fs.*`
//! path is resolved beneath that descriptor, so renaming the directory away and putting a
//! symlink in its place afterwards changes nothing: the engine never opens it by path again.

use super::quota::{self, CountError, Quota};
use crate::policy::Limits;
use crate::sys::{self, FileKind};
use std::ffi::CString;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How many `fs.*` calls of one activation (all its instances together) run on host threads
/// at once; the others wait for a slot.
///
/// This bounds the host threads a plugin can occupy: the wait happens *before*
/// `spawn_blocking`, so a call cancelled or timed out while waiting leaves nothing behind,
/// and the slot travels into the blocking work, so it is released only when that work ends,
/// not when the call's future is dropped. The work itself cannot block for long: files are
/// opened `O_NONBLOCK`, special files are refused after `fstat`, reads and writes are
/// bounded. Together: a plugin holds at most `FS_SLOTS` of tokio's 512 blocking threads, each
/// for the time of one bounded local file operation.
pub const FS_SLOTS: usize = 4;

/// Why the plugin directory could not be opened and its `fs.write` usage counted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PluginDirError {
    /// The directory's path is not absolute and normalised (it is canonicalised at load).
    #[error("plugin directory {}: not an absolute, normalised path", path.display())]
    NotNormal {
        /// The directory.
        path: PathBuf,
    },
    /// A component could not be opened as a directory without following a symlink.
    #[error("plugin directory {}: {component:?} is a symlink or not a directory (openat O_NOFOLLOW|O_DIRECTORY: {source})", path.display())]
    Component {
        /// The directory.
        path: PathBuf,
        /// The component that failed.
        component: String,
        /// The openat error.
        source: std::io::Error,
    },
    /// The bytes already stored beneath an `fs.write` root could not be counted.
    #[error("plugin directory {}: fs.write root {root:?}: {source}", path.display())]
    Quota {
        /// The directory.
        path: PathBuf,
        /// The granted root.
        root: String,
        /// Why.
        source: CountError,
    },
}

/// One activation's hold on its plugin directory, shared by all its instances: the
/// directory descriptor, the slots bounding host threads, the file size limit and the quota.
pub struct PluginFs {
    dir: OwnedFd,
    slots: Arc<Semaphore>,
    file_size_bytes: u64,
    quota: Quota,
}

impl fmt::Debug for PluginFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginFs")
            .field("dir", &self.dir)
            .field("file_size_bytes", &self.file_size_bytes)
            .field("quota", &self.quota)
            .finish_non_exhaustive()
    }
}

impl PluginFs {
    /// Opens `dir` (absolute, canonical) component by component and counts the bytes stored
    /// beneath `write_roots` (the `fs.write` grant's roots) for the quota.
    pub(crate) fn open(
        dir: &Path,
        write_roots: &[String],
        limits: &Limits,
    ) -> Result<Self, PluginDirError> {
        let fd = open_dir(dir)?;
        let used = quota::count(fd.as_fd(), write_roots).map_err(|(root, source)| {
            PluginDirError::Quota {
                path: dir.to_owned(),
                root,
                source,
            }
        })?;
        Ok(Self {
            dir: fd,
            slots: Arc::new(Semaphore::new(FS_SLOTS)),
            file_size_bytes: limits.file_size_bytes,
            quota: Quota::new(limits.fs_quota_bytes, used),
        })
    }

    /// Opens `path` (relative, already checked to lie in a granted root) beneath the held
    /// directory: `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
    /// RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV`.
    pub(crate) fn open_beneath(&self, path: &Path, flags: libc::c_int) -> std::io::Result<OwnedFd> {
        let bytes = if path.as_os_str().is_empty() {
            b"."
        } else {
            path.as_os_str().as_bytes()
        };
        let path =
            CString::new(bytes).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        sys::open_beneath(self.dir.as_raw_fd(), &path, flags | libc::O_NOFOLLOW, 0o644)
    }

    /// Waits for one of the [`FS_SLOTS`]; hold the permit until the blocking work ends.
    pub(crate) async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.slots).acquire_owned().await.ok()
    }

    /// `limits.file_size_bytes`: the largest file `fs.write` stores.
    pub(crate) fn file_size_bytes(&self) -> u64 {
        self.file_size_bytes
    }

    /// The activation's `fs.write` quota.
    pub(crate) fn quota(&self) -> &Quota {
        &self.quota
    }
}

/// Opens `path` from `/`, one component at a time, each `O_PATH | O_DIRECTORY | O_NOFOLLOW`
/// relative to the one before: a symlink anywhere in the path is refused.
fn open_dir(path: &Path) -> Result<OwnedFd, PluginDirError> {
    let fail = |component: &str, source| PluginDirError::Component {
        path: path.to_owned(),
        component: component.to_owned(),
        source,
    };
    let flags = libc::O_PATH | libc::O_DIRECTORY;
    let mut components = path.components();
    if components.next() != Some(Component::RootDir) {
        return Err(PluginDirError::NotNormal {
            path: path.to_owned(),
        });
    }
    let mut fd = sys::open_nofollow(None, c"/", flags, 0).map_err(|e| fail("/", e))?;
    for component in components {
        let Component::Normal(name) = component else {
            return Err(PluginDirError::NotNormal {
                path: path.to_owned(),
            });
        };
        let shown = name.to_string_lossy();
        let name = CString::new(name.as_bytes()).map_err(|_| PluginDirError::NotNormal {
            path: path.to_owned(),
        })?;
        fd = sys::open_nofollow(Some(fd.as_fd()), &name, flags, 0).map_err(|e| fail(&shown, e))?;
        is_dir(fd.as_fd()).map_err(|e| fail(&shown, e))?;
    }
    Ok(fd)
}

/// Belt and braces: `O_PATH | O_NOFOLLOW` opens a symlink itself, which `O_DIRECTORY` then
/// refuses; check the kind anyway.
fn is_dir(fd: BorrowedFd<'_>) -> std::io::Result<()> {
    match sys::fstat(fd)?.kind {
        FileKind::Directory => Ok(()),
        _ => Err(std::io::Error::from_raw_os_error(libc::ENOTDIR)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_symlink_anywhere_in_the_path_is_refused_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().canonicalize().unwrap();
        std::fs::create_dir_all(real.join("a/plugin")).unwrap();
        std::os::unix::fs::symlink(real.join("a"), real.join("link")).unwrap();
        assert!(open_dir(&real.join("a/plugin")).is_ok());
        let e = open_dir(&real.join("link/plugin")).unwrap_err();
        let PluginDirError::Component {
            component, source, ..
        } = &e
        else {
            panic!("{e}")
        };
        assert_eq!(component, "link");
        assert_eq!(source.raw_os_error(), Some(libc::ENOTDIR), "{e}");
        assert!(e.to_string().contains("link/plugin"), "{e}");
        let e = open_dir(Path::new("relative/dir")).unwrap_err();
        assert!(matches!(e, PluginDirError::NotNormal { .. }), "{e}");
    }
}
