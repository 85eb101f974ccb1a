//! Host→plugin calls on a session: `invoke` (audited and counted), `probe` (the health ping),
//! their deadline, cancellation, and the kill of a plugin that ignores a cancel.

use super::{EndReason, Session, CANCEL_GRACE, PING};
use crate::audit::EventKind;
use crate::capability::{CallError, Reply};
use crate::ipc::message::{Message, WireError};
use crate::ipc::ErrorCode;
use serde_json::{Map, Value};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The rule that sets a call's deadline, as named in errors and records.
const CALL_TIMEOUT_RULE: &str = "limits.call_timeout_ms";
const HEALTH_TIMEOUT_RULE: &str = "supervision.health_timeout_ms";

/// A call's deadline and the rule that set it.
type Deadline = (Duration, &'static str);
/// A host→plugin call's command, arguments and body.
type Outbound<'a> = (&'a str, Map<String, Value>, Option<(String, Vec<u8>)>);

/// Cancels a host→plugin call whose caller stopped waiting (its future was dropped).
struct CancelOnDrop<'a> {
    session: &'a Session,
    id: u64,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let s = self.session;
        s.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        s.abandoned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(self.id);
        let _ = s
            .out
            .try_send(Message::Cancel { id: self.id }.encode(&[]).into());
    }
}

impl Session {
    /// Fails every host→plugin call still waiting for a reply, and every later one, with
    /// `error` (the first given wins). The supervisor calls it once the process tree is gone
    /// and it knows why: a crash, a limit, a violation.
    pub fn close_calls(&self, error: CallError) {
        let error = {
            let mut fate = self.fate.lock().unwrap_or_else(|p| p.into_inner());
            fate.get_or_insert(error).clone()
        };
        // After the fate is set: a call registered later sees it (see `exchange`).
        let waiting: Vec<_> = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, (tx, _))| tx)
            .collect();
        for tx in waiting {
            let _ = tx.send(Err(error.clone()));
        }
    }

    /// The error a plugin answered call `id` with. Codes that say the host failed or stopped
    /// the call (`host_error`, `plugin_crashed`, `limit`, `unavailable`, `invalid_argument`)
    /// are the host's to
    /// give: a plugin that sends one gets a recoverable violation, and the caller `protocol`.
    pub(super) fn plugin_error(&self, id: u64, error: WireError) -> CallError {
        let host_only = matches!(
            error.code,
            ErrorCode::HostError
                | ErrorCode::PluginCrashed
                | ErrorCode::Limit
                | ErrorCode::Unavailable
                | ErrorCode::InvalidArgument
        );
        if host_only {
            let why = format!(
                "the plugin answered call {id} with {:?}, a code only the host gives",
                error.code.as_str()
            );
            self.violation(None, ErrorCode::Protocol, &why);
            return CallError::new(ErrorCode::Protocol, why);
        }
        let mut e = CallError::new(error.code, error.message);
        e.traceback = error.traceback;
        e
    }

    /// The tag of host→plugin call `id` if it is waiting for the plugin's reply now:
    /// `Some(tag)` (the tag its caller gave, if any), or `None` when no such call waits (never
    /// sent, answered already, cancelled, timed out).
    pub(super) fn waiting_tag(&self, id: u64) -> Option<Option<u64>> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .map(|(_, tag)| *tag)
    }

    /// The deadline of each call, either direction.
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// The error calls get once the process tree is gone, if it is.
    fn fate(&self) -> Option<CallError> {
        self.fate.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Calls an exported command of the plugin.
    pub async fn invoke(
        &self,
        command: &str,
        args: Map<String, Value>,
        body: Option<(String, Vec<u8>)>,
    ) -> Result<Reply, CallError> {
        self.invoke_tagged(command, args, body, None).await
    }

    /// [`Session::invoke`], with the caller's `tag`: a plugin→host call the plugin makes for
    /// this call (and the broker accepts as such while this call waits for its reply) carries
    /// it in [`crate::capability::CallContext::cause`].
    pub async fn invoke_tagged(
        &self,
        command: &str,
        args: Map<String, Value>,
        body: Option<(String, Vec<u8>)>,
        tag: Option<u64>,
    ) -> Result<Reply, CallError> {
        if command != PING && !self.commands.iter().any(|c| c == command) {
            return Err(CallError::invalid(format!(
                "{} exports no command {command:?}",
                self.info.name
            )));
        }
        self.check_arguments(command, &args, body.as_ref().map(|(name, _)| name.as_str()))?;
        let started = Instant::now();
        let in_flight = self.stats.in_flight(true);
        let (id, result) = self
            .exchange(
                (command, args, body),
                tag,
                (self.call_timeout, CALL_TIMEOUT_RULE),
            )
            .await;
        drop(in_flight);
        let code = result.as_ref().err().map(|e| e.code);
        self.stats.invoked(command, code, started.elapsed());
        let mut r = self.record(EventKind::Invoke);
        r.call_id = Some(id);
        r.capability = Some(command.to_owned());
        r.duration_us = Some(started.elapsed().as_micros() as u64);
        r.outcome = Some(match &result {
            Ok(_) => "ok".into(),
            Err(e) => e.code.as_str().into(),
        });
        // Why it failed: `limits.call_timeout_ms (300 ms) exceeded`, a crash, a limit.
        r.reason = result
            .as_ref()
            .err()
            .map(|e| crate::audit::escape_text(&e.message));
        if !self.write_audit(&r) {
            return Err(CallError::host("audit log unavailable"));
        }
        result
    }

    /// A health probe: `plugbox.ping` with deadline `timeout`, neither counted nor audited
    /// when it succeeds (the supervisor audits failures). Returns the round-trip time.
    pub async fn probe(&self, timeout: Duration) -> Result<Duration, CallError> {
        let started = Instant::now();
        let (_, result) = self
            .exchange(
                (PING, Map::new(), None),
                None,
                (timeout, HEALTH_TIMEOUT_RULE),
            )
            .await;
        match result {
            Ok(Reply::Json(Value::String(s))) if s == "pong" => Ok(started.elapsed()),
            Ok(_) => Err(CallError::new(
                ErrorCode::Invalid,
                format!("{PING} answered something other than \"pong\""),
            )),
            Err(e) => Err(e),
        }
    }

    /// Sends one host→plugin call and waits up to `timeout` for its reply (then cancels it).
    /// Returns the call id with the outcome.
    async fn exchange(
        &self,
        (command, args, body): Outbound<'_>,
        tag: Option<u64>,
        deadline: Deadline,
    ) -> (u64, Result<Reply, CallError>) {
        let id = self.next_id.fetch_add(1, Ordering::AcqRel);
        // Built before the call is registered: a body refused (or a caller gone while it is
        // sealed) leaves nothing behind, and nothing was sent.
        let frame = match super::bulk::call_frame(id, command, args, body, self.bulk.limit).await {
            Ok((frame, None)) => frame,
            Ok((frame, Some(spent))) => {
                self.bulk.keep_body(id, spent);
                frame
            }
            Err(e) => return (id, Err(e)),
        };
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, (tx, tag));
        if let Some(fate) = self.fate() {
            // The tree was gone before (or while) registering: `close_calls` may have drained.
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            self.bulk.forget(id);
            return (id, Err(fate));
        }
        let mut guard = CancelOnDrop {
            session: self,
            id,
            armed: true,
        };
        // A session that ended (or a write that fails, so it is ending) sends nothing more:
        // the call then waits for `close_calls` (or its deadline) like any call in flight.
        if self.end.borrow().is_none() {
            let _ = self.write(frame).await;
        }
        let result = self.await_reply(id, rx, deadline).await;
        self.bulk.forget(id);
        guard.armed = false;
        (id, result)
    }

    async fn await_reply(
        &self,
        id: u64,
        mut rx: oneshot::Receiver<Result<Reply, CallError>>,
        (timeout, rule): Deadline,
    ) -> Result<Reply, CallError> {
        match tokio::time::timeout(timeout, &mut rx).await {
            Ok(Ok(result)) => return result,
            Ok(Err(_)) => {
                return Err(self.fate().unwrap_or_else(|| {
                    CallError::new(ErrorCode::PluginCrashed, "the plugin connection closed")
                }))
            }
            Err(_) => {}
        }
        self.write(Message::Cancel { id }.encode(&[]).into()).await;
        if tokio::time::timeout(CANCEL_GRACE, &mut rx).await.is_err() {
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            let mut r = self.record(EventKind::Timeout);
            r.call_id = Some(id);
            r.rule = Some(rule);
            r.reason = Some("the plugin ignored cancellation; killing it".into());
            self.write_audit(&r);
            self.terminate(EndReason::IgnoredCancel(id));
        }
        Err(CallError::new(
            ErrorCode::Limit,
            format!(
                "{rule} ({} ms) exceeded: no reply, the call was cancelled",
                timeout.as_millis()
            ),
        ))
    }
}
