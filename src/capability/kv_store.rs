//! The kv stores of one engine: one per plugin state directory, shared by every instance of
//! that plugin, each with an in-memory index of its keys so that `kv.list` and the
//! [`MAX_KEYS`](super::kv::MAX_KEYS) check read no values.
//!
//! The index is loaded once, on a store's first use, by reading each entry file (regular files
//! only, opened `O_NOFOLLOW | O_NONBLOCK`, at most [`MAX_ENTRY_BYTES`] each); after that,
//! `set` and `delete` keep it in step with the directory under the store's lock. Only this
//! engine writes the directory (the sandbox has no access to it), so the index stays exact;
//! two engines must not share one state directory.

use std::collections::{BTreeSet, HashMap};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Largest entry file read back: the largest value, the longest key with every byte escaped
/// as `\u00XX`, and the JSON around them.
pub const MAX_ENTRY_BYTES: u64 =
    (super::kv::MAX_VALUE_BYTES + 6 * super::kv::MAX_KEY_BYTES + 64) as u64;

/// Every kv store of one engine, by directory.
#[derive(Debug, Default)]
pub struct KvStores {
    stores: Mutex<HashMap<PathBuf, Arc<Mutex<Store>>>>,
}

/// One store: its directory and, once loaded, the set of its keys.
#[derive(Debug)]
pub(crate) struct Store {
    pub(crate) dir: PathBuf,
    keys: Option<BTreeSet<String>>,
}

impl KvStores {
    /// The store in `dir`, created on first use (shared by every caller naming `dir`).
    pub(crate) fn store(&self, dir: &Path) -> Arc<Mutex<Store>> {
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(stores.entry(dir.to_owned()).or_insert_with(|| {
            Arc::new(Mutex::new(Store {
                dir: dir.to_owned(),
                keys: None,
            }))
        }))
    }
}

/// Locks a store (a panic in another call leaves the index as consistent as the directory).
pub(crate) fn lock(store: &Mutex<Store>) -> MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(|p| p.into_inner())
}

impl Store {
    /// The keys, loaded from the directory on first use.
    pub(crate) fn keys(&mut self) -> std::io::Result<&mut BTreeSet<String>> {
        if self.keys.is_none() {
            self.keys = Some(load_keys(&self.dir)?);
        }
        Ok(self.keys.get_or_insert_with(BTreeSet::new))
    }

    /// Drops `key` from the index, if it is loaded (a later load reads the directory).
    pub(crate) fn forget_key(&mut self, key: &str) {
        if let Some(keys) = self.keys.as_mut() {
            keys.remove(key);
        }
    }

    /// Forgets the index: the next use loads it from the directory again.
    pub(crate) fn forget_keys(&mut self) {
        self.keys = None;
    }
}

/// Reads the key of every entry file in `dir`. Temporary files (`.`-prefixed) are skipped,
/// and so is an entry that is not a regular file, too large, or not an entry (it is logged):
/// `kv.get` of its key reports the corruption.
fn load_keys(dir: &Path) -> std::io::Result<BTreeSet<String>> {
    let mut keys = BTreeSet::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().as_encoded_bytes().starts_with(b".") {
            continue;
        }
        match read_entry(&entry.path()) {
            Ok(bytes) => match serde_json::from_slice::<super::kv::Entry>(&bytes) {
                Ok(e) => {
                    keys.insert(e.k);
                }
                Err(e) => tracing::warn!(path = %entry.path().display(), "kv: corrupt entry: {e}"),
            },
            Err(e) => tracing::warn!(path = %entry.path().display(), "kv: unreadable entry: {e}"),
        }
    }
    Ok(keys)
}

/// The bytes of one entry file: a regular file, not followed if it is a link, opened without
/// blocking, at most [`MAX_ENTRY_BYTES`].
pub(crate) fn read_entry(path: &Path) -> std::io::Result<Vec<u8>> {
    use crate::untrusted_file::{read, UntrustedFileError};
    read(path, MAX_ENTRY_BYTES).map_err(|e| match e {
        // A missing entry stays `NotFound`: `kv.get` answers null for it.
        UntrustedFileError::Open { source, .. } if source.kind() == ErrorKind::NotFound => source,
        other => std::io::Error::other(other),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn one_store_per_directory_and_keys_load_once() {
        let tmp = tempfile::tempdir().unwrap();
        let entry = serde_json::json!({"k": "a", "v": 1}).to_string();
        std::fs::write(tmp.path().join("x"), entry).unwrap();
        std::fs::write(tmp.path().join("y"), "not json").unwrap();
        std::fs::write(tmp.path().join(".tmp-1"), "{}").unwrap();
        let stores = KvStores::default();
        let (s1, s2) = (stores.store(tmp.path()), stores.store(tmp.path()));
        assert!(Arc::ptr_eq(&s1, &s2));
        let keys: Vec<String> = lock(&s1).keys().unwrap().iter().cloned().collect();
        assert_eq!(keys, ["a"]);
        // Loaded once: a file added behind the store's back is not seen.
        std::fs::write(tmp.path().join("z"), r#"{"k":"b","v":2}"#).unwrap();
        assert_eq!(lock(&s2).keys().unwrap().len(), 1);
    }

    #[test]
    fn an_oversized_or_special_entry_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let big = tmp.path().join("big");
        std::fs::write(&big, vec![b' '; MAX_ENTRY_BYTES as usize + 1]).unwrap();
        assert!(read_entry(&big).is_err());
        std::os::unix::fs::symlink("/dev/zero", tmp.path().join("link")).unwrap();
        assert!(read_entry(&tmp.path().join("link")).is_err());
        assert!(
            read_entry(tmp.path()).is_err(),
            "a directory is not an entry"
        );
    }
}
