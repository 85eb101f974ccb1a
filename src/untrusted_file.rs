//! The one reader for files a plugin author controls (manifests, discovery metadata, the
//! files of a code digest): never blocks on a special file, never follows a final symlink,
//! never reads more than its cap.
//!
//! A file is opened with `O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY`, so a
//! FIFO's `open` does not wait for a writer and a symlink is refused by the kernel; its type
//! is then taken from `fstat` of the open descriptor (not of the path, which may have been
//! swapped), and anything but a regular file (or, for [`open_node_at`], a directory) is
//! refused with the type named. Reads stop at `cap + 1` bytes whatever `st_size` says: it is
//! 0 for `/dev/zero` and procfs files, and a file can grow while it is read. `O_NONBLOCK` has
//! no effect on regular files on ordinary filesystems, so it is cleared only if a read
//! reports `EAGAIN`.

use crate::audit::escape_text;
use crate::sys;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// Bytes read from the file per `read`.
const CHUNK_BYTES: usize = 64 * 1024;

/// What kind of file a path turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file.
    Regular,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A unix socket.
    Socket,
    /// A character device (`/dev/zero`, a terminal).
    CharDevice,
    /// A block device.
    BlockDevice,
}

impl FileKind {
    fn of(t: std::fs::FileType) -> Self {
        if t.is_file() {
            Self::Regular
        } else if t.is_dir() {
            Self::Directory
        } else if t.is_symlink() {
            Self::Symlink
        } else if t.is_fifo() {
            Self::Fifo
        } else if t.is_socket() {
            Self::Socket
        } else if t.is_char_device() {
            Self::CharDevice
        } else {
            Self::BlockDevice
        }
    }
}

impl std::fmt::Display for FileKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Regular => "regular file",
            Self::Directory => "directory",
            Self::Symlink => "symbolic link",
            Self::Fifo => "FIFO (named pipe)",
            Self::Socket => "socket",
            Self::CharDevice => "character device",
            Self::BlockDevice => "block device",
        })
    }
}

/// Why an untrusted file was not read. Every variant names the path (escaped when shown).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UntrustedFileError {
    /// `open` failed (missing, permission, not a directory on the way...).
    #[error("{}: cannot open: {source}", shown(path))]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The last component is a symbolic link (refused, never followed).
    #[error("{}: is a symbolic link; refused", shown(path))]
    Symlink {
        /// The link.
        path: PathBuf,
    },
    /// Not a regular file (nor a directory, where one is accepted).
    #[error("{}: is a {kind}, not a regular file; refused", shown(path))]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is.
        kind: FileKind,
    },
    /// Longer than the reader's cap.
    #[error("{}: too large: over the {limit}-byte limit", shown(path))]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The cap, bytes.
        limit: u64,
    },
    /// `fstat` or `read` failed.
    #[error("{}: cannot read: {source}", shown(path))]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Text was expected and the bytes are not UTF-8.
    #[error("{}: is not valid UTF-8", shown(path))]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
}

impl UntrustedFileError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Open { path, .. }
            | Self::Symlink { path }
            | Self::NotRegular { path, .. }
            | Self::TooLarge { path, .. }
            | Self::Read { path, .. }
            | Self::NotUtf8 { path } => path,
        }
    }
}

fn shown(path: &Path) -> String {
    escape_text(&path.display().to_string())
}

/// A regular file, open for reading, whose type was checked on the descriptor.
#[derive(Debug)]
pub struct UntrustedFile {
    file: File,
    path: PathBuf,
}

/// What [`open_node_at`] found: a regular file or a directory (both opened without following
/// a symlink).
#[derive(Debug)]
pub enum Node {
    /// A regular file.
    File(UntrustedFile),
    /// A directory, as an fd to walk beneath.
    Dir(OwnedFd),
}

/// The entries of the directory open on `dir`, listed through the descriptor's
/// `/proc/self/fd` link: the opened directory itself, never a path resolved again.
pub fn entries(dir: BorrowedFd<'_>) -> std::io::Result<std::fs::ReadDir> {
    std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))
}

/// Reads the regular file at `path` whole, refusing it if it holds more than `limit` bytes.
pub fn read(path: &Path, limit: u64) -> Result<Vec<u8>, UntrustedFileError> {
    UntrustedFile::open(path)?.read_capped(limit)
}

/// [`read`], as UTF-8 text.
pub fn read_to_string(path: &Path, limit: u64) -> Result<String, UntrustedFileError> {
    String::from_utf8(read(path, limit)?).map_err(|_| UntrustedFileError::NotUtf8 {
        path: path.to_owned(),
    })
}

/// Opens `name` beneath the directory `dir` (one component, no final symlink followed):
/// a regular file or a directory; anything else is refused. `shown` is the path named in
/// errors.
pub fn open_node_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    shown: &Path,
) -> Result<Node, UntrustedFileError> {
    let (fd, kind) = open_checked(Some(dir), name, shown)?;
    match kind {
        FileKind::Regular => Ok(Node::File(UntrustedFile {
            file: File::from(fd),
            path: shown.to_owned(),
        })),
        FileKind::Directory => Ok(Node::Dir(fd)),
        kind => Err(UntrustedFileError::NotRegular {
            path: shown.to_owned(),
            kind,
        }),
    }
}

/// Opens without following a final symlink and without waiting, then types the descriptor.
fn open_checked(
    dir: Option<BorrowedFd<'_>>,
    name: &OsStr,
    shown: &Path,
) -> Result<(OwnedFd, FileKind), UntrustedFileError> {
    let c_name = CString::new(name.as_bytes()).map_err(|_| UntrustedFileError::Open {
        path: shown.to_owned(),
        source: std::io::Error::new(ErrorKind::InvalidInput, "the path contains a NUL byte"),
    })?;
    let fd = sys::open_nofollow(dir, &c_name, libc::O_RDONLY | libc::O_NONBLOCK, 0).map_err(
        |source| match source.raw_os_error() {
            Some(libc::ELOOP) => UntrustedFileError::Symlink {
                path: shown.to_owned(),
            },
            _ => UntrustedFileError::Open {
                path: shown.to_owned(),
                source,
            },
        },
    )?;
    let file = File::from(fd);
    let meta = file.metadata().map_err(|source| UntrustedFileError::Read {
        path: shown.to_owned(),
        source,
    })?;
    Ok((OwnedFd::from(file), FileKind::of(meta.file_type())))
}

impl UntrustedFile {
    /// Opens `path` (its last component must not be a symlink) as a regular file.
    pub fn open(path: &Path) -> Result<Self, UntrustedFileError> {
        let (fd, kind) = open_checked(None, path.as_os_str(), path)?;
        if kind != FileKind::Regular {
            return Err(UntrustedFileError::NotRegular {
                path: path.to_owned(),
                kind,
            });
        }
        Ok(Self {
            file: File::from(fd),
            path: path.to_owned(),
        })
    }

    /// The path the file was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `fstat` of the open descriptor (the file read, not the path, which may have changed).
    pub fn metadata(&self) -> std::io::Result<std::fs::Metadata> {
        self.file.metadata()
    }

    /// The whole file; refused (without reading further) once it exceeds `limit` bytes.
    pub fn read_capped(mut self, limit: u64) -> Result<Vec<u8>, UntrustedFileError> {
        let mut out = Vec::new();
        self.stream(limit, |chunk| out.extend_from_slice(chunk))?;
        Ok(out)
    }

    /// At most the first `n` bytes (a header); the rest is not read.
    pub fn read_prefix(mut self, n: u64) -> Result<Vec<u8>, UntrustedFileError> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; CHUNK_BYTES];
        while (out.len() as u64) < n {
            let want =
                usize::try_from(n - out.len() as u64).map_or(buf.len(), |w| w.min(buf.len()));
            match self.read_some(&mut buf[..want])? {
                0 => break,
                got => out.extend_from_slice(&buf[..got]),
            }
        }
        Ok(out)
    }

    /// Feeds the whole file to `sink` chunk by chunk and returns its length; refused once it
    /// exceeds `limit` bytes (at most `limit + 1` bytes are read).
    pub fn stream(
        &mut self,
        limit: u64,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<u64, UntrustedFileError> {
        let mut buf = vec![0u8; CHUNK_BYTES];
        let mut total = 0u64;
        loop {
            let got = self.read_some(&mut buf)?;
            if got == 0 {
                return Ok(total);
            }
            total += got as u64;
            if total > limit {
                return Err(UntrustedFileError::TooLarge {
                    path: self.path.clone(),
                    limit,
                });
            }
            sink(&buf[..got]);
        }
    }

    /// One `read`, retried on `EINTR`; on `EAGAIN` (a filesystem that honours `O_NONBLOCK`
    /// on regular files) the flag is cleared and the read retried.
    fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, UntrustedFileError> {
        let mut cleared = false;
        loop {
            match self.file.read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock && !cleared => {
                    cleared = true;
                    sys::clear_nonblock(self.file.as_fd())
                        .map_err(|source| self.read_err(source))?;
                }
                Err(source) => return Err(self.read_err(source)),
            }
        }
    }

    fn read_err(&self, source: std::io::Error) -> UntrustedFileError {
        UntrustedFileError::Read {
            path: self.path.clone(),
            source,
        }
    }
}
