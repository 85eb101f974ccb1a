//! The store's directories: the root (created 0755, checked without following a symlink),
//! one scratch directory per install (`ROOT/.tmp-<key>-<pid>`), and the last step, which
//! renames a finished environment to `ROOT/<key>` atomically.
//!
//! A scratch directory holds `env/` (the environment being built, renamed into place at the
//! end), `inputs/` (the copies of the lock and wheels pip installs from), and the
//! directories confined steps write (`build/`, `pyc/`). A killed install leaves its scratch
//! behind: the next install removes every `.tmp-*` whose process is gone.

use super::InstallError;
use crate::pyenv::store::COMPLETE_MARKER;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The uid and gid of the confined install steps when plugbox runs as root (the sandbox's
/// default identity).
pub const SANDBOX_IDS: (u32, u32) = (65534, 65534);
/// Prefix of scratch directories in the store.
pub const SCRATCH_PREFIX: &str = ".tmp-";

fn io_error(path: &Path, what: &str, e: impl std::fmt::Display) -> InstallError {
    InstallError::Store {
        path: path.to_owned(),
        reason: format!("{what}: {e}"),
    }
}

/// Creates the store root (and missing ancestors) with mode 0755, then checks it through a
/// descriptor opened without following a symlink: a directory owned by this user that
/// nobody else may write.
pub fn ensure_root(root: &Path) -> Result<(), InstallError> {
    let missing: Vec<PathBuf> = root
        .ancestors()
        .take_while(|a| a.symlink_metadata().is_err())
        .map(Path::to_owned)
        .collect();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(root)
        .map_err(|e| io_error(root, "cannot create", e))?;
    // Exactly 0755 whatever the umask, for the directories created here: every sandbox uid
    // traverses them to its environment.
    for dir in missing.iter().rev() {
        super::perms::set_file_mode(dir, 0o755)?;
    }
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
        .open(root)
        .map_err(|e| io_error(root, "not a directory (or a symlink)", e))?;
    let meta = handle.metadata().map_err(|e| io_error(root, "fstat", e))?;
    if meta.uid() != crate::sys::geteuid() {
        return Err(io_error(
            root,
            "unsafe",
            format!("owned by uid {}", meta.uid()),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(io_error(
            root,
            "unsafe",
            format!(
                "mode {:o}: group or others may write it",
                meta.mode() & 0o7777
            ),
        ));
    }
    if crate::sys::geteuid() == 0 {
        // Plugins (and the confined install steps) run as other uids: they must reach it.
        crate::sandbox::command::check_dir_reachable(root, SANDBOX_IDS.0, SANDBOX_IDS.1)
            .map_err(|e| io_error(root, "not readable by the sandbox uids", e))?;
    }
    Ok(())
}

/// One install's scratch directory; removed when dropped (unless renamed away).
#[derive(Debug)]
pub struct Scratch {
    /// `ROOT/.tmp-<key>-<pid>`.
    pub dir: PathBuf,
}

impl Scratch {
    /// Creates `ROOT/.tmp-<key>-<pid>` (mode 0755: confined steps, running as another uid,
    /// traverse it). `mkdir` never follows a symlink at its last component; a leftover of
    /// this very pid (a killed install whose pid was reused) is removed first.
    pub fn create(root: &Path, key: &str) -> Result<Self, InstallError> {
        remove_stale(root);
        let dir = root.join(format!("{SCRATCH_PREFIX}{key}-{}", std::process::id()));
        if super::perms::make_dir(&dir, 0o755).is_err() {
            // remove_dir_all removes a symlink itself, never what it points to.
            let _ = std::fs::remove_dir_all(&dir);
            super::perms::make_dir(&dir, 0o755)?;
        }
        Ok(Self { dir })
    }

    /// The environment being built.
    pub fn env(&self) -> PathBuf {
        self.dir.join("env")
    }

    /// The copies of the inputs.
    pub fn inputs(&self) -> PathBuf {
        self.dir.join("inputs")
    }

    /// A fresh subdirectory for a confined step, owned by `owner` (uid, gid) so that the
    /// step's uid can write it, mode 0700.
    pub fn step_dir(&self, name: &str, owner: (u32, u32)) -> Result<PathBuf, InstallError> {
        let dir = self.dir.join(name);
        super::perms::make_dir(&dir, 0o700)?;
        if crate::sys::geteuid() == 0 {
            std::os::unix::fs::lchown(&dir, Some(owner.0), Some(owner.1))
                .map_err(|e| io_error(&dir, "chown", e))?;
        }
        Ok(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes every `ROOT/.tmp-<key>-<pid>` whose process no longer exists (a killed install).
/// A pid reused since is mistaken for a live install and its scratch left for a later run.
fn remove_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(SCRATCH_PREFIX)) else {
            continue;
        };
        let pid = rest.rsplit('-').next().and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Is `ROOT/<key>` an installed environment (its marker holds the key)?
pub fn is_installed(target: &Path, key: &str) -> bool {
    crate::untrusted_file::read_to_string(&target.join(COMPLETE_MARKER), 128)
        .is_ok_and(|marker| marker == key)
}

/// Writes the marker into the finished environment, then renames it to `target`. When
/// `target` appears meanwhile (a concurrent install of the same key won), ours is discarded;
/// a `target` without a valid marker (not an environment of ours) is moved aside first.
pub fn publish(scratch: &Scratch, target: &Path, key: &str) -> Result<(), InstallError> {
    let env = scratch.env();
    let marker = env.join(COMPLETE_MARKER);
    std::fs::write(&marker, key).map_err(|e| io_error(&marker, "write", e))?;
    super::perms::set_file_mode(&marker, 0o644)?;
    for _ in 0..2 {
        match std::fs::rename(&env, target) {
            Ok(()) => return Ok(()),
            Err(_) if is_installed(target, key) => return Ok(()),
            Err(e) if target.symlink_metadata().is_err() => {
                return Err(io_error(target, "rename into place", e))
            }
            Err(_) => {
                let aside = scratch.dir.join("replaced");
                std::fs::rename(target, &aside)
                    .map_err(|e| io_error(target, "move the broken environment aside", e))?;
            }
        }
    }
    Err(io_error(target, "rename into place", "still occupied"))
}
