//! Lifecycle states of a plugin and of each of its instances. Every transition is one `state`
//! record in the audit log: `detail` holds `from` and `to`, `reason` says why when it matters.
//!
//! A plugin goes `discovered → validated → ready ⇄ degraded → draining → stopped`, or ends
//! `failed` (activation failed, restarts exhausted, or `restart = "never"`). An instance goes
//! `spawning → handshaking → ready → draining → stopped`, or `failed` at any point.

use crate::audit::{escape_text, AuditError, AuditLog, EventKind, Record, Subject};
use serde::Serialize;

/// Where a plugin, or one instance of it, is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Its manifest was read.
    Discovered,
    /// Manifest, API version, grants, digest pin and sandbox preparation all passed.
    Validated,
    /// A process is being started.
    Spawning,
    /// The process runs; its `hello` is awaited.
    Handshaking,
    /// Serving calls (a plugin: at least its warm instances are ready).
    Ready,
    /// A plugin with fewer ready instances than `min_warm` while replacements start.
    Degraded,
    /// Asked to stop: no new calls; running ones finish within the grace period.
    Draining,
    /// Gone, as asked.
    Stopped,
    /// Gone without being asked, or never became ready.
    Failed,
}

impl State {
    /// The spelling in records.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Discovered => "discovered",
            State::Validated => "validated",
            State::Spawning => "spawning",
            State::Handshaking => "handshaking",
            State::Ready => "ready",
            State::Degraded => "degraded",
            State::Draining => "draining",
            State::Stopped => "stopped",
            State::Failed => "failed",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Writes the record of one transition.
pub(crate) fn record_transition(
    audit: &AuditLog,
    subject: &Subject,
    from: Option<State>,
    to: State,
    reason: Option<&str>,
) -> Result<(), AuditError> {
    let mut r = Record::new(EventKind::State, subject.clone());
    r.detail = Some(serde_json::json!({ "from": from.map(State::as_str), "to": to.as_str() }));
    r.reason = reason.map(escape_text);
    audit.write(&r).map(|_| ())
}
