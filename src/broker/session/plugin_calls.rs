//! Plugin→host calls on a session: the gate's decision and its audit record before anything
//! runs, dispatch to the capability with a deadline, the reply, and the outcome record.

use super::*;
use crate::broker::gate::Permit;
use crate::broker::gate::{RATE_REASON, RATE_RULE};
use crate::broker::stats::InFlight;

impl Session {
    /// Plugin→host calls being served now (a draining instance waits for them).
    pub fn plugin_calls_in_flight(&self) -> usize {
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    pub(super) fn on_call(
        self: &Arc<Self>,
        id: u64,
        method: String,
        args: Map<String, Value>,
        body_arg: Option<String>,
        frame: Frame,
    ) {
        if method == crate::ipc::bulk::BUFFER_METHOD {
            return self.on_buffer_request(id, &args);
        }
        let request_bytes = (frame.header.len() + frame.body.len()) as u64;
        // A count of refusals whose interval has ended is reported before the next decision.
        if !self.report_suppressed(false) {
            return;
        }
        if self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&id)
        {
            return self.violation(
                Some(id),
                ErrorCode::Invalid,
                &format!("call id {id} is already in flight"),
            );
        }
        let mut r = self.record(EventKind::Call);
        r.call_id = Some(id);
        r.capability = Some(escape_text(&method));
        r.request_bytes = Some(request_bytes);
        r.args_sha256 = Some(digest(&frame.header, &frame.body));
        let deny = |r: &mut Record, code: ErrorCode, rule: &'static str, reason: &str| {
            self.stats.decided(false);
            self.stats.denied_by(rule);
            r.decision = Some("deny");
            r.rule = Some(rule);
            r.reason = Some(escape_text(reason));
            if self.write_audit(r) {
                self.send_now(error_frame(id, code, reason));
            }
        };
        let (granted, mut permit) = match self.gate.decide(&method, request_bytes) {
            Decision::Deny { code, rule, reason } => return deny(&mut r, code, rule, &reason),
            Decision::Suppressed => {
                // Counted by the gate; reported in a `calls_suppressed` record.
                self.stats.decided(false);
                self.stats.denied_by(RATE_RULE);
                return self.send_now(error_frame(id, ErrorCode::RateLimited, RATE_REASON));
            }
            Decision::Allow(granted, permit) => (granted, permit),
        };
        let ctx = CallContext {
            plugin: Arc::clone(&self.info),
            grant: Arc::clone(&granted.grant),
            max_bytes: granted.max_bytes,
        };
        let request = CallRequest {
            args,
            body: body_arg.map(|name| (name, frame.body)),
        };
        // Scope checks belong to the gate: a refused path is a denied call, never dispatched.
        if let Err(e) = granted.handler.check(&ctx, &request) {
            return deny(&mut r, e.code, "capability.scope", &e.message);
        }
        self.stats.decided(true);
        r.decision = Some("allow");
        r.rule = Some("allow-list");
        if !self.write_audit(&r) {
            // Fail closed: without its record the call never runs.
            return self.send_now(error_frame(
                id,
                ErrorCode::HostError,
                "audit log unavailable",
            ));
        }
        let (start_tx, start_rx) = oneshot::channel::<()>();
        let session = Arc::clone(self);
        // Dropped when the task ends or, aborted, is dropped.
        let in_flight = InFlight::start(&self.stats, false);
        let task = tokio::spawn(async move {
            let _in_flight = in_flight;
            let _ = start_rx.await;
            let started = Instant::now();
            let outcome = match tokio::time::timeout(
                session.call_timeout,
                granted.handler.call(ctx, request),
            )
            .await
            {
                Ok(Ok(reply)) if reply.size() as u64 > granted.max_bytes => {
                    Err(CallError::too_large(format!(
                        "reply of {} bytes exceeds {}",
                        reply.size(),
                        granted.max_bytes
                    )))
                }
                Ok(result) => result,
                Err(_) => Err(CallError::new(
                    ErrorCode::Timeout,
                    format!("no reply within {:?}", session.call_timeout),
                )),
            };
            session
                .finish_call(id, &method, started, outcome, &mut permit)
                .await;
            // The reply is written (or the session is over): its bytes are no longer held.
            drop(permit);
            session
                .in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
        });
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, task.abort_handle());
        let _ = start_tx.send(());
    }

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
