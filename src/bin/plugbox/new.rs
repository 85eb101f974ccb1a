//! `plugbox new NAME [--dir DIR]`: scaffolds a plugin directory (manifest, entry, a test for
//! the SDK's fake host, a README) that `plugbox check` accepts and `plugbox run` runs.
//!
//! Often run as root, in a directory others may write to: nothing it creates follows a
//! symlink. The plugin directory is made with `mkdirat` and opened `O_NOFOLLOW | O_DIRECTORY`
//! beneath its parent; every file is created `O_CREAT | O_EXCL | O_NOFOLLOW` beneath that
//! descriptor, so a planted symlink or file makes it fail, never write elsewhere. The parent
//! is the caller's own path and is opened as given.

use plugbox::sys;
use std::ffi::{CString, OsStr};
use std::fs::{File, Permissions};
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The files of a new plugin: path beneath the plugin directory, template.
const FILES: &[(&str, &str)] = &[
    ("plugbox.toml", include_str!("templates/plugbox.toml")),
    ("main.py", include_str!("templates/main.py")),
    ("README.md", include_str!("templates/README.md")),
    ("tests/test_main.py", include_str!("templates/test_main.py")),
];
/// Subdirectories to make first.
const DIRS: &[&str] = &["tests"];
/// Modes set explicitly (whatever the umask): the plugin runs as another uid, which must read
/// its files.
const DIR_MODE: u32 = 0o755;
const FILE_MODE: u32 = 0o644;

/// Why `plugbox new` made nothing (or stopped part way, naming the file).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NewError {
    /// NAME breaks the manifest's `plugin.name` rule.
    #[error("new: invalid plugin name {0:?}: use 1 to 64 characters of a-z 0-9 - (the manifest's plugin.name rule)")]
    InvalidName(String),
    /// The directory exists and holds something.
    #[error("new: {}: the directory exists and is not empty", .0.display())]
    NotEmpty(PathBuf),
    /// The path exists and is not a directory, or is a symlink (never followed).
    #[error("new: {}: exists and is not a directory (a symlink is never followed)", .0.display())]
    NotADirectory(PathBuf),
    /// A system call failed on this path.
    #[error("new: {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> NewError + '_ {
    move |source| NewError::Io {
        path: path.to_owned(),
        source,
    }
}

/// `plugbox new`: prints what it made, or fails with exit status 125.
pub fn new_cmd(name: &str, dir: Option<PathBuf>) -> ExitCode {
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    match scaffold(name, &dir) {
        Ok(()) => {
            let text = dir.display().to_string();
            let shown = plugbox::display::escape(&text);
            println!("made plugin {name} in {shown}: plugbox.toml, main.py, tests/test_main.py, README.md");
            println!("next: edit main.py; python3 -m pytest -q {shown}/tests; plugbox run {shown} --stub app.user='\"Ada\"' --call greet_user; plugbox check {shown}");
            ExitCode::SUCCESS
        }
        Err(e) => crate::fail(&e),
    }
}

/// Makes the plugin `name` in `dir` (created, or existing and empty).
pub fn scaffold(name: &str, dir: &Path) -> Result<(), NewError> {
    check_name(name)?;
    let root = open_target(dir)?;
    for sub in DIRS {
        let path = dir.join(sub);
        let c_sub = c_name(OsStr::new(sub), &path)?;
        sys::mkdirat(root.as_fd(), &c_sub, DIR_MODE).map_err(io(&path))?;
        let fd = open_dir(root.as_fd(), &c_sub, &path)?;
        File::from(fd)
            .set_permissions(Permissions::from_mode(DIR_MODE))
            .map_err(io(&path))?;
    }
    for (rel, template) in FILES {
        let path = dir.join(rel);
        let (parent, file) = match rel.rsplit_once('/') {
            Some((sub, file)) => {
                let c_sub = c_name(OsStr::new(sub), &path)?;
                (Some(open_dir(root.as_fd(), &c_sub, &path)?), file)
            }
            None => (None, *rel),
        };
        let at = parent.as_ref().map_or(root.as_fd(), AsFd::as_fd);
        create_file(at, file, &path, &template.replace("{{name}}", name))?;
    }
    Ok(())
}

/// The manifest's `plugin.name` rule: `[a-z0-9-]{1,64}`.
fn check_name(name: &str) -> Result<(), NewError> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if name.is_empty()
        || name.len() > plugbox::manifest::MAX_NAME_CHARS
        || !name.chars().all(allowed)
    {
        return Err(NewError::InvalidName(name.to_owned()));
    }
    Ok(())
}

/// Opens the plugin directory, making it if it does not exist; refuses a non-empty one.
fn open_target(dir: &Path) -> Result<OwnedFd, NewError> {
    let last = dir
        .file_name()
        .ok_or_else(|| NewError::NotADirectory(dir.to_owned()))?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent_fd: OwnedFd = File::open(parent).map_err(io(parent))?.into();
    let c_last = c_name(last, dir)?;
    let made = match sys::mkdirat(parent_fd.as_fd(), &c_last, DIR_MODE) {
        Ok(()) => true,
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => false,
        Err(e) => return Err(io(dir)(e)),
    };
    let fd = open_dir(parent_fd.as_fd(), &c_last, dir)?;
    if made {
        let file = File::from(fd);
        file.set_permissions(Permissions::from_mode(DIR_MODE))
            .map_err(io(dir))?;
        return Ok(file.into());
    }
    // Listed through the descriptor: the directory opened is the one checked.
    let listing = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
    if std::fs::read_dir(listing)
        .map_err(io(dir))?
        .next()
        .is_some()
    {
        return Err(NewError::NotEmpty(dir.to_owned()));
    }
    Ok(fd)
}

/// Opens directory `name` beneath `at`, refusing a symlink or anything not a directory.
fn open_dir(at: BorrowedFd<'_>, name: &CString, path: &Path) -> Result<OwnedFd, NewError> {
    sys::open_nofollow(Some(at), name, libc::O_RDONLY | libc::O_DIRECTORY, 0).map_err(|e| {
        match e.raw_os_error() {
            Some(libc::ELOOP | libc::ENOTDIR) => NewError::NotADirectory(path.to_owned()),
            _ => io(path)(e),
        }
    })
}

/// Creates file `name` beneath `at` (`O_EXCL | O_NOFOLLOW`) holding `text`.
fn create_file(at: BorrowedFd<'_>, name: &str, path: &Path, text: &str) -> Result<(), NewError> {
    let c_file = c_name(OsStr::new(name), path)?;
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
    let fd = sys::open_nofollow(Some(at), &c_file, flags, FILE_MODE).map_err(io(path))?;
    let mut file = File::from(fd);
    file.set_permissions(Permissions::from_mode(FILE_MODE))
        .map_err(io(path))?;
    file.write_all(text.as_bytes()).map_err(io(path))
}

fn c_name(name: &OsStr, path: &Path) -> Result<CString, NewError> {
    CString::new(name.as_bytes())
        .map_err(|e| io(path)(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_follow_the_manifest_rule() {
        for good in ["a", "word-count", "x1", &"a".repeat(64)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Word",
            "a_b",
            "a.b",
            "a b",
            "é",
            "../x",
            &"a".repeat(65),
        ] {
            assert!(
                matches!(check_name(bad), Err(NewError::InvalidName(_))),
                "{bad}"
            );
        }
    }
}
