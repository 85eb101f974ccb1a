//! Machine-wide exclusive per-instance uids: a lock file per uid in one root-owned directory
//! shared by every engine on the host (`/run/plugbox/uids` by default), held with `flock` for
//! as long as an instance runs under the uid.
//!
//! Two engines (two processes) with the same uid range therefore never run two instances under
//! one uid: the second engine finds the lock taken and moves on to the next id. The kernel
//! drops a lock when its holder dies, so a crashed engine leaves no stale lock; what it may
//! leave is *residue* under the uid. The lock file says which: a holder that ended cleanly
//! (its process tree gone, the uid's System V IPC objects removed) writes `free`; any other
//! content (`held` and the holder's pid, or a file just created) makes the next taker check the uid first:
//! an id with a live process is skipped, and its System V IPC objects are removed before use.

use crate::nofollow_dir::{self, WalkError};
use crate::sandbox::sysv;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The lock directory every engine on the host shares unless configured otherwise.
pub const DEFAULT_UID_LOCK_DIR: &str = "/run/plugbox/uids";

/// What a cleanly released lock file holds. Every mark has this width, so marking never
/// changes the file's size (a truncate costs a journal commit on ext4: milliseconds).
const FREE: &[u8; MARK_BYTES] = b"free           \n";
/// Width of a lock file's content.
const MARK_BYTES: usize = 16;

/// The lock directory cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("engine: uid locks: {path}: {message}")]
pub struct UidLockError {
    /// The directory or file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub message: String,
}

/// The open lock directory (root-owned, not writable by group or others, no symlink on the
/// way), held for the engine's life.
#[derive(Debug)]
pub(crate) struct UidLocks {
    dir: OwnedFd,
    path: PathBuf,
}

/// One held uid lock; dropping it without [`UidLock::release_clean`] leaves the uid marked as
/// possibly holding residue.
#[derive(Debug)]
pub(crate) struct UidLock {
    file: File,
}

impl UidLocks {
    /// Creates (mode 0700) and opens the lock directory.
    pub(crate) fn open(path: &Path) -> Result<Self, UidLockError> {
        let fail = |message: String| UidLockError {
            path: path.to_owned(),
            message,
        };
        if !path.is_absolute() {
            return Err(fail("must be an absolute path".into()));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|e| fail(format!("cannot create: {e}")))?;
        let dir = nofollow_dir::open(path, |dir, last| {
            check_owned_dir(dir, !last).map_err(std::io::Error::other)
        })
        .map_err(|e| match e {
            WalkError::NotNormal => {
                fail("must be a normal absolute path (no '.', '..' or NUL)".into())
            }
            // The caller's own check: the directory is there but unsafe.
            WalkError::Component(name, e) if e.kind() == std::io::ErrorKind::Other => {
                fail(format!("{name:?} {e}"))
            }
            WalkError::Component(name, e) => {
                fail(format!("cannot open {name:?} without following links: {e}"))
            }
        })?;
        Ok(Self {
            dir,
            path: path.to_owned(),
        })
    }

    /// Takes `id`'s lock if no other engine holds it and nothing of a previous holder is left
    /// under the id. `None`: the id is in use (locked, or a process still runs under it).
    pub(crate) fn try_take(&self, id: u32) -> Result<Option<UidLock>, UidLockError> {
        let name = std::ffi::CString::new(id.to_string()).unwrap_or_default();
        let fail = |message: String| UidLockError {
            path: self.path.join(id.to_string()),
            message,
        };
        let fd = crate::sys::open_nofollow(
            Some(self.dir.as_fd()),
            &name,
            libc::O_RDWR | libc::O_CREAT,
            0o600,
        )
        .map_err(|e| fail(format!("cannot open: {e}")))?;
        let mut file = File::from(fd);
        let meta = file.metadata().map_err(|e| fail(e.to_string()))?;
        if !meta.is_file() || meta.nlink() != 1 {
            return Err(fail("is not a regular file with one link".into()));
        }
        match crate::sys::try_lock_exclusive(file.as_fd()) {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(e) => return Err(fail(format!("flock: {e}"))),
        }
        let mut state = Vec::with_capacity(MARK_BYTES + 1);
        (&mut file)
            .take(MARK_BYTES as u64 + 1)
            .read_to_end(&mut state)
            .map_err(|e| fail(e.to_string()))?;
        if state != FREE && !residue_cleared(id).map_err(|e| fail(e.to_string()))? {
            return Ok(None);
        }
        let mut lock = UidLock { file };
        let mut held = *b"held           \n";
        let pid = std::process::id().to_string();
        held[5..5 + pid.len().min(10)].copy_from_slice(&pid.as_bytes()[..pid.len().min(10)]);
        lock.mark(&held).map_err(|e| fail(e.to_string()))?;
        Ok(Some(lock))
    }
}

impl UidLock {
    /// Marks the uid free of residue (the caller's process tree is gone and its System V IPC
    /// objects removed), then releases the lock.
    pub(crate) fn release_clean(mut self) {
        if let Err(e) = self.mark(FREE) {
            tracing::warn!(error = %e, "cannot mark a uid lock free; the next taker checks it");
        }
    }

    fn mark(&mut self, content: &[u8; MARK_BYTES]) -> std::io::Result<()> {
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(content)?;
        // Only a file found at another size (new, or written by something else) is cut.
        if self.file.metadata()?.len() != MARK_BYTES as u64 {
            self.file.set_len(MARK_BYTES as u64)?;
        }
        Ok(())
    }
}

/// Refuses a directory an unprivileged user could change: it must be owned by this process's
/// euid (or root) and not writable by group or others; on the way (`sticky_ok`), a sticky
/// directory such as `/tmp` is accepted, since others cannot rename or remove what root put
/// there.
fn check_owned_dir(dir: BorrowedFd<'_>, sticky_ok: bool) -> Result<(), String> {
    let meta = File::from(dir.try_clone_to_owned().map_err(|e| e.to_string())?)
        .metadata()
        .map_err(|e| e.to_string())?;
    let euid = crate::sys::geteuid();
    if !meta.is_dir() {
        return Err("is not a directory".into());
    }
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(format!("is owned by uid {}, not root", meta.uid()));
    }
    let sticky = meta.mode() & 0o1000 != 0;
    if meta.mode() & 0o022 != 0 && !(sticky_ok && sticky) {
        return Err(format!(
            "is writable by group or others (mode {:o})",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Checks a uid whose last holder did not end cleanly: `false` if a process still runs under
/// it; else its System V IPC objects are removed and the id is usable.
fn residue_cleared(id: u32) -> std::io::Result<bool> {
    if process_runs_as(id)? {
        return Ok(false);
    }
    let removed = sysv::remove_owned_by(id);
    if removed.total() > 0 || removed.failed > 0 {
        tracing::info!(
            uid = id,
            ?removed,
            "removed System V IPC objects a previous holder left"
        );
    }
    Ok(removed.failed == 0)
}

/// Does any process on the host have `id` as its real, effective, saved or filesystem uid?
/// (Read from `/proc/PID/status`: a plugin process is not dumpable, so its `/proc/PID` is
/// owned by root whatever its uid.)
pub(crate) fn process_runs_as(id: u32) -> std::io::Result<bool> {
    let wanted = id.to_string();
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let name = entry.file_name();
        if !name.as_encoded_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        // A process that ended since the listing has no status any more: not a user.
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"));
        if uids.is_some_and(|u| u.split_whitespace().any(|u| u == wanted)) {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn locks() -> (tempfile::TempDir, UidLocks) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("uids");
        let locks = UidLocks::open(&dir).unwrap();
        (tmp, locks)
    }

    #[test]
    fn a_held_uid_is_not_handed_out_again_until_released() {
        let (_tmp, locks) = locks();
        let other = UidLocks::open(&locks.path).unwrap();
        let id = 1_234_567_001;
        let held = locks.try_take(id).unwrap().expect("free");
        assert!(other.try_take(id).unwrap().is_none(), "a second holder");
        held.release_clean();
        let again = other.try_take(id).unwrap().expect("released");
        let mark = std::fs::read(locks.path.join(id.to_string())).unwrap();
        let expected = format!("held {:<10}\n", std::process::id());
        assert_eq!(String::from_utf8(mark).unwrap(), expected);
        drop(again);
    }

    #[test]
    fn a_uid_with_a_live_process_is_skipped_whatever_its_lock_says() {
        let (_tmp, locks) = locks();
        let mine = crate::sys::geteuid();
        assert!(process_runs_as(mine).unwrap());
        assert!(locks.try_take(mine).unwrap().is_none());
        assert!(!process_runs_as(1_234_567_002).unwrap());
    }

    #[test]
    fn a_lock_directory_others_can_write_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("open");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        let e = UidLocks::open(&dir).unwrap_err();
        assert!(e.message.contains("writable by group or others"), "{e}");
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(tmp.path(), &link).unwrap();
        let e = UidLocks::open(&link.join("x")).unwrap_err();
        assert!(e.message.contains("without following links"), "{e}");
    }
}
