//! The serde mirror of a host grant file: the ceiling of what a plugin may get, in the
//! manifest's own section names. Unknown fields are rejected.
//!
//! Lists (paths, ports, syscall groups), `subprocesses` and `zygote` default to *nothing
//! granted*;
//! a number left out sets no ceiling (the manifest's value, or its default, stands); an
//! identity left out means the engine's own (the manifest may not pick one).

use super::file::CapabilityGrant;
use crate::policy::file::RestartMode;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A host or operator grant file (`schema = 1`).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantFile {
    /// Format version; only `1`.
    pub schema: u32,
    /// Capabilities granted, by exact name.
    #[serde(default)]
    pub capabilities: BTreeMap<String, CapabilityGrant>,
    /// The approved sha256 of the plugin's files (`plugbox check` prints it): a plugin whose
    /// code differs is refused until it is approved again.
    #[serde(default)]
    pub code_digest: Option<String>,
    /// The lowest Landlock ABI the plugin may run under (the manifest may only raise it).
    #[serde(default)]
    pub landlock: LandlockGrant,
    /// Roots beneath which the manifest's `[filesystem]` paths may lie.
    #[serde(default)]
    pub filesystem: FilesystemGrant,
    /// TCP ports the manifest's `[network]` may name.
    #[serde(default)]
    pub network: NetworkGrant,
    /// Process creation, identity and instance ceilings.
    #[serde(default)]
    pub process: ProcessGrant,
    /// Syscall groups the manifest's `[syscalls] allow` may name.
    #[serde(default)]
    pub syscalls: SyscallsGrant,
    /// Resource ceilings: the effective value is the smaller of manifest and grant.
    #[serde(default)]
    pub limits: LimitsGrant,
    /// Supervision ceilings: the effective value is the stricter of manifest and grant.
    #[serde(default)]
    pub supervision: SupervisionGrant,
}

/// The sandbox sections of a grant: everything in it but `[capabilities]` and
/// `code_digest`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxGrant {
    /// `[landlock]`.
    pub landlock: LandlockGrant,
    /// `[filesystem]`.
    pub filesystem: FilesystemGrant,
    /// `[network]`.
    pub network: NetworkGrant,
    /// `[process]`.
    pub process: ProcessGrant,
    /// `[syscalls]`.
    pub syscalls: SyscallsGrant,
    /// `[limits]`.
    pub limits: LimitsGrant,
    /// `[supervision]`.
    pub supervision: SupervisionGrant,
}

/// `[landlock]` of a grant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LandlockGrant {
    /// Floor of `landlock.min_abi`: the effective value is the larger of the two.
    #[serde(default)]
    pub min_abi: Option<u8>,
}

/// `[filesystem]` of a grant: absolute roots. A requested path is allowed when, resolved
/// (symlinks followed, `.`/`..` and trailing slashes gone), it lies at or beneath a resolved
/// root that gives at least its access: `read` beneath any of `read`, `write` or `execute`
/// (each of them lets the sandbox read), `write` beneath `write`, `execute` beneath `execute`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilesystemGrant {
    /// Roots for read-only paths.
    #[serde(default)]
    pub read: Vec<PathBuf>,
    /// Roots for read-write paths (also cover read-only ones).
    #[serde(default)]
    pub write: Vec<PathBuf>,
    /// Roots for execute paths (also cover read-only ones).
    #[serde(default)]
    pub execute: Vec<PathBuf>,
}

/// `[network]` of a grant: the ports a manifest may list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkGrant {
    /// Ports the plugin may connect to.
    #[serde(default)]
    pub connect_tcp: Vec<u16>,
    /// Ports the plugin may bind (0: an ephemeral port).
    #[serde(default)]
    pub bind_tcp: Vec<u16>,
}

/// `[syscalls]` of a grant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyscallsGrant {
    /// Optional syscall groups the manifest may add, such as `"@sync"`.
    #[serde(default)]
    pub allow: Vec<String>,
}

/// `[process]` of a grant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessGrant {
    /// May the plugin create processes and exec programs (if its manifest asks)?
    #[serde(default)]
    pub subprocesses: bool,
    /// May the plugin's instances be forked from a per-plugin template (if
    /// its manifest asks)? They then share the template's memory layout and uid (see
    /// `docs/zygote.md`).
    #[serde(default)]
    pub zygote: bool,
    /// The uid the plugin runs as (when the host is root). The manifest may name a uid only
    /// when it is this one. Absent: the engine's (a per-instance pool uid).
    #[serde(default)]
    pub uid: Option<u32>,
    /// The gid the plugin runs as, like `uid`.
    #[serde(default)]
    pub gid: Option<u32>,
    /// Ceiling of `process.max_threads`.
    #[serde(default)]
    pub max_threads: Option<u32>,
    /// Ceiling of `process.instances`.
    #[serde(default)]
    pub instances: Option<u32>,
    /// Ceiling of `process.min_warm`.
    #[serde(default)]
    pub min_warm: Option<u32>,
    /// Ceiling of `process.idle_seconds` (a shorter idle time frees resources sooner).
    #[serde(default)]
    pub idle_seconds: Option<u64>,
}

/// `[limits]` of a grant: each a ceiling; the effective value is the smaller one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsGrant {
    /// Ceiling of `limits.memory_mib`.
    #[serde(default)]
    pub memory_mib: Option<u64>,
    /// Ceiling of `limits.cpu_seconds`.
    #[serde(default)]
    pub cpu_seconds: Option<u64>,
    /// Ceiling of `limits.wall_seconds`.
    #[serde(default)]
    pub wall_seconds: Option<u64>,
    /// Ceiling of `limits.open_files`.
    #[serde(default)]
    pub open_files: Option<u64>,
    /// Ceiling of `limits.file_size_mib`.
    #[serde(default)]
    pub file_size_mib: Option<u64>,
    /// Ceiling of `limits.fs_quota_mib`.
    #[serde(default)]
    pub fs_quota_mib: Option<u64>,
    /// Ceiling of `limits.output_bytes`.
    #[serde(default)]
    pub output_bytes: Option<u64>,
    /// Ceiling of `limits.calls_per_second`.
    #[serde(default)]
    pub calls_per_second: Option<u32>,
    /// Ceiling of `limits.call_burst`.
    #[serde(default)]
    pub call_burst: Option<u32>,
    /// Ceiling of `limits.calls_in_flight`.
    #[serde(default)]
    pub calls_in_flight: Option<u32>,
    /// Ceiling of `limits.pending_reply_mib`.
    #[serde(default)]
    pub pending_reply_mib: Option<u64>,
    /// Ceiling of `limits.call_timeout_ms`.
    #[serde(default)]
    pub call_timeout_ms: Option<u64>,
}

/// `[supervision]` of a grant: each the stricter bound (see `policies/README.md`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SupervisionGrant {
    /// `"never"` overrides the manifest's `"on-failure"`.
    #[serde(default)]
    pub restart: Option<RestartMode>,
    /// Ceiling (fewer restarts is stricter).
    #[serde(default)]
    pub max_restarts: Option<u32>,
    /// Floor (restarts counted over a longer window is stricter).
    #[serde(default)]
    pub restart_window_seconds: Option<u64>,
    /// Floor (a longer first delay is stricter).
    #[serde(default)]
    pub backoff_ms: Option<u64>,
    /// Floor (a longer longest delay is stricter).
    #[serde(default)]
    pub backoff_max_ms: Option<u64>,
    /// Floor (a circuit that stays open longer is stricter).
    #[serde(default)]
    pub circuit_open_seconds: Option<u64>,
    /// Ceiling (more frequent health pings are stricter).
    #[serde(default)]
    pub health_interval_ms: Option<u64>,
    /// Ceiling (a shorter ping deadline is stricter).
    #[serde(default)]
    pub health_timeout_ms: Option<u64>,
}

impl GrantFile {
    /// The sandbox sections, apart from `[capabilities]` and `code_digest`.
    pub fn sandbox(&self) -> SandboxGrant {
        SandboxGrant {
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

/// The JSON Schema of a grant file, generated from these types.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(GrantFile)).unwrap_or_default()
}
