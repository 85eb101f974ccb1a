//! The request lines of `plugbox serve` and its answers, parsed and built here so that the
//! CLI, the fuzz target and the protocol's documentation share one definition.
//!
//! Every request is one JSON object on one line with an `id` (any JSON value the host chose,
//! echoed in the answer) and an `op`; every answer is `{"id": ..., "ok": true, "result": ...}`
//! or `{"id": ..., "ok": false, "error": {"code": ..., "message": ...}}`.

use crate::capability::CallError;
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::PathBuf;

/// One request line, without its `id`.
#[derive(Debug, Deserialize)]
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

/// The request's id (any JSON scalar the caller chose) and the typed request.
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
    let request = serde_json::from_value(Value::Object(object)).map_err(|e| {
        (
            id.clone(),
            Failure::new("invalid", format!("bad request: {e}")),
        )
    })?;
    Ok((id, request))
}

/// The answer line to request `id`.
pub fn answer(id: Value, result: Result<Value, Failure>) -> Value {
    match result {
        Ok(result) => json!({ "id": id, "ok": true, "result": result }),
        Err(f) => {
            let mut error = json!({ "code": f.code, "message": f.message });
            if let Some(tb) = f.traceback {
                error["traceback"] = Value::String(tb);
            }
            json!({ "id": id, "ok": false, "error": error })
        }
    }
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
