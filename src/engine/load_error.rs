//! Why a plugin, or one instance of it, could not be started: one variant per step.

use super::evidence::Evidence;
use crate::manifest::ManifestError;
use crate::sandbox::command::CommandError;
use crate::sandbox::{PrepareError, SpawnError};

/// Why a plugin could not be loaded. Each variant is one step.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The manifest, API check or grants refused it.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A capability it requires does not exist in this host.
    #[error("load: {plugin} requires capabilities this host does not provide: {}", missing.join(", "))]
    UnknownCapabilities {
        /// The plugin.
        plugin: String,
        /// The names.
        missing: Vec<String>,
    },
    /// The plugin's data directory (or an `fs.*` root in it) could not be made or opened
    /// without following a symlink, or the bytes beneath its `fs.write` roots could not be
    /// counted.
    #[error("load: {0}")]
    DataDir(#[from] crate::capability::fs::DataDirError),
    /// The effective `[filesystem] write` would let the plugin change its own code (or the
    /// SDK every plugin runs).
    #[error("load: {0}")]
    CodeWritable(#[from] super::code_guard::CodeWritable),
    /// The plugin's Python environment is not installed, not granted, or puts a directory
    /// outside its grant on `sys.path`.
    #[error("load: {0}")]
    PythonEnv(#[from] super::python_env::PythonEnvError),
    /// The sandbox uid cannot reach the plugin or the SDK.
    #[error("load: {0}")]
    Reach(#[from] CommandError),
    /// The sandbox cannot be prepared as the policy demands.
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    /// The process could not be started.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// The handshake failed.
    #[error("handshake: {0}")]
    Handshake(String),
    /// The plugin's `hello` carried argument schemas past their bounds or outside the
    /// supported subset (`docs/authoring.md`): the handshake was refused.
    #[error("handshake: {0}")]
    ArgSchema(#[from] crate::broker::arg_schema::SchemaError),
    /// The audit log failed.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// A host resource failed.
    #[error("load: {0}")]
    Host(String),
    /// The engine already runs its maximum number of plugins.
    #[error("load: the engine already runs its maximum of {0} plugin processes")]
    Capacity(usize),
    /// The first health probe failed.
    #[error("health: the first health probe failed: {0}")]
    Health(String),
    /// A plugin of this name is loaded from other code or grants; use `reload`.
    #[error("load: {name} is already loaded as {loaded}; unload or reload it to change it")]
    Conflict {
        /// The plugin.
        name: String,
        /// What is loaded (version and digest).
        loaded: String,
    },
    /// The engine is shutting down.
    #[error("load: the engine is shutting down")]
    ShuttingDown,
    /// The plugin process failed before it was ready (at the handshake or the first health
    /// probe): `cause` says how the host saw it, `evidence` how the process ended and what
    /// it last wrote to stderr (the traceback of a syntax error or an exception at import).
    #[error("{cause}\n{evidence}")]
    PluginFailed {
        /// The failed step, as the host saw it.
        cause: Box<LoadError>,
        /// Exit status and stderr tail.
        evidence: Evidence,
    },
    /// A reload asks for more than the loaded version, with the same grants.
    #[error("reload: {name} {version} asks for more than the loaded version without a new grant: {}", changes.join("; "))]
    Escalates {
        /// The plugin.
        name: String,
        /// The new version.
        version: String,
        /// Each escalation, as `field: old -> new`.
        changes: Vec<String>,
    },
}

impl LoadError {
    /// The activation step that failed, as recorded in `load_refused` records.
    pub fn step(&self) -> &'static str {
        match self {
            LoadError::Manifest(_)
            | LoadError::UnknownCapabilities { .. }
            | LoadError::Escalates { .. }
            | LoadError::DataDir(_)
            | LoadError::CodeWritable(_)
            | LoadError::PythonEnv(_) => "validate",
            LoadError::Reach(_) | LoadError::Prepare(_) => "prepare",
            LoadError::Spawn(_) | LoadError::Capacity(_) => "spawn",
            LoadError::Handshake(_) | LoadError::ArgSchema(_) => "handshake",
            LoadError::Health(_) => "health",
            LoadError::Audit(_) => "audit",
            LoadError::Host(_) => "host",
            LoadError::Conflict { .. } | LoadError::ShuttingDown => "register",
            LoadError::PluginFailed { cause, .. } => cause.step(),
        }
    }

    /// What the plugin process left behind, when it failed before it was ready.
    pub fn evidence(&self) -> Option<&Evidence> {
        match self {
            LoadError::PluginFailed { evidence, .. } => Some(evidence),
            _ => None,
        }
    }

    /// One line for a record's `reason`: the error without the stderr tail (the record's
    /// `detail` carries that, see [`LoadError::audit_detail`]).
    pub fn summary(&self) -> String {
        match self {
            LoadError::PluginFailed { cause, evidence } => {
                format!("{cause} ({})", evidence.ending())
            }
            other => other.to_string(),
        }
    }

    /// The `detail` of the `load_refused` record: the step, and the evidence if any.
    pub fn audit_detail(&self) -> serde_json::Value {
        let mut detail = match self.evidence() {
            Some(evidence) => evidence.audit_detail(),
            None => serde_json::json!({}),
        };
        detail["step"] = self.step().into();
        detail
    }
}
