//! Discovery: finding plugins without running any of their code.
//!
//! Three routes, all by reading files only:
//! - plugin directories: `DIR/*/plugbox.toml`;
//! - installed Python distributions whose `*.dist-info/entry_points.txt` declares the group
//!   (default `[plugbox.plugins]`, or an application's own, [`Names`]); the entry's top-level
//!   package must ship a `plugbox.toml`;
//! - namespace packages (default `plugbox_plugins.<name>`: `SITE/plugbox_plugins/<name>/
//!   plugbox.toml`; an application's `myapp.plugins` is `SITE/myapp/plugins/<name>/`).
//!
//! Site directories come from the interpreter run with `-I -S` (no `site` processing, so no
//! `.pth` file of an installed package executes; a virtual environment is recognised by its
//! `pyvenv.cfg`, as `site` would), or are given explicitly. One invalid plugin never hides the
//! others.

mod names;

pub use names::{InvalidName, Names};

use crate::manifest::{Manifest, MANIFEST_NAME};
use crate::untrusted_file::UntrustedFileError;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Largest `entry_points.txt` read.
const MAX_ENTRY_POINTS_BYTES: u64 = 64 * 1024;

/// One plugin found, valid or not.
#[derive(Debug, Clone, Serialize)]
pub struct Found {
    /// `directory`, `entry-point` or `namespace`.
    pub route: &'static str,
    /// The plugin directory.
    pub location: PathBuf,
    /// Manifest name and version, when valid.
    pub name: Option<String>,
    /// Version.
    pub version: Option<String>,
    /// Requested capabilities.
    pub capabilities: Vec<String>,
    /// `None` when valid; the reason otherwise.
    pub error: Option<String>,
    /// The Python environment it runs in (filled by [`describe_environments`]).
    pub environment: Option<crate::install::describe::EnvironmentInfo>,
}

fn found(route: &'static str, location: PathBuf) -> Found {
    let result = Manifest::load_for_host(&location);
    match result {
        Ok(m) => Found {
            route,
            name: Some(m.name.clone()),
            version: Some(m.version.to_string()),
            capabilities: m.requested.keys().cloned().collect(),
            location,
            error: None,
            environment: None,
        },
        Err(e) => invalid(route, location, e.to_string()),
    }
}

/// Is there anything named `plugbox.toml` in `dir`? A symlink, FIFO or device counts, so
/// that it is listed as invalid (by [`Manifest::load`], which refuses it) instead of hidden.
fn has_manifest(dir: &Path) -> bool {
    dir.join(MANIFEST_NAME).symlink_metadata().is_ok()
}

fn invalid(route: &'static str, location: PathBuf, error: String) -> Found {
    Found {
        route,
        location,
        name: None,
        version: None,
        capabilities: Vec::new(),
        error: Some(error),
        environment: None,
    }
}

/// Fills each valid plugin's [`Found::environment`]: which Python environment it runs in and
/// whether it is installed in the store `store_root` (reads files only).
pub fn describe_environments(found: &mut [Found], store_root: &Path) {
    for f in found.iter_mut().filter(|f| f.error.is_none()) {
        if let Ok(m) = Manifest::load_for_host(&f.location) {
            f.environment = Some(crate::install::describe::describe(&m, store_root));
        }
    }
}

/// Plugins in `DIR/*/plugbox.toml` for each directory.
pub fn in_directories(dirs: &[PathBuf]) -> Vec<Found> {
    let mut out = Vec::new();
    for dir in dirs {
        let mut subdirs: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| has_manifest(p))
            .collect();
        subdirs.sort();
        out.extend(subdirs.into_iter().map(|d| found("directory", d)));
    }
    out
}

/// Plugins installed in Python site directories under plugbox's own entry-point group and
/// namespace package ([`Names::default`]).
pub fn in_site_dirs(sites: &[PathBuf]) -> Vec<Found> {
    in_site_dirs_named(sites, &Names::default())
}

/// Plugins installed in Python site directories under `names`' entry-point group and
/// namespace package.
pub fn in_site_dirs_named(sites: &[PathBuf], names: &Names) -> Vec<Found> {
    let mut out = Vec::new();
    for site in sites {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(site)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for dist in entries
            .iter()
            .filter(|p| p.extension().is_some_and(|x| x == "dist-info"))
        {
            let entry_points = dist.join("entry_points.txt");
            let packages = match entry_point_packages(&entry_points, names.group()) {
                Ok(packages) => packages,
                Err(e) => {
                    out.push(invalid("entry-point", dist.clone(), e.to_string()));
                    continue;
                }
            };
            for package in packages {
                let dir = site.join(&package);
                if has_manifest(&dir) {
                    out.push(found("entry-point", dir));
                } else {
                    let error = format!(
                        "{} declares {} but ships no {MANIFEST_NAME}",
                        crate::audit::escape_text(&dist.display().to_string()),
                        names.group()
                    );
                    out.push(invalid("entry-point", dir, error));
                }
            }
        }
        let ns = names.namespace_dir(site);
        out.extend(in_directories(&[ns]).into_iter().map(|f| Found {
            route: "namespace",
            ..f
        }));
    }
    out
}

/// Top-level package names of the `[group]` entries of one `entry_points.txt` (none when
/// there is no such file). A special file, a symlink, an oversized or non-UTF-8 file is an
/// error, read through the untrusted-file reader so it cannot block or flood.
fn entry_point_packages(path: &Path, group: &str) -> Result<Vec<String>, UntrustedFileError> {
    let header = format!("[{group}]");
    let text = match crate::untrusted_file::read_to_string(path, MAX_ENTRY_POINTS_BYTES) {
        Ok(text) => text,
        Err(UntrustedFileError::Open { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return Ok(Vec::new())
        }
        Err(e) => return Err(e),
    };
    let mut in_group = false;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_group = line == header;
            continue;
        }
        if !in_group || line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((_, target)) = line.split_once('=') {
            let module = target.trim().split(':').next().unwrap_or("").trim();
            let package = module.split('.').next().unwrap_or("");
            let valid = !package.is_empty()
                && package
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            if valid && !out.iter().any(|p| p == package) {
                out.push(package.to_owned());
            }
        }
    }
    Ok(out)
}

/// Asks the interpreter for its site directories. Under `-S` the `site` module never runs
/// `site.venv()`, so a virtual environment's interpreter reports its base installation's
/// directories; this does what `site.venv()` does to `sys.prefix` (find `pyvenv.cfg` beside the
/// executable or one level up, honour `include-system-site-packages`) without its
/// `addsitepackages()`, which would execute `.pth` files.
const SITE_DIRS_SCRIPT: &str = r#"import json, os, site, sys
exe_dir = os.path.dirname(os.path.abspath(sys.executable))
prefix = os.path.dirname(exe_dir)
dirs = site.getsitepackages()
for cfg in (os.path.join(exe_dir, "pyvenv.cfg"), os.path.join(prefix, "pyvenv.cfg")):
    if os.path.isfile(cfg):
        system = "true"
        with open(cfg, encoding="utf-8") as f:
            for line in f:
                key, eq, value = line.partition("=")
                if eq and key.strip().lower() == "include-system-site-packages":
                    system = value.strip().lower()
        sys.prefix = sys.exec_prefix = prefix
        dirs = site.getsitepackages([prefix]) + (dirs if system == "true" else [])
        break
print(json.dumps(dirs))
"#;

/// The site directories of `python`, asked with `-I -S` so that no `.pth` file runs. For a
/// virtual environment's interpreter: the environment's own site directories (then the base
/// installation's, when it was created with `--system-site-packages`).
pub fn site_dirs(python: &Path) -> std::io::Result<Vec<PathBuf>> {
    let out = std::process::Command::new(python)
        .args(["-I", "-S", "-c", SITE_DIRS_SCRIPT])
        .stdin(std::process::Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "{} could not list its site directories",
            python.display()
        )));
    }
    let dirs: Vec<PathBuf> = serde_json::from_slice(&out.stdout).map_err(std::io::Error::other)?;
    let mut seen = Vec::new();
    for d in dirs {
        if d.is_dir() && !seen.contains(&d) {
            seen.push(d);
        }
    }
    Ok(seen)
}
