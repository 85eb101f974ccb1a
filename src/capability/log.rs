//! Built-in `log`: a plugin's structured log line, forwarded to `tracing` with its identity.

use super::{args, BoxFuture, CallContext, CallError, CallRequest, Capability, Reply};
use crate::audit::escape_text;
use serde::Deserialize;
use serde_json::{Map, Value};

/// Longest message accepted, bytes.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024;

/// The `log` capability. Its rate is bounded by the broker's per-plugin call limits.
#[derive(Debug)]
pub struct Log;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogArgs {
    level: Level,
    message: String,
    #[serde(default)]
    fields: Map<String, Value>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Level {
    Debug,
    Info,
    Warning,
    Error,
}

impl Capability for Log {
    fn call(&self, ctx: CallContext, request: CallRequest) -> BoxFuture<Result<Reply, CallError>> {
        Box::pin(async move {
            let a: LogArgs = args("log", &request)?;
            if a.message.len() > MAX_MESSAGE_BYTES {
                return Err(CallError::too_large(format!(
                    "log message of {} bytes exceeds {MAX_MESSAGE_BYTES}",
                    a.message.len()
                )));
            }
            let message = escape_text(&a.message);
            let fields = escape_text(&Value::Object(a.fields).to_string());
            let (plugin, instance) = (&ctx.plugin.name, &ctx.plugin.instance);
            match a.level {
                Level::Debug => {
                    tracing::debug!(target: "plugin", plugin, instance, fields, "{message}")
                }
                Level::Info => {
                    tracing::info!(target: "plugin", plugin, instance, fields, "{message}")
                }
                Level::Warning => {
                    tracing::warn!(target: "plugin", plugin, instance, fields, "{message}")
                }
                Level::Error => {
                    tracing::error!(target: "plugin", plugin, instance, fields, "{message}")
                }
            }
            Ok(Reply::Json(Value::Null))
        })
    }
}
