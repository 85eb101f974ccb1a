//! Plugin→host calls on a session: the gate's decision and its audit record before anything
//! runs, dispatch to the capability with a deadline, the reply, and the outcome record.

use super::*;
use crate::broker::gate::{Admitted, Permit, RATE_REASON, RATE_RULE};
use crate::broker::stats::InFlight;
use std::task::{Context, Poll, Waker};

impl Session {
    /// Plugin→host calls being served now (a draining instance waits for them).
    pub fn plugin_calls_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Decides a plugin→host call, records the decision, and starts the allowed call. The
    /// handler is polled once right here, on the reader: a handler that is ready at once (most
    /// are) is answered by the reader itself ([`Finished::answer`]), with no task, no timer and
    /// no thread in between; one that must wait goes on in a task of its own, under the call's
    /// deadline, and the reader reads on.
    pub(super) fn on_call(
        self: &Arc<Self>,
        id: u64,
        method: String,
        args: Map<String, Value>,
        body_arg: Option<String>,
        cause: Option<u64>,
        frame: Frame,
    ) -> Option<Finished> {
        if method == crate::ipc::bulk::BUFFER_METHOD {
            self.on_buffer_request(id, &args);
            return None;
        }
        let request_bytes = (frame.header.len() + frame.body.len()) as u64;
        // A count of refusals whose interval has ended is reported before the next decision.
        if !self.report_suppressed(false) {
            return None;
        }
        if self.in_flight.contains(id) {
            self.violation(
                Some(id),
                ErrorCode::Invalid,
                &format!("call id {id} is already in flight"),
            );
            return None;
        }
        let mut r = self.record(EventKind::Call);
        r.call_id = Some(id);
        r.capability = Some(escape_text(&method));
        r.request_bytes = Some(request_bytes);
        r.args_sha256 = Some(digest(&frame.header, &frame.body));
        let tag = self.attribute(cause, &mut r);
        let request = CallRequest {
            args,
            body: body_arg.map(|name| (name, frame.body)),
        };
        let admitted = match self
            .gate
            .decide(&self.info, &method, &request, request_bytes)
        {
            Decision::Allow(mut admitted) => {
                admitted.ctx.cause = tag;
                admitted
            }
            Decision::Deny { code, rule, reason } => {
                self.stats.decided(&method, false);
                self.stats.denied_by(rule);
                r.decision = Some("deny");
                r.rule = Some(rule);
                r.reason = Some(escape_text(&reason));
                if self.write_audit(&r) {
                    self.send_now(error_frame(id, code, &reason));
                }
                return None;
            }
            Decision::Suppressed => {
                // Counted by the gate; reported in a `calls_suppressed` record.
                self.stats.decided(&method, false);
                self.stats.denied_by(RATE_RULE);
                self.send_now(error_frame(id, ErrorCode::RateLimited, RATE_REASON));
                return None;
            }
        };
        self.stats.decided(&method, true);
        r.decision = Some("allow");
        r.rule = Some("allow-list");
        if !self.write_audit(&r) {
            // Fail closed: without its record the call never runs.
            self.send_now(error_frame(
                id,
                ErrorCode::HostError,
                "audit log unavailable",
            ));
            return None;
        }
        self.dispatch(id, method, admitted, request)
    }

    /// The plugin's claim that it makes this call for host→plugin call `cause`: accepted only
    /// while that call waits for the plugin's reply on this session (so a plugin can name no
    /// call it is not serving, nor one it has answered or that was cancelled). The decision
    /// record says which: `detail.cause` (accepted) or `detail.cause_refused` (dropped; the
    /// call itself goes on, unattributed). Returns the accepted call's tag, if it has one.
    fn attribute(&self, cause: Option<u64>, r: &mut Record) -> Option<u64> {
        let claimed = cause?;
        match self.waiting_tag(claimed) {
            Some(tag) => {
                r.detail = Some(json!({ "cause": claimed }));
                tag
            }
            None => {
                r.detail = Some(json!({ "cause_refused": claimed }));
                None
            }
        }
    }

    /// Runs an allowed call: polled once here; if it is not done, in a task (see `on_call`).
    fn dispatch(
        self: &Arc<Self>,
        id: u64,
        method: String,
        admitted: Admitted,
        request: CallRequest,
    ) -> Option<Finished> {
        let Admitted {
            granted,
            ctx,
            permit,
        } = admitted;
        let max_bytes = granted.max_bytes;
        let mut call = Finished {
            id,
            method,
            started: Instant::now(),
            outcome: Ok(Reply::Json(Value::Null)),
            permit,
            _in_flight: self.stats.in_flight(false),
            session: Arc::clone(self),
            inline: true,
        };
        // The slot is taken before the handler first runs: a drain that starts while the
        // handler is running (it may already have reached the host) must count it.
        self.in_flight.reserve(id);
        let mut running = granted.handler.call(ctx, request);
        // A waker that does nothing: a handler that is not ready is polled again, with the
        // task's own waker, before anything could be missed (a future registers the waker of
        // its latest poll).
        let mut cx = Context::from_waker(Waker::noop());
        if let Poll::Ready(outcome) = running.as_mut().poll(&mut cx) {
            call.outcome = within(outcome, max_bytes);
            return Some(call);
        }
        let (start_tx, start_rx) = oneshot::channel::<()>();
        let session = Arc::clone(self);
        let deadline = self.call_timeout;
        call.inline = false;
        let task = tokio::spawn(async move {
            let _ = start_rx.await;
            call.outcome = match tokio::time::timeout(deadline, running).await {
                Ok(outcome) => within(outcome, max_bytes),
                Err(_) => Err(CallError::new(
                    ErrorCode::Timeout,
                    format!("no reply within {deadline:?}"),
                )),
            };
            call.answer(&session).await;
            session.in_flight.release(id);
        });
        self.in_flight.attach(id, task.abort_handle());
        let _ = start_tx.send(());
        None
    }
}

/// A reply within the capability's `max_bytes`, or `too_large`.
fn within(outcome: Result<Reply, CallError>, max_bytes: u64) -> Result<Reply, CallError> {
    match outcome {
        Ok(reply) if reply.size() as u64 > max_bytes => Err(CallError::too_large(format!(
            "reply of {} bytes exceeds {max_bytes}",
            reply.size()
        ))),
        other => other,
    }
}

/// A plugin→host call whose handler has finished: what its answer needs.
pub(super) struct Finished {
    id: u64,
    method: String,
    /// When the handler started.
    started: Instant,
    outcome: Result<Reply, CallError>,
    /// Its in-flight slot and reply bytes, given back as the reply goes out.
    permit: Permit,
    /// Counted in flight (metrics) until answered.
    _in_flight: InFlight,
    /// The session whose in-flight slot this call holds.
    session: Arc<Session>,
    /// Answered by the reader: the slot is given back when this is dropped.
    inline: bool,
}

impl Finished {
    /// Sends the reply, then writes the outcome record.
    pub(super) async fn answer(mut self, session: &Session) {
        let outcome = std::mem::replace(&mut self.outcome, Ok(Reply::Json(Value::Null)));
        session
            .finish_call(
                self.id,
                &self.method,
                self.started,
                outcome,
                &mut self.permit,
            )
            .await;
    }
}

impl Drop for Finished {
    /// A call answered by the reader gives back its reserved slot once answered (or if the
    /// reader stops first); a call in a task leaves its slot to the task.
    fn drop(&mut self) {
        if !self.inline {
            return;
        }
        self.session.in_flight.release_reserved(self.id);
    }
}

impl Session {
    async fn finish_call(
        &self,
        id: u64,
        method: &str,
        started: Instant,
        outcome: Result<Reply, CallError>,
        permit: &mut Permit,
    ) {
        let code = outcome.as_ref().err().map(|e| e.code);
        self.stats.finished(method, code, started.elapsed());
        let (frame, code) = match outcome {
            Ok(Reply::Json(value)) => (
                Message::Result {
                    id,
                    result: Some(value),
                    body: false,
                    bulk: None,
                }
                .encode_outgoing(Vec::new()),
                "ok",
            ),
            Ok(Reply::Bytes(bytes)) => (
                Message::Result {
                    id,
                    result: None,
                    body: true,
                    bulk: None,
                }
                .encode_outgoing(bytes),
                "ok",
            ),
            Err(e) => (error_frame(id, e.code, &e.message).into(), e.code.as_str()),
        };
        let response_bytes = (frame.head.len() + frame.body.len()) as u64;
        // Until it is written, the reply holds its own size of the budget, never more than
        // the capability's `max_bytes` reserved at the gate.
        permit.settle(response_bytes);
        let mut r = self.record(EventKind::CallOutcome);
        r.call_id = Some(id);
        r.capability = Some(escape_text(method));
        r.response_bytes = Some(response_bytes);
        r.duration_us = Some(started.elapsed().as_micros() as u64);
        r.outcome = Some(code.to_owned());
        // The decision was recorded before dispatch; the outcome is recorded right after the
        // reply leaves, off the caller's critical path. If it cannot be written, the session
        // ends and no further call runs.
        // The in-flight slot and reply bytes are given back with the writer held, just before
        // the reply goes out: the plugin may send its next call the moment the reply arrives,
        // and an SDK that keeps within `max_in_flight` must not find this call still counted.
        // Replies waiting for the writer keep theirs, so a plugin that stops reading still
        // holds at most `calls_in_flight` calls and `pending_reply_mib`, plus the one reply
        // being written.
        self.write_after(frame, || permit.release()).await;
        self.write_audit(&r);
    }
}
