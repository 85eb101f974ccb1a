//! The audit record: one JSON line per decision (schema version 1).

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

/// Version of the record schema (`docs/audit.md`).
pub const RECORD_SCHEMA: u32 = 2;
/// Longest line the writer writes (newline included), in bytes; readers skip longer lines as
/// corrupt, so their memory stays bounded. Real records are far smaller: strings a plugin
/// controls are cut at [`MAX_TEXT_CHARS`], and a manifest at 256 KiB.
pub const MAX_RECORD_BYTES: usize = 4 * 1024 * 1024;
/// Longest plugin-controlled string kept in a record, in characters.
pub const MAX_TEXT_CHARS: usize = 256;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The writer opened the log (first record of every file it starts).
    Open,
    /// The writer rotated to a new file (last record of the archived file).
    Rotate,
    /// Clean shutdown: the last record of the log.
    Seal,
    /// A signed checkpoint of the chain head: `detail` holds `v`, `log`, `seq`, `hash`,
    /// `key`, `time`, `before_seal` and `sig` (`docs/audit.md`, "Checkpoints").
    Checkpoint,
    /// A plugin was refused before it ran.
    LoadRefused,
    /// A plugin process was started; `detail` holds the enforcement report.
    Spawn,
    /// The handshake finished (accepted or refused).
    Handshake,
    /// A plugin→host call was decided (allow or deny).
    Call,
    /// The outcome of an allowed call.
    CallOutcome,
    /// Rate-limited calls refused without a record of their own; `detail.suppressed` counts
    /// them (the first refusal of each interval has its own `call` record).
    CallsSuppressed,
    /// A host→plugin call and its outcome.
    Invoke,
    /// A limit was hit.
    Limit,
    /// The plugin broke the protocol.
    ProtocolViolation,
    /// The plugin process exited.
    Exit,
    /// The plugin process tree was killed.
    Kill,
    /// A call did not finish in time.
    Timeout,
    /// A health probe failed.
    HealthFailure,
    /// A plugin was restarted.
    Restart,
    /// A plugin or one of its instances changed lifecycle state; `detail` holds `from` and `to`.
    State,
    /// A plugin's restart circuit opened (calls fail fast) or closed again.
    Circuit,
    /// A development stub (`plugbox run --stub CAP=JSON`), not a host, answered an allowed
    /// call of `capability`; `detail` holds `stub: true` and the answer's `value_sha256`.
    Stub,
}

/// The identity of the plugin instance a record is about.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Subject {
    /// Manifest name.
    pub name: String,
    /// Manifest version.
    pub version: String,
    /// Instance id.
    pub instance: String,
    /// sha256 over the plugin's files, computed at load.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// One audit record, before the writer stamps it with `seq` and `ts`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Record {
    /// What happened.
    pub event: EventKind,
    /// About which plugin instance.
    pub plugin: Subject,
    /// Capability or command name (plugin-controlled: escaped and truncated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    /// `allow` or `deny`, for decisions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<&'static str>,
    /// The rule that decided, such as `allow-list` or `limits.calls_per_second`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<&'static str>,
    /// Human reason (escaped and truncated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The call id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_id: Option<u64>,
    /// Request size (header plus body), bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_bytes: Option<u64>,
    /// Response size, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_bytes: Option<u64>,
    /// sha256 of the request header and body (never the arguments themselves).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args_sha256: Option<String>,
    /// Time from decision to outcome, microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_us: Option<u64>,
    /// `ok` or the error code, for outcomes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Event-specific structured data (enforcement report, exit status, limit values).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

/// One line of the log as written: the record plus what the writer stamps on it. Used for the
/// published JSON Schema (`docs/audit-record.schema.json`).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RecordLine {
    /// Record schema version.
    pub v: u32,
    /// Sequence number: contiguous, starting at 1, continuing across rotations.
    pub seq: u64,
    /// RFC 3339 UTC timestamp with nanoseconds.
    pub ts: String,
    /// The host that wrote the record.
    pub host: String,
    /// The record.
    #[serde(flatten)]
    pub record: Record,
    /// `hash` of the previous record (64 zeros for the first).
    pub prev: String,
    /// sha256 of this line's bytes without this member.
    pub hash: String,
}

impl Record {
    /// A record of `event` about `plugin` with every optional field empty.
    pub fn new(event: EventKind, plugin: Subject) -> Self {
        Self {
            event,
            plugin,
            capability: None,
            decision: None,
            rule: None,
            reason: None,
            call_id: None,
            request_bytes: None,
            response_bytes: None,
            args_sha256: None,
            duration_us: None,
            outcome: None,
            detail: None,
        }
    }
}

/// Makes plugin-controlled text safe to store and to print: truncated to [`MAX_TEXT_CHARS`],
/// and every control, line-separator or bidirectional-override character written as a
/// visible `\u{..}` escape (JSON escaping alone leaves C1 controls and bidi overrides raw).
/// A backslash is written `\\`, so the escaping is unambiguous: a plugin that sends the six
/// characters `\u{1b}` is recorded as `\\u{1b}`, never as what an ESC becomes.
pub fn escape_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_TEXT_CHARS * 2));
    for (i, c) in text.chars().enumerate() {
        if i == MAX_TEXT_CHARS {
            out.push_str("…[truncated]");
            break;
        }
        if c == '\\' {
            out.push_str("\\\\");
        } else if crate::display::is_unsafe(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// The JSON Schema of one audit log line.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(RecordLine)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_and_bidi_and_truncates() {
        assert_eq!(escape_text("a\u{1b}[31mb"), "a\\u{1b}[31mb");
        assert_eq!(escape_text("x\u{202e}y\u{85}"), "x\\u{202e}y\\u{85}");
        assert_eq!(escape_text("line\nnext"), "line\\u{a}next");
        // Unambiguous: the text of an escape is not the escape of a control character.
        assert_eq!(escape_text("a\\u{1b}b"), "a\\\\u{1b}b");
        assert_ne!(escape_text("\\u{1b}"), escape_text("\u{1b}"));
        let long = "é".repeat(1000);
        let cut = escape_text(&long);
        assert_eq!(cut.chars().filter(|&c| c == 'é').count(), MAX_TEXT_CHARS);
        assert!(cut.ends_with("[truncated]"));
    }
}
