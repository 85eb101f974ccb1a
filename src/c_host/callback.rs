//! A host capability answered by a foreign function: the bridge from the engine's
//! [`Capability`] trait to a [`HostHandler`] (implemented over a C function pointer in
//! `sys::c_abi`).
//!
//! The handler runs on a thread of the engine runtime's blocking pool, never on a runtime
//! worker (a slow handler cannot stall other plugins' calls) and never on the thread that
//! called into the engine. Several calls, from one plugin or several, may run it at once.

use super::error::HostError;
use crate::capability::{BoxFuture, CallContext, CallError, CallRequest, Capability, Reply};
use crate::ipc::ErrorCode;
use serde_json::Value;
use std::sync::Arc;

/// One call of a host capability, as the handler sees it.
#[derive(Debug, Clone, Copy)]
pub struct HostCall<'a> {
    /// The capability's registered name.
    pub capability: &'a str,
    /// The calling plugin's manifest name.
    pub plugin: &'a str,
    /// The arguments, a JSON object (strictly decoded by the broker, then re-encoded).
    pub args_json: &'a str,
}

/// Answers calls of one host capability: the JSON result, or an error whose code is one of
/// the wire's error codes (`denied`, `invalid`, `too_large`, `host_error`, ...; any other is
/// sent as `host_error`).
pub trait HostHandler: Send + Sync + 'static {
    /// Serves one call. May run on several threads at once.
    fn handle(&self, call: HostCall<'_>) -> Result<String, HostError>;
}

/// The engine-side capability wrapping a handler.
pub struct Bridge {
    name: Arc<str>,
    handler: Arc<dyn HostHandler>,
}

impl Bridge {
    /// Serves capability `name` with `handler`.
    pub fn new(name: &str, handler: Arc<dyn HostHandler>) -> Self {
        Self {
            name: name.into(),
            handler,
        }
    }
}

impl Capability for Bridge {
    fn call(&self, ctx: CallContext, request: CallRequest) -> BoxFuture<Result<Reply, CallError>> {
        let name = Arc::clone(&self.name);
        let handler = Arc::clone(&self.handler);
        Box::pin(async move {
            if request.body.is_some() {
                return Err(CallError::invalid(format!(
                    "{name}: this capability takes no binary body"
                )));
            }
            let args = Value::Object(request.args).to_string();
            let plugin = ctx.plugin.name.clone();
            let answered = tokio::task::spawn_blocking(move || {
                handler.handle(HostCall {
                    capability: &name,
                    plugin: &plugin,
                    args_json: &args,
                })
            })
            .await
            .map_err(|e| CallError::host(format!("the host handler failed: {e}")))?;
            match answered {
                Ok(json) => crate::ipc::strict_json::parse(json.as_bytes())
                    .map(Reply::Json)
                    .map_err(|e| CallError::host(format!("the host's result is not JSON: {e}"))),
                Err(e) => Err(call_error(e)),
            }
        })
    }
}

/// The wire error a handler's error becomes: its code if it is one a host may send.
fn call_error(e: HostError) -> CallError {
    let code = serde_json::from_value::<ErrorCode>(Value::String(e.code.clone()))
        .ok()
        .filter(|c| {
            !matches!(
                c,
                ErrorCode::PluginError
                    | ErrorCode::Protocol
                    | ErrorCode::PluginCrashed
                    | ErrorCode::Unavailable
            )
        })
        .unwrap_or(ErrorCode::HostError);
    CallError::new(code, e.message)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_handler_may_send_the_host_codes_only() {
        let code = |c: &str| call_error(HostError::new(c, "m")).code;
        assert_eq!(code("denied"), ErrorCode::Denied);
        assert_eq!(code("too_large"), ErrorCode::TooLarge);
        assert_eq!(code("plugin_crashed"), ErrorCode::HostError);
        assert_eq!(code("no such code"), ErrorCode::HostError);
    }
}
