//! Per-plugin counters: calls, denials, errors and latency percentiles, readable at any time.

use super::histogram::{Histogram, HistogramSnapshot};
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
pub const ERROR_CODES: [ErrorCode; 12] = [
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
    }
}

/// Distinct `method` label values kept per plugin and direction; calls of any other method
/// are counted under [`OTHER_METHOD`].
pub const MAX_METHODS: usize = 256;

/// The `method` label of calls whose method is not in the plugin's table.
pub const OTHER_METHOD: &str = "_other";

/// Per-method duration histograms of one direction: the names (sorted, at most
/// [`MAX_METHODS`]) are fixed when the table is set, so recording is a binary search and a few
/// atomic adds, no allocation.
#[derive(Debug)]
struct Methods {
    names: Vec<String>,
    /// One per name, then one for [`OTHER_METHOD`].
    durations: Vec<Histogram>,
}

impl Methods {
    fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut names: Vec<String> = names.into_iter().map(str::to_owned).collect();
        names.sort_unstable();
        names.dedup();
        names.truncate(MAX_METHODS);
        let durations = (0..=names.len()).map(|_| Histogram::default()).collect();
        Self { names, durations }
    }

    fn observe(&self, method: &str, took: Duration) {
        let i = self
            .names
            .binary_search_by(|n| n.as_str().cmp(method))
            .unwrap_or(self.names.len());
        self.durations[i].observe(took);
    }

    fn snapshot(&self) -> Vec<(String, HistogramSnapshot)> {
        let names = self.names.iter().map(String::as_str);
        names
            .chain([OTHER_METHOD])
            .zip(&self.durations)
            .map(|(n, h)| (n.to_owned(), h.snapshot()))
            .collect()
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
    /// Per-capability durations, set at the first handshake from the gate's names.
    capability_methods: std::sync::OnceLock<Methods>,
    /// Per-command durations, set at the first handshake from the commands exported.
    command_methods: std::sync::OnceLock<Methods>,
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
    /// Durations of allowed plugin→host calls per capability (for metrics; empty before the
    /// first handshake).
    #[serde(skip)]
    pub call_durations_by_method: Vec<(String, HistogramSnapshot)>,
    /// Durations of host→plugin calls per command (for metrics).
    #[serde(skip)]
    pub invoke_durations_by_method: Vec<(String, HistogramSnapshot)>,
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
    pub fn decided(&self, allowed: bool) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if !allowed {
            self.denied.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A plugin→host call was denied by `rule` (counted in [`Stats::decided`] too).
    pub fn denied_by(&self, rule: &str) {
        let last = DENY_RULES.len() - 1;
        let i = DENY_RULES[..last]
            .iter()
            .position(|r| *r == rule)
            .unwrap_or(last);
        self.denied_by_rule[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Sets the capability and command names the `method` label takes (the first call wins:
    /// every instance of a plugin has the same manifest and exports).
    pub fn set_methods(&self, capabilities: &[String], commands: &[String]) {
        let _ = self
            .capability_methods
            .set(Methods::new(capabilities.iter().map(String::as_str)));
        let _ = self
            .command_methods
            .set(Methods::new(commands.iter().map(String::as_str)));
    }

    fn gauge(&self, invoke: bool) -> &AtomicU64 {
        if invoke {
            &self.invokes_in_flight
        } else {
            &self.calls_in_flight
        }
    }

    /// An allowed plugin→host call of `method` finished, failed with `error` if it did.
    pub fn finished(&self, method: &str, error: Option<ErrorCode>, took: Duration) {
        if let Some(m) = self.capability_methods.get() {
            m.observe(method, took);
        }
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

    /// A host→plugin call of `command` finished, failed with `error` if it did.
    pub fn invoked(&self, command: &str, error: Option<ErrorCode>, took: Duration) {
        if let Some(m) = self.command_methods.get() {
            m.observe(command, took);
        }
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
            call_durations_by_method: self
                .capability_methods
                .get()
                .map(Methods::snapshot)
                .unwrap_or_default(),
            invoke_durations_by_method: self
                .command_methods
                .get()
                .map(Methods::snapshot)
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn methods_past_the_cap_and_unknown_ones_fold_into_other() {
        let stats = Stats::default();
        let many: Vec<String> = (0..300).map(|i| format!("cap{i:03}")).collect();
        stats.set_methods(&many, &["run".to_owned()]);
        let us = Duration::from_micros(7);
        stats.finished("cap000", None, us);
        stats.finished("cap299", Some(ErrorCode::Timeout), us); // past the cap
        stats.finished("doc.set_text", None, us); // not granted
        stats.invoked("run", Some(ErrorCode::PluginError), us);
        let s = stats.snapshot();
        assert_eq!(s.call_durations_by_method.len(), MAX_METHODS + 1);
        let count = |v: &[(String, HistogramSnapshot)], m: &str| {
            v.iter().find(|(n, _)| n == m).map(|(_, h)| h.count)
        };
        assert_eq!(count(&s.call_durations_by_method, "cap000"), Some(1));
        assert_eq!(count(&s.call_durations_by_method, "cap299"), None);
        assert_eq!(count(&s.call_durations_by_method, OTHER_METHOD), Some(2));
        assert_eq!(count(&s.invoke_durations_by_method, "run"), Some(1));
        assert!(s.call_errors_by_code.contains(&("timeout", 1)));
        assert!(s.invoke_errors_by_code.contains(&("plugin_error", 1)));
        assert_eq!(s.errors, 1);
        assert_eq!(s.call_durations.count, 3);
    }

    #[test]
    fn in_flight_guards_count_until_dropped() {
        let stats = std::sync::Arc::new(Stats::default());
        let a = InFlight::start(&stats, false);
        let b = InFlight::start(&stats, true);
        let c = InFlight::start(&stats, true);
        let s = stats.snapshot();
        assert_eq!((s.calls_in_flight, s.invokes_in_flight), (1, 2));
        drop((a, b, c));
        let s = stats.snapshot();
        assert_eq!((s.calls_in_flight, s.invokes_in_flight), (0, 0));
    }
}
