//! The code digest: sha256 over a plugin directory's files, so a record (and a grant) can name
//! exactly which code ran.

use sha2::{Digest, Sha256};
use std::path::Path;

/// Most files hashed in one plugin directory.
pub const MAX_FILES: usize = 10_000;
/// Most bytes hashed in one plugin directory.
pub const MAX_BYTES: u64 = 256 * 1024 * 1024;

/// sha256 over every file beneath `dir` (sorted relative paths, each path then its length and
/// contents; symlinks by their target text; `__pycache__` skipped). Errors if the directory is
/// larger than [`MAX_FILES`] or [`MAX_BYTES`].
pub fn code_digest(dir: &Path) -> std::io::Result<String> {
    let mut files = Vec::new();
    collect(dir, dir, &mut files)?;
    files.sort();
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    for rel in files {
        let path = dir.join(&rel);
        let meta = std::fs::symlink_metadata(&path)?;
        let content = if meta.file_type().is_symlink() {
            std::fs::read_link(&path)?
                .into_os_string()
                .into_encoded_bytes()
        } else {
            total += meta.len();
            if total > MAX_BYTES {
                return Err(std::io::Error::other(format!(
                    "plugin directory holds more than {MAX_BYTES} bytes"
                )));
            }
            std::fs::read(&path)?
        };
        hasher.update(rel.as_bytes());
        hasher.update([0]);
        hasher.update((content.len() as u64).to_be_bytes());
        hasher.update(&content);
    }
    Ok(crate::audit::chain::hex(&hasher.finalize()))
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let path = entry.path();
        if kind.is_dir() {
            if entry.file_name() != "__pycache__" {
                collect(root, &path, out)?;
            }
            continue;
        }
        if out.len() == MAX_FILES {
            return Err(std::io::Error::other(format!(
                "plugin directory holds more than {MAX_FILES} files"
            )));
        }
        let rel = path.strip_prefix(root).map_err(std::io::Error::other)?;
        out.push(rel.to_string_lossy().into_owned());
    }
    Ok(())
}
