//! The inputs of an install, copied out of the plugin directory before anything uses them:
//! the lock (checked, then written again from what was parsed) and every bundled wheel and
//! sdist. The key is computed again over the copies, so the environment stored under a key
//! holds exactly the bytes that key names, even if the plugin directory changes meanwhile.
//!
//! Each file is read without following a symlink, as a regular file, bounded in size; the
//! declared paths must not pass through a symlink inside the plugin directory.

use super::lock::{self, Requirement};
use super::InstallError;
use crate::manifest::Manifest;
use crate::pyenv::store::{KeyBuilder, MAX_LOCK_BYTES, MAX_WHEELS, MAX_WHEEL_BYTES};
use crate::untrusted_file::UntrustedFile;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
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
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(dest)
        .map_err(|e| input_error(dest, e))?;
    let mut key = KeyBuilder::new(base_python, python.build_sdists);
    let mut inputs = Inputs::default();
    match &python.requirements {
        Some(rel) => {
            let path = declared(&manifest.dir, rel)?;
            let bytes = crate::untrusted_file::read(&path, MAX_LOCK_BYTES)
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
            let dir = declared(&manifest.dir, rel)?;
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

/// `DIR/rel`, refused when a component below the plugin directory is a symlink.
fn declared(dir: &Path, rel: &str) -> Result<PathBuf, InstallError> {
    let mut path = dir.to_owned();
    for component in Path::new(rel).components() {
        path.push(component);
        let meta = path.symlink_metadata().map_err(|e| input_error(&path, e))?;
        if meta.file_type().is_symlink() {
            return Err(input_error(
                &path,
                "is a symlink (declared inputs must not be)",
            ));
        }
    }
    Ok(path)
}

/// Copies every file of the wheels directory (name and sha256 of each go into the key, as
/// [`crate::pyenv::store::wheel_digests`] computes them).
fn copy_wheels(
    dir: &Path,
    copy: &Path,
    build_sdists: bool,
    inputs: &mut Inputs,
) -> Result<Vec<(String, Vec<u8>)>, InstallError> {
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(copy)
        .map_err(|e| input_error(copy, e))?;
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| input_error(dir, e))? {
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
        let digest = copy_file(&from, &to)?;
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

/// Copies a regular file (no symlink, at most [`MAX_WHEEL_BYTES`]) to a new file of mode
/// 0644; returns its sha256.
pub fn copy_file(from: &Path, to: &Path) -> Result<Vec<u8>, InstallError> {
    let mut source = UntrustedFile::open(from).map_err(|e| input_error(from, e))?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(to)
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
        .map_err(|e| input_error(from, e))?;
    if let Some(e) = failed {
        return Err(input_error(to, e));
    }
    Ok(hash.finalize().to_vec())
}
