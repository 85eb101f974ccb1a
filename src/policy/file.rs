//! Stage 1 of the policy pipeline: the serde mirror of `plugbox.toml`'s sandbox sections.
//!
//! These types only describe the file. Nothing here is trusted or checked beyond its shape:
//! unknown fields are rejected, and validation (`policy::validate`) turns a [`PolicyFile`] into a
//! [`super::Policy`]. Every default below is the strictest useful value; the policy README
//! (`policies/README.md`) says why each one is safe.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The whole sandbox policy file (`schema = 1`).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Version of this file format. Only `1` exists.
    pub schema: u32,
    /// Landlock requirements.
    #[serde(default)]
    pub landlock: LandlockSection,
    /// Filesystem access beyond the always-granted baseline.
    #[serde(default)]
    pub filesystem: FilesystemSection,
    /// TCP ports the program may use. UDP and other socket families are always refused.
    #[serde(default)]
    pub network: NetworkSection,
    /// Process creation and identity.
    #[serde(default)]
    pub process: ProcessSection,
    /// Extra seccomp syscall groups beyond the baseline.
    #[serde(default)]
    pub syscalls: SyscallsSection,
    /// Resource limits.
    #[serde(default)]
    pub limits: LimitsSection,
    /// Restart policy and health checks.
    #[serde(default)]
    pub supervision: SupervisionSection,
}

/// `[landlock]`: what the kernel must be able to enforce.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LandlockSection {
    /// Lowest Landlock ABI the program may run under. 6 is the first ABI that scopes signals
    /// and abstract unix sockets; below it the program would reach other processes.
    #[serde(default = "default_min_abi")]
    pub min_abi: u8,
}

/// `[filesystem]`: absolute paths; each rule covers the path and everything beneath it.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilesystemSection {
    /// Read-only beneath these paths.
    #[serde(default)]
    pub read: Vec<PathBuf>,
    /// Read, write, create, rename and delete beneath these paths.
    #[serde(default)]
    pub write: Vec<PathBuf>,
    /// Execute (and read) files beneath these paths.
    #[serde(default)]
    pub execute: Vec<PathBuf>,
}

/// `[network]`: TCP only, enforced by Landlock per port.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    /// TCP ports the program may connect to (any address).
    #[serde(default)]
    pub connect_tcp: Vec<u16>,
    /// TCP ports the program may bind (0 means "an ephemeral port").
    #[serde(default)]
    pub bind_tcp: Vec<u16>,
}

/// `[process]`: process creation and identity.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessSection {
    /// May the program create processes (fork, vfork, non-thread clone) and exec programs?
    #[serde(default)]
    pub subprocesses: bool,
    /// Fork the instances from a per-plugin template that imported the plugin,
    /// instead of starting each one afresh. They share its memory layout (ASLR, stack
    /// canary, `str` hash seed) and its uid (see `docs/zygote.md`). Off by default; refused
    /// together with `subprocesses`.
    #[serde(default)]
    pub zygote: bool,
    /// Most threads (and processes) the sandbox uid may have at once (`RLIMIT_NPROC`).
    #[serde(default = "default_max_threads")]
    pub max_threads: u32,
    /// User id the program runs as when plugbox runs as root. Never 0. Absent: 65534, or
    /// in the engine, a uid of its per-instance pool. In a plugin manifest, allowed only when
    /// the host's grant names this exact uid (identity is the host's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Group id the program runs as when plugbox runs as root. Never 0. Absent: as `uid`.
    /// In a plugin manifest, allowed only when the host's grant names this exact gid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// Most processes of this plugin the engine runs at once; calls go to a ready one.
    #[serde(default = "default_one")]
    pub instances: u32,
    /// Instances kept running (warm) even when idle; at least 1, at most `instances`.
    #[serde(default = "default_one")]
    pub min_warm: u32,
    /// Seconds without a call after which an instance beyond `min_warm` is stopped.
    #[serde(default = "default_idle_seconds")]
    pub idle_seconds: u64,
}

/// `[syscalls]`: named seccomp groups added to the baseline.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyscallsSection {
    /// Names of optional syscall groups, such as `"@sync"`. See `plugbox probe --groups`.
    #[serde(default)]
    pub allow: Vec<String>,
}

/// `[limits]`: resource limits, units in the names.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Address space, MiB (`RLIMIT_AS`).
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    /// CPU time, seconds (`RLIMIT_CPU`): SIGXCPU at the limit, SIGKILL one second later.
    #[serde(default = "default_cpu_seconds")]
    pub cpu_seconds: u64,
    /// Wall-clock budget, seconds; then the whole process tree is killed (under the engine,
    /// the instance is replaced: a *recycle*). `0`, the default, means no wall-clock budget:
    /// an engine-loaded instance lives until it is stopped, fails or uses up `cpu_seconds`.
    #[serde(default = "default_wall_seconds")]
    pub wall_seconds: u64,
    /// Open file descriptors (`RLIMIT_NOFILE`).
    #[serde(default = "default_open_files")]
    pub open_files: u64,
    /// Largest file the program may write, MiB (`RLIMIT_FSIZE`); writes past it fail EFBIG.
    #[serde(default = "default_file_size_mib")]
    pub file_size_mib: u64,
    /// Bytes the host's built-in `fs.write` may store beneath the plugin's `fs.write` roots,
    /// MiB: files already there count (summed once at activation), and each write counts its
    /// size change. A write past it is refused `too_large`. Files the plugin writes itself,
    /// through its own `[filesystem] write` grants, count only once an activation sums them.
    #[serde(default = "default_fs_quota_mib")]
    pub fs_quota_mib: u64,
    /// Bytes of stdout plus stderr forwarded, then both are cut.
    #[serde(default = "default_output_bytes")]
    pub output_bytes: u64,
    /// Plugin→host calls per second, sustained (token bucket refill rate). Every call takes a
    /// token, granted or not; refusals past the rate are coalesced in the audit log.
    #[serde(default = "default_calls_per_second")]
    pub calls_per_second: u32,
    /// Plugin→host calls allowed in a burst above the sustained rate.
    #[serde(default = "default_call_burst")]
    pub call_burst: u32,
    /// Plugin→host calls outstanding at once.
    #[serde(default = "default_calls_in_flight")]
    pub calls_in_flight: u32,
    /// Bytes the host may hold for this plugin's pending replies, MiB, all instances together:
    /// each call reserves its capability's `max_bytes` before it runs, until its reply's write
    /// starts; a call that cannot reserve is refused (`rate_limited`).
    #[serde(default = "default_pending_reply_mib")]
    pub pending_reply_mib: u64,
    /// Longest a single call (either direction) may take, milliseconds.
    #[serde(default = "default_call_timeout_ms")]
    pub call_timeout_ms: u64,
}

/// When a plugin instance that ended without being asked to is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartMode {
    /// Never: the plugin fails with its first unplanned exit.
    Never,
    /// After a crash, a failed health check or a kill, with exponential backoff, at most
    /// `max_restarts` times in `restart_window_seconds`; past that the circuit opens.
    OnFailure,
}

/// `[supervision]`: how the engine watches and restarts a loaded plugin.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SupervisionSection {
    /// `"never"` or `"on-failure"`.
    #[serde(default = "default_restart")]
    pub restart: RestartMode,
    /// Restarts allowed within `restart_window_seconds` before the circuit opens.
    #[serde(default = "default_max_restarts")]
    pub max_restarts: u32,
    /// The window restarts are counted in, seconds.
    #[serde(default = "default_restart_window_seconds")]
    pub restart_window_seconds: u64,
    /// Delay before the first restart, milliseconds; it doubles with each restart in the window.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// Longest delay before a restart, milliseconds.
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// How long an open circuit fails calls fast before one trial restart, seconds.
    #[serde(default = "default_circuit_open_seconds")]
    pub circuit_open_seconds: u64,
    /// Interval between health pings of each instance, milliseconds.
    #[serde(default = "default_health_interval_ms")]
    pub health_interval_ms: u64,
    /// Deadline of a health ping (and of the first one, at activation), milliseconds.
    #[serde(default = "default_health_timeout_ms")]
    pub health_timeout_ms: u64,
}

fn default_one() -> u32 {
    1
}
fn default_idle_seconds() -> u64 {
    60
}
fn default_restart() -> RestartMode {
    RestartMode::OnFailure
}
fn default_max_restarts() -> u32 {
    5
}
fn default_restart_window_seconds() -> u64 {
    60
}
fn default_backoff_ms() -> u64 {
    100
}
fn default_backoff_max_ms() -> u64 {
    5000
}
fn default_circuit_open_seconds() -> u64 {
    30
}
fn default_health_interval_ms() -> u64 {
    5000
}
fn default_health_timeout_ms() -> u64 {
    1000
}

impl Default for SupervisionSection {
    fn default() -> Self {
        Self {
            restart: default_restart(),
            max_restarts: default_max_restarts(),
            restart_window_seconds: default_restart_window_seconds(),
            backoff_ms: default_backoff_ms(),
            backoff_max_ms: default_backoff_max_ms(),
            circuit_open_seconds: default_circuit_open_seconds(),
            health_interval_ms: default_health_interval_ms(),
            health_timeout_ms: default_health_timeout_ms(),
        }
    }
}

fn default_min_abi() -> u8 {
    6
}
fn default_max_threads() -> u32 {
    64
}
fn default_memory_mib() -> u64 {
    512
}
fn default_cpu_seconds() -> u64 {
    10
}
fn default_wall_seconds() -> u64 {
    0
}
fn default_open_files() -> u64 {
    64
}
fn default_file_size_mib() -> u64 {
    16
}
fn default_fs_quota_mib() -> u64 {
    64
}
fn default_output_bytes() -> u64 {
    1_048_576
}
/// Far above what one Python plugin reaches in a sequential loop (about 36 000 fire-and-forget
/// `log` calls or 10 000 round trips per second were measured here; see `policies/README.md`),
/// so only a flood is refused.
fn default_calls_per_second() -> u32 {
    100_000
}
fn default_call_burst() -> u32 {
    10_000
}
fn default_calls_in_flight() -> u32 {
    16
}
fn default_pending_reply_mib() -> u64 {
    256
}
fn default_call_timeout_ms() -> u64 {
    5000
}

impl Default for LandlockSection {
    fn default() -> Self {
        Self {
            min_abi: default_min_abi(),
        }
    }
}

impl Default for ProcessSection {
    fn default() -> Self {
        Self {
            subprocesses: false,
            zygote: false,
            max_threads: default_max_threads(),
            uid: None,
            gid: None,
            instances: default_one(),
            min_warm: default_one(),
            idle_seconds: default_idle_seconds(),
        }
    }
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            memory_mib: default_memory_mib(),
            cpu_seconds: default_cpu_seconds(),
            wall_seconds: default_wall_seconds(),
            open_files: default_open_files(),
            file_size_mib: default_file_size_mib(),
            fs_quota_mib: default_fs_quota_mib(),
            output_bytes: default_output_bytes(),
            calls_per_second: default_calls_per_second(),
            call_burst: default_call_burst(),
            calls_in_flight: default_calls_in_flight(),
            pending_reply_mib: default_pending_reply_mib(),
            call_timeout_ms: default_call_timeout_ms(),
        }
    }
}

/// The JSON Schema of the policy file, generated from these types.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(PolicyFile);
    serde_json::to_value(&schema).unwrap_or_default()
}
