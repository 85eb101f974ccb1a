//! Which Python environment a plugin runs in, and whether it is there, for `plugbox check`
//! and `plugbox list`: read from the manifest and the files only, running nothing.
//!
//! In order: the manifest's `[python] environment`; the environment `plugbox install` builds
//! (`requirements`/`wheels`, by its key in the store); the virtual environment of
//! `plugin.runtime` when that is a venv's interpreter; the virtual environment whose
//! site-packages holds the plugin directory; none.

use crate::manifest::Manifest;
use crate::pyenv::{store, Venv};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// A plugin's environment as found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvironmentInfo {
    /// `declared`, `store`, `runtime`, `site-packages` or `none`.
    pub kind: &'static str,
    /// The environment's directory.
    pub path: Option<PathBuf>,
    /// The store key (`store` only).
    pub key: Option<String>,
    /// Is it there and readable as a virtual environment (for `store`: installed)?
    pub installed: bool,
    /// Why it is not usable, when it is not.
    pub error: Option<String>,
}

impl EnvironmentInfo {
    fn none() -> Self {
        Self {
            kind: "none",
            path: None,
            key: None,
            installed: false,
            error: None,
        }
    }

    fn venv(kind: &'static str, path: PathBuf, found: Result<Venv, String>) -> Self {
        let (installed, error) = match found {
            Ok(_) => (true, None),
            Err(e) => (false, Some(e)),
        };
        Self {
            kind,
            path: Some(path),
            key: None,
            installed,
            error,
        }
    }

    /// One line for people (not escaped: the caller escapes it with the rest of its line).
    pub fn line(&self) -> String {
        let path = self
            .path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let state = match (&self.error, self.installed) {
            (Some(e), _) => format!("unusable: {e}"),
            (None, true) => "installed".to_owned(),
            (None, false) => "not installed (run `plugbox install` on the plugin)".to_owned(),
        };
        match self.kind {
            "declared" => format!("{path} ([python] environment): {state}"),
            "store" => format!(
                "{path} (store key {}, built by plugbox install): {state}",
                self.key.as_deref().unwrap_or("")
            ),
            "runtime" => format!("{path} (the runtime's virtual environment): {state}"),
            "site-packages" => format!("{path} (holds the plugin in its site-packages): {state}"),
            _ => "none (the runtime's standard library and the SDK only)".to_owned(),
        }
    }
}

/// The environment `manifest`'s plugin runs in, looked up in the store `store_root`.
pub fn describe(manifest: &Manifest, store_root: &Path) -> EnvironmentInfo {
    let python = &manifest.file.python;
    if let Some(env) = &python.environment {
        let path = manifest.dir.join(env);
        let found = Venv::open(&path).map_err(|e| e.to_string());
        return EnvironmentInfo::venv("declared", path, found);
    }
    // The engine's order (`engine::python_env`): a venv runtime, resolved as the engine
    // resolves it, before the store.
    let runtime = crate::sandbox::command::ResolvedCommand::resolve(
        manifest.runtime.as_ref(),
        Some(crate::engine::RUNTIME_PATH.as_ref()),
    );
    if let Ok(command) = &runtime {
        match Venv::of_interpreter(command.path()) {
            Ok(Some(venv)) => return EnvironmentInfo::venv("runtime", venv.root.clone(), Ok(venv)),
            Ok(None) => {}
            Err(e) => {
                let path = command.path().to_owned();
                return EnvironmentInfo::venv("runtime", path, Err(e.to_string()));
            }
        }
    }
    if store::declares_install(python) {
        return in_store(manifest, store_root);
    }
    match Venv::containing(&manifest.dir) {
        Ok(Some(venv)) => EnvironmentInfo::venv("site-packages", venv.root.clone(), Ok(venv)),
        Ok(None) => EnvironmentInfo::none(),
        Err(e) => EnvironmentInfo::venv("site-packages", manifest.dir.clone(), Err(e.to_string())),
    }
}

fn in_store(manifest: &Manifest, store_root: &Path) -> EnvironmentInfo {
    let mut info = EnvironmentInfo {
        kind: "store",
        ..EnvironmentInfo::none()
    };
    let key = store::base_python(manifest)
        .map_err(|e| e.to_string())
        .and_then(|base| store::cached_key(store_root, manifest, &base).map_err(|e| e.to_string()));
    match key {
        Ok(Some(key)) => {
            let path = store_root.join(&key);
            info.installed = super::scratch::is_installed(&path, &key);
            info.path = Some(path);
            info.key = Some(key);
        }
        Ok(None) => {}
        Err(e) => info.error = Some(e),
    }
    info
}
