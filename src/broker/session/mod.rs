//! One plugin connection: the reader loop, the gate, dispatch, replies and host→plugin calls.
//!
//! Every incoming frame goes through, in order: the size cap (in the frame reader, before
//! allocation), strict decoding, the gate, an audit record of the decision, dispatch with a
//! timeout, the reply, and an audit record of the outcome. A call is dispatched only after its
//! decision record is written; if the audit log fails, the session ends (fail closed).

use super::channel::{is_fd_passing, ChannelReader};
use super::coalesce::SUPPRESS_INTERVAL;
use super::gate::{Decision, Gate, RATE_RULE};
use crate::audit::{escape_text, AuditLog, EventKind, Record, Subject};
use crate::capability::{CallError, CallRequest, PluginInfo, Reply};
use crate::ipc::message::{Message, Outgoing, WireError};
use crate::ipc::{ErrorCode, Frame, FrameError, FrameReader, MessageError};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot, watch};

mod arg_check;
mod bulk;
mod host_calls;
mod in_flight;
mod plugin_calls;
mod reader;

pub use arg_check::ARG_SCHEMA_RULE;
pub use reader::{plugin_reader, PluginReader, READ_BUFFER_BYTES};

/// Recoverable protocol violations tolerated before the plugin is cut off.
pub const MAX_VIOLATIONS: u32 = 16;
/// How long a plugin has to answer a `cancel` before it is killed.
pub const CANCEL_GRACE: Duration = Duration::from_secs(1);
/// The built-in health command every plugin runtime answers with `"pong"` (protocol.md §6).
pub const PING: &str = "plugbox.ping";

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The plugin closed the channel.
    Closed,
    /// The plugin broke the protocol and was cut off.
    Violation(String),
    /// The audit log failed; nothing more may happen.
    AuditFailed(String),
    /// The plugin ignored a cancellation.
    IgnoredCancel(u64),
    /// The host asked for shutdown.
    Shutdown,
    /// The engine's supervisor ended it (a failed health check, a retirement).
    Supervisor(String),
}

impl EndReason {
    /// Short text for records and errors.
    pub fn describe(&self) -> String {
        match self {
            EndReason::Closed => "channel closed by the plugin".into(),
            EndReason::Violation(why) => format!("protocol violation: {why}"),
            EndReason::AuditFailed(why) => format!("audit log failed: {why}"),
            EndReason::IgnoredCancel(id) => format!("call {id} not answered after cancel"),
            EndReason::Shutdown => "shutdown".into(),
            EndReason::Supervisor(why) => why.clone(),
        }
    }
}

/// What a session enforces and counts, fixed at the handshake.
pub struct Terms {
    /// The allow-list with its limits (shared by every instance of a managed plugin, so
    /// rates and in-flight limits are per plugin).
    pub gate: Arc<Gate>,
    /// Commands the plugin exported.
    pub commands: Vec<String>,
    /// Their argument schemas, compiled at the handshake: a call that does not match is
    /// refused before it is sent.
    pub schemas: Arc<super::arg_schema::CommandSchemas>,
    /// Deadline of each call, either direction.
    pub call_timeout: Duration,
    /// Where calls are counted (shared by every instance of a managed plugin).
    pub stats: Arc<super::stats::Stats>,
    /// Largest body of a host→plugin call or of its result ([`crate::ipc::bulk::body_limit`]).
    pub max_body_bytes: u64,
}

type Pending = oneshot::Sender<Result<Reply, CallError>>;
/// A host→plugin call waiting for its reply: where the reply goes, and the caller's tag.
type Waiting = (Pending, Option<u64>);

/// The state of one connection.
pub struct Session {
    info: Arc<PluginInfo>,
    subject: Subject,
    audit: Arc<AuditLog>,
    out: mpsc::Sender<Outgoing>,
    writer: SharedWriter,
    gate: Arc<Gate>,
    commands: Vec<String>,
    schemas: Arc<super::arg_schema::CommandSchemas>,
    call_timeout: Duration,
    /// Host→plugin calls waiting for the plugin's reply, by id.
    pending: Mutex<HashMap<u64, Waiting>>,
    /// Plugin→host calls being served.
    in_flight: in_flight::InFlightCalls,
    next_id: AtomicU64,
    violations: AtomicU32,
    stats: super::stats::Meter,
    immediate: Mutex<Vec<Outgoing>>,
    /// Host→plugin calls abandoned by their caller: a late reply to one is not a violation.
    abandoned: Mutex<std::collections::HashSet<u64>>,
    /// Once the process tree is gone: the error of every call still waiting, and of any later.
    fate: Mutex<Option<CallError>>,
    end: watch::Sender<Option<EndReason>>,
    /// Set once the reader loop has returned: no frame is decided after it.
    reader_done: watch::Sender<bool>,
    /// Bulk bodies: the limit and the result buffers handed out.
    bulk: bulk::BulkState,
}

/// The channel's write half, shared by the session (which writes replies and calls directly,
/// saving a task hand-off per frame) and the writer task (frames queued from sync contexts).
pub type SharedWriter = Arc<tokio::sync::Mutex<tokio::net::unix::OwnedWriteHalf>>;

impl Session {
    /// A session for a plugin that completed the handshake.
    pub fn new(
        info: Arc<PluginInfo>,
        audit: Arc<AuditLog>,
        out: mpsc::Sender<Outgoing>,
        writer: SharedWriter,
        terms: Terms,
    ) -> Arc<Self> {
        let Terms {
            gate,
            commands,
            schemas,
            call_timeout,
            stats,
            max_body_bytes,
        } = terms;
        // Counted per plugin, and per method under this handshake's names.
        let stats = stats.meter(&gate.names(), &commands);
        let subject = info.subject();
        Arc::new(Self {
            info,
            subject,
            audit,
            out,
            writer,
            gate,
            commands,
            schemas,
            call_timeout,
            pending: Mutex::new(HashMap::new()),
            in_flight: in_flight::InFlightCalls::default(),
            next_id: AtomicU64::new(1),
            violations: AtomicU32::new(0),
            stats,
            immediate: Mutex::new(Vec::new()),
            abandoned: Mutex::new(std::collections::HashSet::new()),
            fate: Mutex::new(None),
            end: watch::channel(None).0,
            reader_done: watch::channel(false).0,
            bulk: bulk::BulkState::new(max_body_bytes),
        })
    }

    /// The audit subject of this plugin.
    pub fn subject(&self) -> &Subject {
        &self.subject
    }

    /// The plugin's counters now.
    pub fn stats(&self) -> super::stats::StatsSnapshot {
        self.stats.snapshot()
    }

    /// The commands the plugin exported.
    pub fn commands(&self) -> &[String] {
        &self.commands
    }

    /// Their argument schemas, from the handshake.
    pub fn schemas(&self) -> &Arc<super::arg_schema::CommandSchemas> {
        &self.schemas
    }

    /// Resolves when the session must end; returns why.
    pub async fn ended(&self) -> EndReason {
        let mut rx = self.end.subscribe();
        loop {
            if let Some(reason) = rx.borrow_and_update().clone() {
                return reason;
            }
            if rx.changed().await.is_err() {
                return EndReason::Closed;
            }
        }
    }

    /// Ends the session (first reason wins). Host→plugin calls still waiting for a reply keep
    /// waiting until [`Session::close_calls`] says how the plugin ended.
    pub fn terminate(&self, reason: EndReason) {
        self.end.send_if_modified(|slot| {
            if slot.is_none() {
                *slot = Some(reason);
                true
            } else {
                false
            }
        });
    }

    fn record(&self, event: EventKind) -> Record {
        Record::new(event, self.subject.clone())
    }

    fn write_audit(&self, record: &Record) -> bool {
        match self.audit.write(record) {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(plugin = %self.info.name, "{e}");
                self.terminate(EndReason::AuditFailed(e.to_string()));
                false
            }
        }
    }

    /// Writes the `calls_suppressed` record for rate-limited refusals the gate counted (this
    /// plugin's, all instances): those whose interval has ended, or all of them if `force`.
    /// Returns false if the record could not be written (the session then ends).
    pub fn report_suppressed(&self, force: bool) -> bool {
        let Some(count) = self.gate.take_suppressed(force) else {
            return true;
        };
        let mut r = self.record(EventKind::CallsSuppressed);
        r.decision = Some("deny");
        r.rule = Some(RATE_RULE);
        r.reason = Some(format!(
            "{count} further rate-limited calls refused without a record of their own"
        ));
        r.detail = Some(json!({
            "suppressed": count,
            "interval_ms": SUPPRESS_INTERVAL.as_millis() as u64,
        }));
        self.write_audit(&r)
    }

    fn fatal(&self, why: &str) {
        let mut r = self.record(EventKind::ProtocolViolation);
        r.reason = Some(escape_text(why));
        r.rule = Some("protocol");
        r.decision = Some("cut_off");
        if self.write_audit(&r) {
            self.terminate(EndReason::Violation(why.to_owned()));
        }
    }

    /// A recoverable violation: answered if it had an id, counted, fatal past the limit.
    fn violation(&self, id: Option<u64>, code: ErrorCode, why: &str) {
        let count = self.violations.fetch_add(1, Ordering::AcqRel) + 1;
        let mut r = self.record(EventKind::ProtocolViolation);
        r.call_id = id;
        r.reason = Some(escape_text(why));
        r.rule = Some("protocol");
        r.decision = Some("deny");
        r.detail = Some(json!({ "violations": count, "limit": MAX_VIOLATIONS }));
        if !self.write_audit(&r) {
            return;
        }
        if let Some(id) = id {
            self.send_now(error_frame(id, code, why));
        }
        if count >= MAX_VIOLATIONS {
            self.fatal(&format!("{count} protocol violations"));
        }
    }

    /// Queues an immediate reply; the reader loop sends it (waiting for room) before it reads
    /// the next frame, so a plugin that does not drain its replies only stalls itself.
    fn send_now(&self, frame: impl Into<Outgoing>) {
        self.immediate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(frame.into());
    }

    async fn flush_immediate(&self) -> bool {
        let frames = std::mem::take(&mut *self.immediate.lock().unwrap_or_else(|p| p.into_inner()));
        for frame in frames {
            tokio::select! {
                sent = self.write(frame) => if !sent { return false },
                _ = self.ended() => return false,
            }
        }
        true
    }

    /// Writes one frame now. A plugin that does not read for a whole call timeout is cut off.
    pub async fn write(&self, frame: Outgoing) -> bool {
        self.write_after(frame, || {}).await
    }

    /// Like [`Session::write`]; `before` runs once the writer is held, just before the bytes
    /// go out (a reply gives its in-flight slot back there: after it, never before its turn).
    pub(crate) async fn write_after(&self, frame: Outgoing, before: impl FnOnce()) -> bool {
        let mut half = self.writer.lock().await;
        before();
        let io = async {
            match &frame.fd {
                Some(fd) => bulk::send_head_with_fd(&mut half, &frame.head, fd).await?,
                None => half.write_all(&frame.head).await?,
            }
            if !frame.body.is_empty() {
                half.write_all(&frame.body).await?;
            }
            Ok::<(), std::io::Error>(())
        };
        match tokio::time::timeout(self.call_timeout, io).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) => false,
            Err(_) => {
                self.stalled();
                false
            }
        }
    }

    /// Waits (up to `limit`) for plugin→host calls still being served to finish and record
    /// their outcome, then aborts the rest. The supervisor calls it before the exit record, so
    /// a plugin's records end with its exit.
    pub async fn drain(&self, limit: Duration) {
        self.in_flight
            .drain(tokio::time::Instant::now() + limit)
            .await;
    }

    /// Ends the session if the plugin stopped reading (called by the writer).
    pub fn stalled(&self) {
        self.terminate(EndReason::Violation(
            "the plugin stopped reading the channel".into(),
        ));
    }

    /// Queues a frame for the plugin, waiting if its outbox is full.
    pub async fn send_frame(&self, frame: Vec<u8>) {
        self.write(frame.into()).await;
    }
}

/// An `error` frame.
pub fn error_frame(id: u64, code: ErrorCode, message: &str) -> Vec<u8> {
    Message::Error {
        id,
        error: WireError {
            code,
            message: message.to_owned(),
            traceback: None,
        },
    }
    .encode(&[])
}

fn digest(header: &[u8], body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(header);
    h.update(body);
    crate::audit::chain::hex(&h.finalize())
}
