//! The three operations, run on a blocking thread: each opens its path beneath the held
//! data directory `O_NONBLOCK`, checks what it opened with `fstat`, and reads or writes
//! with a hard cap.
//!
//! A file with more than one name is refused `denied` before a byte is read or written: a
//! hard link planted in the data directory (by whoever can write there) may be another name
//! of a file outside it, the plugin's own code included, and a write through it would change
//! that file. The check is on the opened descriptor, so it cannot race: as long as the other
//! name exists the count stays above one. Writes otherwise go in place (no new file renamed
//! over the old), so a refused write leaves both names and the bytes as they were.

use super::super::{args, CallContext, CallError, CallRequest, Reply};
use super::{locate, MAX_LIST_ENTRIES};
use crate::sys::{self, FileKind};
use serde::Deserialize;
use serde_json::json;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadArgs {
    path: String,
    #[serde(default)]
    offset: u64,
    #[serde(default)]
    length: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PathArgs {
    path: String,
}

/// The call error for a failed open of `path`.
fn refused(path: &str, e: &io::Error) -> CallError {
    match e.raw_os_error() {
        Some(libc::EXDEV | libc::ELOOP | libc::EACCES | libc::EPERM) => CallError::denied(format!(
            "{path:?}: escapes its root or crosses a symlink or mount ({e})"
        )),
        Some(libc::ENOENT) => CallError::invalid(format!("{path:?}: no such file or directory")),
        Some(libc::ENOTDIR) => CallError::invalid(format!("{path:?}: not a directory")),
        // A FIFO without a reader, a socket, a device without a driver.
        Some(libc::ENXIO | libc::ENODEV | libc::EOPNOTSUPP) => {
            CallError::invalid(format!("{path:?}: not a regular file ({e})"))
        }
        _ => CallError::invalid(format!("{path:?}: {e}")),
    }
}

/// Opens `path` beneath the held data directory with `flags`.
fn open(ctx: &CallContext, path: &str, flags: libc::c_int) -> Result<OwnedFd, CallError> {
    let p = locate(ctx, path)?;
    ctx.plugin
        .fs
        .open_beneath(p, flags | libc::O_NONBLOCK)
        .map_err(|e| refused(path, &e))
}

/// The size of the regular file open on `fd`; anything else is refused `invalid`, and a
/// file with another name (a hard link) `denied`.
fn regular(path: &str, fd: BorrowedFd<'_>) -> Result<u64, CallError> {
    let stat = sys::fstat(fd).map_err(|e| CallError::host(format!("{path:?}: fstat: {e}")))?;
    match stat.kind {
        FileKind::Regular if stat.nlink > 1 => Err(CallError::denied(format!(
            "{path:?}: has {} hard links; fs.* touches only files with one name (another \
             name may lie outside the data directory)",
            stat.nlink
        ))),
        FileKind::Regular => Ok(stat.size),
        _ => Err(CallError::invalid(format!("{path:?}: not a regular file"))),
    }
}

/// `fs.read`: at most `max_bytes` from `offset`, never trusting `st_size`: it reads up to one
/// byte past the limit and refuses the call if that byte arrives.
pub(super) fn read(ctx: &CallContext, request: &CallRequest) -> Result<Reply, CallError> {
    let a: ReadArgs = args("fs.read", request)?;
    let fd = open(ctx, &a.path, libc::O_RDONLY)?;
    let size = regular(&a.path, fd.as_fd())?;
    let limit = ctx.max_bytes;
    let cap = a.length.unwrap_or(u64::MAX).min(limit.saturating_add(1));
    let mut file = File::from(fd);
    file.seek(SeekFrom::Start(a.offset))
        .map_err(|e| CallError::invalid(format!("{:?}: seek: {e}", a.path)))?;
    let hint = size.saturating_sub(a.offset).min(cap);
    let mut data = Vec::with_capacity(usize::try_from(hint).unwrap_or(0));
    file.take(cap)
        .read_to_end(&mut data)
        .map_err(|e| CallError::invalid(format!("{:?}: {e}", a.path)))?;
    if data.len() as u64 > limit {
        return Err(CallError::too_large(format!(
            "{:?}: more than the {limit}-byte limit",
            a.path
        )));
    }
    Ok(Reply::Bytes(data))
}

/// `fs.write`: refused `too_large` past `max_bytes`, `limits.file_size_mib` or the quota
/// before the file is touched; opened without `O_TRUNC`, checked to be a regular file, then
/// truncated and written.
pub(super) fn write(ctx: &CallContext, request: &CallRequest) -> Result<Reply, CallError> {
    let a: PathArgs = args("fs.write", request)?;
    let data = match &request.body {
        Some((name, data)) if name == "data" => data,
        _ => {
            return Err(CallError::invalid(
                "fs.write: the bytes go in the body argument \"data\"",
            ))
        }
    };
    let len = data.len() as u64;
    if len > ctx.max_bytes {
        return Err(CallError::too_large(format!(
            "{len} bytes exceed the {}-byte limit",
            ctx.max_bytes
        )));
    }
    let fs = &ctx.plugin.fs;
    if len > fs.file_size_bytes() {
        return Err(CallError::too_large(format!(
            "{:?}: {len} bytes exceed limits.file_size_mib = {} MiB",
            a.path,
            fs.file_size_bytes() >> 20
        )));
    }
    let fd = open_for_write(ctx, &a.path, len)?;
    let old = regular(&a.path, fd.as_fd())?;
    fs.quota().charge(old, len)?;
    let mut file = File::from(fd);
    let stored = sys::ftruncate(file.as_fd(), 0).and_then(|()| file.write_all(data));
    if let Err(e) = stored {
        let actual = sys::fstat(file.as_fd()).map_or(len, |s| s.size);
        fs.quota().settle(len, actual);
        return Err(CallError::host(format!("{:?}: {e}", a.path)));
    }
    Ok(Reply::Json(json!({ "written": data.len() })))
}

/// Opens an existing file for writing, or creates it if the quota allows `len` new bytes (so
/// a refused write creates nothing).
fn open_for_write(ctx: &CallContext, path: &str, len: u64) -> Result<OwnedFd, CallError> {
    let p = locate(ctx, path)?;
    let fs = &ctx.plugin.fs;
    let flags = libc::O_WRONLY | libc::O_NONBLOCK;
    match fs.open_beneath(p, flags) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            fs.quota().allows(0, len)?;
            fs.open_beneath(Path::new(p), flags | libc::O_CREAT)
        }
        opened => opened,
    }
    .map_err(|e| refused(path, &e))
}

/// `O_DIRECTORY | O_NOFOLLOW` refuses a symlink as "not a directory" (`ENOTDIR`) before the
/// no-symlinks rule sees it; report it as what it is, an attempt through a symlink (`denied`).
fn symlink_denied(ctx: &CallContext, path: &str, e: CallError) -> CallError {
    let link = locate(ctx, path)
        .ok()
        .and_then(|p| ctx.plugin.fs.open_beneath(p, libc::O_PATH).ok())
        .and_then(|fd| sys::fstat(fd.as_fd()).ok())
        .is_some_and(|s| s.kind == FileKind::Symlink);
    if link {
        CallError::denied(format!("{path:?}: is a symlink; fs.* never follow one"))
    } else {
        e
    }
}

/// `fs.list`: the entries of a directory, at most [`MAX_LIST_ENTRIES`].
pub(super) fn list(ctx: &CallContext, request: &CallRequest) -> Result<Reply, CallError> {
    let a: PathArgs = args("fs.list", request)?;
    let dir = open(ctx, &a.path, libc::O_RDONLY | libc::O_DIRECTORY)
        .map_err(|e| symlink_denied(ctx, &a.path, e))?;
    let mut entries = Vec::new();
    let listed = crate::untrusted_file::entries(dir.as_fd());
    for entry in listed.map_err(|e| CallError::host(e.to_string()))? {
        let entry = entry.map_err(|e| CallError::host(e.to_string()))?;
        if entries.len() == MAX_LIST_ENTRIES {
            return Err(CallError::too_large(format!(
                "more than {MAX_LIST_ENTRIES} entries"
            )));
        }
        // fstatat(AT_SYMLINK_NOFOLLOW) on the directory: never opens the entry.
        let meta = entry
            .metadata()
            .map_err(|e| CallError::host(e.to_string()))?;
        let kind = if meta.is_file() {
            "file"
        } else if meta.is_dir() {
            "dir"
        } else {
            "other"
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        entries.push(json!({ "name": name, "kind": kind, "size": meta.len() }));
    }
    entries.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(Reply::Json(serde_json::Value::Array(entries)))
}
