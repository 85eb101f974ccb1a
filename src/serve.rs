//! The request lines of `plugbox serve` and its answers, parsed and built here so that the
//! CLI, the fuzz target and the protocol's documentation share one definition.
//!
//! Every request is one JSON object on one line with an `id` (any JSON value the host chose,
//! echoed in the answer) and an `op`; every answer is `{"id": ..., "ok": true, "result": ...}`
//! or `{"id": ..., "ok": false, "error": {"code": ..., "message": ...}}`.

use crate::capability::CallError;
use crate::engine::PluginEvent;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::PathBuf;

/// The protocol version this engine speaks by default (the newest).
pub const PROTOCOL: u32 = 2;

/// Every protocol version this engine speaks; a host picks one with `serve --protocol N`.
/// Protocol 2 adds raw bodies: a `call` request may be followed by the bytes of one argument
/// ([`BodyHeader`]), and a binary result comes as an answer with `body` followed by its bytes.
pub const PROTOCOLS: [u32; 2] = [1, 2];

/// The first protocol with raw bodies after a line.
pub const BODY_PROTOCOL: u32 = 2;

/// Protocol 2: a `call` request's argument carried as raw bytes right after its line.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BodyHeader {
    /// The argument's name (the plugin receives it as `bytes`); not also in `args`.
    pub arg: String,
    /// How many bytes follow the line's `\n` on stdin: exactly this many, then the next
    /// line. At most the plugin's body limit (`min(limits.memory_mib, 1 GiB)`), else the
    /// bytes are read and dropped and the request is answered `too_large`.
    pub len: u64,
}

/// One request line, without its `id`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Load the plugin in `dir` under the grant file `grant`.
    Load {
        /// The plugin's directory.
        dir: PathBuf,
        /// Its grant file: the ceiling of what it gets (required unless serve runs with
        /// `--allow-ungranted`).
        #[serde(default)]
        grant: Option<PathBuf>,
    },
    /// Replace loaded plugin `plugin` with the version in `dir`.
    Reload {
        /// The loaded plugin's name.
        plugin: String,
        /// The new version's directory.
        dir: PathBuf,
        /// Its grant file, as for `load`.
        #[serde(default)]
        grant: Option<PathBuf>,
    },
    /// Unload plugin `plugin`.
    Unload {
        /// The loaded plugin's name.
        plugin: String,
    },
    /// Call `command` of plugin `plugin` with keyword arguments `args`.
    Call {
        /// The loaded plugin's name.
        plugin: String,
        /// One of the commands it exports.
        command: String,
        /// A JSON object (default `{}`).
        #[serde(default = "empty_object")]
        args: Value,
        /// Protocol 2: one more argument, as raw bytes after this line.
        #[serde(default)]
        body: Option<BodyHeader>,
    },
    /// Plugin `plugin` described: identity, description, granted capabilities, commands.
    Describe {
        /// The loaded plugin's name.
        plugin: String,
    },
    /// Every loaded plugin's counters and state.
    Stats {},
    /// Answer the requests running, unload every plugin, seal the log and exit.
    Shutdown {},
    /// Not a request: the host's answer to a `host_call`.
    HostReply {
        /// The `call` number of the `host_call` line answered.
        call: u64,
        /// The capability's result, on success.
        #[serde(default)]
        result: Option<Value>,
        /// Its error (`{"code", "message"}`), on failure.
        #[serde(default)]
        error: Option<Value>,
    },
}

fn empty_object() -> Value {
    json!({})
}

/// A failed request: a stable code and a message.
#[derive(Debug)]
pub struct Failure {
    code: &'static str,
    message: String,
    traceback: Option<String>,
}

impl Failure {
    /// Its code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// A failure with `code` (a stable, documented string) and a human `message`.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            traceback: None,
        }
    }
}

impl From<CallError> for Failure {
    fn from(e: CallError) -> Self {
        Self {
            code: e.code.as_str(),
            message: e.message,
            traceback: e.traceback,
        }
    }
}

/// serve's first line, before it reads any request.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Ready {
    /// Always `"ready"`.
    pub op: &'static str,
    /// The protocol version of every line that follows.
    pub protocol: u32,
    /// Every version this engine speaks.
    pub protocols: Vec<u32>,
    /// The engine's version.
    pub engine: &'static str,
}

impl Ready {
    /// The ready line for `protocol`.
    pub fn new(protocol: u32) -> Self {
        Self {
            op: "ready",
            protocol,
            protocols: PROTOCOLS.to_vec(),
            engine: env!("CARGO_PKG_VERSION"),
        }
    }
}

/// An event line (`serve --events`): something happened to a plugin. It is an audit record
/// (`seq`); events come in the log's order.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EventLine {
    /// Always `"event"`.
    pub op: &'static str,
    /// The event.
    #[serde(flatten)]
    pub event: PluginEvent,
}

/// Written instead of the events a slow host missed (serve keeps a bounded backlog).
#[derive(Debug, Serialize, JsonSchema)]
pub struct EventsLost {
    /// Always `"event"`.
    pub op: &'static str,
    /// Always `"lost"`.
    pub event: &'static str,
    /// How many events were dropped (the audit log has them).
    pub count: u64,
}

/// A plugin called host capability `capability`, which this host answers (`--capability`):
/// answer with a `host_reply` request carrying the same `call`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct HostCall {
    /// Always `"host_call"`.
    pub op: &'static str,
    /// The call's number, unique for this serve process.
    pub call: u64,
    /// The `id` of the host's `call` request that the plugin made this call for; absent
    /// when there is none (a call from a background thread, or outside any command). The
    /// plugin says which command it is running, and the engine accepts that only while that
    /// command's call waits for the plugin's reply, so a plugin cannot name a request of
    /// another plugin, one it has answered, or one that was cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default)]
    #[schemars(schema_with = "request_id_schema")]
    pub request: Option<Value>,
    /// The calling plugin's name.
    pub plugin: String,
    /// Its instance.
    pub instance: String,
    /// The capability called.
    pub capability: String,
    /// Its keyword arguments, as the gate allowed them.
    pub args: serde_json::Map<String, Value>,
}

/// The schema of a request id as a `host_call` line names it (the request's own `id`).
fn request_id_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "The id of the host's request, as the host chose it.",
        "type": ["string", "integer"]
    })
}

/// An answer line: to request `id`, `ok` with `result`, or not with `error`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Answer {
    /// The request's `id`, or `null` when it could not be read.
    pub id: Value,
    /// Did it succeed?
    pub ok: bool,
    /// Its result (when `ok`), unless it is `body`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Protocol 2: the result is binary, its bytes follow this line's `\n` on stdout:
    /// exactly this many, then the next line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<u64>,
    /// Why it failed (unless `ok`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<AnswerError>,
}

/// A failed request's error.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AnswerError {
    /// A stable code: a protocol error code (`denied`, `invalid`, `invalid_argument`,
    /// `too_large`, `timeout`, `plugin_error`, `plugin_crashed`, `unavailable`, ...) or one of
    /// serve's own (`load_failed`, `not_loaded`).
    pub code: String,
    /// What happened, in words.
    pub message: String,
    /// The plugin's traceback, for a `plugin_error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceback: Option<String>,
}

/// The request schema with the `id` member every request line may carry (it is taken off the
/// line before the rest is parsed as a [`Request`]).
fn with_id(mut schema: Value) -> Value {
    let id = json!({
        "description": "A string, an integer (64-bit) or null, chosen by the host and echoed in the answer (default null); any other id is refused with id null.",
        "type": ["string", "integer", "null"]
    });
    if let Some(variants) = schema["oneOf"].as_array_mut() {
        for v in variants {
            if let Some(props) = v["properties"].as_object_mut() {
                props.insert("id".to_owned(), id.clone());
            }
        }
    }
    schema
}

/// The JSON Schema of every line of protocol [`PROTOCOL`], by kind (`docs/serve.schema.json`).
pub fn json_schema() -> Value {
    let schema = |s: schemars::Schema| serde_json::to_value(s).unwrap_or_default();
    json!({
        "title": format!("plugbox serve protocol {PROTOCOL}"),
        "host_to_serve": {
            "request": with_id(schema(schemars::schema_for!(Request))),
        },
        "serve_to_host": {
            "ready": schema(schemars::schema_for!(Ready)),
            "answer": schema(schemars::schema_for!(Answer)),
            "event": schema(schemars::schema_for!(EventLine)),
            "events_lost": schema(schemars::schema_for!(EventsLost)),
            "host_call": schema(schemars::schema_for!(HostCall)),
        },
    })
}

/// The request's id (a string, a 64-bit integer or null, as the host chose) and the typed request.
pub fn parse(line: &[u8]) -> Result<(Value, Request), (Value, Failure)> {
    let value: Value = serde_json::from_slice(line).map_err(|e| {
        (
            Value::Null,
            Failure::new("invalid", format!("not JSON: {e}")),
        )
    })?;
    let Value::Object(mut object) = value else {
        return Err((
            Value::Null,
            Failure::new("invalid", "a request is a JSON object"),
        ));
    };
    let id = object.remove("id").unwrap_or(Value::Null);
    let exact = match &id {
        Value::Null | Value::String(_) => true,
        Value::Number(n) => n.is_i64() || n.is_u64(),
        _ => false,
    };
    if !exact {
        // Echoed, a float or a huge number could come back as other digits (and an object or
        // array could hold them): the host could not match its answer.
        let why = "an id is a string, an integer (64-bit) or null";
        return Err((Value::Null, Failure::new("invalid", why)));
    }
    let request = serde_json::from_value(Value::Object(object)).map_err(|e| {
        (
            id.clone(),
            Failure::new("invalid", format!("bad request: {e}")),
        )
    })?;
    Ok((id, request))
}

/// Protocol 2: the answer line to request `id` whose result is `len` raw bytes (written
/// right after the line).
pub fn body_answer(id: Value, len: u64) -> Value {
    let line = Answer {
        id,
        ok: true,
        result: None,
        body: Some(len),
        error: None,
    };
    serde_json::to_value(line).unwrap_or_default()
}

/// The answer line to request `id`.
pub fn answer(id: Value, result: Result<Value, Failure>) -> Value {
    let line = match result {
        Ok(result) => Answer {
            id,
            ok: true,
            result: Some(result),
            body: None,
            error: None,
        },
        Err(f) => Answer {
            id,
            ok: false,
            result: None,
            body: None,
            error: Some(AnswerError {
                code: f.code.to_owned(),
                message: f.message,
                traceback: f.traceback,
            }),
        },
    };
    serde_json::to_value(line).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn failure(line: &str) -> (Value, String) {
        let (id, f) = parse(line.as_bytes()).unwrap_err();
        (id, f.message)
    }

    #[test]
    fn a_request_keeps_its_id_and_a_bad_one_is_answered_with_it() {
        let (id, request) =
            parse(br#"{"id": "x", "op": "call", "plugin": "p", "command": "c"}"#).unwrap();
        assert_eq!(id, json!("x"));
        assert!(matches!(request, Request::Call { args, .. } if args == json!({})));
        let (id, why) =
            failure(r#"{"id": 7, "op": "call", "plugin": "p", "command": "c", "x": 1}"#);
        assert_eq!(id, json!(7));
        assert!(why.contains("unknown field `x`"), "{why}");
        assert_eq!(failure("[1]").0, Value::Null);
        assert!(failure("{").1.starts_with("not JSON"));
        // Ids that could not come back as the same digits are refused (the fuzzer's find:
        // an integer past 64 bits came back as a float).
        for id in [
            "1.5",
            "22222222222222222222222222",
            "{\"a\": 1}",
            "[1]",
            "true",
        ] {
            let line = format!("{{\"id\": {id}, \"op\": \"stats\"}}");
            let (got, why) = failure(&line);
            assert_eq!(got, Value::Null, "{id}");
            assert!(why.contains("an id is a string"), "{why}");
        }
        for id in [
            "\"x\"",
            "18446744073709551615",
            "-9223372036854775808",
            "null",
        ] {
            let line = format!("{{\"id\": {id}, \"op\": \"stats\"}}");
            assert!(parse(line.as_bytes()).is_ok(), "{id}");
        }
    }

    #[test]
    fn answers_carry_the_code_message_and_traceback() {
        let mut f = Failure::new("not_loaded", "p is not loaded");
        f.traceback = Some("tb".into());
        let a = answer(json!(1), Err(f));
        assert_eq!(
            a,
            json!({"id": 1, "ok": false, "error": {"code": "not_loaded", "message": "p is not loaded", "traceback": "tb"}})
        );
        assert_eq!(answer(json!(2), Ok(json!(3)))["result"], 3);
    }
}
