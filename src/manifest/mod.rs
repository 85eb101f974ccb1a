//! Manifest: a plugin directory's `plugbox.toml`, validated, and intersected with the host's
//! grants into the plugin's effective capabilities.

/// The host API version this engine provides to plugins (`plugin.api` is matched against it).
pub const HOST_API_VERSION: &str = "1.0.0";

pub mod ceiling;
mod ceiling_limits;
pub mod diff;
mod diff_fields;
pub mod digest;
pub mod error;
pub mod file;
pub mod grant_file;
mod grants;

pub use ceiling::{Ceiling, CeilingMode};
pub use error::ManifestError;
pub use file::{CapabilityGrant, CapabilityRequest, ManifestFile, PythonSection};
pub use grant_file::GrantFile;
pub use grants::Grants;

use crate::policy::{Policy, MAX_POLICY_BYTES};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// The manifest's file name inside a plugin directory.
pub const MANIFEST_NAME: &str = "plugbox.toml";
/// Longest plugin or capability name.
pub const MAX_NAME_CHARS: usize = 64;

/// A validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The plugin directory (canonical).
    pub dir: PathBuf,
    /// `plugin.name`.
    pub name: String,
    /// `plugin.version`.
    pub version: semver::Version,
    /// `plugin.api`.
    pub api: semver::VersionReq,
    /// The entry file (absolute, inside `dir`).
    pub entry: PathBuf,
    /// `plugin.runtime` as written.
    pub runtime: String,
    /// Requested capabilities.
    pub requested: BTreeMap<String, CapabilityRequest>,
    /// The sandbox policy: as the manifest's sections request it until
    /// [`Manifest::constrain`] applies the host's grants; the effective policy after.
    pub policy: Policy,
    /// The file as written: what [`diff`] compares field by field.
    pub file: ManifestFile,
}

/// One capability the plugin may use, after intersecting request and grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveCapability {
    /// Exact name.
    pub name: String,
    /// For `fs.*`: granted roots, relative to the plugin directory.
    pub paths: Vec<String>,
    /// Largest payload, bytes (None: the engine's default).
    pub max_bytes: Option<u64>,
}

/// A manifest or grant file: a regular file (no symlink, FIFO or device) of at most
/// [`MAX_POLICY_BYTES`], read without trusting its reported size.
pub(super) fn read_bounded(path: &Path) -> Result<String, ManifestError> {
    use crate::untrusted_file::UntrustedFileError;
    crate::untrusted_file::read_to_string(path, MAX_POLICY_BYTES).map_err(|e| match e {
        UntrustedFileError::Open { path, source } => ManifestError::Read { path, source },
        e => ManifestError::File(e),
    })
}

impl Manifest {
    /// Reads and validates `dir/plugbox.toml`.
    pub fn load(dir: &Path) -> Result<Self, ManifestError> {
        let dir = dir.canonicalize().map_err(|source| ManifestError::Read {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(MANIFEST_NAME);
        let text = read_bounded(&path)?;
        let file: ManifestFile = toml::from_str(&text).map_err(|e| ManifestError::Parse {
            path: path.clone(),
            message: e.to_string().replace('\n', " "),
        })?;
        Self::validate(dir, file)
    }

    /// Validates a parsed manifest whose plugin directory is `dir` (canonical).
    pub fn validate(dir: PathBuf, file: ManifestFile) -> Result<Self, ManifestError> {
        let policy = Policy::from_file(file.policy_file())?;
        let p = &file.plugin;
        check_name("plugin.name", &p.name, |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
        })?;
        let version = semver::Version::parse(&p.version).map_err(|e| {
            ManifestError::invalid("plugin.version", format!("{:?}: {e}", p.version))
        })?;
        let api = semver::VersionReq::parse(&p.api)
            .map_err(|e| ManifestError::invalid("plugin.api", format!("{:?}: {e}", p.api)))?;
        let entry = entry_path(&dir, &p.entry)?;
        check_description(p.description.as_deref())?;
        check_python(&file.python)?;
        let written = file.clone();
        for (name, request) in &file.capabilities {
            let field = format!("capabilities.{name:?}");
            check_name(&field, name, |c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c)
            })?;
            for (i, root) in request.paths.iter().enumerate() {
                relative_root(root)
                    .map_err(|r| ManifestError::invalid(format!("{field}.paths[{i}]"), r))?;
            }
        }
        Ok(Self {
            name: p.name.clone(),
            version,
            api,
            entry,
            runtime: p.runtime.clone(),
            requested: file.capabilities,
            policy,
            dir,
            file: written,
        })
    }

    /// Reads and validates `dir`'s manifest and checks it against this host's API version
    /// ([`HOST_API_VERSION`]): the one validity `plugbox check` and
    /// `plugbox list` both report.
    pub fn load_for_host(dir: &Path) -> Result<Self, ManifestError> {
        let manifest = Self::load(dir)?;
        let host = semver::Version::parse(HOST_API_VERSION)
            .map_err(|e| ManifestError::invalid("host API version", e.to_string()))?;
        manifest.check_api(&host)?;
        Ok(manifest)
    }

    /// Checks the API requirement against the host's version.
    pub fn check_api(&self, host: &semver::Version) -> Result<(), ManifestError> {
        if self.api.matches(host) {
            Ok(())
        } else {
            Err(ManifestError::ApiMismatch {
                plugin: format!("{} {}", self.name, self.version),
                required: self.api.to_string(),
                host: host.to_string(),
            })
        }
    }

    /// Applies the host's ceiling to the sandbox sections: [`Manifest::policy`] becomes
    /// requested ∩ granted ([`ceiling`]). A request beyond the ceiling refuses the load with
    /// every excess listed (in [`CeilingMode::Clamp`], only one no grant may give); the
    /// returned [`Ceiling`] says what was dropped and made stricter, for the audit log.
    pub fn constrain(
        &mut self,
        grants: &Grants,
        mode: CeilingMode,
    ) -> Result<Ceiling, ManifestError> {
        let ceiling = ceiling::intersect(&self.file.policy_file(), grants);
        if ceiling.refuses(mode) {
            return Err(ManifestError::BeyondCeiling {
                plugin: self.name.clone(),
                excess: ceiling.excess.iter().map(ToString::to_string).collect(),
            });
        }
        let policy =
            Policy::from_file(ceiling.effective.clone()).map_err(|e| ManifestError::Grant {
                path: PathBuf::from("-"),
                message: format!("the effective policy is invalid: {e}"),
            })?;
        self.policy = if grants.is_all_requested() {
            policy
        } else {
            policy.with_resolved_paths()
        };
        Ok(ceiling)
    }

    /// Requested ∩ granted. A required capability that is not granted refuses the load, with
    /// every missing one listed; an optional one is simply absent.
    pub fn effective(&self, grants: &Grants) -> Result<Vec<EffectiveCapability>, ManifestError> {
        let mut out = Vec::new();
        let mut missing = Vec::new();
        for (name, request) in &self.requested {
            let grant = if grants.all {
                Some(CapabilityGrant::default())
            } else {
                grants.capabilities.get(name).cloned()
            };
            let Some(grant) = grant else {
                if !request.optional {
                    missing.push(name.clone());
                }
                continue;
            };
            let paths = granted_roots(&request.paths, grant.paths.as_deref());
            if paths.len() < request.paths.len() && !request.optional {
                let denied: Vec<&String> = request
                    .paths
                    .iter()
                    .filter(|p| !paths.contains(p))
                    .collect();
                missing.push(format!("{name} (paths {denied:?})"));
                continue;
            }
            let max_bytes = match (request.max_bytes, grant.max_bytes) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            out.push(EffectiveCapability {
                name: name.clone(),
                paths,
                max_bytes,
            });
        }
        if missing.is_empty() {
            Ok(out)
        } else {
            Err(ManifestError::NotGranted {
                plugin: self.name.clone(),
                missing,
            })
        }
    }
}

fn check_name(
    field: &str,
    name: &str,
    allowed: impl Fn(char) -> bool,
) -> Result<(), ManifestError> {
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || !name.chars().all(allowed) {
        return Err(ManifestError::invalid(
            field,
            format!("{name:?} must be 1..={MAX_NAME_CHARS} characters of the allowed set"),
        ));
    }
    Ok(())
}

/// Longest `plugin.description`, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;

fn check_description(description: Option<&str>) -> Result<(), ManifestError> {
    match description {
        Some(d) if d.chars().count() > MAX_DESCRIPTION_CHARS => Err(ManifestError::invalid(
            "plugin.description",
            format!("at most {MAX_DESCRIPTION_CHARS} characters"),
        )),
        _ => Ok(()),
    }
}

fn entry_path(dir: &Path, entry: &str) -> Result<PathBuf, ManifestError> {
    relative_root(entry).map_err(|r| ManifestError::invalid("plugin.entry", r))?;
    let path = dir.join(entry);
    let real = path
        .canonicalize()
        .map_err(|e| ManifestError::invalid("plugin.entry", format!("{}: {e}", path.display())))?;
    if !real.starts_with(dir) || !real.is_file() {
        return Err(ManifestError::invalid(
            "plugin.entry",
            format!(
                "{} is not a file inside the plugin directory",
                path.display()
            ),
        ));
    }
    Ok(real)
}

/// `[python]`: relative paths stay inside the plugin directory (an environment may also be
/// absolute), and an existing environment excludes one `plugbox install` builds.
fn check_python(python: &PythonSection) -> Result<(), ManifestError> {
    if let Some(env) = &python.environment {
        if !env.starts_with('/') {
            relative_root(env).map_err(|r| ManifestError::invalid("python.environment", r))?;
        } else if env.contains('\0')
            || Path::new(env)
                .components()
                .any(|c| c == Component::ParentDir)
        {
            return Err(ManifestError::invalid(
                "python.environment",
                format!("{env:?} must be a plain absolute path (no '..')"),
            ));
        }
        if python.requirements.is_some() || python.wheels.is_some() {
            return Err(ManifestError::invalid(
                "python.environment",
                "an existing environment excludes `requirements` and `wheels` (which describe \
                 the environment `plugbox install` builds)",
            ));
        }
    }
    for (field, value) in [
        ("python.requirements", &python.requirements),
        ("python.wheels", &python.wheels),
    ] {
        if let Some(path) = value {
            relative_root(path).map_err(|r| ManifestError::invalid(field, r))?;
        }
    }
    Ok(())
}

/// A root or entry must be a plain relative path: no `/` prefix, no `..`, no NUL.
fn relative_root(path: &str) -> Result<(), String> {
    let p = Path::new(path);
    if path.is_empty() || path.contains('\0') || p.is_absolute() {
        return Err(format!("{path:?} must be a non-empty relative path"));
    }
    if p.components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!("{path:?} must not contain '..'"));
    }
    Ok(())
}

fn granted_roots(requested: &[String], ceiling: Option<&[String]>) -> Vec<String> {
    requested
        .iter()
        .filter(|r| match ceiling {
            None => true,
            Some(granted) => granted.iter().any(|g| Path::new(r).starts_with(g)),
        })
        .cloned()
        .collect()
}
