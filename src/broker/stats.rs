//! Per-plugin counters: calls, denials, errors and latency percentiles, readable at any time.

use super::histogram::{Histogram, HistogramSnapshot};
use super::methods::{MethodCounts, MethodTables, Methods};
pub use super::methods::{MAX_METHODS, OTHER_METHOD};
use crate::ipc::message::ErrorCode;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The rules that deny a plugin→host call (`broker::gate` and the scope check), in the order
/// [`StatsSnapshot::denied_by_rule`] reports them; any other rule is counted as `other`.
pub const DENY_RULES: [&str; 7] = [
    "allow-list",
    "capability.scope",
    "capability.max_bytes",
    "limits.calls_per_second",
    "limits.calls_in_flight",
    "limits.pending_reply_mib",
    "other",
];

/// Every protocol error code, in the order [`StatsSnapshot::call_errors_by_code`] reports
/// them.
pub const ERROR_CODES: [ErrorCode; 13] = [
    ErrorCode::Denied,
    ErrorCode::Invalid,
    ErrorCode::TooLarge,
    ErrorCode::RateLimited,
    ErrorCode::Timeout,
    ErrorCode::Cancelled,
    ErrorCode::HostError,
    ErrorCode::PluginError,
    ErrorCode::Protocol,
    ErrorCode::Unavailable,
    ErrorCode::PluginCrashed,
    ErrorCode::Limit,
    ErrorCode::InvalidArgument,
];

/// `code`'s index in [`ERROR_CODES`] (a `match`, so a new code fails to compile here).
fn code_index(code: ErrorCode) -> usize {
    match code {
        ErrorCode::Denied => 0,
        ErrorCode::Invalid => 1,
        ErrorCode::TooLarge => 2,
        ErrorCode::RateLimited => 3,
        ErrorCode::Timeout => 4,
        ErrorCode::Cancelled => 5,
        ErrorCode::HostError => 6,
        ErrorCode::PluginError => 7,
        ErrorCode::Protocol => 8,
        ErrorCode::Unavailable => 9,
        ErrorCode::PluginCrashed => 10,
        ErrorCode::Limit => 11,
        ErrorCode::InvalidArgument => 12,
    }
}

/// Latency samples kept per direction (a ring: the most recent calls).
const SAMPLES: usize = 4096;

/// Live counters of one plugin.
#[derive(Debug, Default)]
pub struct Stats {
    calls: AtomicU64,
    denied: AtomicU64,
    errors: AtomicU64,
    invokes: AtomicU64,
    invoke_errors: AtomicU64,
    call_latency: Mutex<Ring>,
    invoke_latency: Mutex<Ring>,
    call_durations: Histogram,
    invoke_durations: Histogram,
    denied_by_rule: [AtomicU64; DENY_RULES.len()],
    call_errors_by_code: [AtomicU64; ERROR_CODES.len()],
    invoke_errors_by_code: [AtomicU64; ERROR_CODES.len()],
    calls_in_flight: AtomicU64,
    invokes_in_flight: AtomicU64,
    /// Per-capability counts, one table per set of the gate's names seen at a handshake.
    capability_methods: MethodTables,
    /// Per-command counts, one table per set of exported commands seen at a handshake.
    command_methods: MethodTables,
}

/// A call counted in flight until this is dropped (the call finished, failed or was aborted).
#[derive(Debug)]
pub struct InFlight {
    stats: std::sync::Arc<Stats>,
    invoke: bool,
}

impl InFlight {
    /// A plugin→host call (`invoke` false) or host→plugin call (`invoke` true) starts.
    pub fn start(stats: &std::sync::Arc<Stats>, invoke: bool) -> Self {
        stats.gauge(invoke).fetch_add(1, Ordering::Relaxed);
        Self {
            stats: std::sync::Arc::clone(stats),
            invoke,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.stats
            .gauge(self.invoke)
            .fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct Ring {
    micros: Vec<u64>,
    next: usize,
}

impl Ring {
    fn push(&mut self, d: Duration) {
        let us = d.as_micros() as u64;
        if self.micros.len() < SAMPLES {
            self.micros.push(us);
        } else {
            self.micros[self.next] = us;
        }
        self.next = (self.next + 1) % SAMPLES;
    }

    fn percentiles(&self) -> (Option<u64>, Option<u64>) {
        if self.micros.is_empty() {
            return (None, None);
        }
        let mut v = self.micros.clone();
        v.sort_unstable();
        let at = |p: f64| v[((v.len() - 1) as f64 * p) as usize];
        (Some(at(0.5)), Some(at(0.99)))
    }
}

/// A point-in-time copy of a plugin's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Plugin→host calls decided.
    pub calls: u64,
    /// Of which denied by the gate.
    pub denied: u64,
    /// Allowed calls that ended in an error.
    pub errors: u64,
    /// Host→plugin calls made.
    pub invokes: u64,
    /// Host→plugin calls that failed.
    pub invoke_errors: u64,
    /// Plugin→host call latency, p50 and p99 over recent calls, microseconds.
    pub call_p50_us: Option<u64>,
    /// See `call_p50_us`.
    pub call_p99_us: Option<u64>,
    /// Host→plugin call latency, p50 and p99 over recent calls, microseconds.
    pub invoke_p50_us: Option<u64>,
    /// See `invoke_p50_us`.
    pub invoke_p99_us: Option<u64>,
    /// Durations of allowed plugin→host calls, decision to reply (for metrics).
    #[serde(skip)]
    pub call_durations: HistogramSnapshot,
    /// Durations of host→plugin calls (for metrics).
    #[serde(skip)]
    pub invoke_durations: HistogramSnapshot,
    /// Denied calls per rule, in the order of [`DENY_RULES`] (for metrics).
    #[serde(skip)]
    pub denied_by_rule: Vec<(&'static str, u64)>,
    /// Allowed plugin→host calls that failed, per code, in the order of [`ERROR_CODES`].
    #[serde(skip)]
    pub call_errors_by_code: Vec<(&'static str, u64)>,
    /// Host→plugin calls that failed, per code, in the order of [`ERROR_CODES`].
    #[serde(skip)]
    pub invoke_errors_by_code: Vec<(&'static str, u64)>,
    /// Allowed plugin→host calls running now (for metrics).
    #[serde(skip)]
    pub calls_in_flight: u64,
    /// Host→plugin calls waiting for their reply now (for metrics).
    #[serde(skip)]
    pub invokes_in_flight: u64,
    /// Plugin→host calls per capability: decisions, errors and durations (for metrics; empty
    /// before the first handshake).
    #[serde(skip)]
    pub call_methods: Vec<(String, MethodCounts)>,
    /// Host→plugin calls per command: errors and durations (for metrics).
    #[serde(skip)]
    pub invoke_methods: Vec<(String, MethodCounts)>,
}

fn by_code(counts: &[AtomicU64; ERROR_CODES.len()]) -> Vec<(&'static str, u64)> {
    ERROR_CODES
        .iter()
        .zip(counts)
        .map(|(code, n)| (code.as_str(), n.load(Ordering::Relaxed)))
        .collect()
}

impl Stats {
    /// A plugin→host call was decided.
    fn decided(&self, allowed: bool) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if !allowed {
            self.denied.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A plugin→host call was denied by `rule` (counted in [`Meter::decided`] too).
    pub fn denied_by(&self, rule: &str) {
        let last = DENY_RULES.len() - 1;
        let i = DENY_RULES[..last]
            .iter()
            .position(|r| *r == rule)
            .unwrap_or(last);
        self.denied_by_rule[i].fetch_add(1, Ordering::Relaxed);
    }

    /// What a session with these capability and command names records into: this plugin's
    /// counters and the per-method tables for those names.
    pub fn meter(
        self: &std::sync::Arc<Self>,
        capabilities: &[String],
        commands: &[String],
    ) -> Meter {
        Meter {
            capabilities: self.capability_methods.table_for(capabilities),
            commands: self.command_methods.table_for(commands),
            stats: std::sync::Arc::clone(self),
        }
    }

    fn gauge(&self, invoke: bool) -> &AtomicU64 {
        if invoke {
            &self.invokes_in_flight
        } else {
            &self.calls_in_flight
        }
    }

    /// An allowed plugin→host call finished, failed with `error` if it did.
    fn finished(&self, error: Option<ErrorCode>, took: Duration) {
        if let Some(code) = error {
            self.errors.fetch_add(1, Ordering::Relaxed);
            self.call_errors_by_code[code_index(code)].fetch_add(1, Ordering::Relaxed);
        }
        self.call_durations.observe(took);
        self.call_latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(took);
    }

    /// A host→plugin call finished, failed with `error` if it did.
    fn invoked(&self, error: Option<ErrorCode>, took: Duration) {
        self.invokes.fetch_add(1, Ordering::Relaxed);
        if let Some(code) = error {
            self.invoke_errors.fetch_add(1, Ordering::Relaxed);
            self.invoke_errors_by_code[code_index(code)].fetch_add(1, Ordering::Relaxed);
        }
        self.invoke_durations.observe(took);
        self.invoke_latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(took);
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let (call_p50_us, call_p99_us) = self
            .call_latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .percentiles();
        let (invoke_p50_us, invoke_p99_us) = self
            .invoke_latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .percentiles();
        StatsSnapshot {
            calls: self.calls.load(Ordering::Relaxed),
            denied: self.denied.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            invokes: self.invokes.load(Ordering::Relaxed),
            invoke_errors: self.invoke_errors.load(Ordering::Relaxed),
            call_p50_us,
            call_p99_us,
            invoke_p50_us,
            invoke_p99_us,
            call_durations: self.call_durations.snapshot(),
            invoke_durations: self.invoke_durations.snapshot(),
            denied_by_rule: DENY_RULES
                .iter()
                .zip(&self.denied_by_rule)
                .map(|(rule, n)| (*rule, n.load(Ordering::Relaxed)))
                .collect(),
            call_errors_by_code: by_code(&self.call_errors_by_code),
            invoke_errors_by_code: by_code(&self.invoke_errors_by_code),
            calls_in_flight: self.calls_in_flight.load(Ordering::Relaxed),
            invokes_in_flight: self.invokes_in_flight.load(Ordering::Relaxed),
            call_methods: self.capability_methods.snapshot(),
            invoke_methods: self.command_methods.snapshot(),
        }
    }
}

/// What one session records into: its plugin's [`Stats`] and the per-method tables made for
/// the names of its handshake (cheap to clone).
#[derive(Debug, Clone)]
pub struct Meter {
    stats: std::sync::Arc<Stats>,
    capabilities: std::sync::Arc<Methods>,
    commands: std::sync::Arc<Methods>,
}

impl Meter {
    /// A plugin→host call of `method` was decided.
    pub fn decided(&self, method: &str, allowed: bool) {
        self.capabilities.decided(method, allowed);
        self.stats.decided(allowed);
    }

    /// A plugin→host call was denied by `rule` (counted in [`Meter::decided`] too).
    pub fn denied_by(&self, rule: &str) {
        self.stats.denied_by(rule);
    }

    /// An allowed plugin→host call of `method` finished, failed with `error` if it did.
    pub fn finished(&self, method: &str, error: Option<ErrorCode>, took: Duration) {
        self.capabilities.finished(method, error.is_some(), took);
        self.stats.finished(error, took);
    }

    /// A host→plugin call of `command` finished, failed with `error` if it did.
    pub fn invoked(&self, command: &str, error: Option<ErrorCode>, took: Duration) {
        self.commands.finished(command, error.is_some(), took);
        self.stats.invoked(error, took);
    }

    /// A plugin→host call (`invoke` false) or host→plugin call (`invoke` true) starts: it
    /// counts in flight until the guard is dropped.
    pub fn in_flight(&self, invoke: bool) -> InFlight {
        InFlight::start(&self.stats, invoke)
    }

    /// The plugin's counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_meter_counts_for_the_plugin_and_per_method() {
        let stats = std::sync::Arc::new(Stats::default());
        let meter = stats.meter(&["kv.get".to_owned()], &["run".to_owned()]);
        let us = Duration::from_micros(7);
        meter.decided("kv.get", true);
        meter.finished("kv.get", Some(ErrorCode::Timeout), us);
        meter.decided("doc.set_text", false); // not granted
        meter.denied_by("allow-list");
        meter.invoked("run", Some(ErrorCode::PluginError), us);
        let s = stats.snapshot();
        assert_eq!((s.calls, s.denied, s.errors, s.invokes), (2, 1, 1, 1));
        assert!(s.call_errors_by_code.contains(&("timeout", 1)));
        assert!(s.invoke_errors_by_code.contains(&("plugin_error", 1)));
        assert!(s.denied_by_rule.contains(&("allow-list", 1)));
        assert_eq!(s.call_durations.count, 1);
        let of = |v: &[(String, MethodCounts)], m: &str| {
            let c = &v.iter().find(|(n, _)| n == m).unwrap().1;
            (c.allowed, c.denied, c.errors, c.durations.count)
        };
        assert_eq!(of(&s.call_methods, "kv.get"), (1, 0, 1, 1));
        assert_eq!(of(&s.call_methods, OTHER_METHOD), (0, 1, 0, 0));
        assert_eq!(of(&s.invoke_methods, "run"), (0, 0, 1, 1));
    }

    #[test]
    fn in_flight_guards_count_until_dropped() {
        let stats = std::sync::Arc::new(Stats::default());
        let meter = stats.meter(&[], &[]);
        let a = meter.in_flight(false);
        let b = meter.in_flight(true);
        let c = meter.in_flight(true);
        let s = stats.snapshot();
        assert_eq!((s.calls_in_flight, s.invokes_in_flight), (1, 2));
        drop((a, b, c));
        let s = stats.snapshot();
        assert_eq!((s.calls_in_flight, s.invokes_in_flight), (0, 0));
    }
}
