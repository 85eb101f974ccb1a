//! The finished environment's modes, and its move from the scratch path to its final one.
//!
//! Every directory becomes 0755 and every file 0644 (0755 when it had an execute bit): the
//! installing user owns the tree, every sandbox uid may read it, nobody else may write it.
//! Symlinks (the venv's `bin/python`) are never followed: `chmod` through one would change
//! the base interpreter.
//!
//! pip and venv write the path they were given into `bin/` scripts (`#!ENV/bin/python`,
//! `activate`) and into `pyvenv.cfg`; those become the final path.

use super::InstallError;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Largest `bin/` script or `pyvenv.cfg` rewritten with the final path.
const MAX_SCRIPT_BYTES: u64 = 1024 * 1024;

fn io_error(path: &Path, what: &str, e: impl std::fmt::Display) -> InstallError {
    InstallError::Store {
        path: path.to_owned(),
        reason: format!("{what}: {e}"),
    }
}

/// Creates the directory `path` (its parent must exist) with exactly `mode`, whatever the
/// umask: confined steps running as another uid read what is beneath it.
pub fn make_dir(path: &Path, mode: u32) -> Result<(), InstallError> {
    std::fs::create_dir(path).map_err(|e| io_error(path, "cannot create", e))?;
    set_file_mode(path, mode)
}

/// Sets `path`'s mode (a file or directory, never through a symlink: checked first).
pub fn set_file_mode(path: &Path, mode: u32) -> Result<(), InstallError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| io_error(path, "chmod", e))
}

/// Makes the tree under `dir` world-readable and writable by its owner only.
pub fn world_readable(dir: &Path) -> Result<(), InstallError> {
    set_file_mode(dir, 0o755)?;
    let entries = std::fs::read_dir(dir).map_err(|e| io_error(dir, "read_dir", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error(dir, "read_dir", e))?;
        let path = entry.path();
        let meta = path
            .symlink_metadata()
            .map_err(|e| io_error(&path, "lstat", e))?;
        if meta.is_dir() {
            world_readable(&path)?;
        } else if meta.is_file() {
            let exec = meta.permissions().mode() & 0o111 != 0;
            set_file_mode(&path, if exec { 0o755 } else { 0o644 })?;
        } else if !meta.file_type().is_symlink() {
            return Err(io_error(
                &path,
                "unexpected file type",
                "not a file, directory or symlink",
            ));
        }
    }
    Ok(())
}

/// Replaces the scratch path `from` with the final path `to` in `ENV/bin/*` regular files
/// and `ENV/pyvenv.cfg`.
pub fn relocate(env: &Path, from: &Path, to: &Path) -> Result<(), InstallError> {
    let (from, to) = (
        from.as_os_str().as_encoded_bytes(),
        to.as_os_str().as_encoded_bytes(),
    );
    let mut files = vec![env.join(crate::pyenv::venv::CONFIG_NAME)];
    if let Ok(entries) = std::fs::read_dir(env.join("bin")) {
        files.extend(entries.flatten().map(|e| e.path()));
    }
    for file in files {
        let is_file = file.symlink_metadata().is_ok_and(|m| m.is_file());
        if !is_file {
            continue;
        }
        let bytes = crate::untrusted_file::read(&file, MAX_SCRIPT_BYTES)
            .map_err(|e| io_error(&file, "read", e))?;
        if let Some(rewritten) = replace_all(&bytes, from, to) {
            let mode = file
                .symlink_metadata()
                .map_err(|e| io_error(&file, "lstat", e))?
                .permissions();
            std::fs::write(&file, rewritten).map_err(|e| io_error(&file, "write", e))?;
            std::fs::set_permissions(&file, mode).map_err(|e| io_error(&file, "chmod", e))?;
        }
    }
    Ok(())
}

/// `bytes` with every `from` replaced by `to`, or `None` when there is none.
fn replace_all(bytes: &[u8], from: &[u8], to: &[u8]) -> Option<Vec<u8>> {
    if from.is_empty() || !bytes.windows(from.len()).any(|w| w == from) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() + to.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_occurrence_is_replaced() {
        let out = replace_all(b"#!/s/env/bin/python\nX=/s/env\n", b"/s/env", b"/r/k").unwrap();
        assert_eq!(out, b"#!/r/k/bin/python\nX=/r/k\n");
        assert!(replace_all(b"nothing", b"/s/env", b"/r/k").is_none());
    }
}
