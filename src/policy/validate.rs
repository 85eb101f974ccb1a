//! Stage 2 of the policy pipeline: checks a [`PolicyFile`] and builds the immutable [`Policy`].
//!
//! Validation is pure: it looks at values only. Whether paths exist and whether the kernel can
//! enforce the result is decided when the policy is prepared (`sandbox::prepare`).

use super::error::PolicyError;
use super::file::PolicyFile;
use super::syscall_groups::{self, SyscallGroup};
use super::{FsRules, Limits, NetRules, Policy, ProcessRules, Supervision};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// The identity a policy without `[process] uid`/`gid` runs as (when the host is root and
/// no engine pool hands out one of its own).
const NOBODY: u32 = 65534;

/// Highest Landlock ABI this build knows.
pub const LANDLOCK_ABI_KNOWN: u8 = 7;

/// Checks every field of `file` and returns the validated policy.
pub fn validate(file: PolicyFile) -> Result<Policy, PolicyError> {
    if file.schema != 1 {
        return Err(PolicyError::invalid(
            "schema",
            format!(
                "unsupported version {}; this plugbox reads schema 1",
                file.schema
            ),
        ));
    }
    let min_abi = file.landlock.min_abi;
    in_range(
        "landlock.min_abi",
        u64::from(min_abi),
        1,
        u64::from(LANDLOCK_ABI_KNOWN),
    )?;
    Ok(Policy {
        min_landlock_abi: min_abi,
        filesystem: FsRules {
            read: paths("filesystem.read", file.filesystem.read)?,
            write: paths("filesystem.write", file.filesystem.write)?,
            execute: paths("filesystem.execute", file.filesystem.execute)?,
        },
        network: NetRules {
            connect_tcp: ports("network.connect_tcp", file.network.connect_tcp, 1)?,
            bind_tcp: ports("network.bind_tcp", file.network.bind_tcp, 0)?,
        },
        process: process(file.process)?,
        syscall_groups: groups(file.syscalls.allow)?,
        limits: limits(file.limits)?,
        supervision: supervision(file.supervision)?,
        resolved_paths: false,
    })
}

fn in_range(field: &str, value: u64, min: u64, max: u64) -> Result<u64, PolicyError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(PolicyError::invalid(
            field,
            format!("{value} is outside {min}..={max}"),
        ))
    }
}

fn paths(field: &str, list: Vec<PathBuf>) -> Result<Vec<PathBuf>, PolicyError> {
    for (i, path) in list.iter().enumerate() {
        check_path(path).map_err(|reason| PolicyError::invalid(format!("{field}[{i}]"), reason))?;
    }
    Ok(list)
}

fn check_path(path: &Path) -> Result<(), String> {
    let shown = path.display();
    if !path.is_absolute() {
        return Err(format!("{shown:?} is not an absolute path"));
    }
    if path.as_os_str().as_encoded_bytes().contains(&0) {
        return Err("path contains a NUL byte".into());
    }
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("{shown:?} contains '..'; write the path it means"));
    }
    if path.starts_with("/proc") {
        return Err(format!(
            "{shown:?}: /proc rules resolve to the host's processes, not the sandbox's"
        ));
    }
    Ok(())
}

fn ports(field: &str, mut list: Vec<u16>, min: u16) -> Result<Vec<u16>, PolicyError> {
    if let Some(i) = list.iter().position(|&p| p < min) {
        return Err(PolicyError::invalid(
            format!("{field}[{i}]"),
            "port 0 is not a port to connect to",
        ));
    }
    list.sort_unstable();
    list.dedup();
    Ok(list)
}

fn process(section: super::file::ProcessSection) -> Result<ProcessRules, PolicyError> {
    in_range("process.max_threads", section.max_threads.into(), 1, 4096)?;
    let (uid, gid) = (section.uid.unwrap_or(NOBODY), section.gid.unwrap_or(NOBODY));
    if uid == 0 {
        return Err(PolicyError::invalid(
            "process.uid",
            "0 is root; plugins never run as root",
        ));
    }
    if gid == 0 {
        return Err(PolicyError::invalid(
            "process.gid",
            "0 is root's group; plugins never run in it",
        ));
    }
    if section.zygote && section.subprocesses {
        return Err(PolicyError::Conflict {
            field: "process.zygote".into(),
            other: "process.subprocesses".into(),
            reason: "a zygote instance is not its own process group, so its subprocesses could \
                     not be killed without its siblings"
                .into(),
        });
    }
    Ok(ProcessRules {
        subprocesses: section.subprocesses,
        zygote: section.zygote,
        max_threads: section.max_threads,
        uid,
        gid,
        instances: in_range("process.instances", section.instances.into(), 1, 64)? as u32,
        min_warm: in_range(
            "process.min_warm",
            section.min_warm.into(),
            1,
            section.instances.clamp(1, 64).into(),
        )? as u32,
        idle: Duration::from_secs(in_range(
            "process.idle_seconds",
            section.idle_seconds,
            1,
            86_400,
        )?),
    })
}

fn supervision(s: super::file::SupervisionSection) -> Result<Supervision, PolicyError> {
    let ms = Duration::from_millis;
    let backoff = in_range("supervision.backoff_ms", s.backoff_ms, 1, 3_600_000)?;
    let interval = in_range(
        "supervision.health_interval_ms",
        s.health_interval_ms,
        10,
        3_600_000,
    )?;
    Ok(Supervision {
        restart: s.restart,
        max_restarts: in_range("supervision.max_restarts", s.max_restarts.into(), 0, 1000)? as u32,
        restart_window: Duration::from_secs(in_range(
            "supervision.restart_window_seconds",
            s.restart_window_seconds,
            1,
            86_400,
        )?),
        backoff: ms(backoff),
        backoff_max: ms(in_range(
            "supervision.backoff_max_ms",
            s.backoff_max_ms,
            backoff,
            3_600_000,
        )?),
        circuit_open: Duration::from_secs(in_range(
            "supervision.circuit_open_seconds",
            s.circuit_open_seconds,
            1,
            86_400,
        )?),
        health_interval: ms(interval),
        health_timeout: ms(in_range(
            "supervision.health_timeout_ms",
            s.health_timeout_ms,
            1,
            600_000,
        )?),
    })
}

fn groups(names: Vec<String>) -> Result<Vec<&'static SyscallGroup>, PolicyError> {
    let mut out: Vec<&'static SyscallGroup> = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let group = syscall_groups::optional_group(name).ok_or_else(|| {
            let known: Vec<&str> = syscall_groups::OPTIONAL.iter().map(|g| g.name).collect();
            PolicyError::invalid(
                format!("syscalls.allow[{i}]"),
                format!("unknown group {name:?}; known groups: {}", known.join(", ")),
            )
        })?;
        if !out.iter().any(|g| g.name == group.name) {
            out.push(group);
        }
    }
    Ok(out)
}

fn limits(section: super::file::LimitsSection) -> Result<Limits, PolicyError> {
    const MIB: u64 = 1024 * 1024;
    Ok(Limits {
        memory_bytes: in_range("limits.memory_mib", section.memory_mib, 16, 1 << 20)? * MIB,
        cpu_seconds: in_range("limits.cpu_seconds", section.cpu_seconds, 1, 86_400)?,
        wall_seconds: in_range("limits.wall_seconds", section.wall_seconds, 0, 86_400)?,
        open_files: in_range("limits.open_files", section.open_files, 4, 65_536)?,
        file_size_bytes: in_range("limits.file_size_mib", section.file_size_mib, 0, 1 << 20)? * MIB,
        fs_quota_bytes: in_range("limits.fs_quota_mib", section.fs_quota_mib, 0, 1 << 20)? * MIB,
        output_bytes: in_range("limits.output_bytes", section.output_bytes, 0, 1 << 32)?,
        calls_per_second: in_range(
            "limits.calls_per_second",
            section.calls_per_second.into(),
            1,
            1_000_000,
        )? as u32,
        call_burst: in_range("limits.call_burst", section.call_burst.into(), 1, 1_000_000)? as u32,
        calls_in_flight: in_range(
            "limits.calls_in_flight",
            section.calls_in_flight.into(),
            1,
            1024,
        )? as u32,
        pending_reply_bytes: in_range(
            "limits.pending_reply_mib",
            section.pending_reply_mib,
            1,
            1 << 20,
        )? * MIB,
        call_timeout: std::time::Duration::from_millis(in_range(
            "limits.call_timeout_ms",
            section.call_timeout_ms,
            1,
            3_600_000,
        )?),
    })
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
