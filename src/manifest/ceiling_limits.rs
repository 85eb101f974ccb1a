//! The numeric half of the ceiling: for every number of `[limits]`, `[process]`,
//! `[supervision]` and `[landlock]`, the effective value is the stricter of manifest and
//! grant. "Stricter" per field is written next to each field below and in
//! `policies/README.md`; every value the grant changed is reported, to be audited.

use super::ceiling::Stricter;
use super::grant_file::{LimitsGrant, SandboxGrant};
use crate::policy::file::{LimitsSection, PolicyFile, RestartMode};
use std::fmt::Display;

/// Which way a field is stricter.
#[derive(Clone, Copy)]
enum Way {
    /// The smaller value gives the plugin less (a limit, a rate, a deadline).
    Smaller,
    /// The larger value gives the plugin less (a backoff, a window, a floor).
    Larger,
}

/// Sets `value` to the stricter of itself and `grant`, recording the change.
fn tighten<T: Ord + Copy + Display>(
    out: &mut Vec<Stricter>,
    field: &str,
    value: &mut T,
    grant: Option<T>,
    way: Way,
) {
    let Some(g) = grant else { return };
    let stricter = match way {
        Way::Smaller => (*value).min(g),
        Way::Larger => (*value).max(g),
    };
    if stricter != *value {
        out.push(Stricter {
            field: field.to_owned(),
            requested: value.to_string(),
            effective: stricter.to_string(),
        });
        *value = stricter;
    }
}

/// Applies every numeric bound of `grant` to `file` and returns what changed.
pub(super) fn tighten_numbers(file: &mut PolicyFile, grant: &SandboxGrant) -> Vec<Stricter> {
    let mut out = Vec::new();
    let abi = &mut file.landlock.min_abi;
    tighten(
        &mut out,
        "landlock.min_abi",
        abi,
        grant.landlock.min_abi,
        Way::Larger,
    );
    tighten_limits(&mut out, &mut file.limits, &grant.limits);
    let (p, g) = (&mut file.process, &grant.process);
    tighten(
        &mut out,
        "process.max_threads",
        &mut p.max_threads,
        g.max_threads,
        Way::Smaller,
    );
    tighten(
        &mut out,
        "process.instances",
        &mut p.instances,
        g.instances,
        Way::Smaller,
    );
    // Fewer warm instances hold fewer resources; never more than may run.
    let warm = g.min_warm.map_or(p.instances, |w| w.min(p.instances));
    tighten(
        &mut out,
        "process.min_warm",
        &mut p.min_warm,
        Some(warm),
        Way::Smaller,
    );
    tighten(
        &mut out,
        "process.idle_seconds",
        &mut p.idle_seconds,
        g.idle_seconds,
        Way::Smaller,
    );
    let (s, g) = (&mut file.supervision, &grant.supervision);
    if g.restart == Some(RestartMode::Never) && s.restart != RestartMode::Never {
        out.push(Stricter {
            field: "supervision.restart".into(),
            requested: "on-failure".into(),
            effective: "never".into(),
        });
        s.restart = RestartMode::Never;
    }
    tighten(
        &mut out,
        "supervision.max_restarts",
        &mut s.max_restarts,
        g.max_restarts,
        Way::Smaller,
    );
    let window = &mut s.restart_window_seconds;
    tighten(
        &mut out,
        "supervision.restart_window_seconds",
        window,
        g.restart_window_seconds,
        Way::Larger,
    );
    tighten(
        &mut out,
        "supervision.backoff_ms",
        &mut s.backoff_ms,
        g.backoff_ms,
        Way::Larger,
    );
    // The longest delay is never below the first one.
    let longest = g
        .backoff_max_ms
        .map_or(s.backoff_ms, |m| m.max(s.backoff_ms));
    tighten(
        &mut out,
        "supervision.backoff_max_ms",
        &mut s.backoff_max_ms,
        Some(longest),
        Way::Larger,
    );
    let open = &mut s.circuit_open_seconds;
    tighten(
        &mut out,
        "supervision.circuit_open_seconds",
        open,
        g.circuit_open_seconds,
        Way::Larger,
    );
    let interval = &mut s.health_interval_ms;
    tighten(
        &mut out,
        "supervision.health_interval_ms",
        interval,
        g.health_interval_ms,
        Way::Smaller,
    );
    let timeout = &mut s.health_timeout_ms;
    tighten(
        &mut out,
        "supervision.health_timeout_ms",
        timeout,
        g.health_timeout_ms,
        Way::Smaller,
    );
    out
}

/// Every `[limits]` value: smaller is stricter for all of them.
fn tighten_limits(out: &mut Vec<Stricter>, l: &mut LimitsSection, g: &LimitsGrant) {
    let s = Way::Smaller;
    tighten(out, "limits.memory_mib", &mut l.memory_mib, g.memory_mib, s);
    tighten(
        out,
        "limits.cpu_seconds",
        &mut l.cpu_seconds,
        g.cpu_seconds,
        s,
    );
    tighten(
        out,
        "limits.wall_seconds",
        &mut l.wall_seconds,
        g.wall_seconds,
        s,
    );
    tighten(out, "limits.open_files", &mut l.open_files, g.open_files, s);
    tighten(
        out,
        "limits.file_size_mib",
        &mut l.file_size_mib,
        g.file_size_mib,
        s,
    );
    tighten(
        out,
        "limits.fs_quota_mib",
        &mut l.fs_quota_mib,
        g.fs_quota_mib,
        s,
    );
    tighten(
        out,
        "limits.output_bytes",
        &mut l.output_bytes,
        g.output_bytes,
        s,
    );
    tighten(
        out,
        "limits.calls_per_second",
        &mut l.calls_per_second,
        g.calls_per_second,
        s,
    );
    tighten(out, "limits.call_burst", &mut l.call_burst, g.call_burst, s);
    tighten(
        out,
        "limits.calls_in_flight",
        &mut l.calls_in_flight,
        g.calls_in_flight,
        s,
    );
    tighten(
        out,
        "limits.pending_reply_mib",
        &mut l.pending_reply_mib,
        g.pending_reply_mib,
        s,
    );
    tighten(
        out,
        "limits.call_timeout_ms",
        &mut l.call_timeout_ms,
        g.call_timeout_ms,
        s,
    );
}

/// Writes the grant's `[limits]` values over `limits` (to validate them as a manifest's).
pub(super) fn overlay_limits(limits: &mut LimitsSection, g: &LimitsGrant) {
    let set = |v: &mut u64, g: Option<u64>| *v = g.unwrap_or(*v);
    let set32 = |v: &mut u32, g: Option<u32>| *v = g.unwrap_or(*v);
    set(&mut limits.memory_mib, g.memory_mib);
    set(&mut limits.cpu_seconds, g.cpu_seconds);
    set(&mut limits.wall_seconds, g.wall_seconds);
    set(&mut limits.open_files, g.open_files);
    set(&mut limits.file_size_mib, g.file_size_mib);
    set(&mut limits.fs_quota_mib, g.fs_quota_mib);
    set(&mut limits.output_bytes, g.output_bytes);
    set32(&mut limits.calls_per_second, g.calls_per_second);
    set32(&mut limits.call_burst, g.call_burst);
    set32(&mut limits.calls_in_flight, g.calls_in_flight);
    set(&mut limits.pending_reply_mib, g.pending_reply_mib);
    set(&mut limits.call_timeout_ms, g.call_timeout_ms);
}
