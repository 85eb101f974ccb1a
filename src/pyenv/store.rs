//! Environments `plugbox install` builds, content-addressed: `ROOT/<key>`, where the key is
//! the sha256 of everything that decides the environment's contents (the base interpreter,
//! the requirements lock, every bundled wheel's name and bytes, the sdist opt-in). The same
//! lock gives the same directory, shared by every plugin that declares it; a changed byte
//! gives another one.
//!
//! An environment is installed when `ROOT/<key>/` holds the marker [`COMPLETE_MARKER`]
//! (written last, after the byte-compilation) whose content is the key.

use super::Venv;
use crate::manifest::{Manifest, PythonSection};
use crate::untrusted_file::UntrustedFile;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Written last into an installed environment; holds its key.
pub const COMPLETE_MARKER: &str = ".plugbox-installed";
/// Largest requirements lock read.
pub const MAX_LOCK_BYTES: u64 = 1024 * 1024;
/// Largest bundled wheel hashed.
pub const MAX_WHEEL_BYTES: u64 = 1024 * 1024 * 1024;
/// Most files in a bundled wheels directory.
pub const MAX_WHEELS: usize = 4096;
/// Changes when the layout of an installed environment changes.
const FORMAT: &str = "plugbox-env-1";

/// Why a declared environment cannot be named or found.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A declared input (lock, wheel, directory) cannot be read safely.
    #[error("python environment: {path}: {reason}")]
    Input {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The environment is declared but not installed.
    #[error("python environment: {plugin}'s environment {key} is not installed in {root}; run `plugbox install {dir}`")]
    NotInstalled {
        /// Plugin name.
        plugin: String,
        /// The content address.
        key: String,
        /// The store.
        root: PathBuf,
        /// The plugin directory.
        dir: PathBuf,
    },
    /// The installed environment cannot be read.
    #[error(transparent)]
    Venv(#[from] super::VenvError),
}

/// The default store: `envs/` in the cache root the SDK uses (`/var/cache/plugbox` as root,
/// readable by every sandbox uid).
pub fn default_root() -> PathBuf {
    crate::sdk::default_root().join("envs")
}

/// Does `python` declare an environment `plugbox install` builds?
pub fn declares_install(python: &PythonSection) -> bool {
    python.requirements.is_some() || python.wheels.is_some()
}

/// The content address of the environment `manifest` declares for the base interpreter
/// `base_python` (its real path), or `None` when it declares none to install.
pub fn key(manifest: &Manifest, base_python: &Path) -> Result<Option<String>, StoreError> {
    let python = &manifest.file.python;
    if !declares_install(python) {
        return Ok(None);
    }
    let mut key = KeyBuilder::new(base_python, python.build_sdists);
    match &python.requirements {
        Some(lock) => key.lock(Some(&file_digest(
            &manifest.dir.join(lock),
            MAX_LOCK_BYTES,
        )?)),
        None => key.lock(None),
    }
    match &python.wheels {
        Some(dir) => key.wheels(Some(&wheel_digests(&manifest.dir.join(dir))?)),
        None => key.wheels(None),
    }
    Ok(Some(key.finish()))
}

/// Builds a key from its parts, in this order: [`KeyBuilder::new`], [`KeyBuilder::lock`],
/// [`KeyBuilder::wheels`], [`KeyBuilder::finish`]. `plugbox install` computes it again over
/// the copies it installs from, so the key names exactly the bytes installed.
#[derive(Debug, Clone)]
pub struct KeyBuilder(Sha256);

impl KeyBuilder {
    /// Starts a key for the base interpreter (its real path) and the sdist opt-in.
    pub fn new(base_python: &Path, build_sdists: bool) -> Self {
        let mut key = Self(Sha256::new());
        key.field(FORMAT.as_bytes());
        key.field(base_python.as_os_str().as_encoded_bytes());
        key.field(&[u8::from(build_sdists)]);
        key
    }

    fn field(&mut self, bytes: &[u8]) {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    /// The lock's sha256, or `None` without a lock.
    pub fn lock(&mut self, digest: Option<&[u8]>) {
        self.field(digest.unwrap_or(b"-"));
    }

    /// Every bundled file's name and sha256, sorted by name; `None` without a wheels
    /// directory.
    pub fn wheels(&mut self, wheels: Option<&[(String, Vec<u8>)]>) {
        match wheels {
            Some(wheels) => {
                for (name, digest) in wheels {
                    self.field(name.as_bytes());
                    self.field(digest);
                }
            }
            None => self.field(b"-"),
        }
    }

    /// The key: 32 hex digits.
    pub fn finish(self) -> String {
        let digest = self.0.finalize();
        crate::audit::chain::hex(&digest[..16])
    }
}

/// The real path of the base interpreter a manifest's environment is built from and keyed
/// by: `plugin.runtime` resolved as the engine resolves it (on [`RUNTIME_PATH`], then to its
/// real file).
///
/// [`RUNTIME_PATH`]: crate::engine::RUNTIME_PATH
pub fn base_python(manifest: &Manifest) -> Result<PathBuf, crate::sandbox::command::CommandError> {
    let command = crate::sandbox::command::ResolvedCommand::resolve(
        manifest.runtime.as_ref(),
        Some(crate::engine::RUNTIME_PATH.as_ref()),
    )?;
    Ok(base_of(&command))
}

/// The real file of an already resolved runtime: what [`base_python`] returns for it.
pub fn base_of(command: &crate::sandbox::command::ResolvedCommand) -> PathBuf {
    command
        .executables()
        .first()
        .cloned()
        .unwrap_or_else(|| command.path().to_owned())
}

/// The installed environment `manifest` declares, or `None` when it declares none.
pub fn installed(
    root: &Path,
    manifest: &Manifest,
    base_python: &Path,
) -> Result<Option<Venv>, StoreError> {
    let Some(key) = cached_key(root, manifest, base_python)? else {
        return Ok(None);
    };
    let dir = root.join(&key);
    let marker = crate::untrusted_file::read_to_string(&dir.join(COMPLETE_MARKER), 128);
    if marker.ok().as_deref() != Some(key.as_str()) {
        return Err(StoreError::NotInstalled {
            plugin: manifest.name.clone(),
            key,
            root: root.to_owned(),
            dir: manifest.dir.clone(),
        });
    }
    Ok(Some(Venv::open(&dir)?))
}

/// [`key`], from the store's memo ([`super::key_memo`]) when the inputs are unchanged since
/// `plugbox install` hashed them.
pub fn cached_key(
    root: &Path,
    manifest: &Manifest,
    base_python: &Path,
) -> Result<Option<String>, StoreError> {
    if !declares_install(&manifest.file.python) {
        return Ok(None);
    }
    match super::key_memo::lookup(root, manifest, base_python) {
        Some(key) => Ok(Some(key)),
        None => key(manifest, base_python),
    }
}

/// sha256 of a regular file (no symlink, FIFO or device), refused past `limit` bytes.
pub fn file_digest(path: &Path, limit: u64) -> Result<Vec<u8>, StoreError> {
    let input = |reason: String| StoreError::Input {
        path: path.to_owned(),
        reason,
    };
    let mut file = UntrustedFile::open(path).map_err(|e| input(e.to_string()))?;
    let mut hash = Sha256::new();
    file.stream(limit, |chunk| hash.update(chunk))
        .map_err(|e| input(e.to_string()))?;
    Ok(hash.finalize().to_vec())
}

/// Name and sha256 of every file in a bundled wheels directory, sorted by name.
pub fn wheel_digests(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let input = |reason: String| StoreError::Input {
        path: dir.to_owned(),
        reason,
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| input(e.to_string()))? {
        let entry = entry.map_err(|e| input(e.to_string()))?;
        let name = entry
            .file_name()
            .into_string()
            .map_err(|n| input(format!("{n:?} is not a UTF-8 file name")))?;
        names.push(name);
        if names.len() > MAX_WHEELS {
            return Err(input(format!("more than {MAX_WHEELS} files")));
        }
    }
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let digest = file_digest(&dir.join(&name), MAX_WHEEL_BYTES)?;
            Ok((name, digest))
        })
        .collect()
}
