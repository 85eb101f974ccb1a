//! Host capabilities of a `plugbox serve` host: a plugin's call of a capability named with
//! `--capability NAME` passes the gate (grants, scope, size, rate) and its audit record as
//! usual, then goes out on stdout as
//! `{"op": "host_call", "call": N, "plugin": ..., "instance": ..., "capability": ..., "args": {...}}`
//! and waits (up to the plugin's call timeout) for the host's line on stdin:
//! `{"op": "host_reply", "call": N, "result": ...}` or
//! `{"op": "host_reply", "call": N, "error": {"code": "denied", "message": "..."}}`.

use crate::serve_io::Line;
use plugbox::capability::{BoxFuture, CallContext, CallError, CallRequest, Capability, Reply};
use plugbox::ipc::ErrorCode;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

type Waiting = oneshot::Sender<Result<Value, CallError>>;

/// Host calls sent and not yet answered, by call number.
#[derive(Default)]
pub struct HostCalls {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, Waiting>>,
}

impl HostCalls {
    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waiting>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Is call `call` still waiting for the host's answer?
    pub fn is_waiting(&self, call: u64) -> bool {
        self.waiting().contains_key(&call)
    }

    /// Routes the host's answer to call `call`; false if no such call is waiting (answered
    /// already, timed out, or never sent).
    pub fn answer(&self, call: u64, result: Option<Value>, error: Option<Value>) -> bool {
        let Some(waiting) = self.waiting().remove(&call) else {
            return false;
        };
        let outcome = match error {
            Some(e) => {
                let code = serde_json::from_value::<ErrorCode>(e["code"].clone())
                    .unwrap_or(ErrorCode::HostError);
                let message = e["message"].as_str().unwrap_or("the host refused the call");
                Err(CallError::new(code, message))
            }
            None => Ok(result.unwrap_or(Value::Null)),
        };
        let _ = waiting.send(outcome);
        true
    }
}

/// One capability answered by the `serve` host.
pub struct Forwarded {
    pub name: String,
    pub calls: Arc<HostCalls>,
    pub out: crate::serve_io::Output,
}

/// Forgets a host call whose caller stopped waiting (the call timed out or was cancelled).
struct Forget<'a>(&'a HostCalls, u64);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.waiting().remove(&self.1);
    }
}

impl Capability for Forwarded {
    fn call(&self, ctx: CallContext, request: CallRequest) -> BoxFuture<Result<Reply, CallError>> {
        let name = self.name.clone();
        let calls = Arc::clone(&self.calls);
        let out = self.out.clone();
        Box::pin(async move {
            if request.body.is_some() {
                return Err(CallError::invalid(format!(
                    "{name}: a serve host takes JSON arguments only, not a raw body"
                )));
            }
            let call = calls.next.fetch_add(1, Ordering::AcqRel) + 1;
            let (tx, rx) = oneshot::channel();
            calls.waiting().insert(call, tx);
            let _forget = Forget(&calls, call);
            let line = plugbox::serve::HostCall {
                op: "host_call",
                call,
                plugin: ctx.plugin.name.clone(),
                instance: ctx.plugin.instance.clone(),
                capability: name,
                args: request.args,
            };
            let line = serde_json::to_value(line).unwrap_or_default();
            // Waits for room in the bounded output queue (within the call's timeout); once the
            // call has ended, the line is dropped instead of written.
            if out.send(Line::HostCall { call, line }).await.is_err() {
                return Err(CallError::host("the serve host's output is closed"));
            }
            match rx.await {
                Ok(Ok(value)) => Ok(Reply::Json(value)),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(CallError::host("the serve host did not answer")),
            }
        })
    }
}
