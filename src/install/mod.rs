//! `plugbox install DIR`: builds the Python environment a plugin's manifest declares
//! (`[python] requirements` and/or `wheels`) into the content-addressed store
//! ([`crate::pyenv::store`]), without ever running plugin or package code unconfined.
//!
//! The steps, in order:
//! 1. the key over the declared inputs; an installed environment (its marker holds the key)
//!    ends the install here (the cache hit);
//! 2. a scratch directory `ROOT/.tmp-<key>-<pid>`; the inputs are copied into it and the key
//!    computed again over the copies;
//! 3. sdists (opt-in only) are built into wheels inside a sandbox ([`sdist`]);
//! 4. `venv` and pip, unconfined: wheels only, hashes required with a lock ([`pip`]);
//! 5. byte-compilation, confined ([`crate::pyenv::compile`]);
//! 6. modes (world-readable, owner-writable), paths made final, the marker written last,
//!    then one atomic rename to `ROOT/<key>` ([`scratch::publish`]).

pub mod confined;
pub mod describe;
pub mod inputs;
pub mod lock;
pub mod perms;
pub mod pip;
pub mod scratch;
pub mod sdist;

use crate::manifest::Manifest;
use crate::pyenv::{key_memo, store, Venv};
use std::path::{Path, PathBuf};

/// Why an install failed. Nothing was added to the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// The plugin directory's manifest is invalid.
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
    /// The manifest's runtime cannot be resolved.
    #[error(transparent)]
    Runtime(#[from] crate::sandbox::command::CommandError),
    /// The declared inputs cannot be read.
    #[error(transparent)]
    Key(#[from] store::StoreError),
    /// The manifest declares no environment to install.
    #[error("install: {dir}: the manifest declares no [python] requirements or wheels")]
    NothingToInstall {
        /// The plugin directory.
        dir: PathBuf,
    },
    /// An input file or directory cannot be used.
    #[error("install: {path}: {reason}")]
    Input {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A lock line is refused.
    #[error("install: {path}: {error}")]
    Lock {
        /// The lock.
        path: PathBuf,
        /// The line and why.
        error: lock::LockError,
    },
    /// A source distribution without the manifest's `build_sdists = true`.
    #[error("install: {what} is a source distribution: building it runs its code; plugbox installs wheels only unless the manifest sets [python] build_sdists = true (then it is built inside a sandbox)")]
    SdistRefused {
        /// The file.
        what: String,
    },
    /// pip found no wheel for a requirement.
    #[error("install: no wheel of {requirement} (for this interpreter) on the index or in the bundled wheels: plugbox installs wheels only; bundle the sdist in the wheels directory and set [python] build_sdists = true to build it inside a sandbox")]
    NoWheel {
        /// The requirement, as pip named it.
        requirement: String,
    },
    /// venv or pip failed.
    #[error("install: {what} failed:\n{output}")]
    Pip {
        /// The step.
        what: String,
        /// The end of its output.
        output: String,
    },
    /// Building an sdist failed (inside its sandbox).
    #[error("install: building {sdist} (confined) failed: {output}")]
    Build {
        /// The sdist.
        sdist: String,
        /// Why, and the end of its output.
        output: String,
    },
    /// Byte-compiling failed.
    #[error("install: {0}")]
    Compile(String),
    /// The store or the scratch directory cannot be used.
    #[error("install: store {path}: {reason}")]
    Store {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// An installed environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// `ROOT/<key>`.
    pub path: PathBuf,
    /// The key.
    pub key: String,
    /// Built now (`false`: it was already installed).
    pub built: bool,
    /// `.py` files that did not byte-compile (syntax errors in the package).
    pub not_compiled: Vec<PathBuf>,
}

/// Installs the environment the plugin in `dir` declares into the store `root`.
pub fn install(dir: &Path, root: &Path) -> Result<Installed, InstallError> {
    let manifest = Manifest::load_for_host(dir)?;
    let base = store::base_python(&manifest)?;
    let root = std::path::absolute(root).map_err(|e| InstallError::Store {
        path: root.to_owned(),
        reason: e.to_string(),
    })?;
    let hit = |key: String| Installed {
        path: root
            .canonicalize()
            .unwrap_or_else(|_| root.clone())
            .join(&key),
        key,
        built: false,
        not_compiled: Vec::new(),
    };
    if let Some(key) = key_memo::lookup(&root, &manifest, &base) {
        if scratch::is_installed(&root.join(&key), &key) {
            return Ok(hit(key));
        }
    }
    let before = key_memo::stamps(&manifest);
    let Some(key) = store::key(&manifest, &base)? else {
        return Err(InstallError::NothingToInstall {
            dir: manifest.dir.clone(),
        });
    };
    let remember = |key: &str| {
        if let Some(before) = before.clone() {
            key_memo::record(&root, &manifest, &base, key, before);
        }
    };
    if scratch::is_installed(&root.join(&key), &key) {
        remember(&key);
        return Ok(hit(key));
    }
    scratch::ensure_root(&root)?;
    // Canonical, so that the paths pip and venv write match the ones rewritten at the end.
    let canonical = root.canonicalize().map_err(|e| InstallError::Store {
        path: root.clone(),
        reason: e.to_string(),
    })?;
    let installed = build(&manifest, &base, &canonical.join(&key), &key)?;
    remember(&key);
    Ok(installed)
}

/// Steps 2 to 6, in a fresh scratch directory.
fn build(
    manifest: &Manifest,
    base: &Path,
    target: &Path,
    key: &str,
) -> Result<Installed, InstallError> {
    let root = target.parent().unwrap_or(Path::new("/"));
    let scratch = scratch::Scratch::create(root, key)?;
    let mut inputs = inputs::copy(manifest, &scratch.inputs(), base)?;
    if inputs.key != key {
        return Err(InstallError::Input {
            path: manifest.dir.clone(),
            reason: "the declared inputs changed while being installed; run again".into(),
        });
    }
    let sandbox_ids = scratch::SANDBOX_IDS;
    let base_read = base_library(base);
    if !inputs.sdists.is_empty() {
        let build = scratch.step_dir("build", sandbox_ids)?;
        sdist::build_all(base, &mut inputs, &build, &base_read)?;
    }
    let env = scratch.env();
    let log = scratch.dir.join("pip.log");
    pip::create_venv(base, &env, &log)?;
    pip::install(base, &env, &inputs, &log)?;
    perms::world_readable(&env)?;
    let venv = Venv::open(&env).map_err(|e| InstallError::Compile(e.to_string()))?;
    let final_site = target.join(
        venv.site_packages
            .strip_prefix(&venv.root)
            .unwrap_or(&venv.site_packages),
    );
    let out = scratch.step_dir("pyc", sandbox_ids)?;
    let mut read = base_read;
    read.push(env.clone());
    let compiled = crate::pyenv::compile::compile(
        base,
        venv.version,
        &venv.site_packages,
        &final_site,
        &out,
        read,
    )
    .map_err(InstallError::Compile)?;
    perms::relocate(&env, &env, target)?;
    perms::world_readable(&env)?;
    scratch::publish(&scratch, target, key)?;
    Ok(Installed {
        path: target.to_owned(),
        key: key.to_owned(),
        built: true,
        not_compiled: compiled.failed,
    })
}

/// The base interpreter's library directory when it is not in the sandbox's baseline
/// (`/usr/lib`, `/usr/local/lib`): `PREFIX/lib` for `PREFIX/bin/pythonX.Y`.
fn base_library(base: &Path) -> Vec<PathBuf> {
    let lib = base.parent().and_then(Path::parent).map(|p| p.join("lib"));
    match lib {
        Some(lib) if lib.is_dir() && !lib.starts_with("/usr") => vec![lib],
        _ => Vec::new(),
    }
}
