//! Where a plugin's data lives, for hosts and operators who need to find it (to migrate old
//! `fs.*` files, back it up, or inspect it): `<state_dir>/<name>-<id>/data/`.

use super::{Engine, LoadError};
use crate::capability::fs::data_dir_path;
use crate::manifest::Manifest;
use std::path::{Path, PathBuf};

/// The data directory the plugin in `dir` gets under an engine whose state directory is
/// `state_dir`, beneath which its `fs.*` roots resolve: `<state_dir>/<name>-<id>/data`, with
/// `<id>` the first 16 hex digits of the sha256 of its canonical directory path (the key of
/// its kv store, `<state_dir>/<name>-<id>/kv`, too). Reads the manifest for the name;
/// creates nothing (the engine makes the directory when it loads the plugin).
pub fn plugin_data_dir(state_dir: &Path, dir: &Path) -> Result<PathBuf, LoadError> {
    let manifest = Manifest::load(dir)?;
    let key = super::load::state_key(&manifest);
    Ok(data_dir_path(state_dir, &key))
}

impl Engine {
    /// [`plugin_data_dir`] under this engine's state directory.
    pub fn data_dir(&self, dir: &Path) -> Result<PathBuf, LoadError> {
        plugin_data_dir(&self.inner.config.state_dir, dir)
    }
}
