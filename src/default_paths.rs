//! Where `plugbox run` and `plugbox serve` keep the audit log and plugin state when not told:
//! never the current directory. As root, `/var/lib/plugbox/{audit.jsonl,state}`; otherwise
//! `$XDG_STATE_HOME/plugbox/...` (an absolute `XDG_STATE_HOME` only, as the XDG base
//! directory specification says), else `$HOME/.local/state/plugbox/...`.
//!
//! The directories plugbox creates there are mode 0700, and the last ones (`plugbox`, `state`)
//! are checked after creation through a descriptor opened with `O_NOFOLLOW`: a symlink, a
//! directory owned by someone else, or one that others may write is refused, so nobody else
//! can redirect where records and state are written.

use std::ffi::OsString;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The system location, used when running as root.
pub const SYSTEM_DIR: &str = "/var/lib/plugbox";
/// The audit log's file name in the base directory.
pub const AUDIT_FILE: &str = "audit.jsonl";
/// The state directory's name in the base directory.
pub const STATE_DIR: &str = "state";

/// Why no default location could be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PathsError {
    /// Neither an absolute `XDG_STATE_HOME` nor an absolute `HOME` is set.
    #[error("paths: no default location: neither XDG_STATE_HOME nor HOME is an absolute path; give --audit and --state")]
    NoHome,
    /// A directory could not be created or is not safe to use.
    #[error("paths: {path}: {why}")]
    Unsafe {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

/// The base directory for a process with effective uid `euid` whose environment is read by
/// `var`: [`SYSTEM_DIR`] for root, else `$XDG_STATE_HOME/plugbox`, else
/// `$HOME/.local/state/plugbox`. Relative values are ignored.
pub fn base_dir(euid: u32, var: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf, PathsError> {
    if euid == 0 {
        return Ok(PathBuf::from(SYSTEM_DIR));
    }
    let absolute = |name| var(name).map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(xdg) = absolute("XDG_STATE_HOME") {
        return Ok(xdg.join("plugbox"));
    }
    absolute("HOME")
        .map(|home| home.join(".local/state/plugbox"))
        .ok_or(PathsError::NoHome)
}

/// The base directory of this process (its effective uid and environment).
pub fn current_base_dir() -> Result<PathBuf, PathsError> {
    base_dir(crate::sys::geteuid(), |name| std::env::var_os(name))
}

/// Creates `dir` (and missing ancestors) with mode 0700, then checks it through a descriptor
/// opened without following a symlink: it must be a directory owned by this process's
/// effective uid that neither group nor others may write.
pub fn ensure_private_dir(dir: &Path) -> Result<(), PathsError> {
    let unsafe_dir = |why: String| PathsError::Unsafe {
        path: dir.to_owned(),
        why,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| unsafe_dir(format!("cannot create: {e}")))?;
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
        .open(dir)
        .map_err(|e| unsafe_dir(format!("not a directory (or a symlink): {e}")))?;
    let meta = handle
        .metadata()
        .map_err(|e| unsafe_dir(format!("fstat: {e}")))?;
    if meta.uid() != crate::sys::geteuid() {
        return Err(unsafe_dir(format!(
            "owned by uid {}, not by us",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "mode {:o}: group or others may write it",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// The audit log path: `given`, or `BASE/audit.jsonl` with BASE created private.
pub fn audit_log(given: Option<PathBuf>) -> Result<PathBuf, PathsError> {
    if let Some(path) = given {
        return Ok(path);
    }
    let base = current_base_dir()?;
    ensure_private_dir(&base)?;
    Ok(base.join(AUDIT_FILE))
}

/// The state directory: `given`, or `BASE/state`, created private.
pub fn state_dir(given: Option<PathBuf>) -> Result<PathBuf, PathsError> {
    if let Some(path) = given {
        return Ok(path);
    }
    let state = current_base_dir()?.join(STATE_DIR);
    ensure_private_dir(&state)?;
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn root_uses_the_system_dir_and_users_their_state_home() {
        let both = [("XDG_STATE_HOME", "/x/state"), ("HOME", "/home/u")];
        assert_eq!(base_dir(0, env(&both)).unwrap(), Path::new(SYSTEM_DIR));
        assert_eq!(
            base_dir(1000, env(&both)).unwrap(),
            Path::new("/x/state/plugbox")
        );
        let relative = [("XDG_STATE_HOME", "rel"), ("HOME", "/home/u")];
        assert_eq!(
            base_dir(1000, env(&relative)).unwrap(),
            Path::new("/home/u/.local/state/plugbox")
        );
        assert!(matches!(
            base_dir(1000, env(&[("HOME", "")])),
            Err(PathsError::NoHome)
        ));
    }

    #[test]
    fn private_dirs_are_0700_and_symlinks_or_open_dirs_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/plugbox");
        ensure_private_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        ensure_private_dir(&dir).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let e = ensure_private_dir(&link).unwrap_err().to_string();
        assert!(e.contains("symlink"), "{e}");
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = ensure_private_dir(&open).unwrap_err().to_string();
        assert!(e.contains("others may write"), "{e}");
    }
}
