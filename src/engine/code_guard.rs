//! Refuses a load whose effective `[filesystem] write` would let the plugin change the code it
//! runs: a write rule on its plugin directory, on one of that directory's ancestors (Landlock
//! write rights include rename and remove, so the plugin could move its directory away and
//! put another in its place), or on anything inside it. The SDK directory every plugin runs
//! is protected the same way.
//!
//! Decided on what the paths *are*, not how they are spelled: each write path is opened
//! following symlinks, as the Landlock ruleset opens it, and compared by device and inode
//! with the protected directory and each of its ancestors (walking `..` through descriptors,
//! so a bind mount or symlink cannot disguise it). `execute` and `read` rules are not
//! refused: neither lets the plugin change a file.
//!
//! What this does not see: a hard link to a plugin file, or a bind mount of the plugin
//! directory, placed by someone else inside a writable directory (the kernel would let the
//! plugin write through it); link and mount nothing of the code into a plugin's writable
//! paths.

use crate::sys;
use std::fs::OpenOptions;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Most `..` steps walked up from one directory (deeper than any real tree).
const MAX_DEPTH: usize = 4096;

/// A `[filesystem] write` path that reaches protected code.
#[derive(Debug, thiserror::Error)]
#[error(
    "{field} = {} {how} {what} {}: the plugin could change the code it runs; grant write \
     access to a directory outside it (fs.* data lives in the plugin's data directory)",
    crate::audit::escape_text(&path.display().to_string()),
    crate::audit::escape_text(&dir.display().to_string())
)]
pub struct CodeWritable {
    /// The policy field, `filesystem.write[i]`.
    pub field: String,
    /// The write path as written.
    pub path: PathBuf,
    /// `covers` (it is the directory or an ancestor), `lies inside`, or `cannot be checked
    /// against` (it opens, but its place could not be worked out: refused all the same).
    pub how: &'static str,
    /// `the plugin directory` or `the SDK directory`.
    pub what: &'static str,
    /// The protected directory.
    pub dir: PathBuf,
}

/// Refuses the first of `write` (the effective `[filesystem] write` paths) that covers or
/// lies inside one of `protected` (`(what, directory)`, e.g. `("the plugin directory",
/// dir)`). A write path that cannot be opened is left to the sandbox preparation, which
/// refuses it.
pub(crate) fn refuse_writable_code(
    write: &[PathBuf],
    protected: &[(&'static str, &Path)],
) -> Result<(), CodeWritable> {
    for &(what, dir) in protected {
        let Ok(opened) = open_following(dir) else {
            continue;
        };
        let code_chain = chain(opened.as_fd()).unwrap_or_default();
        let Some(&code) = code_chain.first() else {
            continue;
        };
        for (i, path) in write.iter().enumerate() {
            let refuse = |how| CodeWritable {
                field: format!("filesystem.write[{i}]"),
                path: path.clone(),
                how,
                what,
                dir: dir.to_owned(),
            };
            let reached = match reach(path) {
                Reach::Missing => continue,
                Reach::Unknown => return Err(refuse("cannot be checked against")),
                Reach::Found(reached) => reached,
            };
            if reached.is_dir && code_chain.contains(&reached.id) {
                return Err(refuse("covers"));
            }
            if reached.above.contains(&code) {
                return Err(refuse("lies inside"));
            }
        }
    }
    Ok(())
}

/// What a write path opens to.
struct Reached {
    /// Its `(dev, ino)`.
    id: (u64, u64),
    is_dir: bool,
    /// The directories from it (or, for a file, from its directory) up to `/`.
    above: Vec<(u64, u64)>,
}

/// What a write path turned out to be.
enum Reach {
    /// It does not open: the sandbox preparation refuses it.
    Missing,
    /// It opens but its place could not be worked out: refused (fail closed).
    Unknown,
    /// It opens to this.
    Found(Reached),
}

/// What `path` opens to, following symlinks.
fn reach(path: &Path) -> Reach {
    let Ok(fd) = open_following(path) else {
        return Reach::Missing;
    };
    found(fd.as_fd()).map_or(Reach::Unknown, Reach::Found)
}

/// The identity and chain of the object open on `fd`.
fn found(fd: BorrowedFd<'_>) -> Option<Reached> {
    let stat = sys::fstat(fd).ok()?;
    let is_dir = stat.kind == sys::FileKind::Directory;
    let above = if is_dir {
        chain(fd)?
    } else {
        // Where the file really is; its directory's chain.
        let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
        chain(open_following(real.parent()?).ok()?.as_fd())?
    };
    Some(Reached {
        id: (stat.dev, stat.ino),
        is_dir,
        above,
    })
}

/// Opens `path` `O_PATH`, following symlinks, as the Landlock ruleset does.
fn open_following(path: &Path) -> std::io::Result<OwnedFd> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(path)?;
    Ok(file.into())
}

/// `(dev, ino)` of the directory open on `dir` and of each directory above it, through `..`
/// (never a symlink), up to the root (whose `..` is itself); `None` if a step fails or the
/// root is not reached within [`MAX_DEPTH`] steps.
fn chain(dir: BorrowedFd<'_>) -> Option<Vec<(u64, u64)>> {
    let first = sys::fstat(dir).ok()?;
    let mut ids = vec![(first.dev, first.ino)];
    let flags = libc::O_PATH | libc::O_DIRECTORY;
    let mut fd = sys::open_nofollow(Some(dir), c"..", flags, 0).ok()?;
    for _ in 0..MAX_DEPTH {
        let stat = sys::fstat(fd.as_fd()).ok()?;
        let id = (stat.dev, stat.ino);
        if ids.last() == Some(&id) {
            return Some(ids);
        }
        ids.push(id);
        fd = sys::open_nofollow(Some(fd.as_fd()), c"..", flags, 0).ok()?;
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn refuses_ancestors_the_directory_and_anything_inside_it_however_spelled() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let plugin = root.join("plugins/p");
        std::fs::create_dir_all(plugin.join("sub")).unwrap();
        std::fs::write(plugin.join("main.py"), b"").unwrap();
        std::fs::create_dir_all(root.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(root.join("plugins"), root.join("alias")).unwrap();
        let protected = [("the plugin directory", plugin.as_path())];
        let check =
            |w: &Path| refuse_writable_code(&[root.join("elsewhere"), w.into()], &protected);
        for (w, how) in [
            (root.clone(), "covers"),
            (root.join("plugins"), "covers"),
            (plugin.clone(), "covers"),
            (root.join("alias"), "covers"),
            (root.join("alias/p/sub"), "lies inside"),
            (plugin.join("main.py"), "lies inside"),
        ] {
            let e = check(&w).unwrap_err();
            assert_eq!(
                (e.how, e.field.as_str()),
                (how, "filesystem.write[1]"),
                "{e}"
            );
            assert!(e.to_string().contains(&plugin.display().to_string()), "{e}");
        }
        check(&root.join("elsewhere")).unwrap();
        check(&root.join("missing")).unwrap();
    }
}
