//! The plugin's data directory as the engine holds it: made and opened once per activation
//! (see [`super::data_dir`]) and kept as a descriptor. Every `fs.*` path is resolved beneath
//! that descriptor, so renaming the directory away and putting a symlink in its place
//! afterwards changes nothing: the engine never opens it by path again.

use super::data_dir::{self, DataDirError};
use super::quota::{self, Quota};
use crate::policy::Limits;
use crate::sys;
use std::ffi::CString;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
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

/// One activation's hold on its data directory, shared by all its instances: the directory
/// descriptor, the slots bounding host threads, the file size limit and the quota.
pub struct PluginFs {
    dir: OwnedFd,
    path: PathBuf,
    slots: Arc<Semaphore>,
    file_size_bytes: u64,
    quota: Quota,
}

impl fmt::Debug for PluginFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginFs")
            .field("dir", &self.dir)
            .field("path", &self.path)
            .field("file_size_bytes", &self.file_size_bytes)
            .field("quota", &self.quota)
            .finish_non_exhaustive()
    }
}

impl PluginFs {
    /// Makes and opens the data directory `state_dir/key/data` (see [`data_dir`]), makes
    /// each of `roots` (every `fs.*` grant's roots) beneath it, and counts the bytes stored
    /// beneath `write_roots` (the `fs.write` grant's roots) for the quota.
    pub(crate) fn open(
        state_dir: &Path,
        key: &str,
        roots: &[String],
        write_roots: &[String],
        limits: &Limits,
    ) -> Result<Self, DataDirError> {
        let (fd, path) = data_dir::open(state_dir, key)?;
        for root in roots {
            data_dir::make_root(fd.as_fd(), root).map_err(|source| DataDirError::Root {
                path: path.clone(),
                root: root.clone(),
                source,
            })?;
        }
        let used = quota::count(fd.as_fd(), write_roots).map_err(|(root, source)| {
            DataDirError::Quota {
                path: path.clone(),
                root,
                source,
            }
        })?;
        Ok(Self {
            dir: fd,
            path,
            slots: Arc::new(Semaphore::new(FS_SLOTS)),
            file_size_bytes: limits.file_size_bytes,
            quota: Quota::new(limits.fs_quota_bytes, used),
        })
    }

    /// The data directory's path, as it was when it was opened (for people and host
    /// handlers; the built-in `fs.*` never open it by this path).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `path` (relative) beneath the held data directory: `openat2` with
    /// `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV` and
    /// `O_NOFOLLOW` added to `flags` (a new file gets mode 0644). The caller checks what it
    /// opened (`fstat`: its kind, and its links).
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
