//! Host capabilities of a `plugbox serve` host: a plugin's call of a capability named with
//! `--capability NAME` passes the gate (grants, scope, size, rate) and its audit record as
//! usual, then goes out on stdout as
//! `{"op": "host_call", "call": N, "request": ID, "plugin": ..., "instance": ..., "capability": ..., "args": {...}}`
//! (`request`: the id of the host's `call` request the plugin made this call for, when the
//! broker accepted that it did; absent otherwise)
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

/// Host calls sent and not yet answered, by call number; and the host's `call` requests
/// running, by the tag their engine call carries (so a `host_call` line names its request).
#[derive(Default)]
pub struct HostCalls {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, Waiting>>,
    next_tag: AtomicU64,
    requests: Mutex<HashMap<u64, Value>>,
}

/// A `call` request running: its tag, known until this is dropped.
pub struct Running {
    calls: Arc<HostCalls>,
    /// The tag its engine call carries.
    pub tag: u64,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.calls.requests().remove(&self.tag);
    }
}

impl HostCalls {
    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waiting>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn requests(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Value>> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Files `call` request `id` as running; its tag goes with its engine call.
    pub fn running(self: &Arc<Self>, id: &Value) -> Running {
        let tag = self.next_tag.fetch_add(1, Ordering::AcqRel) + 1;
        self.requests().insert(tag, id.clone());
        Running {
            calls: Arc::clone(self),
            tag,
        }
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
            // The request the broker accepted this call as made for, if it is still running.
            let caused_by = ctx
                .cause
                .and_then(|tag| calls.requests().get(&tag).cloned())
                .filter(|id| !id.is_null());
            let line = plugbox::serve::HostCall {
                op: "host_call",
                call,
                request: caused_by,
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
