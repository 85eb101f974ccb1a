//! The Python environment a plugin runs in, decided by the host before anything runs: which
//! virtual environment (if any), what it is read with, and on whose authority.
//!
//! Resolution, first match wins:
//! 1. `[python] environment` (relative to the plugin directory, or absolute);
//! 2. `plugin.runtime` naming a virtual environment's interpreter;
//! 3. `[python] requirements`/`wheels`: the environment `plugbox install` built in the
//!    engine's store for the real base interpreter (not installed: a typed refusal naming
//!    `plugbox install DIR`);
//! 4. the plugin directory lies in a virtual environment's `site-packages` (installed with
//!    pip: the entry-point and namespace routes): that environment;
//! 5. none: the plugin runs as before (`-I -S`, standard library and SDK only).
//!
//! Host authority (issue 10: grants are ceilings): an environment inside the plugin directory,
//! in the engine's store, or whose `site-packages` holds the plugin directory is read without
//! asking the grant (the plugin ships it, plugbox built it, or the operator installed the
//! plugin into it); any other one must lie within the grant's `[filesystem] read`. The base
//! standard library is read freely when the baseline already reads it (`/usr/lib`), through
//! the grant otherwise. Never write: the environment is protected like the plugin's code.

use super::pth_scan::{self, PthFinding};
use super::RUNTIME_PATH;
use crate::manifest::{Grants, Manifest};
use crate::pyenv::store::{self, StoreError};
use crate::pyenv::{Venv, VenvError};
use crate::sandbox::command::{CommandError, ResolvedCommand};
use crate::sandbox::landlock::BASELINE_READ;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Why a plugin's Python environment refuses its load.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PythonEnvError {
    /// The declared environment is not installed, or its inputs cannot be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The environment's `pyvenv.cfg` cannot be read or is invalid.
    #[error(transparent)]
    Venv(#[from] VenvError),
    /// `plugin.runtime` cannot be resolved, and the environment depends on it.
    #[error("python environment: the base interpreter: {0}")]
    Runtime(#[from] CommandError),
    /// An environment outside the plugin directory and the engine's store, not granted.
    #[error(
        "python environment: {} (from {origin}) is not within the grant's [filesystem] read: \
         {}; the operator must grant read on it, or ship the environment in the plugin \
         directory or build it with `plugbox install`",
        shown(root), paths.iter().map(|p| shown(p)).collect::<Vec<_>>().join(", ")
    )]
    NotGranted {
        /// The environment's root.
        root: PathBuf,
        /// Where it came from (`python.environment`, `plugin.runtime`).
        origin: &'static str,
        /// The paths the grant does not cover.
        paths: Vec<PathBuf>,
    },
    /// A `.pth` file (or an editable finder) puts a directory outside the environment and
    /// the grant on `sys.path`.
    #[error(
        "python environment: {} line {line} adds {} to sys.path, outside the environment \
         and the grant's [filesystem] read (an editable install?): the operator must grant \
         read on it, or install the package without -e",
        shown(file),
        shown(path)
    )]
    PthOutside {
        /// The `.pth` file or editable finder.
        file: PathBuf,
        /// Its line (1-based).
        line: usize,
        /// The directory it names.
        path: PathBuf,
    },
    /// A `.pth` file cannot be read safely (a symlink, a special file, too large, too many).
    #[error("python environment: {}: {reason}", shown(path))]
    PthUnreadable {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn shown(path: &Path) -> String {
    crate::audit::escape_text(&path.display().to_string())
}

/// Where a plugin's environment came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// `[python] environment`.
    Declared,
    /// `plugin.runtime` is a virtual environment's interpreter.
    Runtime,
    /// Built by `plugbox install` into the engine's store.
    Store,
    /// The plugin directory lies in its `site-packages`.
    Containing,
}

impl Origin {
    fn field(self) -> &'static str {
        match self {
            Origin::Declared => "python.environment",
            Origin::Runtime => "plugin.runtime",
            Origin::Store => "python.requirements/wheels",
            Origin::Containing => "the plugin's location",
        }
    }
}

/// A resolved environment and what the sandbox reads of it.
#[derive(Debug, Clone)]
pub(crate) struct PythonEnv {
    pub(crate) venv: Venv,
    pub(crate) origin: Origin,
    /// Read on the host's authority (in the plugin directory, the store, or containing the
    /// plugin), rather than within the grant's ceiling.
    pub(crate) host_read: bool,
    /// Directories outside the environment, the plugin directory and the effective
    /// `[filesystem] read` that its `.pth` files and editable finders put on `sys.path`, each
    /// within the grant's read ceiling (checked at validation) and read with it.
    pub(crate) pth_paths: Vec<PathBuf>,
    /// Packages of `site-packages` without byte-code (each would compile at every start).
    pub(crate) without_bytecode: Vec<String>,
}

/// The environment `manifest` (its ceiling applied) runs in under `grants`, checked: granted
/// where the host's authority does not cover it, and its `.pth` files within the effective
/// `[filesystem] read`.
pub(crate) fn for_load(
    manifest: &Manifest,
    grants: &Grants,
    env_store: &Path,
) -> Result<Option<PythonEnv>, PythonEnvError> {
    let Some(mut env) = resolve(manifest, env_store)? else {
        return Ok(None);
    };
    env.check_granted(manifest, grants)?;
    env.check_pth(manifest, grants)?;
    if !env.without_bytecode.is_empty() {
        tracing::warn!(
            plugin = %manifest.name,
            environment = %env.venv.root.display(),
            packages = ?env.without_bytecode,
            "python environment without byte-code: these packages compile at every start \
             (the sandbox cannot write __pycache__); byte-compile the environment"
        );
    }
    Ok(Some(env))
}

/// Resolves the environment of `manifest` (see the module doc), or `None`.
pub(crate) fn resolve(
    manifest: &Manifest,
    env_store: &Path,
) -> Result<Option<PythonEnv>, PythonEnvError> {
    let Some((venv, origin)) = find(manifest, env_store)? else {
        return Ok(None);
    };
    // Shipped with the plugin (the digest covers it), built by plugbox, or the environment
    // the operator installed the plugin into (its site-packages holds the plugin directory:
    // an ancestor that merely has a pyvenv.cfg is not enough).
    let store = env_store.canonicalize().ok();
    let host_read = venv.root.starts_with(&manifest.dir)
        || manifest.dir.starts_with(&venv.site_packages)
        || store.is_some_and(|s| venv.root.starts_with(s));
    let without_bytecode = pth_scan::without_bytecode(&venv.site_packages);
    Ok(Some(PythonEnv {
        venv,
        origin,
        host_read,
        pth_paths: Vec::new(),
        without_bytecode,
    }))
}

fn find(manifest: &Manifest, env_store: &Path) -> Result<Option<(Venv, Origin)>, PythonEnvError> {
    let python = &manifest.file.python;
    if let Some(env) = &python.environment {
        let venv = Venv::open(&manifest.dir.join(env))?;
        return Ok(Some((venv, Origin::Declared)));
    }
    let runtime = ResolvedCommand::resolve(manifest.runtime.as_ref(), Some(RUNTIME_PATH.as_ref()));
    if let Ok(command) = &runtime {
        if let Some(venv) = Venv::of_interpreter(command.path())? {
            return Ok(Some((venv, Origin::Runtime)));
        }
    }
    if store::declares_install(python) {
        // The one resolution `plugbox install` keys the store with (`store::base_python`).
        let base = store::base_of(&runtime?);
        if let Some(venv) = store::installed(env_store, manifest, &base)? {
            return Ok(Some((venv, Origin::Store)));
        }
    }
    Ok(Venv::containing(&manifest.dir)?.map(|venv| (venv, Origin::Containing)))
}

impl PythonEnv {
    /// Every directory the sandbox reads for this environment: its root, the base standard
    /// library, and the directories its `.pth` files name that the operator granted.
    pub(crate) fn read_paths(&self) -> Vec<PathBuf> {
        let mut paths = self.venv.read_paths();
        paths.extend(self.pth_paths.iter().cloned());
        paths
    }

    /// The interpreter to execute: through the environment's path, so it finds `pyvenv.cfg`.
    pub(crate) fn interpreter(&self) -> &Path {
        &self.venv.python
    }

    /// The directories that need the grant: the root unless read on the host's authority,
    /// and the standard library unless the baseline reads it already.
    fn needs_grant(&self) -> Vec<PathBuf> {
        let mut paths = Vec::new();
        if !self.host_read {
            paths.push(self.venv.root.clone());
        }
        let stdlib = &self.venv.stdlib;
        if !BASELINE_READ.iter().any(|b| stdlib.starts_with(b)) {
            paths.push(stdlib.clone());
        }
        paths
    }

    /// Refuses the load unless the grant's `[filesystem] read` ceiling covers what needs it
    /// (the same intersection the manifest's own requests go through).
    pub(crate) fn check_granted(
        &self,
        manifest: &Manifest,
        grants: &Grants,
    ) -> Result<(), PythonEnvError> {
        let paths = self.needs_grant();
        if paths.is_empty() {
            return Ok(());
        }
        let refused: Vec<PathBuf> = paths
            .into_iter()
            .filter(|p| !within_ceiling(manifest, grants, p))
            .collect();
        if refused.is_empty() {
            return Ok(());
        }
        Err(PythonEnvError::NotGranted {
            root: self.venv.root.clone(),
            origin: self.origin.field(),
            paths: refused,
        })
    }

    /// Scans the environment's `.pth` files and editable finders: each directory they put on
    /// `sys.path` outside the environment must lie within the effective `[filesystem] read`
    /// (`manifest.policy`, its ceiling applied), the plugin directory, or the grant's read
    /// ceiling (the operator granted it: it is read like the environment, see
    /// [`PythonEnv::read_paths`]).
    pub(crate) fn check_pth(
        &mut self,
        manifest: &Manifest,
        grants: &Grants,
    ) -> Result<(), PythonEnvError> {
        let fs = manifest.policy.filesystem();
        let readable: Vec<PathBuf> = fs
            .read
            .iter()
            .chain(&fs.write)
            .filter_map(|p| p.canonicalize().ok())
            .chain([
                self.venv.root.clone(),
                self.venv.stdlib.clone(),
                manifest.dir.clone(),
            ])
            .collect();
        let mut outside = Vec::new();
        for finding in pth_scan::scan(&self.venv)? {
            let PthFinding { file, line, path } = finding;
            // A directory that does not exist is skipped by `site` too.
            let Ok(real) = path.canonicalize() else {
                continue;
            };
            if readable.iter().any(|g| real.starts_with(g)) {
                continue;
            }
            if !within_ceiling(manifest, grants, &real) {
                return Err(PythonEnvError::PthOutside { file, line, path });
            }
            if !outside.contains(&real) {
                outside.push(real);
            }
        }
        self.pth_paths = outside;
        Ok(())
    }

    /// What the audit's spawn record and the enforcement report say about it.
    pub(crate) fn report(&self) -> serde_json::Value {
        serde_json::json!({
            "root": self.venv.root,
            "interpreter": self.venv.python,
            "origin": self.origin,
            "version": format!("{}.{}", self.venv.version.0, self.venv.version.1),
            "site_packages": self.venv.site_packages,
            "granted_read": self.read_paths(),
            "read_on": if self.host_read { "host" } else { "grant" },
            "pth_paths": self.pth_paths,
            "without_bytecode": self.without_bytecode,
        })
    }
}

/// Does the grant's `[filesystem] read` ceiling cover `path`? Decided by the same
/// intersection the manifest's own requests go through (resolved, `/proc` and the like never).
fn within_ceiling(manifest: &Manifest, grants: &Grants, path: &Path) -> bool {
    let mut request = manifest.file.policy_file();
    request.filesystem = crate::policy::file::FilesystemSection {
        read: vec![path.to_owned()],
        ..Default::default()
    };
    !crate::manifest::ceiling::intersect(&request, grants)
        .excess
        .iter()
        .any(|e| e.field == "filesystem.read")
}

/// The interpreter's arguments before the bootstrap: `-I -S -u` without an environment (no
/// `site`), `-I -u` with one (`site` adds its `site-packages`; `-I` still drops the user site
/// and `PYTHON*` variables). `-u`: unbuffered output, so no line is lost when the plugin dies.
pub(crate) fn interpreter_args(
    env: Option<&PythonEnv>,
    bootstrap: String,
) -> Vec<std::ffi::OsString> {
    let flags: &[&str] = match env {
        Some(_) => &["-I", "-u", "-c"],
        None => &["-I", "-S", "-u", "-c"],
    };
    let mut args: Vec<std::ffi::OsString> = flags.iter().map(Into::into).collect();
    args.push(bootstrap.into());
    args
}
