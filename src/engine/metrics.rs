//! The engine's metrics in the Prometheus text exposition format (version 0.0.4), for
//! embedding hosts ([`Engine::metrics_text`]) and `plugbox serve --metrics`.
//!
//! Names follow the Prometheus conventions (a `plugbox_` prefix, base units: seconds;
//! counters end in `_total`); the duration histograms follow OpenTelemetry's RPC semantic
//! conventions: the host is the *server* of the capabilities a plugin calls
//! (`plugbox_rpc_server_duration_seconds`) and the *client* of the commands it calls on a
//! plugin (`plugbox_rpc_client_duration_seconds`). Every series is labelled with `plugin`, a
//! manifest name (`[a-z0-9._-]{1,64}`), so cardinality is bounded by the plugins loaded.
//! The call counters and duration histograms also carry `method`: the capability or command
//! name, from the plugin's grants and exports (at most `broker::methods::MAX_METHODS` per
//! plugin and direction, the rest under `_other`; a reload that adds a name adds its label).
//! Series of a plugin disappear when it is unloaded.

use super::{Engine, PluginStats, State};
use crate::broker::methods::MethodCounts;
use std::fmt::Write;

/// The `Content-Type` of [`Engine::metrics_text`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every lifecycle state, for the `plugbox_plugin_state` state set.
const STATES: [State; 9] = [
    State::Discovered,
    State::Validated,
    State::Spawning,
    State::Handshaking,
    State::Ready,
    State::Degraded,
    State::Draining,
    State::Stopped,
    State::Failed,
];

impl Engine {
    /// Every loaded plugin's metrics, in the Prometheus text format ([`CONTENT_TYPE`]).
    pub fn metrics_text(&self) -> String {
        render(&self.plugins(), self.audit().written())
    }
}

/// A label value escaped as the text format requires (`\`, `"` and newlines).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family: its `# HELP` and `# TYPE` lines, then a sample per plugin.
fn family(
    out: &mut String,
    plugins: &[PluginStats],
    name: &str,
    kind: &str,
    help: &str,
    samples: impl Fn(&PluginStats) -> Vec<(String, f64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for p in plugins {
        let plugin = label(&p.name);
        for (extra, value) in samples(p) {
            let _ = writeln!(out, "{name}{{plugin=\"{plugin}\"{extra}}} {value}");
        }
    }
}

/// A histogram family: one histogram per plugin and `method`.
fn histogram(
    out: &mut String,
    plugins: &[PluginStats],
    name: &str,
    help: &str,
    of: impl Fn(&PluginStats) -> &[(String, MethodCounts)],
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for p in plugins {
        let plugin = label(&p.name);
        for (method, counts) in of(p) {
            let h = &counts.durations;
            let labels = format!("plugin=\"{plugin}\",method=\"{}\"", label(method));
            for (le_us, n) in &h.buckets {
                let le = *le_us as f64 / 1e6;
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {n}");
            }
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum_us as f64 / 1e6);
            let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
        }
    }
}

/// Per-code error counts, one sample per code (zeros included, so a rate is defined).
fn by_code(counts: &[(&'static str, u64)]) -> Vec<(String, f64)> {
    counts
        .iter()
        .map(|(code, n)| (format!(",code=\"{code}\""), *n as f64))
        .collect()
}

/// Two samples per method: `method` and the labels `split` gives with their counts.
fn per_method(
    methods: &[(String, MethodCounts)],
    split: impl Fn(&MethodCounts) -> [(&'static str, u64); 2],
) -> Vec<(String, f64)> {
    let mut out = Vec::with_capacity(methods.len() * 2);
    for (method, counts) in methods {
        let method = label(method);
        for (labels, n) in split(counts) {
            out.push((format!(",method=\"{method}\",{labels}"), n as f64));
        }
    }
    out
}

/// The text for `plugins`, and the audit writer's `(records, bytes)` appended.
pub fn render(plugins: &[PluginStats], audit: (u64, u64)) -> String {
    let mut out = String::new();
    let (records, bytes) = audit;
    let _ = writeln!(
        out,
        "# HELP plugbox_audit_records_total Audit records appended since the engine started.\n\
         # TYPE plugbox_audit_records_total counter\n\
         plugbox_audit_records_total {records}\n\
         # HELP plugbox_audit_bytes_total Bytes of audit records appended since the engine started.\n\
         # TYPE plugbox_audit_bytes_total counter\n\
         plugbox_audit_bytes_total {bytes}"
    );
    family(
        &mut out,
        plugins,
        "plugbox_capability_calls_total",
        "counter",
        "Plugin-to-host capability calls decided by the gate, by capability and decision.",
        |p| {
            per_method(&p.calls.call_methods, |c| {
                [
                    ("decision=\"allow\"", c.allowed),
                    ("decision=\"deny\"", c.denied),
                ]
            })
        },
    );
    family(
        &mut out,
        plugins,
        "plugbox_capability_denials_total",
        "counter",
        "Plugin-to-host calls denied, by the rule that decided.",
        |p| {
            let by_rule = p.calls.denied_by_rule.iter();
            by_rule
                .map(|(rule, n)| (format!(",rule=\"{rule}\""), *n as f64))
                .collect()
        },
    );
    family(
        &mut out,
        plugins,
        "plugbox_capability_call_errors_total",
        "counter",
        "Allowed plugin-to-host calls that ended in an error, by protocol error code.",
        |p| by_code(&p.calls.call_errors_by_code),
    );
    family(
        &mut out,
        plugins,
        "plugbox_command_call_errors_total",
        "counter",
        "Host-to-plugin command calls that ended in an error, by protocol error code.",
        |p| by_code(&p.calls.invoke_errors_by_code),
    );
    family(
        &mut out,
        plugins,
        "plugbox_capability_calls_in_flight",
        "gauge",
        "Allowed plugin-to-host calls running now.",
        |p| vec![(String::new(), p.calls.calls_in_flight as f64)],
    );
    family(
        &mut out,
        plugins,
        "plugbox_command_calls_in_flight",
        "gauge",
        "Host-to-plugin command calls waiting for their reply now.",
        |p| vec![(String::new(), p.calls.invokes_in_flight as f64)],
    );
    family(
        &mut out,
        plugins,
        "plugbox_command_calls_total",
        "counter",
        "Host-to-plugin command calls, by command and outcome.",
        |p| {
            per_method(&p.calls.invoke_methods, |c| {
                let ok = c.durations.count.saturating_sub(c.errors);
                [("outcome=\"ok\"", ok), ("outcome=\"error\"", c.errors)]
            })
        },
    );
    histogram(
        &mut out,
        plugins,
        "plugbox_rpc_server_duration_seconds",
        "Duration of allowed plugin-to-host calls, decision to reply, by capability.",
        |p| &p.calls.call_methods,
    );
    histogram(
        &mut out,
        plugins,
        "plugbox_rpc_client_duration_seconds",
        "Duration of host-to-plugin command calls, by command.",
        |p| &p.calls.invoke_methods,
    );
    family(
        &mut out,
        plugins,
        "plugbox_plugin_restarts_total",
        "counter",
        "Instances started to replace failed ones since the plugin was loaded.",
        |p| vec![(String::new(), p.restarts as f64)],
    );
    family(
        &mut out,
        plugins,
        "plugbox_plugin_ready_instances",
        "gauge",
        "Instances ready to take calls.",
        |p| vec![(String::new(), p.ready_instances as f64)],
    );
    family(
        &mut out,
        plugins,
        "plugbox_plugin_circuit_open",
        "gauge",
        "1 while calls fail fast because restarts were exhausted.",
        |p| vec![(String::new(), f64::from(u8::from(p.circuit_open)))],
    );
    family(
        &mut out,
        plugins,
        "plugbox_plugin_state",
        "gauge",
        "The plugin's lifecycle state (1 for the current one).",
        |p| {
            STATES
                .iter()
                .map(|s| {
                    (
                        format!(",state=\"{}\"", s.as_str()),
                        f64::from(u8::from(*s == p.state)),
                    )
                })
                .collect()
        },
    );
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn no_plugins_is_still_every_family_with_help_and_type() {
        let text = render(&[], (3, 120));
        assert_eq!(text.lines().filter(|l| l.starts_with("# TYPE")).count(), 15);
        let samples: Vec<_> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [
                "plugbox_audit_records_total 3",
                "plugbox_audit_bytes_total 120"
            ]
        );
    }
}
