//! The ceiling: a manifest's sandbox sections (what the plugin requests) intersected with
//! the host's [`Grants`], section by section, into the effective policy.
//!
//! - Paths are compared *resolved* (symlinks followed, `.`, `..` and trailing slashes gone),
//!   never as written: a requested path is allowed when its real location is at or beneath
//!   the real location of a granted root of a kind that gives its access (`read` beneath
//!   `read`, `write` or `execute` roots; `write` beneath `write`; `execute` beneath `execute`).
//!   The effective policy holds the resolved path, and the Landlock layer checks that the
//!   path it opens is still that one, so a symlink swapped in later cannot move a rule.
//! - Whatever the grant, a path whose real location is `/` or lies in `/proc`, `/sys` or
//!   `/dev` (beyond the baseline's `/dev/null`, `/dev/zero`, `/dev/urandom`) is refused.
//! - Ports, syscall groups, `subprocesses` and `zygote` pass when granted; `uid`/`gid` only when the
//!   grant names that exact identity (a grant may name one the manifest did not).
//! - Numbers take the stricter value (`ceiling_limits.rs`).

use super::ceiling_limits::tighten_numbers;
use super::grant_file::SandboxGrant;
use super::Grants;
use crate::policy::file::PolicyFile;
use std::path::{Path, PathBuf};

/// What the engine does with a request beyond the ceiling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CeilingMode {
    /// Refuse the load, listing every excess (the default).
    #[default]
    Refuse,
    /// Drop the excess, load with the rest, and audit what was dropped. Paths reaching the
    /// host's `/`, `/proc`, `/sys` or `/dev` are refused even so.
    Clamp,
}

/// One request beyond the ceiling, such as `filesystem.read "/etc"`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Excess {
    /// The section and field, such as `network.connect_tcp`.
    pub field: String,
    /// The value requested, as shown (paths quoted), empty for a flag.
    pub value: String,
    /// Refused whatever the grant or mode (a path reaching `/`, `/proc`, `/sys`, `/dev`).
    pub forbidden: bool,
}

impl std::fmt::Display for Excess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.value.is_empty(), self.forbidden) {
            (true, _) => write!(f, "{}", self.field),
            (false, false) => write!(f, "{} {}", self.field, self.value),
            (false, true) => write!(
                f,
                "{} {} (reaches the host's /, /proc, /sys or /dev; never granted)",
                self.field, self.value
            ),
        }
    }
}

/// A number the grant made stricter than the manifest asked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stricter {
    /// The section and field, such as `limits.memory_mib`.
    pub field: String,
    /// The manifest's value.
    pub requested: String,
    /// The value that applies.
    pub effective: String,
}

/// The result of intersecting a request with a grant.
#[derive(Debug, Clone)]
pub struct Ceiling {
    /// The manifest's sandbox sections, as written.
    pub requested: PolicyFile,
    /// What the plugin gets: requested ∩ granted, excess dropped.
    pub effective: PolicyFile,
    /// Every request beyond the ceiling.
    pub excess: Vec<Excess>,
    /// Every number the grant made stricter.
    pub stricter: Vec<Stricter>,
}

impl Ceiling {
    /// Does the intersection refuse the load under `mode`?
    pub fn refuses(&self, mode: CeilingMode) -> bool {
        self.excess
            .iter()
            .any(|e| e.forbidden || mode == CeilingMode::Refuse)
    }

    /// The audit detail: what was lowered and what was dropped.
    pub fn audit_detail(&self) -> serde_json::Value {
        serde_json::json!({ "stricter": self.stricter, "dropped": self.excess })
    }
}

/// Intersects `requested` with `grants`.
pub fn intersect(requested: &PolicyFile, grants: &Grants) -> Ceiling {
    let mut effective = requested.clone();
    let mut excess = Vec::new();
    if grants.all {
        forbidden_only(&mut effective, &mut excess);
        return Ceiling {
            requested: requested.clone(),
            effective,
            excess,
            stricter: Vec::new(),
        };
    }
    let g = &grants.sandbox;
    filesystem(&mut effective, g, &mut excess);
    let net = (&mut effective.network, &g.network);
    net.0.connect_tcp = listed(
        "network.connect_tcp",
        &net.0.connect_tcp,
        &net.1.connect_tcp,
        &mut excess,
    );
    net.0.bind_tcp = listed(
        "network.bind_tcp",
        &net.0.bind_tcp,
        &net.1.bind_tcp,
        &mut excess,
    );
    let allow = &effective.syscalls.allow;
    effective.syscalls.allow = listed("syscalls.allow", allow, &g.syscalls.allow, &mut excess);
    process(&mut effective, g, &mut excess);
    let stricter = tighten_numbers(&mut effective, g);
    Ceiling {
        requested: requested.clone(),
        effective,
        excess,
        stricter,
    }
}

/// `value` is plugin-controlled: stored escaped, for the audit log and the terminal.
fn excess(field: &str, value: String, forbidden: bool) -> Excess {
    Excess {
        field: field.to_owned(),
        value: crate::audit::escape_text(&value),
        forbidden,
    }
}

/// Subprocesses, zygote and identity.
fn process(file: &mut PolicyFile, g: &SandboxGrant, out: &mut Vec<Excess>) {
    let p = &mut file.process;
    let flags = [
        (
            "process.subprocesses",
            &mut p.subprocesses,
            g.process.subprocesses,
        ),
        ("process.zygote", &mut p.zygote, g.process.zygote),
    ];
    for (field, asked, granted) in flags {
        if *asked && !granted {
            out.push(excess(field, String::new(), false));
            *asked = false;
        }
    }
    let ids = [
        ("process.uid", &mut p.uid, g.process.uid),
        ("process.gid", &mut p.gid, g.process.gid),
    ];
    for (field, asked, granted) in ids {
        if let Some(id) = *asked {
            if granted != Some(id) {
                out.push(excess(field, id.to_string(), false));
            }
        }
        // The host's identity, or none (the engine's pool).
        *asked = granted;
    }
}

/// Each requested value that the grant lists; the others are excess.
fn listed<T: PartialEq + Clone + std::fmt::Debug>(
    field: &str,
    requested: &[T],
    granted: &[T],
    out: &mut Vec<Excess>,
) -> Vec<T> {
    let mut kept = Vec::new();
    for value in requested {
        if granted.contains(value) {
            kept.push(value.clone());
        } else {
            out.push(excess(field, format!("{value:?}"), false));
        }
    }
    kept
}

/// The three path lists, each resolved and checked against the roots that give its access.
fn filesystem(file: &mut PolicyFile, g: &SandboxGrant, out: &mut Vec<Excess>) {
    let gf = &g.filesystem;
    let read_roots: Vec<&PathBuf> = gf.read.iter().chain(&gf.write).chain(&gf.execute).collect();
    let write_roots: Vec<&PathBuf> = gf.write.iter().collect();
    let exec_roots: Vec<&PathBuf> = gf.execute.iter().collect();
    let fs = &mut file.filesystem;
    fs.read = beneath("filesystem.read", &fs.read, &read_roots, out);
    fs.write = beneath("filesystem.write", &fs.write, &write_roots, out);
    fs.execute = beneath("filesystem.execute", &fs.execute, &exec_roots, out);
}

fn beneath(
    field: &str,
    requested: &[PathBuf],
    roots: &[&PathBuf],
    out: &mut Vec<Excess>,
) -> Vec<PathBuf> {
    // A relative root (possible through the builder, never from a file) would resolve
    // against the host's working directory: it covers nothing. A missing one neither.
    let roots: Vec<PathBuf> = roots
        .iter()
        .filter(|r| r.is_absolute())
        .filter_map(|r| r.canonicalize().ok())
        .collect();
    let mut kept = Vec::new();
    for path in requested {
        let shown = format!("{:?}", path.display().to_string());
        let Ok(real) = path.canonicalize() else {
            out.push(excess(
                field,
                format!("{shown} (cannot be resolved)"),
                false,
            ));
            continue;
        };
        if reaches_host(&real) {
            out.push(excess(field, shown, true));
        } else if roots.iter().any(|root| real.starts_with(root)) {
            kept.push(real);
        } else {
            out.push(excess(field, shown, false));
        }
    }
    kept
}

/// With every request granted: only the paths no grant may give are refused.
fn forbidden_only(file: &mut PolicyFile, out: &mut Vec<Excess>) {
    let fs = &mut file.filesystem;
    let lists = [
        ("filesystem.read", &mut fs.read),
        ("filesystem.write", &mut fs.write),
        ("filesystem.execute", &mut fs.execute),
    ];
    for (field, list) in lists {
        list.retain(|path| {
            let bad = path.canonicalize().is_ok_and(|real| reaches_host(&real));
            if bad {
                out.push(excess(
                    field,
                    format!("{:?}", path.display().to_string()),
                    true,
                ));
            }
            !bad
        });
    }
}

/// Is this resolved path `/`, or in `/proc`, `/sys` or `/dev` beyond the baseline devices?
pub fn reaches_host(real: &Path) -> bool {
    let baseline = crate::sandbox::landlock::BASELINE_READ;
    if real.starts_with("/dev") && baseline.iter().any(|b| real == Path::new(b)) {
        return false;
    }
    real == Path::new("/")
        || ["/proc", "/sys", "/dev"]
            .iter()
            .any(|top| real.starts_with(top))
}

#[cfg(test)]
#[path = "ceiling_tests.rs"]
mod tests;
