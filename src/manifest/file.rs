//! The serde mirror of a plugin's `plugbox.toml` and of a host grant file.
//!
//! A manifest is a sandbox policy (the sections of `policy::file`) plus `[plugin]` and
//! `[capabilities]`. Unknown fields are rejected everywhere.

use crate::policy::file::{
    FilesystemSection, LandlockSection, LimitsSection, NetworkSection, PolicyFile, ProcessSection,
    SupervisionSection, SyscallsSection,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `plugbox.toml`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    /// Format version; only `1`.
    pub schema: u32,
    /// Who the plugin is and how it starts.
    pub plugin: PluginSection,
    /// Broker-mediated host calls the plugin may make, by exact name.
    #[serde(default)]
    pub capabilities: BTreeMap<String, CapabilityRequest>,
    /// As in a sandbox policy.
    #[serde(default)]
    pub landlock: LandlockSection,
    /// As in a sandbox policy.
    #[serde(default)]
    pub filesystem: FilesystemSection,
    /// As in a sandbox policy.
    #[serde(default)]
    pub network: NetworkSection,
    /// As in a sandbox policy.
    #[serde(default)]
    pub process: ProcessSection,
    /// As in a sandbox policy.
    #[serde(default)]
    pub syscalls: SyscallsSection,
    /// As in a sandbox policy.
    #[serde(default)]
    pub limits: LimitsSection,
    /// As in a sandbox policy.
    #[serde(default)]
    pub supervision: SupervisionSection,
    /// The Python environment the plugin runs in, and what `plugbox install` builds.
    #[serde(default)]
    pub python: PythonSection,
}

/// `[python]`: the environment a plugin runs in. With none of these fields, a plugin runs on
/// its `plugin.runtime` with the standard library and the SDK only (or, when its directory
/// lies in a virtual environment's `site-packages`, in that environment).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PythonSection {
    /// An existing virtual environment to run in: a directory relative to the plugin
    /// directory, or absolute (then it must lie within the host's `[filesystem] read`
    /// ceiling). Its interpreter replaces `plugin.runtime`. Not with `requirements`/`wheels`.
    #[serde(default)]
    pub environment: Option<String>,
    /// A pinned requirements file, relative to the plugin directory: every requirement
    /// `name==version` with at least one `--hash=sha256:...`. `plugbox install` builds the
    /// environment from it, content-addressed.
    #[serde(default)]
    pub requirements: Option<String>,
    /// A directory of bundled wheels, relative to the plugin directory: `plugbox install`
    /// installs from it (and never from the package index, when there is no `requirements`).
    #[serde(default)]
    pub wheels: Option<String>,
    /// Allow source distributions: each is built into a wheel inside a plugbox sandbox
    /// (no network, writes only to a scratch directory). Default: wheels only.
    #[serde(default)]
    pub build_sdists: bool,
}

/// `[plugin]`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginSection {
    /// `[a-z0-9-]+`, at most 64 characters.
    pub name: String,
    /// Semantic version of the plugin.
    pub version: String,
    /// What the plugin does, in a sentence or two, for the people who install and grant it
    /// (at most 1024 characters; shown escaped by `plugbox check` and `plugbox list`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Semver requirement on the host API, such as `"^1"`.
    pub api: String,
    /// The entry file, relative to the plugin directory.
    pub entry: String,
    /// Interpreter: a name looked up in /usr/local/bin, /usr/bin, /bin, or an absolute path.
    #[serde(default = "default_runtime")]
    pub runtime: String,
}

fn default_runtime() -> String {
    "python3".into()
}

/// One requested capability.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CapabilityRequest {
    /// Why the plugin needs it (shown to operators).
    #[serde(default)]
    pub reason: Option<String>,
    /// If not granted, the plugin loads without it instead of being refused.
    #[serde(default)]
    pub optional: bool,
    /// For `fs.*`: roots, relative to the plugin directory.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Largest request or result payload, bytes.
    #[serde(default)]
    pub max_bytes: Option<u64>,
}

/// The ceiling for one capability.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CapabilityGrant {
    /// For `fs.*`: the roots a plugin may name (it gets those of its requested roots that are
    /// equal to or beneath one of these). Absent: any root the plugin requests.
    #[serde(default)]
    pub paths: Option<Vec<String>>,
    /// Largest payload granted, bytes (the effective value is the smaller of the two).
    #[serde(default)]
    pub max_bytes: Option<u64>,
}

impl ManifestFile {
    /// The sandbox sections, as a policy file.
    pub fn policy_file(&self) -> PolicyFile {
        PolicyFile {
            schema: self.schema,
            landlock: self.landlock.clone(),
            filesystem: self.filesystem.clone(),
            network: self.network.clone(),
            process: self.process.clone(),
            syscalls: self.syscalls.clone(),
            limits: self.limits.clone(),
            supervision: self.supervision.clone(),
        }
    }
}

/// The JSON Schema of `plugbox.toml`, generated from these types.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(ManifestFile)).unwrap_or_default()
}
