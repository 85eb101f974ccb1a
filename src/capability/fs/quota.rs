//! The `fs.write` quota of one activation: the bytes stored beneath the plugin's `fs.write`
//! roots, counted once at activation by a bounded walk through descriptors, then kept in
//! memory and moved by each write's size change (new length minus old length).

use super::super::CallError;
use crate::sys;
use std::ffi::{CString, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

/// Most directory entries the activation walk visits, over all roots; past it the load is
/// refused rather than the usage guessed.
pub const MAX_WALK_ENTRIES: usize = 100_000;
/// Deepest directory the activation walk descends into, below a root.
pub const MAX_WALK_DEPTH: usize = 64;

/// Why the bytes beneath an `fs.write` root could not be counted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CountError {
    /// More entries than [`MAX_WALK_ENTRIES`].
    #[error("more than {MAX_WALK_ENTRIES} entries beneath the fs.write roots; plugbox counts them at activation for limits.fs_quota_mib")]
    TooMany,
    /// Directories nested deeper than [`MAX_WALK_DEPTH`].
    #[error("directories nested deeper than {MAX_WALK_DEPTH} levels")]
    TooDeep,
    /// A directory could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Bytes stored beneath the `fs.write` roots, against `limits.fs_quota_mib`.
#[derive(Debug)]
pub struct Quota {
    limit: u64,
    used: Mutex<u64>,
}

impl Quota {
    /// A quota of `limit` bytes of which `used` are taken.
    pub(crate) fn new(limit: u64, used: u64) -> Self {
        Self {
            limit,
            used: Mutex::new(used),
        }
    }

    /// Bytes counted as stored now.
    pub fn used(&self) -> u64 {
        *self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the change from a file of `old` bytes to one of `new` bytes, or refuses it
    /// `too_large` when it grows usage past the quota. A change that does not grow is
    /// always taken.
    pub(crate) fn charge(&self, old: u64, new: u64) -> Result<(), CallError> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let after = self.after(*used, old, new)?;
        *used = after;
        Ok(())
    }

    /// Would [`Quota::charge`] take this change? Takes nothing.
    pub(crate) fn allows(&self, old: u64, new: u64) -> Result<(), CallError> {
        self.after(self.used(), old, new).map(drop)
    }

    /// Corrects usage after a write that left the file `actual` bytes long instead of the
    /// `expected` it was charged for.
    pub(crate) fn settle(&self, expected: u64, actual: u64) {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        *used = used.saturating_sub(expected).saturating_add(actual);
    }

    fn after(&self, used: u64, old: u64, new: u64) -> Result<u64, CallError> {
        let after = used.saturating_sub(old).saturating_add(new);
        if new > old && after > self.limit {
            return Err(CallError::too_large(format!(
                "fs.write: {new} bytes would bring the plugin's stored bytes to {after}, past \
                 its quota limits.fs_quota_mib = {} MiB",
                self.limit >> 20
            )));
        }
        Ok(after)
    }
}

/// Sums the sizes of the regular files beneath `roots` (relative to `dir`, the held plugin
/// directory), never following a symlink. A root nested in another is counted once; a root
/// that does not exist (or is not a plain directory) holds nothing. On failure, names the
/// root.
pub(crate) fn count(dir: BorrowedFd<'_>, roots: &[String]) -> Result<u64, (String, CountError)> {
    let mut walk = Walk::default();
    for root in outermost(roots) {
        let fd = match sys::open_beneath(
            dir.as_raw_fd(),
            &cstring(root.as_os_str().as_bytes(), b".").map_err(|e| (show(&root), e))?,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NONBLOCK | libc::O_NOFOLLOW,
            0,
        ) {
            Ok(fd) => fd,
            Err(e) if gone(&e) => continue,
            Err(e) => return Err((show(&root), e.into())),
        };
        walk.dir(fd.as_fd(), 0).map_err(|e| (show(&root), e))?;
    }
    Ok(walk.bytes)
}

/// The roots, normalised (no `.` components), without those nested in another.
fn outermost(roots: &[String]) -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = roots
        .iter()
        .map(|r| {
            Path::new(r)
                .components()
                .filter(|c| !matches!(c, Component::CurDir))
                .collect()
        })
        .collect();
    roots.sort();
    let mut kept: Vec<PathBuf> = Vec::new();
    for root in roots {
        if !kept.iter().any(|k| root.starts_with(k)) {
            kept.push(root);
        }
    }
    kept
}

fn show(root: &Path) -> String {
    root.to_string_lossy().into_owned()
}

fn cstring(bytes: &[u8], empty: &[u8]) -> Result<CString, CountError> {
    let bytes = if bytes.is_empty() { empty } else { bytes };
    CString::new(bytes).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL).into())
}

/// Entries that vanished or were swapped for a symlink or a non-directory while walking.
fn gone(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT | libc::ELOOP | libc::ENOTDIR | libc::EXDEV)
    )
}

#[derive(Default)]
struct Walk {
    entries: usize,
    bytes: u64,
}

impl Walk {
    /// Adds the regular files beneath `dir`, `depth` levels below a root.
    fn dir(&mut self, dir: BorrowedFd<'_>, depth: usize) -> Result<(), CountError> {
        let mut subdirs: Vec<OsString> = Vec::new();
        // The directory itself, through its descriptor: no path is resolved again.
        for entry in crate::untrusted_file::entries(dir)? {
            let entry = entry?;
            self.entries += 1;
            if self.entries > MAX_WALK_ENTRIES {
                return Err(CountError::TooMany);
            }
            // d_type (or an lstat): never follows a symlink.
            let kind = match entry.file_type() {
                Ok(kind) => kind,
                Err(e) if gone(&e) => continue,
                Err(e) => return Err(e.into()),
            };
            if kind.is_dir() {
                subdirs.push(entry.file_name());
            } else if kind.is_file() {
                match entry.metadata() {
                    Ok(meta) => self.bytes = self.bytes.saturating_add(meta.len()),
                    Err(e) if gone(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if depth >= MAX_WALK_DEPTH && !subdirs.is_empty() {
            return Err(CountError::TooDeep);
        }
        for name in subdirs {
            let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NONBLOCK;
            let name = cstring(name.as_bytes(), b".")?;
            match sys::open_nofollow(Some(dir), &name, flags, 0) {
                Ok(sub) => self.dir(sub.as_fd(), depth + 1)?,
                Err(e) if gone(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;

    fn open(path: &Path) -> OwnedFd {
        std::fs::File::open(path).unwrap().into()
    }

    #[test]
    fn counts_regular_files_once_and_never_follows_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path();
        std::fs::create_dir_all(p.join("data/sub/deeper")).unwrap();
        std::fs::write(p.join("data/a"), [0; 10]).unwrap();
        std::fs::write(p.join("data/sub/deeper/b"), [0; 5]).unwrap();
        std::fs::write(p.join("outside"), [0; 1000]).unwrap();
        std::os::unix::fs::symlink(p.join("outside"), p.join("data/link")).unwrap();
        std::os::unix::fs::symlink(p, p.join("data/sub/up")).unwrap();
        let dir = open(p);
        let roots = [
            "data".to_owned(),
            "./data/sub".to_owned(),
            "none".to_owned(),
        ];
        assert_eq!(count(dir.as_fd(), &roots).unwrap(), 15);
        assert_eq!(count(dir.as_fd(), &[".".to_owned()]).unwrap(), 1015);
    }

    #[test]
    fn charges_growth_and_always_takes_a_shrink() {
        let q = Quota::new(100, 90);
        assert_eq!(
            q.charge(0, 11).unwrap_err().code,
            crate::ipc::ErrorCode::TooLarge
        );
        q.charge(5, 15).unwrap();
        assert_eq!(q.used(), 100);
        q.charge(50, 49).unwrap();
        assert_eq!(q.used(), 99);
        q.settle(49, 0);
        assert_eq!(q.used(), 50);
    }
}
