//! The host's grants: the ceiling of what a plugin may get, capability by capability and
//! section by section. Built from a grant file ([`Grants::load`]) or in code (the builder
//! methods); [`super::ceiling`] intersects them with a manifest.

use super::grant_file::{GrantFile, LimitsGrant, ProcessGrant, SandboxGrant, SupervisionGrant};
use super::{read_bounded, CapabilityGrant, ManifestError};
use crate::policy::file::PolicyFile;
use crate::policy::Policy;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// The host's ceiling.
///
/// A grant made in code starts empty (nothing but the baseline) and grows with the builder
/// methods:
///
/// ```
/// use plugbox::manifest::{CapabilityGrant, Grants};
/// let grants = Grants::none()
///     .grant("log", CapabilityGrant::default())
///     .filesystem_read("/usr/share/zoneinfo")
///     .connect_tcp(443)
///     .memory_mib(128);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    pub(super) all: bool,
    pub(super) capabilities: BTreeMap<String, CapabilityGrant>,
    pub(super) code_digest: Option<String>,
    pub(super) sandbox: SandboxGrant,
}

impl Grants {
    /// Grants everything the manifest requests, sandbox sections and identity included (only
    /// paths reaching the host's `/`, `/proc`, `/sys` or `/dev` are still refused). A
    /// development choice, named for what it is: `plugbox run` without `--grant` uses it and
    /// says so. A host that loads plugins it did not write wants a grant file.
    pub fn all_requested() -> Self {
        Self {
            all: true,
            ..Self::default()
        }
    }

    /// Grants nothing: no capability, no path beyond the baseline, no port, no subprocess,
    /// no zygote, no identity, no ceiling on limits. Add to it with the builder methods.
    pub fn none() -> Self {
        Self::default()
    }

    /// Does this grant everything requested ([`Grants::all_requested`])?
    pub fn is_all_requested(&self) -> bool {
        self.all
    }

    /// The sandbox sections of the ceiling.
    pub fn sandbox(&self) -> &SandboxGrant {
        &self.sandbox
    }

    /// The capability ceilings, by name.
    pub fn capabilities(&self) -> &BTreeMap<String, CapabilityGrant> {
        &self.capabilities
    }

    /// Grants exactly these; checks every value as the manifest's own are checked.
    pub fn from_file(file: GrantFile) -> Result<Self, ManifestError> {
        let grant = |message: String| ManifestError::Grant {
            path: PathBuf::from("-"),
            message,
        };
        if file.schema != 1 {
            return Err(grant(format!(
                "schema: unsupported grant schema {}",
                file.schema
            )));
        }
        let sandbox = file.sandbox();
        check_sandbox(&sandbox).map_err(grant)?;
        Ok(Self {
            all: false,
            capabilities: file.capabilities,
            code_digest: file.code_digest,
            sandbox,
        })
    }

    /// Reads a grant file. Every error says `grant:` and names the file.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let grant = |message: String| ManifestError::Grant {
            path: path.to_owned(),
            message,
        };
        let text = read_bounded(path).map_err(|e| {
            grant(match e {
                ManifestError::Read { source, .. } => format!("cannot read: {source}"),
                ManifestError::File(e) => e.to_string(),
                other => other.to_string(),
            })
        })?;
        let file: GrantFile =
            toml::from_str(&text).map_err(|e| grant(e.message().replace('\n', " ")))?;
        Self::from_file(file).map_err(|e| match e {
            ManifestError::Grant { message, .. } => grant(message),
            other => other,
        })
    }

    /// Pins the grant to one code digest: a plugin whose files hash differently is refused.
    pub fn pin_digest(mut self, digest: &str) -> Self {
        self.code_digest = Some(digest.to_owned());
        self
    }

    /// Checks a plugin's code digest against the pinned one, if any.
    pub fn check_digest(&self, plugin: &str, actual: &str) -> Result<(), ManifestError> {
        match &self.code_digest {
            Some(approved) if approved != actual => Err(ManifestError::DigestMismatch {
                plugin: plugin.to_owned(),
                approved: approved.clone(),
                actual: actual.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// Adds or replaces one capability grant.
    pub fn grant(mut self, name: &str, grant: CapabilityGrant) -> Self {
        self.capabilities.insert(name.to_owned(), grant);
        self
    }

    /// Adds a root beneath which `[filesystem] read` paths are allowed.
    pub fn filesystem_read(mut self, root: impl Into<PathBuf>) -> Self {
        self.sandbox.filesystem.read.push(root.into());
        self
    }

    /// Adds a root beneath which `[filesystem] write` (and `read`) paths are allowed.
    pub fn filesystem_write(mut self, root: impl Into<PathBuf>) -> Self {
        self.sandbox.filesystem.write.push(root.into());
        self
    }

    /// Adds a root beneath which `[filesystem] execute` (and `read`) paths are allowed.
    pub fn filesystem_execute(mut self, root: impl Into<PathBuf>) -> Self {
        self.sandbox.filesystem.execute.push(root.into());
        self
    }

    /// Allows `[network] connect_tcp` to name `port`.
    pub fn connect_tcp(mut self, port: u16) -> Self {
        self.sandbox.network.connect_tcp.push(port);
        self
    }

    /// Allows `[network] bind_tcp` to name `port` (0: an ephemeral port).
    pub fn bind_tcp(mut self, port: u16) -> Self {
        self.sandbox.network.bind_tcp.push(port);
        self
    }

    /// Allows `[process] subprocesses = true`.
    pub fn subprocesses(mut self) -> Self {
        self.sandbox.process.subprocesses = true;
        self
    }

    /// Allows `[process] zygote = true`: the plugin's instances may be forked
    /// from a per-plugin template that imported it, sharing its memory layout (ASLR, stack
    /// canary, `str` hash seed) and its uid, so one leak in an instance holds for its
    /// siblings. Isolation from the host and from other plugins is unchanged; see
    /// `docs/zygote.md`.
    pub fn zygote(mut self) -> Self {
        self.sandbox.process.zygote = true;
        self
    }

    /// Allows `[syscalls] allow` to name `group` (such as `"@sync"`).
    pub fn syscall_group(mut self, group: &str) -> Self {
        self.sandbox.syscalls.allow.push(group.to_owned());
        self
    }

    /// The identity the plugin runs as when the host is root; a manifest may name only this
    /// one.
    pub fn identity(mut self, uid: u32, gid: u32) -> Self {
        self.sandbox.process.uid = Some(uid);
        self.sandbox.process.gid = Some(gid);
        self
    }

    /// Ceiling of `limits.memory_mib`.
    pub fn memory_mib(mut self, mib: u64) -> Self {
        self.sandbox.limits.memory_mib = Some(mib);
        self
    }

    /// Every `[limits]` ceiling at once.
    pub fn limits(mut self, limits: LimitsGrant) -> Self {
        self.sandbox.limits = limits;
        self
    }

    /// Every `[process]` ceiling at once (identity, subprocesses and zygote included).
    pub fn process(mut self, process: ProcessGrant) -> Self {
        self.sandbox.process = process;
        self
    }

    /// Every `[supervision]` bound at once.
    pub fn supervision(mut self, supervision: SupervisionGrant) -> Self {
        self.sandbox.supervision = supervision;
        self
    }

    /// Floor of `landlock.min_abi`.
    pub fn min_landlock_abi(mut self, abi: u8) -> Self {
        self.sandbox.landlock.min_abi = Some(abi);
        self
    }
}

/// Checks a grant's values as a manifest's are checked (ranges, known groups, absolute
/// roots without `..`, never uid or gid 0), by validating a policy made of them.
fn check_sandbox(g: &SandboxGrant) -> Result<(), String> {
    let roots = [
        ("filesystem.read", &g.filesystem.read),
        ("filesystem.write", &g.filesystem.write),
        ("filesystem.execute", &g.filesystem.execute),
    ];
    for (field, list) in roots {
        for (i, root) in list.iter().enumerate() {
            check_root(root).map_err(|reason| format!("{field}[{i}]: {reason}"))?;
        }
    }
    Policy::from_file(as_policy(g))
        .map(|_| ())
        .map_err(|e| e.to_string().trim_start_matches("policy: ").to_owned())
}

fn check_root(root: &Path) -> Result<(), String> {
    let bytes = root.as_os_str().as_encoded_bytes();
    if !root.is_absolute() || bytes.contains(&0) {
        return Err(format!("{:?} must be an absolute path", root.display()));
    }
    if root.components().any(|c| c == Component::ParentDir) {
        return Err(format!("{:?} contains '..'", root.display()));
    }
    Ok(())
}

/// A policy file carrying the grant's numbers, identity and groups (paths and ports are
/// checked apart): a value a manifest could not hold, a grant cannot either.
fn as_policy(g: &SandboxGrant) -> PolicyFile {
    let mut file: PolicyFile = PolicyFile {
        schema: 1,
        landlock: Default::default(),
        filesystem: Default::default(),
        network: Default::default(),
        process: Default::default(),
        syscalls: Default::default(),
        limits: Default::default(),
        supervision: Default::default(),
    };
    if let Some(abi) = g.landlock.min_abi {
        file.landlock.min_abi = abi;
    }
    file.syscalls.allow = g.syscalls.allow.clone();
    let p = &g.process;
    file.process.uid = p.uid;
    file.process.gid = p.gid;
    file.process.max_threads = p.max_threads.unwrap_or(file.process.max_threads);
    file.process.instances = p.instances.unwrap_or(64);
    file.process.min_warm = p.min_warm.unwrap_or(1);
    file.process.idle_seconds = p.idle_seconds.unwrap_or(file.process.idle_seconds);
    super::ceiling_limits::overlay_limits(&mut file.limits, &g.limits);
    let s = &g.supervision;
    let sup = &mut file.supervision;
    sup.backoff_ms = s.backoff_ms.unwrap_or(1);
    sup.backoff_max_ms = s.backoff_max_ms.unwrap_or(3_600_000);
    sup.max_restarts = s.max_restarts.unwrap_or(sup.max_restarts);
    let secs = (s.restart_window_seconds, s.circuit_open_seconds);
    sup.restart_window_seconds = secs.0.unwrap_or(sup.restart_window_seconds);
    sup.circuit_open_seconds = secs.1.unwrap_or(sup.circuit_open_seconds);
    sup.health_interval_ms = s.health_interval_ms.unwrap_or(sup.health_interval_ms);
    sup.health_timeout_ms = s.health_timeout_ms.unwrap_or(sup.health_timeout_ms);
    file
}
