//! The plugin's data directory, where its `fs.*` roots live: `<state_dir>/<key>/data/`, with
//! `<key>` the plugin's state key (`<name>-<16 hex digits>`, as for its kv store in
//! `<state_dir>/<key>/kv/`). The plugin directory is never beneath it, so no `fs.*` call can
//! change the plugin's code.
//!
//! The host creates and opens it at activation, one component at a time and never by a path
//! someone could swap: the state directory is opened from `/` component by component with
//! `O_NOFOLLOW`; `<key>`, `data` and each granted root are then made (`mkdirat`, mode 0700,
//! owned by the host) and opened beneath the descriptor before them, again with `O_NOFOLLOW`.
//! An existing entry of that chain that is a symlink or not a directory refuses the load, and
//! so does a `<key>` or `data` directory every user may write.

use crate::nofollow_dir::{self, WalkError};
use crate::sys;
use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::quota::CountError;

/// The name of the data directory inside a plugin's state directory.
pub const DATA_DIR: &str = "data";

/// Mode of every directory the host makes in the chain: the host's alone.
const DIR_MODE: u32 = 0o700;

/// Why the plugin's data directory could not be made, opened, or its `fs.write` usage counted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataDirError {
    /// The state directory's path is not normalised (it holds `..`), or the current directory
    /// a relative one hangs from is unknown.
    #[error("data directory under {}: the state directory is not an absolute, normalised path", path.display())]
    NotNormal {
        /// The state directory as configured.
        path: PathBuf,
    },
    /// A component could not be made or opened as a directory without following a symlink.
    #[error("data directory {}: {component:?} is a symlink or not a directory, or cannot be made (openat O_NOFOLLOW|O_DIRECTORY: {source})", path.display())]
    Component {
        /// The data directory.
        path: PathBuf,
        /// The component that failed.
        component: String,
        /// The cause.
        source: std::io::Error,
    },
    /// An existing directory of the chain is writable by every user, so anyone could plant
    /// links in it.
    #[error("data directory {}: {component:?} is writable by every user (mode {mode:o}); make it the host's (chmod 700)", path.display())]
    WorldWritable {
        /// The data directory.
        path: PathBuf,
        /// The component.
        component: String,
        /// Its permission bits.
        mode: u32,
    },
    /// A granted `fs.*` root beneath the data directory is a symlink or not a directory, or
    /// could not be made.
    #[error("data directory {}: fs.* root {root:?}: {source}; a root is a directory beneath the data directory", path.display())]
    Root {
        /// The data directory.
        path: PathBuf,
        /// The granted root.
        root: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The bytes already stored beneath an `fs.write` root could not be counted.
    #[error("data directory {}: fs.write root {root:?}: {source}", path.display())]
    Quota {
        /// The data directory.
        path: PathBuf,
        /// The granted root.
        root: String,
        /// Why.
        source: CountError,
    },
}

/// `state_dir/key/data`, made absolute against the current directory if `state_dir` is
/// relative (as every other use of the state directory is).
pub fn data_dir_path(state_dir: &Path, key: &str) -> PathBuf {
    let base = if state_dir.is_absolute() {
        state_dir.to_owned()
    } else {
        std::env::current_dir().unwrap_or_default().join(state_dir)
    };
    base.join(key).join(DATA_DIR)
}

/// Makes (if absent) and opens `state_dir/key/data`: the state directory from `/` without
/// following a symlink, then `key` and `data` beneath it, each made mode 0700 if absent.
/// Returns the descriptor (`O_PATH`) and the path, for people and host handlers.
pub(crate) fn open(state_dir: &Path, key: &str) -> Result<(OwnedFd, PathBuf), DataDirError> {
    let path = data_dir_path(state_dir, key);
    let Some(state) = path.parent().and_then(Path::parent) else {
        return Err(DataDirError::NotNormal {
            path: state_dir.to_owned(),
        });
    };
    let fail = |component: &OsStr, source| DataDirError::Component {
        path: path.clone(),
        component: component.to_string_lossy().into_owned(),
        source,
    };
    let mut fd = nofollow_dir::open(state, |_, _| Ok(())).map_err(|e| match e {
        WalkError::NotNormal => DataDirError::NotNormal {
            path: state_dir.to_owned(),
        },
        WalkError::Component(name, source) => fail(OsStr::new(&name), source),
    })?;
    for name in [OsStr::new(key), OsStr::new(DATA_DIR)] {
        fd = make_child(fd.as_fd(), name).map_err(|e| fail(name, e))?;
        let mode = sys::fstat(fd.as_fd()).map_err(|e| fail(name, e))?.mode;
        if mode & 0o002 != 0 {
            return Err(DataDirError::WorldWritable {
                path,
                component: name.to_string_lossy().into_owned(),
                mode,
            });
        }
    }
    Ok((fd, path))
}

/// Makes `root` (relative, validated: only normal and `.` components) beneath `dir`, one
/// directory at a time, each made mode 0700 if absent and opened without following a symlink.
pub(crate) fn make_root(dir: BorrowedFd<'_>, root: &str) -> std::io::Result<()> {
    let mut held: Option<OwnedFd> = None;
    for component in Path::new(root).components() {
        let name = match component {
            Component::Normal(name) => name,
            Component::CurDir => continue,
            _ => return Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
        };
        let parent = held.as_ref().map_or(dir, |fd| fd.as_fd());
        let next = make_child(parent, name)?;
        held = Some(next);
    }
    Ok(())
}

/// `mkdirat(parent, name, 0700)` unless it exists, then opens it `O_PATH | O_DIRECTORY |
/// O_NOFOLLOW`: an existing symlink or non-directory fails (`ENOTDIR`).
fn make_child(parent: BorrowedFd<'_>, name: &OsStr) -> std::io::Result<OwnedFd> {
    let name = CString::new(name.as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    match sys::mkdirat(parent, &name, DIR_MODE) {
        Err(e) if e.raw_os_error() != Some(libc::EEXIST) => return Err(e),
        _ => {}
    }
    let fd = sys::open_nofollow(Some(parent), &name, libc::O_PATH | libc::O_DIRECTORY, 0)?;
    nofollow_dir::is_dir(fd.as_fd())?;
    Ok(fd)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn makes_the_chain_0700_and_refuses_a_symlink_anywhere_in_it() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().canonicalize().unwrap();
        let state = real.join("state");
        std::fs::create_dir(&state).unwrap();
        let (_, path) = open(&state, "p-0123").unwrap();
        assert_eq!(path, state.join("p-0123/data"));
        for dir in [state.join("p-0123"), path.clone()] {
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{}", dir.display());
        }
        // A symlink in the state directory's own path.
        std::os::unix::fs::symlink(&state, real.join("link")).unwrap();
        let e = open(&real.join("link"), "p-0123").unwrap_err();
        assert!(
            matches!(&e, DataDirError::Component { component, .. } if component == "link"),
            "{e}"
        );
        // A planted symlink as `<key>` or `data`.
        std::os::unix::fs::symlink(&real, state.join("q-1")).unwrap();
        let e = open(&state, "q-1").unwrap_err();
        assert!(
            matches!(&e, DataDirError::Component { component, source, .. }
                if component == "q-1" && source.raw_os_error() == Some(libc::ENOTDIR)),
            "{e}"
        );
        std::fs::create_dir(state.join("r-2")).unwrap();
        std::fs::write(state.join("r-2/data"), b"").unwrap();
        let e = open(&state, "r-2").unwrap_err();
        assert!(
            matches!(&e, DataDirError::Component { component, .. } if component == "data"),
            "{e}"
        );
        let e = open(&state.join("../state"), "k").unwrap_err();
        assert!(matches!(e, DataDirError::NotNormal { .. }), "{e}");
    }

    #[test]
    fn a_world_writable_data_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().canonicalize().unwrap();
        std::fs::create_dir_all(state.join("k/data")).unwrap();
        std::fs::set_permissions(state.join("k/data"), PermissionsExt::from_mode(0o777)).unwrap();
        let e = open(&state, "k").unwrap_err();
        assert!(
            matches!(&e, DataDirError::WorldWritable { component, .. } if component == "data"),
            "{e}"
        );
    }

    #[test]
    fn roots_are_made_as_directories_and_a_planted_link_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let fd: OwnedFd = std::fs::File::open(dir).unwrap().into();
        make_root(fd.as_fd(), "./a/b").unwrap();
        assert!(dir.join("a/b").is_dir());
        make_root(fd.as_fd(), "a/b").unwrap();
        std::os::unix::fs::symlink("/", dir.join("up")).unwrap();
        let e = make_root(fd.as_fd(), "up/x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTDIR));
        assert!(!Path::new("/x").exists());
        std::fs::write(dir.join("file"), b"").unwrap();
        assert!(make_root(fd.as_fd(), "file").is_err());
    }
}
