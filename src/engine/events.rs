//! The engine's event stream: what happened to the plugins (state changes, exits, restarts,
//! circuit openings, health failures, refused loads), for hosts that react to it
//! ([`Engine::events`], and `plugbox serve`'s `event` lines).
//!
//! Every event *is* an audit record: the stream is fed by the audit writer once a record of one
//! of those kinds is in the log, and carries its sequence number, so an event is never seen
//! for something the log does not hold, and a host can find the full record.

use super::Engine;
use crate::audit::{EventKind, OnRecord, Record};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Events kept for a subscriber that reads slowly; past this it loses the oldest
/// (`RecvError::Lagged` tells it how many).
pub const EVENT_BACKLOG: usize = 1024;

/// One event about a plugin.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct PluginEvent {
    /// The audit record this event is (its `seq` in the log).
    pub seq: u64,
    /// What happened: the plugin (instance `-`) or an instance moved to a lifecycle state
    /// (`spawning`, `handshaking`, `ready`, `degraded`, `draining`, `stopped`, `failed`, ...);
    /// an instance `exited` by itself or was `killed` by the host (`detail` holds `exit_code`
    /// or `signal`, `reason` the cause); an instance was `restarted` (after a failure, a trial
    /// or a scale-up) or `recycled` (it reached `limits.wall_seconds`); the restart circuit
    /// went `circuit_open` (calls fail fast) or `circuit_closed`; a `health_failure`; a
    /// `load_refused`.
    pub event: String,
    /// The plugin's manifest name.
    pub plugin: String,
    /// Its version.
    pub version: String,
    /// The instance (`-` for the plugin as a whole).
    pub instance: String,
    /// Why, in words (escaped as in the log).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The record's `detail`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

impl PluginEvent {
    /// The event a written record is, if it is one of the event kinds.
    pub fn of(record: &Record, seq: u64) -> Option<Self> {
        let detail = record.detail.as_ref();
        let field = |k: &str| detail.and_then(|d| d[k].as_str()).map(str::to_owned);
        let event = match record.event {
            EventKind::State => field("to")?,
            EventKind::Exit => "exited".to_owned(),
            EventKind::Kill => "killed".to_owned(),
            EventKind::Restart => {
                let recycle = record
                    .reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with("recycle"));
                if recycle { "recycled" } else { "restarted" }.to_owned()
            }
            EventKind::Circuit => format!("circuit_{}", field("circuit")?),
            EventKind::HealthFailure => "health_failure".to_owned(),
            EventKind::LoadRefused => "load_refused".to_owned(),
            _ => return None,
        };
        Some(Self {
            seq,
            event,
            plugin: record.plugin.name.clone(),
            version: record.plugin.version.clone(),
            instance: record.plugin.instance.clone(),
            reason: record.reason.clone(),
            detail: record.detail.clone(),
        })
    }
}

/// The audit hook that feeds `events`, then calls `also` (the host's own hook) if any.
pub(crate) fn hook(events: broadcast::Sender<PluginEvent>, also: Option<OnRecord>) -> OnRecord {
    Arc::new(move |record: &Record, seq: u64| {
        if events.receiver_count() > 0 {
            if let Some(event) = PluginEvent::of(record, seq) {
                let _ = events.send(event);
            }
        }
        if let Some(also) = &also {
            also(record, seq);
        }
    })
}

impl Engine {
    /// Subscribes to the plugins' events from now on. A subscriber that falls more than
    /// [`EVENT_BACKLOG`] events behind loses the oldest and is told how many
    /// (`RecvError::Lagged`); the audit log still has every one.
    pub fn events(&self) -> broadcast::Receiver<PluginEvent> {
        self.inner.events.subscribe()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::audit::Subject;
    use serde_json::json;

    fn record(event: EventKind, reason: Option<&str>, detail: Option<Value>) -> Record {
        let subject = Subject {
            name: "p".into(),
            version: "1.0.0".into(),
            instance: "p-3".into(),
            digest: None,
        };
        let mut r = Record::new(event, subject);
        r.reason = reason.map(str::to_owned);
        r.detail = detail;
        r
    }

    #[test]
    fn records_of_the_event_kinds_become_events_and_the_others_do_not() {
        let name = |r: Record| PluginEvent::of(&r, 9).map(|e| e.event);
        let to_ready = json!({"from": "handshaking", "to": "ready"});
        assert_eq!(
            name(record(EventKind::State, None, Some(to_ready))).unwrap(),
            "ready"
        );
        let killed = json!({"pid": 4, "signal": 9});
        assert_eq!(
            name(record(EventKind::Kill, Some("x"), Some(killed))).unwrap(),
            "killed"
        );
        let recycle = Some("recycle after limits.wall_seconds");
        assert_eq!(
            name(record(EventKind::Restart, recycle, None)).unwrap(),
            "recycled"
        );
        let failure = Some("restart after a failure");
        assert_eq!(
            name(record(EventKind::Restart, failure, None)).unwrap(),
            "restarted"
        );
        let open = json!({"circuit": "open"});
        assert_eq!(
            name(record(EventKind::Circuit, None, Some(open))).unwrap(),
            "circuit_open"
        );
        assert_eq!(name(record(EventKind::Call, None, None)), None);
        assert_eq!(name(record(EventKind::State, None, None)), None);
        let e = PluginEvent::of(&record(EventKind::Exit, Some("exited"), None), 9).unwrap();
        assert_eq!(
            (e.seq, e.instance.as_str(), e.event.as_str()),
            (9, "p-3", "exited")
        );
    }
}
