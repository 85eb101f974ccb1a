//! The inputs of an install, copied out of the plugin directory before anything uses them:
//! the lock (checked, then written again from what was parsed) and every bundled wheel and
//! sdist. The key is computed again over the copies, so the environment stored under a key
//! holds exactly the bytes that key names, even if the plugin directory changes meanwhile.
//!
//! Each directory is opened from `/` one component at a time without following a symlink
//! (`nofollow_dir`), and each file beneath that descriptor without following one, as
//! a regular file, bounded in size: a plugin directory whose owner swaps a component for a
//! symlink meanwhile cannot make plugbox (root, typically) read a file elsewhere.

use super::lock::{self, Requirement};
use super::InstallError;
use crate::manifest::Manifest;
use crate::nofollow_dir::WalkError;
use crate::pyenv::store::{KeyBuilder, MAX_LOCK_BYTES, MAX_WHEELS, MAX_WHEEL_BYTES};
use crate::untrusted_file::{Node, UntrustedFile};
use sha2::{Digest, Sha256};
use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Suffixes of source distributions.
pub const SDIST_SUFFIXES: &[&str] = &[".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip"];

/// The copied inputs.
#[derive(Debug, Default)]
pub struct Inputs {
    /// The key over the copies.
    pub key: String,
    /// The lock's requirements, when there is a lock.
    pub requirements: Option<Vec<Requirement>>,
    /// The wheels directory (copies), when there is one.
    pub wheels: Option<PathBuf>,
    /// Copied wheels (`*.whl`).
    pub wheel_files: Vec<PathBuf>,
    /// Copied source distributions, with their sha256.
    pub sdists: Vec<(PathBuf, Vec<u8>)>,
}

fn input_error(path: &Path, reason: impl std::fmt::Display) -> InstallError {
    InstallError::Input {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// Copies the manifest's inputs into `dest` (created 0755) and computes their key for
/// `base_python`. Without `build_sdists`, a bundled sdist is refused, naming it.
pub fn copy(manifest: &Manifest, dest: &Path, base_python: &Path) -> Result<Inputs, InstallError> {
    let python = &manifest.file.python;
    super::perms::make_dir(dest, 0o755)?;
    let mut key = KeyBuilder::new(base_python, python.build_sdists);
    let mut inputs = Inputs::default();
    match &python.requirements {
        Some(rel) => {
            let path = manifest.dir.join(rel);
            let bytes = open_declared_file(&path)?
                .read_capped(MAX_LOCK_BYTES)
                .map_err(|e| input_error(&path, e))?;
            key.lock(Some(&Sha256::digest(&bytes)));
            let text = String::from_utf8(bytes).map_err(|_| input_error(&path, "not UTF-8"))?;
            let requirements = lock::parse(&text).map_err(|error| InstallError::Lock {
                path: path.clone(),
                error,
            })?;
            inputs.requirements = Some(requirements);
        }
        None => key.lock(None),
    }
    match &python.wheels {
        Some(rel) => {
            let dir = manifest.dir.join(rel);
            let copy = dest.join("wheels");
            let digests = copy_wheels(&dir, &copy, python.build_sdists, &mut inputs)?;
            key.wheels(Some(&digests));
            inputs.wheels = Some(copy);
        }
        None => key.wheels(None),
    }
    inputs.key = key.finish();
    Ok(inputs)
}

/// Opens the directory `dir` from `/` without following a symlink anywhere on the way.
fn open_declared_dir(dir: &Path) -> Result<OwnedFd, InstallError> {
    crate::nofollow_dir::open(dir, |_, _| Ok(())).map_err(|e| match e {
        WalkError::NotNormal => input_error(dir, "not a plain absolute path"),
        WalkError::Component(name, e) => input_error(
            dir,
            format!("{name:?}: {e} (declared inputs must not pass through a symlink)"),
        ),
    })
}

/// Opens the regular file `path` beneath its directory's descriptor ([`open_declared_dir`]).
fn open_declared_file(path: &Path) -> Result<UntrustedFile, InstallError> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(input_error(path, "not a file path"));
    };
    let dir = open_declared_dir(parent)?;
    open_file_at(&dir, name, path)
}

fn open_file_at(dir: &OwnedFd, name: &OsStr, shown: &Path) -> Result<UntrustedFile, InstallError> {
    match crate::untrusted_file::open_node_at(dir.as_fd(), name, shown) {
        Ok(Node::File(file)) => Ok(file),
        Ok(Node::Dir(_)) => Err(input_error(shown, "is a directory")),
        Err(e) => Err(input_error(shown, e)),
    }
}

/// Copies every file of the wheels directory (name and sha256 of each go into the key, as
/// [`crate::pyenv::store::wheel_digests`] computes them).
fn copy_wheels(
    dir: &Path,
    copy: &Path,
    build_sdists: bool,
    inputs: &mut Inputs,
) -> Result<Vec<(String, Vec<u8>)>, InstallError> {
    super::perms::make_dir(copy, 0o755)?;
    let fd = open_declared_dir(dir)?;
    let mut names = Vec::new();
    let listing = crate::untrusted_file::entries(fd.as_fd()).map_err(|e| input_error(dir, e))?;
    for entry in listing {
        let entry = entry.map_err(|e| input_error(dir, e))?;
        let name = entry
            .file_name()
            .into_string()
            .map_err(|n| input_error(dir, format!("{n:?} is not a UTF-8 file name")))?;
        names.push(name);
        if names.len() > MAX_WHEELS {
            return Err(input_error(dir, format!("more than {MAX_WHEELS} files")));
        }
    }
    names.sort();
    let mut digests = Vec::with_capacity(names.len());
    for name in names {
        let (from, to) = (dir.join(&name), copy.join(&name));
        let digest = copy_from(open_file_at(&fd, name.as_ref(), &from)?, &to)?;
        if name.ends_with(".whl") {
            inputs.wheel_files.push(to);
        } else if SDIST_SUFFIXES.iter().any(|s| name.ends_with(s)) {
            if !build_sdists {
                return Err(InstallError::SdistRefused {
                    what: from.display().to_string(),
                });
            }
            inputs.sdists.push((to, digest.clone()));
        }
        digests.push((name, digest));
    }
    Ok(digests)
}

/// Copies an open regular file (at most [`MAX_WHEEL_BYTES`]) to a new file of mode 0644;
/// returns its sha256.
pub fn copy_from(mut source: UntrustedFile, to: &Path) -> Result<Vec<u8>, InstallError> {
    let from = source.path().to_owned();
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(to)
        .map_err(|e| input_error(to, e))?;
    // Exactly 0644 whatever the umask: the sdist sandbox's uid reads it.
    out.set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(|e| input_error(to, e))?;
    let mut hash = Sha256::new();
    let mut failed = None;
    source
        .stream(MAX_WHEEL_BYTES, |chunk| {
            hash.update(chunk);
            if failed.is_none() {
                failed = out.write_all(chunk).err();
            }
        })
        .map_err(|e| input_error(&from, e))?;
    if let Some(e) = failed {
        return Err(input_error(to, e));
    }
    Ok(hash.finalize().to_vec())
}
