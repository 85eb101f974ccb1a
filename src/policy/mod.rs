//! Policy: from `plugbox.toml` text to a validated, immutable [`Policy`].
//!
//! Two types, two stages: [`file::PolicyFile`] mirrors the file (serde, unknown fields
//! rejected); [`Policy`] is what validation accepted. Only [`Policy`] reaches the sandbox.

pub mod error;
pub mod file;
pub mod syscall_groups;
mod validate;

pub use error::PolicyError;
pub use validate::LANDLOCK_ABI_KNOWN;

use std::path::{Path, PathBuf};
use syscall_groups::SyscallGroup;

/// Largest policy file read, in bytes.
pub const MAX_POLICY_BYTES: u64 = 256 * 1024;

/// A validated sandbox policy. Immutable: built only by [`Policy::from_toml`] or
/// [`Policy::load`].
#[derive(Debug, Clone)]
pub struct Policy {
    min_landlock_abi: u8,
    filesystem: FsRules,
    network: NetRules,
    process: ProcessRules,
    syscall_groups: Vec<&'static SyscallGroup>,
    limits: Limits,
    supervision: Supervision,
    resolved_paths: bool,
}

/// Filesystem grants beyond the baseline, each an absolute path covering its subtree.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FsRules {
    /// Read-only.
    pub read: Vec<PathBuf>,
    /// Read, write, create, rename, delete.
    pub write: Vec<PathBuf>,
    /// Execute and read.
    pub execute: Vec<PathBuf>,
}

/// TCP ports, sorted and deduplicated.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NetRules {
    /// Ports the program may connect to.
    pub connect_tcp: Vec<u16>,
    /// Ports the program may bind.
    pub bind_tcp: Vec<u16>,
}

impl NetRules {
    /// Does the policy allow any TCP at all?
    pub fn any_tcp(&self) -> bool {
        !self.connect_tcp.is_empty() || !self.bind_tcp.is_empty()
    }
}

/// Process creation and identity.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProcessRules {
    /// May the program create processes and exec other programs?
    pub subprocesses: bool,
    /// Are instances forked from a per-plugin template that imported the
    /// plugin? They share its memory layout (ASLR, stack canary, `str` hash seed) and its uid,
    /// so an address or seed leaked by one instance holds for all of them; see
    /// `docs/zygote.md`. Never together with `subprocesses`.
    pub zygote: bool,
    /// `RLIMIT_NPROC` for the sandbox uid.
    pub max_threads: u32,
    /// Uid when plugbox runs as root (never 0).
    pub uid: u32,
    /// Gid when plugbox runs as root (never 0).
    pub gid: u32,
    /// Most instances run at once.
    pub instances: u32,
    /// Instances kept running when idle.
    pub min_warm: u32,
    /// How long an instance beyond `min_warm` may go without a call before it is stopped.
    pub idle: std::time::Duration,
}

/// Restart policy and health checks of a loaded plugin.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Supervision {
    /// Restart after unplanned exits?
    pub restart: file::RestartMode,
    /// Restarts allowed within `restart_window` before the circuit opens.
    pub max_restarts: u32,
    /// Window restarts are counted in.
    pub restart_window: std::time::Duration,
    /// First restart delay (doubles per restart in the window).
    pub backoff: std::time::Duration,
    /// Longest restart delay.
    pub backoff_max: std::time::Duration,
    /// How long an open circuit fails calls before a trial restart.
    pub circuit_open: std::time::Duration,
    /// Interval between health pings.
    pub health_interval: std::time::Duration,
    /// Deadline of one health ping.
    pub health_timeout: std::time::Duration,
}

/// Resource limits, in bytes and seconds.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Limits {
    /// `RLIMIT_AS`.
    pub memory_bytes: u64,
    /// `RLIMIT_CPU`.
    pub cpu_seconds: u64,
    /// Wall-clock budget of the whole process tree, seconds; `0` means none (see
    /// [`Limits::wall_budget`]).
    pub wall_seconds: u64,
    /// `RLIMIT_NOFILE`.
    pub open_files: u64,
    /// `RLIMIT_FSIZE`.
    pub file_size_bytes: u64,
    /// Bytes the built-in `fs.write` may store beneath the plugin's `fs.write` roots.
    pub fs_quota_bytes: u64,
    /// stdout plus stderr forwarded before both are cut.
    pub output_bytes: u64,
    /// Sustained plugin→host calls per second.
    pub calls_per_second: u32,
    /// Burst above the sustained rate.
    pub call_burst: u32,
    /// Outstanding plugin→host calls.
    pub calls_in_flight: u32,
    /// Bytes held for pending replies, all instances together.
    pub pending_reply_bytes: u64,
    /// Per-call deadline.
    pub call_timeout: std::time::Duration,
}

impl Limits {
    /// The wall-clock budget, or `None` when `wall_seconds` is 0 (no budget: nothing is killed
    /// or recycled for the time it has lived).
    pub fn wall_budget(&self) -> Option<std::time::Duration> {
        (self.wall_seconds > 0).then(|| std::time::Duration::from_secs(self.wall_seconds))
    }

    /// `wall_seconds` as a quantity that grows with what it allows: no budget (0) is more
    /// than any budget, so comparisons (`plugbox diff`, ceilings) must use this, not the raw
    /// field.
    pub fn wall_seconds_allowed(&self) -> u64 {
        if self.wall_seconds == 0 {
            u64::MAX
        } else {
            self.wall_seconds
        }
    }
}

impl Policy {
    /// Parses and validates policy text. Errors name the field and the reason.
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        let file: file::PolicyFile = toml::from_str(text).map_err(|e| parse_error(text, &e))?;
        validate::validate(file)
    }

    /// Validates an already parsed file (the manifest stage embeds the sandbox sections).
    pub fn from_file(file: file::PolicyFile) -> Result<Self, PolicyError> {
        validate::validate(file)
    }

    /// Reads, parses and validates a policy file (at most [`MAX_POLICY_BYTES`]).
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        use crate::untrusted_file::UntrustedFileError;
        let text =
            crate::untrusted_file::read_to_string(path, MAX_POLICY_BYTES).map_err(|e| match e {
                UntrustedFileError::TooLarge { path, limit } => PolicyError::TooLarge {
                    path,
                    size: limit + 1,
                    limit,
                },
                UntrustedFileError::Open { path, source } => PolicyError::Read { path, source },
                e => PolicyError::File(e),
            })?;
        Self::from_toml(&text)
    }

    /// The strictest policy: the baseline and nothing else.
    pub fn strictest() -> Self {
        // The empty file with only `schema = 1` is always valid.
        match Self::from_toml("schema = 1") {
            Ok(policy) => policy,
            Err(e) => unreachable!("the default policy is valid: {e}"),
        }
    }

    /// Lowest Landlock ABI the policy accepts.
    pub fn min_landlock_abi(&self) -> u8 {
        self.min_landlock_abi
    }
    /// Filesystem grants.
    pub fn filesystem(&self) -> &FsRules {
        &self.filesystem
    }
    /// TCP grants.
    pub fn network(&self) -> &NetRules {
        &self.network
    }
    /// Process rules.
    pub fn process(&self) -> &ProcessRules {
        &self.process
    }
    /// Optional syscall groups granted on top of the baseline.
    pub fn syscall_groups(&self) -> &[&'static SyscallGroup] {
        &self.syscall_groups
    }
    /// Resource limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Restart policy and health checks.
    pub fn supervision(&self) -> &Supervision {
        &self.supervision
    }

    /// This policy marked as holding resolved `[filesystem]` paths (a grant's ceiling made
    /// it): the Landlock layer refuses a path whose opened location is not the path itself,
    /// so a symlink planted after the ceiling check cannot move a rule elsewhere.
    pub fn with_resolved_paths(mut self) -> Self {
        self.resolved_paths = true;
        self
    }

    /// Were the `[filesystem]` paths resolved by a grant's ceiling?
    pub fn paths_resolved(&self) -> bool {
        self.resolved_paths
    }

    /// This policy with `paths` added to the read-only grants (the engine adds a plugin's
    /// own directory and the SDK this way).
    pub fn with_read_paths(mut self, paths: impl IntoIterator<Item = PathBuf>) -> Self {
        self.filesystem.read.extend(paths);
        self
    }
}

/// One line: where in the text, and what the TOML layer said.
fn parse_error(text: &str, error: &toml::de::Error) -> PolicyError {
    let message = error.message().trim_end().replace('\n', " ");
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            PolicyError::Parse(format!("line {line}, column {column}: {message}"))
        }
        None => PolicyError::Parse(message),
    }
}
