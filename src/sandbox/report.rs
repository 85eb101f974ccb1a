//! The enforcement report: what each layer actually enforces for one prepared policy.

use super::landlock::LandlockReport;
use serde::Serialize;

/// Everything the sandbox applied, as written by `plugbox exec --report-json`.
#[derive(Debug, Clone, Serialize)]
pub struct EnforcementReport {
    /// The program executed (real path).
    pub command: String,
    /// Every file granted execute: the command and its interpreters.
    pub executables: Vec<String>,
    /// Landlock ABI, ruleset status, handled rights and rules.
    pub landlock: LandlockReport,
    /// The installed seccomp filter.
    pub seccomp: SeccompReport,
    /// Resource limits set in the child.
    pub rlimits: Vec<RlimitReport>,
    /// Capability handling.
    pub capabilities: CapabilityReport,
    /// Uid the command runs as.
    pub uid: u32,
    /// Gid the command runs as.
    pub gid: u32,
    /// Whether no_new_privs is set (always true: the spawn fails otherwise).
    pub no_new_privs: bool,
    /// Own session and process group; setsid/setpgid denied afterwards.
    pub new_session: bool,
    /// Killed when the spawning thread dies.
    pub parent_death_signal: &'static str,
    /// Environment variable names passed to the command (values omitted).
    pub environment: Vec<String>,
    /// The Python virtual environment the command runs in, when it is one's interpreter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub python_environment: Option<crate::pyenv::EnvReport>,
    /// The private mount view (own `/proc`, generated `/etc/passwd` and `/etc/group`):
    /// `"enabled"`, or why the command runs without one.
    pub private_view: String,
}

/// The seccomp layer.
#[derive(Debug, Clone, Serialize)]
pub struct SeccompReport {
    /// Number of BPF instructions.
    pub instructions: usize,
    /// sha256 of the program, hex.
    pub sha256: String,
    /// Action for syscalls in no granted group.
    pub default_action: &'static str,
    /// Groups allowed.
    pub groups: Vec<&'static str>,
    /// Whether other ABIs (i386, x32) kill the process.
    pub foreign_abi_action: &'static str,
}

/// One resource limit.
#[derive(Debug, Clone, Serialize)]
pub struct RlimitReport {
    /// `RLIMIT_*` name.
    pub resource: &'static str,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// The capability layer.
#[derive(Debug, Clone, Serialize)]
pub struct CapabilityReport {
    /// Whether the bounding set was emptied (needs CAP_SETPCAP in the host).
    pub bounding_set_dropped: bool,
    /// Whether the securebits were locked (needs CAP_SETPCAP in the host).
    pub securebits_locked: bool,
    /// Effective, permitted, inheritable and ambient sets after the steps: always empty.
    pub effective: Vec<String>,
    /// Permitted set.
    pub permitted: Vec<String>,
    /// Inheritable set.
    pub inheritable: Vec<String>,
    /// Ambient set.
    pub ambient: Vec<String>,
}
