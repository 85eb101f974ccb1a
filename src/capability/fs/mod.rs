//! Built-in `fs.read`, `fs.write`, `fs.list`: files beneath the granted roots of the
//! plugin's **data directory** (`<state_dir>/<key>/data/`), never its code directory.
//!
//! The data directory is made and opened once per activation, component by component
//! without following a symlink, and held ([`PluginFs`]); every path is opened beneath that
//! descriptor with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
//! RESOLVE_NO_XDEV)`. Nothing is canonicalised and then opened, and nothing is opened by a
//! path the plugin can swap. Files are opened `O_NONBLOCK`, checked with `fstat` (regular
//! files with one name for read and write, directories for list) and read and written with
//! hard caps, so no call can block a host thread on a FIFO or device, nor reach a file
//! through a hard link; at most [`FS_SLOTS`] calls of one plugin run on host threads at once.

mod data_dir;
mod ops;
mod quota;
mod root;

pub use data_dir::{data_dir_path, DataDirError, DATA_DIR};
pub use quota::{CountError, Quota, MAX_WALK_DEPTH, MAX_WALK_ENTRIES};
pub use root::{PluginFs, FS_SLOTS};

use super::{BoxFuture, CallContext, CallError, CallRequest, Capability, Reply};
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
            // Waiting for a slot is cancellable; the slot then moves into the worker and is
            // released when the work ends, even if this call was dropped meanwhile.
            let slot = ctx
                .plugin
                .fs
                .slot()
                .await
                .ok_or_else(|| CallError::host("fs: no worker slot"))?;
            tokio::task::spawn_blocking(move || {
                let _slot = slot;
                match op {
                    FsOp::Read => ops::read(&ctx, &request),
                    FsOp::Write => ops::write(&ctx, &request),
                    FsOp::List => ops::list(&ctx, &request),
                }
            })
            .await
            .map_err(|e| CallError::host(format!("fs: worker failed: {e}")))?
        })
    }
}

/// Checks that `path` lies in one of the granted roots: relative, without `..` or NUL.
fn locate<'a>(ctx: &CallContext, path: &'a str) -> Result<&'a Path, CallError> {
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
    if ctx.grant.paths.iter().any(|root| p.starts_with(root)) {
        return Ok(p);
    }
    Err(CallError::denied(format!(
        "{path:?} is outside the granted roots {:?}",
        ctx.grant.paths
    )))
}
