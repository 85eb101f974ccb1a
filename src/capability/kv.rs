//! Built-in `kv.get`, `kv.set`, `kv.delete`, `kv.list`: a small durable key-value store per
//! plugin, so plugins keep state without filesystem access.
//!
//! Each key is one file named by the sha256 of the key, holding `{"k": key, "v": value}`.
//! `kv.set` writes a temporary file, fsyncs it, renames it over the old one and fsyncs the
//! directory: a crash leaves the old value or the new one, never a torn one.

use super::{args, BoxFuture, CallContext, CallError, CallRequest, Capability, Reply};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Longest key, bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Largest value, bytes of JSON.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Most keys one plugin may store.
pub const MAX_KEYS: usize = 10_000;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Which operation.
#[derive(Debug, Clone, Copy)]
pub enum KvOp {
    /// `kv.get`.
    Get,
    /// `kv.set`.
    Set,
    /// `kv.delete`.
    Delete,
    /// `kv.list`.
    List,
}

/// The capability object for one operation.
#[derive(Debug)]
pub struct Kv(pub KvOp);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyArgs {
    key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetArgs {
    key: String,
    value: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListArgs {
    #[serde(default)]
    prefix: String,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    k: String,
    v: Value,
}

impl Capability for Kv {
    fn call(&self, ctx: CallContext, request: CallRequest) -> BoxFuture<Result<Reply, CallError>> {
        let op = self.0;
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let dir = ctx.plugin.state_dir.join("kv");
                fs::create_dir_all(&dir).map_err(|e| CallError::host(format!("kv: {e}")))?;
                match op {
                    KvOp::Get => get(&dir, &args::<KeyArgs>("kv.get", &request)?.key),
                    KvOp::Set => {
                        let a: SetArgs = args("kv.set", &request)?;
                        set(&dir, a.key, a.value)
                    }
                    KvOp::Delete => delete(&dir, &args::<KeyArgs>("kv.delete", &request)?.key),
                    KvOp::List => list(&dir, &args::<ListArgs>("kv.list", &request)?.prefix),
                }
            })
            .await
            .map_err(|e| CallError::host(format!("kv: worker failed: {e}")))?
        })
    }
}

fn file_for(dir: &Path, key: &str) -> Result<PathBuf, CallError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(CallError::invalid(format!(
            "key must be 1..={MAX_KEY_BYTES} bytes"
        )));
    }
    let digest = Sha256::digest(key.as_bytes());
    let name = crate::audit::chain::hex(&digest);
    Ok(dir.join(name))
}

fn host_err(e: std::io::Error) -> CallError {
    CallError::host(format!("kv: {e}"))
}

fn get(dir: &Path, key: &str) -> Result<Reply, CallError> {
    let path = file_for(dir, key)?;
    match fs::read(&path) {
        Ok(bytes) => {
            let entry: Entry = serde_json::from_slice(&bytes)
                .map_err(|e| CallError::host(format!("kv: corrupt entry: {e}")))?;
            Ok(Reply::Json(entry.v))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Reply::Json(Value::Null)),
        Err(e) => Err(host_err(e)),
    }
}

fn set(dir: &Path, key: String, value: Value) -> Result<Reply, CallError> {
    let path = file_for(dir, &key)?;
    let bytes = serde_json::to_vec(&Entry { k: key, v: value })
        .map_err(|e| CallError::invalid(e.to_string()))?;
    if bytes.len() > MAX_VALUE_BYTES + MAX_KEY_BYTES + 16 {
        return Err(CallError::too_large(format!(
            "value exceeds {MAX_VALUE_BYTES} bytes"
        )));
    }
    if !path.exists() && count(dir)? >= MAX_KEYS {
        return Err(CallError::too_large(format!(
            "the store already holds {MAX_KEYS} keys"
        )));
    }
    let temp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = File::create(&temp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        fs::rename(&temp, &path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result.map_err(host_err)?;
    Ok(Reply::Json(Value::Null))
}

fn delete(dir: &Path, key: &str) -> Result<Reply, CallError> {
    let path = file_for(dir, key)?;
    match fs::remove_file(&path) {
        Ok(()) => {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(host_err)?;
            Ok(Reply::Json(Value::Bool(true)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Reply::Json(Value::Bool(false))),
        Err(e) => Err(host_err(e)),
    }
}

fn count(dir: &Path) -> Result<usize, CallError> {
    Ok(fs::read_dir(dir).map_err(host_err)?.count())
}

fn list(dir: &Path, prefix: &str) -> Result<Reply, CallError> {
    let mut keys = Vec::new();
    for entry in fs::read_dir(dir).map_err(host_err)? {
        let entry = entry.map_err(host_err)?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let bytes = fs::read(entry.path()).map_err(host_err)?;
        if let Ok(e) = serde_json::from_slice::<Entry>(&bytes) {
            if e.k.starts_with(prefix) {
                keys.push(e.k);
            }
        }
    }
    keys.sort();
    Ok(Reply::Json(Value::from(keys)))
}
