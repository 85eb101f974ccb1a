//! The numeric half of the ceiling: for every number of `[limits]`, `[process]`,
//! `[supervision]` and `[landlock]`, the effective value is the stricter of manifest and
//! grant. "Stricter" per field is written next to each field below and in
//! `policies/README.md`; every value the grant changed is reported, to be audited.

use super::ceiling::Stricter;
use super::grant_file::{LimitsGrant, SandboxGrant, SupervisionGrant};
use crate::policy::file::{LimitsSection, PolicyFile, RestartMode, SupervisionSection};
use std::fmt::Display;

/// Collects what the grant changed while it tightens values.
#[derive(Default)]
struct Tighten(Vec<Stricter>);

impl Tighten {
    /// `value` becomes the smaller of itself and `grant` (a limit, a rate, a deadline).
    fn smaller<T: Ord + Copy + Display>(&mut self, field: &str, value: &mut T, grant: Option<T>) {
        self.set(field, value, grant.map(|g| (*value).min(g)));
    }

    /// Like [`Tighten::smaller`] for a budget where 0 means "none" (unbounded): a grant's
    /// budget bounds a manifest that asks for none, and a grant of 0 bounds nothing.
    fn smaller_budget(&mut self, field: &str, value: &mut u64, grant: Option<u64>) {
        let bounded = grant.filter(|&g| g > 0).map(|g| match *value {
            0 => g,
            v => v.min(g),
        });
        self.set(field, value, bounded);
    }

    /// `value` becomes the larger of itself and `grant` (a backoff, a window, a floor).
    fn larger<T: Ord + Copy + Display>(&mut self, field: &str, value: &mut T, grant: Option<T>) {
        self.set(field, value, grant.map(|g| (*value).max(g)));
    }

    fn set<T: PartialEq + Copy + Display>(&mut self, field: &str, value: &mut T, to: Option<T>) {
        match to {
            Some(to) if to != *value => {
                self.0.push(Stricter {
                    field: field.to_owned(),
                    requested: value.to_string(),
                    effective: to.to_string(),
                });
                *value = to;
            }
            _ => {}
        }
    }
}

/// Applies every numeric bound of `grant` to `file` and returns what changed.
pub(super) fn tighten_numbers(file: &mut PolicyFile, grant: &SandboxGrant) -> Vec<Stricter> {
    let mut t = Tighten::default();
    t.larger(
        "landlock.min_abi",
        &mut file.landlock.min_abi,
        grant.landlock.min_abi,
    );
    tighten_limits(&mut t, &mut file.limits, &grant.limits);
    let (p, g) = (&mut file.process, &grant.process);
    t.smaller("process.max_threads", &mut p.max_threads, g.max_threads);
    t.smaller("process.instances", &mut p.instances, g.instances);
    // Fewer warm instances hold fewer resources; never more than may run.
    let warm = g.min_warm.map_or(p.instances, |w| w.min(p.instances));
    t.smaller("process.min_warm", &mut p.min_warm, Some(warm));
    t.smaller("process.idle_seconds", &mut p.idle_seconds, g.idle_seconds);
    tighten_supervision(&mut t, &mut file.supervision, &grant.supervision);
    t.0
}

/// `[supervision]`: "never" beats "on-failure"; fewer restarts, a longer window, longer
/// backoffs, a longer open circuit, more frequent pings with a shorter deadline are stricter.
fn tighten_supervision(t: &mut Tighten, s: &mut SupervisionSection, g: &SupervisionGrant) {
    if g.restart == Some(RestartMode::Never) && s.restart != RestartMode::Never {
        t.0.push(Stricter {
            field: "supervision.restart".into(),
            requested: "on-failure".into(),
            effective: "never".into(),
        });
        s.restart = RestartMode::Never;
    }
    t.smaller(
        "supervision.max_restarts",
        &mut s.max_restarts,
        g.max_restarts,
    );
    let window = &mut s.restart_window_seconds;
    t.larger(
        "supervision.restart_window_seconds",
        window,
        g.restart_window_seconds,
    );
    t.larger("supervision.backoff_ms", &mut s.backoff_ms, g.backoff_ms);
    // The longest delay is never below the first one.
    let longest = g
        .backoff_max_ms
        .map_or(s.backoff_ms, |m| m.max(s.backoff_ms));
    t.larger(
        "supervision.backoff_max_ms",
        &mut s.backoff_max_ms,
        Some(longest),
    );
    let open = &mut s.circuit_open_seconds;
    t.larger(
        "supervision.circuit_open_seconds",
        open,
        g.circuit_open_seconds,
    );
    let interval = &mut s.health_interval_ms;
    t.smaller(
        "supervision.health_interval_ms",
        interval,
        g.health_interval_ms,
    );
    let timeout = &mut s.health_timeout_ms;
    t.smaller(
        "supervision.health_timeout_ms",
        timeout,
        g.health_timeout_ms,
    );
}

/// Every `[limits]` value: smaller is stricter for all of them.
fn tighten_limits(t: &mut Tighten, l: &mut LimitsSection, g: &LimitsGrant) {
    t.smaller("limits.memory_mib", &mut l.memory_mib, g.memory_mib);
    t.smaller("limits.cpu_seconds", &mut l.cpu_seconds, g.cpu_seconds);
    // 0 is no wall-clock budget at all: the loosest value, not the strictest.
    t.smaller_budget("limits.wall_seconds", &mut l.wall_seconds, g.wall_seconds);
    t.smaller("limits.open_files", &mut l.open_files, g.open_files);
    t.smaller(
        "limits.file_size_mib",
        &mut l.file_size_mib,
        g.file_size_mib,
    );
    t.smaller("limits.fs_quota_mib", &mut l.fs_quota_mib, g.fs_quota_mib);
    t.smaller("limits.output_bytes", &mut l.output_bytes, g.output_bytes);
    t.smaller(
        "limits.calls_per_second",
        &mut l.calls_per_second,
        g.calls_per_second,
    );
    t.smaller("limits.call_burst", &mut l.call_burst, g.call_burst);
    t.smaller(
        "limits.calls_in_flight",
        &mut l.calls_in_flight,
        g.calls_in_flight,
    );
    t.smaller(
        "limits.pending_reply_mib",
        &mut l.pending_reply_mib,
        g.pending_reply_mib,
    );
    t.smaller(
        "limits.call_timeout_ms",
        &mut l.call_timeout_ms,
        g.call_timeout_ms,
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
