//! The code digest: sha256 over a plugin directory's tree, so a record (and a grant) can name
//! exactly which code ran.
//!
//! The tree is walked through directory descriptors: each entry is opened beneath its
//! parent's fd with `O_NOFOLLOW | O_NONBLOCK` (never by re-resolving a path), typed by
//! `fstat`, and read through [`crate::untrusted_file`]. A symlink, FIFO, socket or device
//! anywhere in the tree refuses the digest (so the load) with the path named: a link would
//! be hashed by its text while Python follows it, and a FIFO would block the reader.
//!
//! `__pycache__` (a file or directory of that name, at any depth) is skipped: the plugin
//! process imports modules beneath its directory from source only and never reads it
//! (`python/plugbox/_sourceonly.py`), so nothing there can run.
//!
//! Encoding (version 2; values differ from the version 1 digests of earlier releases, so
//! pinned grants must be re-approved): sha256 of `"plugbox-code-digest-v2\0"`, then, depth
//! first, the entries of each directory in byte order of their names:
//! - a directory: `'d'`, its relative path, `0x00`;
//! - a regular file: `'f'`, its relative path, `0x00`, its length as 8 bytes big-endian, and
//!   the 32-byte sha256 of its contents.
//!
//! Relative paths are the exact bytes of the names joined by `/` (never a lossy UTF-8
//! conversion). A name holds neither `/` nor NUL, so the encoding reads back one way only.

use crate::untrusted_file::{open_node_at, Node, UntrustedFileError};
use sha2::{Digest, Sha256};
use std::ffi::{CString, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Most entries (files and directories) hashed in one plugin directory.
pub const MAX_FILES: usize = 10_000;
/// Most bytes hashed in one plugin directory.
pub const MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Deepest directory nesting walked.
pub const MAX_DEPTH: usize = 64;

const DOMAIN: &[u8] = b"plugbox-code-digest-v2\0";
const SKIPPED: &str = "__pycache__";

/// Why a plugin directory could not be digested.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DigestError {
    /// An entry is a symlink or a special file, or could not be opened or read.
    #[error("code digest: {0}")]
    File(#[from] UntrustedFileError),
    /// A directory could not be listed.
    #[error("code digest: {}: cannot list: {source}", crate::audit::escape_text(&dir.display().to_string()))]
    List {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// More than [`MAX_FILES`] entries.
    #[error("code digest: the plugin directory holds more than {MAX_FILES} entries")]
    TooManyFiles,
    /// More than [`MAX_BYTES`] bytes.
    #[error("code digest: the plugin directory holds more than {MAX_BYTES} bytes")]
    TooManyBytes,
    /// Directories nested deeper than [`MAX_DEPTH`].
    #[error("code digest: directories nested deeper than {MAX_DEPTH}")]
    TooDeep,
}

/// sha256 over the tree beneath `dir`, as described in the module documentation. `dir`
/// itself must not be a symlink (pass the canonical path).
pub fn code_digest(dir: &Path) -> Result<String, DigestError> {
    let c_dir = CString::new(dir.as_os_str().as_bytes()).map_err(|_| DigestError::List {
        dir: dir.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"),
    })?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NONBLOCK;
    let root = crate::sys::open_nofollow(None, &c_dir, flags, 0).map_err(|source| match source
        .raw_os_error()
    {
        Some(libc::ELOOP) => DigestError::File(UntrustedFileError::Symlink {
            path: dir.to_owned(),
        }),
        _ => DigestError::List {
            dir: dir.to_owned(),
            source,
        },
    })?;
    let mut walk = Walk {
        root: dir,
        hasher: Sha256::new(),
        entries: 0,
        bytes: 0,
    };
    walk.hasher.update(DOMAIN);
    walk.directory(&root, &mut Vec::new(), 0)?;
    Ok(crate::audit::chain::hex(&walk.hasher.finalize()))
}

struct Walk<'a> {
    root: &'a Path,
    hasher: Sha256,
    entries: usize,
    bytes: u64,
}

impl Walk<'_> {
    /// Hashes the entries of the directory open as `fd`, whose relative path is `rel`.
    fn directory(
        &mut self,
        fd: &OwnedFd,
        rel: &mut Vec<u8>,
        depth: usize,
    ) -> Result<(), DigestError> {
        if depth > MAX_DEPTH {
            return Err(DigestError::TooDeep);
        }
        for name in self.names(fd, rel)? {
            self.entries += 1;
            if self.entries > MAX_FILES {
                return Err(DigestError::TooManyFiles);
            }
            let len = rel.len();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(name.as_bytes());
            let shown = self.root.join(std::ffi::OsStr::from_bytes(rel));
            match open_node_at(fd.as_fd(), &name, &shown)? {
                Node::Dir(sub) => {
                    self.record(b'd', rel);
                    self.directory(&sub, rel, depth + 1)?;
                }
                Node::File(mut file) => {
                    let mut contents = Sha256::new();
                    let size = file
                        .stream(MAX_BYTES - self.bytes, |chunk| contents.update(chunk))
                        .map_err(|e| match e {
                            UntrustedFileError::TooLarge { .. } => DigestError::TooManyBytes,
                            e => e.into(),
                        })?;
                    self.bytes += size;
                    self.record(b'f', rel);
                    self.hasher.update(size.to_be_bytes());
                    self.hasher.update(contents.finalize());
                }
            }
            rel.truncate(len);
        }
        Ok(())
    }

    fn record(&mut self, tag: u8, rel: &[u8]) {
        self.hasher.update([tag]);
        self.hasher.update(rel);
        self.hasher.update([0]);
    }

    /// The names in the directory open as `fd`, in byte order, `__pycache__` left out. Listed
    /// through the descriptor's `/proc/self/fd` link: the opened directory, not a path.
    fn names(&self, fd: &OwnedFd, rel: &[u8]) -> Result<Vec<OsString>, DigestError> {
        let list_err = |source| DigestError::List {
            dir: self.root.join(std::ffi::OsStr::from_bytes(rel)),
            source,
        };
        let mut names = Vec::new();
        for entry in crate::untrusted_file::entries(fd.as_fd()).map_err(list_err)? {
            let name = entry.map_err(list_err)?.file_name();
            if name != SKIPPED {
                names.push(name);
            }
            if names.len() > MAX_FILES {
                return Err(DigestError::TooManyFiles);
            }
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        Ok(names)
    }
}
