//! A virtual environment read from its `pyvenv.cfg` (bounded, no symlink, no special file):
//! its root, the interpreter inside it, the base installation it was made from, and the
//! directories a confined interpreter needs to read.
//!
//! CPython finds `pyvenv.cfg` beside its executable or one directory up, using the path it
//! was started through (`argv[0]`), not the file a symlink leads to: a venv's `bin/python`
//! is usually a symlink to the base interpreter, so an environment only works when the
//! interpreter is executed through the environment's path.

use std::path::{Path, PathBuf};

/// The configuration file that marks a virtual environment.
pub const CONFIG_NAME: &str = "pyvenv.cfg";
/// Largest `pyvenv.cfg` read.
const MAX_CONFIG_BYTES: u64 = 16 * 1024;

/// A virtual environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Venv {
    /// The environment's root (canonical): the directory holding `pyvenv.cfg`.
    pub root: PathBuf,
    /// The interpreter to execute, inside the environment (`ROOT/bin/python` or the path the
    /// user gave): a path through which CPython finds `pyvenv.cfg`.
    pub python: PathBuf,
    /// The base installation's prefix (`home`'s parent, canonical), such as `/usr`.
    pub base_prefix: PathBuf,
    /// `(major, minor)` of the interpreter.
    pub version: (u32, u32),
    /// The base installation's standard library, `BASE/lib/pythonX.Y` (canonical).
    pub stdlib: PathBuf,
    /// The environment's own `ROOT/lib/pythonX.Y/site-packages`.
    pub site_packages: PathBuf,
    /// `include-system-site-packages = true`: the base installation's site directories are
    /// on `sys.path` too.
    pub system_site_packages: bool,
}

/// Why a directory or interpreter is not a usable virtual environment.
#[derive(Debug, thiserror::Error)]
pub enum VenvError {
    /// The file could not be read (missing, a symlink, a special file, too large).
    #[error("python environment: {path}: {reason}")]
    Unreadable {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// `pyvenv.cfg` lacks something CPython needs, or says something impossible.
    #[error("python environment: {path}: {reason}")]
    Invalid {
        /// `pyvenv.cfg`.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl Venv {
    /// Reads the virtual environment rooted at `root` (it must hold `pyvenv.cfg`). Its
    /// interpreter is `ROOT/bin/python`.
    pub fn open(root: &Path) -> Result<Self, VenvError> {
        let unreadable = |path: &Path, reason: String| VenvError::Unreadable {
            path: path.to_owned(),
            reason,
        };
        let root = root
            .canonicalize()
            .map_err(|e| unreadable(root, e.to_string()))?;
        let cfg_path = root.join(CONFIG_NAME);
        let text = crate::untrusted_file::read_to_string(&cfg_path, MAX_CONFIG_BYTES)
            .map_err(|e| unreadable(&cfg_path, e.to_string()))?;
        let cfg = Config::parse(&text);
        let invalid = |reason: String| VenvError::Invalid {
            path: cfg_path.clone(),
            reason,
        };
        let home = cfg
            .get("home")
            .filter(|h| h.starts_with('/'))
            .ok_or_else(|| {
                invalid("no absolute `home` (the base interpreter's directory)".into())
            })?;
        let home = Path::new(home)
            .canonicalize()
            .map_err(|e| invalid(format!("home {home:?}: {e}")))?;
        let base_prefix = home.parent().unwrap_or(&home).to_owned();
        let version = cfg
            .version()
            .or_else(|| lib_version(&root))
            .ok_or_else(|| invalid("no `version` and no lib/pythonX.Y directory".into()))?;
        let lib = format!("lib/python{}.{}", version.0, version.1);
        let stdlib = base_prefix.join(&lib);
        let stdlib = stdlib
            .canonicalize()
            .map_err(|e| invalid(format!("standard library {}: {e}", stdlib.display())))?;
        Ok(Self {
            python: root.join("bin/python"),
            site_packages: root.join(&lib).join("site-packages"),
            system_site_packages: cfg
                .get("include-system-site-packages")
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
            root,
            base_prefix,
            version,
            stdlib,
        })
    }

    /// The virtual environment `interpreter` belongs to, as CPython decides it: `pyvenv.cfg`
    /// beside the path as given (not its symlink target) or one directory up. `None` when
    /// there is none: the interpreter runs as itself.
    pub fn of_interpreter(interpreter: &Path) -> Result<Option<Self>, VenvError> {
        let Some(dir) = interpreter.parent() else {
            return Ok(None);
        };
        // Absolute, but symlinks in the directory part kept as the user gave them.
        let dir = std::path::absolute(dir).map_err(|e| VenvError::Unreadable {
            path: dir.to_owned(),
            reason: e.to_string(),
        })?;
        for root in [dir.as_path()].into_iter().chain(dir.parent()) {
            if root.join(CONFIG_NAME).symlink_metadata().is_ok() {
                let mut venv = Self::open(root)?;
                venv.python = dir.join(interpreter.file_name().unwrap_or_default());
                return Ok(Some(venv));
            }
        }
        Ok(None)
    }

    /// The virtual environment whose `site-packages` holds `dir` (a plugin installed with
    /// pip: the entry-point and namespace routes), if any.
    pub fn containing(dir: &Path) -> Result<Option<Self>, VenvError> {
        let Some(site) = dir
            .ancestors()
            .find(|a| a.file_name().is_some_and(|n| n == "site-packages"))
        else {
            return Ok(None);
        };
        // ROOT/lib/pythonX.Y/site-packages
        match site.ancestors().nth(3) {
            Some(root) if root.join(CONFIG_NAME).symlink_metadata().is_ok() => {
                let venv = Self::open(root)?;
                Ok((venv.site_packages == site).then_some(venv))
            }
            _ => Ok(None),
        }
    }

    /// Directories a confined interpreter of this environment reads: the environment and
    /// the base standard library.
    pub fn read_paths(&self) -> Vec<PathBuf> {
        vec![self.root.clone(), self.stdlib.clone()]
    }

    /// What the enforcement report says of this environment; `route` tells how it was found.
    pub fn report(&self, route: &'static str) -> EnvReport {
        EnvReport {
            route,
            root: self.root.clone(),
            interpreter: self.python.clone(),
            base_prefix: self.base_prefix.clone(),
            version: format!("{}.{}", self.version.0, self.version.1),
            site_packages: self.site_packages.clone(),
            system_site_packages: self.system_site_packages,
            granted_read: self.read_paths(),
        }
    }
}

/// The Python environment a sandboxed command runs in, as the enforcement report shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EnvReport {
    /// How it was found: `interpreter` (the command is a venv's interpreter), `manifest`,
    /// `runtime`, `installed`, `site-packages`.
    pub route: &'static str,
    /// The environment's root.
    pub root: PathBuf,
    /// The interpreter executed, through the environment's path.
    pub interpreter: PathBuf,
    /// The base installation's prefix.
    pub base_prefix: PathBuf,
    /// `X.Y`.
    pub version: String,
    /// The environment's site-packages.
    pub site_packages: PathBuf,
    /// Whether the base installation's site directories are on `sys.path` too.
    pub system_site_packages: bool,
    /// What the sandbox was granted read on because of it (never write).
    pub granted_read: Vec<PathBuf>,
}

/// `key = value` lines of `pyvenv.cfg` (keys compared without case, as CPython does).
struct Config(Vec<(String, String)>);

impl Config {
    fn parse(text: &str) -> Self {
        Self(
            text.lines()
                .filter_map(|line| line.split_once('='))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `version` (3.11+) or `version_info` (3.12+, `3.12.1.final.0`).
    fn version(&self) -> Option<(u32, u32)> {
        let text = self.get("version").or_else(|| self.get("version_info"))?;
        let mut parts = text.split('.');
        let major = parts.next()?.trim().parse().ok()?;
        let minor = parts.next()?.trim().parse().ok()?;
        Some((major, minor))
    }
}

/// The `X.Y` of the single `ROOT/lib/pythonX.Y` directory.
fn lib_version(root: &Path) -> Option<(u32, u32)> {
    let mut found = std::fs::read_dir(root.join("lib"))
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let (major, minor) = name.strip_prefix("python")?.split_once('.')?;
            Some((major.parse().ok()?, minor.parse().ok()?))
        });
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn config_keys_ignore_case_and_spaces() {
        let cfg =
            Config::parse("Home = /usr/bin\ninclude-system-site-packages=TRUE\nversion = 3.11.2\n");
        assert_eq!(cfg.get("home"), Some("/usr/bin"));
        assert_eq!(cfg.version(), Some((3, 11)));
    }

    #[test]
    fn a_directory_without_pyvenv_cfg_is_no_environment() {
        assert!(Venv::of_interpreter(Path::new("/usr/bin/python3"))
            .unwrap()
            .is_none());
        assert!(
            Venv::containing(Path::new("/usr/lib/python3/dist-packages"))
                .unwrap()
                .is_none()
        );
    }
}
