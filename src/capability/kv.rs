//! Built-in `kv.get`, `kv.set`, `kv.delete`, `kv.list`: a small durable key-value store per
//! plugin, so plugins keep state without filesystem access.
//!
//! Each key is one file named by the sha256 of the key, holding `{"k": key, "v": value}`.
//! `kv.set` writes a temporary file, fsyncs it, renames it over the old one and fsyncs the
//! directory: a crash leaves the old value or the new one, never a torn one. The keys are also
//! held in memory ([`KvStores`]), so `kv.list` and the key-count check read no values.
//!
//! The store belongs to the plugin's identity, not its name: the engine gives each approved
//! plugin directory a state directory of its own (see [`PluginInfo::state_dir`]).
//!
//! [`PluginInfo::state_dir`]: super::PluginInfo::state_dir

use super::kv_store::{lock, read_entry, KvStores, Store};
use super::{args, BoxFuture, CallContext, CallError, CallRequest, Capability, Reply};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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

/// The capability object for one operation, over the engine's stores.
#[derive(Debug)]
pub struct Kv {
    op: KvOp,
    stores: Arc<KvStores>,
}

impl Kv {
    /// `op` over `stores` (one [`KvStores`] per engine, shared by the four operations).
    pub fn new(op: KvOp, stores: Arc<KvStores>) -> Self {
        Self { op, stores }
    }
}

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

/// One entry file's content.
#[derive(Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) k: String,
    pub(crate) v: Value,
}

impl Capability for Kv {
    fn call(&self, ctx: CallContext, request: CallRequest) -> BoxFuture<Result<Reply, CallError>> {
        let (op, stores) = (self.op, Arc::clone(&self.stores));
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let dir = ctx.plugin.state_dir.join("kv");
                fs::create_dir_all(&dir).map_err(|e| CallError::host(format!("kv: {e}")))?;
                let store = stores.store(&dir);
                match op {
                    KvOp::Get => get(&dir, &args::<KeyArgs>("kv.get", &request)?.key),
                    KvOp::Set => {
                        let a: SetArgs = args("kv.set", &request)?;
                        set(&mut lock(&store), a.key, a.value)
                    }
                    KvOp::Delete => {
                        let key = args::<KeyArgs>("kv.delete", &request)?.key;
                        delete(&mut lock(&store), &key)
                    }
                    KvOp::List => {
                        let prefix = args::<ListArgs>("kv.list", &request)?.prefix;
                        list(&mut lock(&store), &prefix)
                    }
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
    match read_entry(&path) {
        Ok(bytes) => {
            let entry: Entry = serde_json::from_slice(&bytes)
                .map_err(|e| CallError::host(format!("kv: corrupt entry: {e}")))?;
            Ok(Reply::Json(entry.v))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Reply::Json(Value::Null)),
        Err(e) => Err(host_err(e)),
    }
}

fn set(store: &mut Store, key: String, value: Value) -> Result<Reply, CallError> {
    let path = file_for(&store.dir, &key)?;
    let entry = Entry {
        k: key.clone(),
        v: value,
    };
    let bytes = serde_json::to_vec(&entry).map_err(|e| CallError::invalid(e.to_string()))?;
    if bytes.len() > MAX_VALUE_BYTES + MAX_KEY_BYTES + 16 {
        return Err(CallError::too_large(format!(
            "value exceeds {MAX_VALUE_BYTES} bytes"
        )));
    }
    let keys = store.keys().map_err(host_err)?;
    if !keys.contains(&key) && keys.len() >= MAX_KEYS {
        return Err(CallError::too_large(format!(
            "the store already holds {MAX_KEYS} keys"
        )));
    }
    match write_atomic(&store.dir, &path, &bytes) {
        Ok(()) => {
            store.keys().map_err(host_err)?.insert(key);
            Ok(Reply::Json(Value::Null))
        }
        Err(e) => {
            // Whether the rename happened is unknown: reload the index on next use.
            store.forget_keys();
            Err(host_err(e))
        }
    }
}

/// Writes `bytes` to a temporary file, fsyncs it, renames it to `path` and fsyncs `dir`.
fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

fn delete(store: &mut Store, key: &str) -> Result<Reply, CallError> {
    let path = file_for(&store.dir, key)?;
    let removed = match fs::remove_file(&path) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(host_err(e)),
    };
    store.forget_key(key);
    if removed {
        File::open(&store.dir)
            .and_then(|d| d.sync_all())
            .map_err(host_err)?;
    }
    Ok(Reply::Json(Value::Bool(removed)))
}

fn list(store: &mut Store, prefix: &str) -> Result<Reply, CallError> {
    let keys: Vec<&String> = store
        .keys()
        .map_err(host_err)?
        .range::<str, _>((
            std::ops::Bound::Included(prefix),
            std::ops::Bound::Unbounded,
        ))
        .take_while(|k| k.starts_with(prefix))
        .collect();
    Ok(Reply::Json(Value::from(
        keys.into_iter().cloned().collect::<Vec<_>>(),
    )))
}
