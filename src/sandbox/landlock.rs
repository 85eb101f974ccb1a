//! Parent side: builds the Landlock ruleset for a policy, once per policy and command.
//!
//! The ruleset is created with the `landlock` crate in the parent (it allocates), and only its
//! fd crosses into the child, where `landlock_restrict_self` is one raw syscall. Every path is
//! opened here, one by one, so a missing path in the policy is an error naming its field
//! rather than a rule silently skipped. Compatibility is a hard requirement: if the kernel
//! cannot handle a right the policy depends on, preparation fails.

use super::command::ResolvedCommand;
use crate::policy::Policy;
use crate::sys;
use landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath, Ruleset,
    RulesetAttr, RulesetCreatedAttr, Scope, ABI,
};
use serde::Serialize;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Read-only system paths every program gets, so a dynamically linked program can start.
pub const BASELINE_READ: &[&str] = &[
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/usr/local/lib",
    "/etc/ld.so.cache",
    // Public data the standard library reads on its own: without it `mimetypes.guess_type()`
    // raises PermissionError (stat says the file exists, open is refused).
    "/etc/mime.types",
    "/dev/null",
    "/dev/zero",
    "/dev/urandom",
];

/// Baseline devices that may also be written (and opened with `O_TRUNC`): writes to them are
/// discarded, as for any user outside. `open(os.devnull, "w")`, `subprocess.DEVNULL` and
/// shell redirections need `/dev/null`. Only these device files, never `/dev` itself.
pub const BASELINE_DISCARD: &[&str] = &["/dev/null", "/dev/zero"];

/// What the Landlock layer enforces, for the enforcement report.
#[derive(Debug, Clone, Serialize)]
pub struct LandlockReport {
    /// ABI version the kernel offers.
    pub kernel_abi: u8,
    /// ABI whose rights the ruleset handles.
    pub enforced_abi: u8,
    /// `fully_enforced` when every right of `enforced_abi` is handled, including the TCP and
    /// scope rights; `partially_enforced` when the policy accepted an ABI without some of them.
    pub status: &'static str,
    /// Filesystem rights handled (denied unless a rule grants them).
    pub handled_fs: Vec<String>,
    /// Network rights handled.
    pub handled_net: Vec<String>,
    /// IPC scopes enforced.
    pub scoped: Vec<String>,
    /// Every rule added: path, rights.
    pub rules: Vec<(PathBuf, Vec<String>)>,
    /// TCP ports that may be connected to.
    pub connect_tcp: Vec<u16>,
    /// TCP ports that may be bound.
    pub bind_tcp: Vec<u16>,
    /// Baseline paths absent on this machine (skipped, not an error).
    pub baseline_missing: Vec<PathBuf>,
}

/// Why the Landlock ruleset could not be built.
#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    /// The kernel has no (or not enough) Landlock.
    #[error("landlock: kernel ABI is {found}, the policy requires at least {required}")]
    AbiTooLow {
        /// The kernel's ABI (0: Landlock unavailable).
        found: u8,
        /// `landlock.min_abi`.
        required: u8,
    },
    /// A path a grant's ceiling resolved and approved opened somewhere else (a symlink was
    /// put on it since the check).
    #[error("landlock: {field}: {path} no longer leads where the grant approved it")]
    Moved {
        /// Policy field naming the path.
        field: String,
        /// The approved (resolved) path.
        path: PathBuf,
    },
    /// A policy path could not be opened.
    #[error("landlock: {field}: cannot open {path}: {source}")]
    Path {
        /// Policy field naming the path.
        field: String,
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A policy path is the filesystem root or lies on procfs, sysfs or devtmpfs: the rule
    /// would reach the host's `/proc/PID` files, kernel state or devices (a Landlock rule
    /// cannot exclude a subtree). The baseline's `/dev/null`, `/dev/zero` and `/dev/urandom`
    /// are granted apart from policy paths.
    #[error(
        "landlock: {field}: {path} would grant the host's /proc, /sys or /dev (it is the \
         filesystem root or on procfs, sysfs or devtmpfs, whatever path or symlink led there); \
         grant the directories you need instead"
    )]
    HostProc {
        /// Policy field naming the path.
        field: String,
        /// The path.
        path: PathBuf,
    },
    /// The crate or kernel refused the ruleset.
    #[error("landlock: cannot build the ruleset: {0}")]
    Ruleset(#[from] landlock::RulesetError),
    /// The crate returned no fd (the kernel does not support Landlock).
    #[error("landlock: the kernel returned no ruleset fd")]
    NoFd,
}

/// A ruleset ready for `landlock_restrict_self`, and its report.
#[derive(Debug)]
pub struct PreparedRuleset {
    /// The ruleset fd (close-on-exec).
    pub fd: OwnedFd,
    /// What it enforces.
    pub report: LandlockReport,
}

/// The kernel's Landlock ABI, 0 when unavailable.
pub fn kernel_abi() -> u8 {
    sys::landlock_abi_version()
        .map(|v| v.clamp(0, i64::from(u8::MAX)) as u8)
        .unwrap_or(0)
}

fn abi_enum(v: u8) -> ABI {
    match v {
        0 => ABI::Unsupported,
        1 => ABI::V1,
        2 => ABI::V2,
        3 => ABI::V3,
        4 => ABI::V4,
        5 => ABI::V5,
        6 => ABI::V6,
        _ => ABI::V7,
    }
}

/// Rights of a read rule.
fn read_access() -> BitFlags<AccessFs> {
    AccessFs::ReadFile | AccessFs::ReadDir
}

/// Rights of a baseline path: read, plus write and truncate on [`BASELINE_DISCARD`].
fn baseline_access(path: &str) -> BitFlags<AccessFs> {
    if BASELINE_DISCARD.contains(&path) {
        read_access() | AccessFs::WriteFile | AccessFs::Truncate
    } else {
        read_access()
    }
}

/// Rights of an execute rule.
fn execute_access() -> BitFlags<AccessFs> {
    read_access() | AccessFs::Execute
}

/// Rights of a write rule: everything but execute and special files (devices, FIFOs,
/// sockets) and device ioctls.
fn write_access(abi: ABI) -> BitFlags<AccessFs> {
    let special = AccessFs::MakeChar
        | AccessFs::MakeBlock
        | AccessFs::MakeFifo
        | AccessFs::MakeSock
        | AccessFs::IoctlDev
        | AccessFs::Execute;
    AccessFs::from_all(abi) & !special
}

/// Builds the ruleset for `policy` running `command`.
pub fn prepare(
    policy: &Policy,
    command: &ResolvedCommand,
) -> Result<PreparedRuleset, LandlockError> {
    let found = kernel_abi();
    let required = policy.min_landlock_abi();
    if found < required {
        return Err(LandlockError::AbiTooLow { found, required });
    }
    let enforced = found.min(crate::policy::LANDLOCK_ABI_KNOWN);
    let abi = abi_enum(enforced);
    let mut report = LandlockReport {
        kernel_abi: found,
        enforced_abi: enforced,
        status: if enforced >= 6 {
            "fully_enforced"
        } else {
            "partially_enforced"
        },
        handled_fs: names(AccessFs::from_all(abi)),
        handled_net: if enforced >= 4 {
            names(AccessNet::from_all(abi))
        } else {
            Vec::new()
        },
        scoped: if enforced >= 6 {
            names(Scope::from_all(abi))
        } else {
            Vec::new()
        },
        rules: Vec::new(),
        connect_tcp: policy.network().connect_tcp.clone(),
        bind_tcp: policy.network().bind_tcp.clone(),
        baseline_missing: Vec::new(),
    };
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(abi))?;
    if enforced >= 4 {
        ruleset = ruleset.handle_access(AccessNet::from_all(abi))?;
    }
    if enforced >= 6 {
        ruleset = ruleset.scope(Scope::from_all(abi))?;
    }
    let mut created = ruleset.create()?;
    for rule in path_rules(policy, command, abi, &mut report)? {
        let (path, fd, access) = rule;
        report.rules.push((path, names(access)));
        created = created.add_rule(PathBeneath::new(fd, access))?;
    }
    if enforced >= 4 {
        for &port in &policy.network().connect_tcp {
            created = created.add_rule(NetPort::new(port, AccessNet::ConnectTcp))?;
        }
        for &port in &policy.network().bind_tcp {
            created = created.add_rule(NetPort::new(port, AccessNet::BindTcp))?;
        }
    }
    let fd: Option<OwnedFd> = created.into();
    Ok(PreparedRuleset {
        fd: fd.ok_or(LandlockError::NoFd)?,
        report,
    })
}

type Rule = (PathBuf, File, BitFlags<AccessFs>);

fn path_rules(
    policy: &Policy,
    command: &ResolvedCommand,
    abi: ABI,
    report: &mut LandlockReport,
) -> Result<Vec<Rule>, LandlockError> {
    let mut rules = Vec::new();
    for base in BASELINE_READ {
        match open_path(Path::new(base)) {
            Ok(file) => rules.push(fitted(
                PathBuf::from(base),
                file,
                baseline_access(base),
                abi,
            )),
            Err(_) => report.baseline_missing.push(PathBuf::from(base)),
        }
    }
    for (i, path) in command.executables().iter().enumerate() {
        let field = format!("command executable[{i}]");
        rules.push(opened(&field, path, execute_access(), abi)?);
    }
    let fs = policy.filesystem();
    let sections = [
        ("filesystem.read", &fs.read, read_access()),
        ("filesystem.write", &fs.write, write_access(abi)),
        ("filesystem.execute", &fs.execute, execute_access()),
    ];
    for (field, paths, access) in sections {
        for (i, path) in paths.iter().enumerate() {
            let field = format!("{field}[{i}]");
            let rule = opened(&field, path, access, abi)?;
            if policy.paths_resolved() && !opened_at(&rule.1, path) {
                return Err(LandlockError::Moved {
                    field,
                    path: path.clone(),
                });
            }
            rules.push(rule);
        }
    }
    Ok(rules)
}

fn opened(
    field: &str,
    path: &Path,
    access: BitFlags<AccessFs>,
    abi: ABI,
) -> Result<Rule, LandlockError> {
    let file = open_path(path).map_err(|source| LandlockError::Path {
        field: field.to_owned(),
        path: path.to_owned(),
        source,
    })?;
    if reaches_host_proc(&file) {
        return Err(LandlockError::HostProc {
            field: field.to_owned(),
            path: path.to_owned(),
        });
    }
    Ok(fitted(path.to_owned(), file, access, abi))
}

/// Is the opened object `/` itself (whose subtree holds `/proc`, `/sys` and `/dev`) or
/// anything on the procfs, sysfs or devtmpfs mounted there (their roots included)? Decided on
/// the opened fd, so no symlink can disguise it.
fn reaches_host_proc(file: &File) -> bool {
    let Ok(opened) = file.metadata() else {
        return true;
    };
    let is_root =
        std::fs::metadata("/").is_ok_and(|m| (m.dev(), m.ino()) == (opened.dev(), opened.ino()));
    let on_same_mount =
        |mounted: &str| std::fs::metadata(mounted).is_ok_and(|m| m.dev() == opened.dev());
    // Where the fd really is (other mounts beneath /dev, such as devpts or /dev/shm).
    let beneath = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map(|p| {
            ["/proc", "/sys", "/dev"]
                .iter()
                .any(|top| p.starts_with(top))
        })
        .unwrap_or(true);
    is_root
        || beneath
        || ["/proc/self", "/sys", "/dev"]
            .into_iter()
            .any(on_same_mount)
}

/// Is the opened `file` at exactly `path` (which holds no symlink), as the kernel names it?
fn opened_at(file: &File, path: &Path) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).is_ok_and(|p| p == path)
}

/// Non-directories accept only file rights; trim the rest rather than fail.
fn fitted(path: PathBuf, file: File, access: BitFlags<AccessFs>, abi: ABI) -> Rule {
    let is_dir = file.metadata().map(|m| m.is_dir()).unwrap_or(false);
    let access = if is_dir {
        access
    } else {
        access & AccessFs::from_file(abi)
    };
    (path, file, access)
}

fn open_path(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(path)
}

fn names<T: std::fmt::Debug + Copy + enumflags2::BitFlag>(flags: BitFlags<T>) -> Vec<String> {
    flags.iter().map(|f| format!("{f:?}")).collect()
}
