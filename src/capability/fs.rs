//! Built-in `fs.read`, `fs.write`, `fs.list`: files beneath the plugin's granted roots only.
//!
//! Every open goes through `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS)` from a directory fd: first the root beneath the plugin directory,
//! then the path beneath the root. Nothing is canonicalised and then opened, so a symlink
//! swapped in during the call cannot redirect it.

use super::{args, BoxFuture, CallContext, CallError, CallRequest, Capability, Reply};
use crate::sys;
use serde::Deserialize;
use serde_json::json;
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

/// Most directory entries `fs.list` returns.
pub const MAX_LIST_ENTRIES: usize = 10_000;

/// Which of the three operations.
#[derive(Debug, Clone, Copy)]
pub enum FsOp {
    /// `fs.read`.
    Read,
    /// `fs.write`.
    Write,
    /// `fs.list`.
    List,
}

/// The capability object for one operation.
#[derive(Debug)]
pub struct Fs(pub FsOp);

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

impl Capability for Fs {
    fn check(&self, ctx: &CallContext, request: &CallRequest) -> Result<(), CallError> {
        match request.args.get("path").and_then(serde_json::Value::as_str) {
            Some(path) => locate(ctx, path).map(drop),
            // Malformed arguments are reported by the call itself as `invalid`.
            None => Ok(()),
        }
    }

    fn call(&self, ctx: CallContext, request: CallRequest) -> BoxFuture<Result<Reply, CallError>> {
        let op = self.0;
        Box::pin(async move {
            tokio::task::spawn_blocking(move || match op {
                FsOp::Read => read(&ctx, &request),
                FsOp::Write => write(&ctx, &request),
                FsOp::List => list(&ctx, &request),
            })
            .await
            .map_err(|e| CallError::host(format!("fs: worker failed: {e}")))?
        })
    }
}

/// Splits `path` into (root, path beneath the root) for the first granted root it names.
fn locate<'a>(ctx: &'a CallContext, path: &'a str) -> Result<(&'a str, &'a Path), CallError> {
    if path.contains('\0') {
        return Err(CallError::invalid("path contains a NUL byte"));
    }
    let p = Path::new(path);
    if p.is_absolute() {
        return Err(CallError::denied(format!(
            "{path:?}: absolute paths are not allowed"
        )));
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(CallError::denied(format!("{path:?}: '..' is not allowed")));
    }
    for root in &ctx.grant.paths {
        if let Ok(rest) = p.strip_prefix(root) {
            return Ok((root, rest));
        }
    }
    Err(CallError::denied(format!(
        "{path:?} is outside the granted roots {:?}",
        ctx.grant.paths
    )))
}

fn cstring(path: &Path) -> Result<CString, CallError> {
    let bytes = if path.as_os_str().is_empty() {
        b"."
    } else {
        path.as_os_str().as_bytes()
    };
    CString::new(bytes).map_err(|_| CallError::invalid("path contains a NUL byte"))
}

/// Opens `path` (relative to a granted root) with `flags`, never leaving the root.
fn open(ctx: &CallContext, path: &str, flags: libc::c_int) -> Result<OwnedFd, CallError> {
    let (root, rest) = locate(ctx, path)?;
    let denied = |what: &str, e: std::io::Error| match e.raw_os_error() {
        Some(libc::EXDEV | libc::ELOOP | libc::EACCES | libc::EPERM) => CallError::denied(format!(
            "{path:?}: {what} escapes its root or crosses a symlink ({e})"
        )),
        Some(libc::ENOENT) => CallError::invalid(format!("{path:?}: no such file or directory")),
        _ => CallError::invalid(format!("{path:?}: {e}")),
    };
    let plugin_dir = File::open(&ctx.plugin.dir)
        .map_err(|e| CallError::host(format!("plugin directory: {e}")))?;
    let root_fd = sys::open_beneath(
        plugin_dir.as_raw_fd(),
        &cstring(Path::new(root))?,
        libc::O_PATH | libc::O_DIRECTORY,
        0,
    )
    .map_err(|e| denied("root", e))?;
    sys::open_beneath(root_fd.as_raw_fd(), &cstring(rest)?, flags, 0o644)
        .map_err(|e| denied("path", e))
}

fn read(ctx: &CallContext, request: &CallRequest) -> Result<Reply, CallError> {
    let a: ReadArgs = args("fs.read", request)?;
    let mut file = File::from(open(ctx, &a.path, libc::O_RDONLY)?);
    let size = file
        .metadata()
        .map_err(|e| CallError::host(e.to_string()))?
        .len();
    let available = size.saturating_sub(a.offset);
    let want = a.length.map_or(available, |l| l.min(available));
    if want > ctx.max_bytes {
        return Err(CallError::too_large(format!(
            "{:?}: {want} bytes exceed the {}-byte limit",
            a.path, ctx.max_bytes
        )));
    }
    file.seek(SeekFrom::Start(a.offset))
        .map_err(|e| CallError::host(e.to_string()))?;
    let mut data = Vec::with_capacity(want as usize);
    file.take(want)
        .read_to_end(&mut data)
        .map_err(|e| CallError::invalid(format!("{:?}: {e}", a.path)))?;
    Ok(Reply::Bytes(data))
}

fn write(ctx: &CallContext, request: &CallRequest) -> Result<Reply, CallError> {
    let a: PathArgs = args("fs.write", request)?;
    let data = match &request.body {
        Some((name, data)) if name == "data" => data,
        _ => {
            return Err(CallError::invalid(
                "fs.write: the bytes go in the body argument \"data\"",
            ))
        }
    };
    if data.len() as u64 > ctx.max_bytes {
        return Err(CallError::too_large(format!(
            "{} bytes exceed the {}-byte limit",
            data.len(),
            ctx.max_bytes
        )));
    }
    let fd = open(ctx, &a.path, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC)?;
    File::from(fd)
        .write_all(data)
        .map_err(|e| CallError::host(format!("{:?}: {e}", a.path)))?;
    Ok(Reply::Json(json!({ "written": data.len() })))
}

fn list(ctx: &CallContext, request: &CallRequest) -> Result<Reply, CallError> {
    let a: PathArgs = args("fs.list", request)?;
    let dir = open(ctx, &a.path, libc::O_RDONLY | libc::O_DIRECTORY)?;
    // The opened directory itself, through its fd: no path is resolved again.
    let via_fd = format!("/proc/self/fd/{}", dir.as_raw_fd());
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(&via_fd).map_err(|e| CallError::host(e.to_string()))? {
        let entry = entry.map_err(|e| CallError::host(e.to_string()))?;
        if entries.len() == MAX_LIST_ENTRIES {
            return Err(CallError::too_large(format!(
                "more than {MAX_LIST_ENTRIES} entries"
            )));
        }
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
