//! Bulk bodies on a session (`crate::ipc::bulk`): a host→plugin call's large body goes in a
//! sealed memfd; a plugin's large result goes in a buffer it asks for with `plugbox.buffer`.
//!
//! Every length a plugin states is checked against the host's limit or the buffer's sealed
//! size before anything is allocated; a plugin that lies gets a `protocol` error and a
//! `protocol_violation` record, and its session keeps serving (up to the violation limit).

use super::{error_frame, Session};
use crate::audit::{escape_text, EventKind};
use crate::capability::{CallError, Reply};
use crate::ipc::bulk::{self, BulkError, BULK_THRESHOLD};
use crate::ipc::message::{Message, Outgoing};
use crate::ipc::ErrorCode;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::unix::OwnedWriteHalf;

/// The rule that bounds bulk bodies of host→plugin calls and their results.
pub const BODY_RULE: &str = "limits.memory_mib";
/// The largest result buffer a session keeps for its next result once the host has copied
/// the last one out: its pages are then already there, and filling it again costs one copy
/// and no page allocation or zeroing. Larger buffers are dropped after use, so an instance
/// holds at most this much between results.
pub const POOLED_BUFFER_MAX: u64 = 64 << 20;

/// A result buffer: the memfd and its sealed size.
type Buffer = (Arc<File>, u64);

/// A session's bulk state: its limit, the result buffers handed out (by host call id), and
/// the one kept for reuse.
#[derive(Debug, Default)]
pub struct BulkState {
    /// Largest body of a host→plugin call or of its result, bytes.
    pub limit: u64,
    buffers: Mutex<HashMap<u64, Buffer>>,
    spare: Mutex<Option<Buffer>>,
    /// The body vectors of calls in flight whose body went by memfd: already faulted in, a
    /// result read into one costs no page fault (an echo's result reuses its argument's).
    bodies: Mutex<HashMap<u64, Vec<u8>>>,
}

impl BulkState {
    /// Bulk state with `limit` (see [`bulk::body_limit`]).
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            buffers: Mutex::new(HashMap::new()),
            spare: Mutex::new(None),
            bodies: Mutex::new(HashMap::new()),
        }
    }

    fn buffers(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Buffer>> {
        self.buffers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A buffer of at least `len` bytes: the spare if it is large enough, else a new one of
    /// exactly `len`.
    fn buffer_for(&self, len: u64) -> Result<Buffer, BulkError> {
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        if spare.as_ref().is_some_and(|(_, size)| *size >= len) {
            if let Some(buffer) = spare.take() {
                return Ok(buffer);
            }
        }
        drop(spare);
        Ok((Arc::new(bulk::result_buffer(len)?), len))
    }

    /// Keeps `buffer` for the next result, unless it is larger than [`POOLED_BUFFER_MAX`].
    fn recycle(&self, buffer: Buffer) {
        if buffer.1 <= POOLED_BUFFER_MAX {
            *self.spare.lock().unwrap_or_else(|p| p.into_inner()) = Some(buffer);
        }
    }

    /// Keeps the body vector of host call `id` for its result.
    pub fn keep_body(&self, id: u64, body: Vec<u8>) {
        self.bodies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, body);
    }

    fn take_body(&self, id: u64) -> Vec<u8> {
        let mut bodies = self.bodies.lock().unwrap_or_else(|p| p.into_inner());
        bodies.remove(&id).unwrap_or_default()
    }

    /// Forgets the buffer and body of host call `id` (the call is over).
    pub fn forget(&self, id: u64) {
        self.buffers().remove(&id);
        self.take_body(id);
    }
}

/// The frame of host→plugin call `id`: its body inline, or in a sealed memfd when large
/// (written on a blocking-pool thread: a GiB takes a while, and no plugin can make it block),
/// then also the body's vector, free for the result. `too_large` before anything is created
/// when the body exceeds `limit`.
pub async fn call_frame(
    id: u64,
    method: &str,
    args: Map<String, Value>,
    body: Option<(String, Vec<u8>)>,
    limit: u64,
) -> Result<(Outgoing, Option<Vec<u8>>), CallError> {
    let Some((name, bytes)) = body else {
        let call = Message::Call {
            id,
            method: method.to_owned(),
            args,
            body: None,
            bulk: None,
            cause: None,
        };
        return Ok((call.encode_outgoing(Vec::new()), None));
    };
    let len = bytes.len() as u64;
    bulk::check_len(len, limit).map_err(|e| too_large(&e))?;
    let mut call = Message::Call {
        id,
        method: method.to_owned(),
        args,
        body: Some(name),
        bulk: None,
        cause: None,
    };
    if bytes.len() <= BULK_THRESHOLD {
        return Ok((call.encode_outgoing(bytes), None));
    }
    let sealed = tokio::task::spawn_blocking(move || bulk::seal_body(&bytes).map(|f| (f, bytes)));
    let (file, bytes) = match sealed.await {
        Ok(Ok(sealed)) => sealed,
        Ok(Err(e)) => return Err(CallError::host(e.to_string())),
        Err(e) => return Err(CallError::host(format!("sealing the body: {e}"))),
    };
    if let Message::Call { bulk, .. } = &mut call {
        *bulk = Some(len);
    }
    Ok((call.encode_with_fd(file), Some(bytes)))
}

fn too_large(e: &BulkError) -> CallError {
    CallError::too_large(format!("{e} ({BODY_RULE})"))
}

/// Writes `head` with `fd` attached to its first byte, then whatever `sendmsg` left.
pub async fn send_head_with_fd(
    half: &mut OwnedWriteHalf,
    head: &[u8],
    fd: &File,
) -> std::io::Result<()> {
    let sent = loop {
        let stream = half.as_ref();
        stream.writable().await?;
        let sock = stream.as_raw_fd();
        match stream.try_io(Interest::WRITABLE, || {
            crate::sys::send_with_fds(sock, head, &[fd.as_raw_fd()])
        }) {
            Ok(n) => break n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    };
    half.write_all(&head[sent..]).await
}

impl Session {
    /// `plugbox.buffer {"call": id, "len": N}`: a result buffer of at least `N` bytes (its
    /// size in the reply's `bulk`) for host call `id`, still waiting for its reply. `too_large` past the limit (a `limit` record); a
    /// call that is not waiting, a second buffer for it, or malformed arguments are
    /// violations. Answered at once by the reader loop.
    pub(super) fn on_buffer_request(&self, id: u64, args: &Map<String, Value>) {
        let (Some(call), Some(len)) = (
            args.get("call").and_then(Value::as_u64),
            args.get("len").and_then(Value::as_u64),
        ) else {
            let why = "plugbox.buffer takes {\"call\": id, \"len\": bytes}";
            return self.violation(Some(id), ErrorCode::Invalid, why);
        };
        if args.len() != 2 {
            return self.violation(Some(id), ErrorCode::Invalid, "plugbox.buffer: unknown args");
        }
        let waiting = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&call);
        if !waiting || self.bulk.buffers().contains_key(&call) {
            let why = format!("plugbox.buffer for call {call}, which is not waiting for one");
            return self.violation(Some(id), ErrorCode::Protocol, &why);
        }
        if let Err(e) = bulk::check_len(len, self.bulk.limit) {
            let mut r = self.record(EventKind::Limit);
            r.call_id = Some(call);
            r.rule = Some(BODY_RULE);
            r.decision = Some("deny");
            r.reason = Some(escape_text(&format!("result buffer refused: {e}")));
            if self.write_audit(&r) {
                self.send_now(error_frame(id, ErrorCode::TooLarge, &too_large(&e).message));
            }
            return;
        }
        let (buffer, size) = match self.bulk.buffer_for(len) {
            Ok(buffer) => buffer,
            Err(e) => return self.send_now(error_frame(id, ErrorCode::HostError, &e.to_string())),
        };
        self.bulk
            .buffers()
            .insert(call, (Arc::clone(&buffer), size));
        let mut reply = Message::Result {
            id,
            result: None,
            body: true,
            bulk: Some(size),
        }
        .encode_outgoing(Vec::new());
        reply.fd = Some(buffer);
        self.send_now(reply);
    }

    /// A plugin's bulk result for host call `id`: `len` bytes it says it wrote in the buffer
    /// it was given. The claim is checked here (a call that got no buffer, or a `len` past
    /// it, is a violation and fails the call with `protocol`); the copy out, up to a GiB,
    /// runs on a blocking thread, so the reader reads on and no plugin can hold an async
    /// worker with it. The waiting caller gets the bytes from there.
    pub(super) fn on_bulk_result(self: &Arc<Self>, id: u64, len: u64) {
        let buffer = self.bulk.buffers().remove(&id);
        let claim = match buffer {
            None => Err(BulkError::Protocol(format!(
                "a bulk result for call {id}, which was given no buffer"
            ))),
            Some(buffer) => bulk::check_result(&buffer.0, len).map(|len| (buffer, len)),
        };
        let Some(tx) = self.waiter(id) else {
            if let Ok((buffer, _)) = claim {
                self.bulk.recycle(buffer);
            }
            return;
        };
        let (buffer, len) = match claim {
            Ok(claim) => claim,
            Err(e) => {
                let why = e.to_string();
                self.violation(None, ErrorCode::Protocol, &why);
                let _ = tx.send(Err(CallError::new(ErrorCode::Protocol, why)));
                return;
            }
        };
        let into = self.bulk.take_body(id);
        let session = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let read = bulk::read_result(&buffer.0, len, into);
            session.bulk.recycle(buffer);
            let reply = read
                .map(Reply::Bytes)
                .map_err(|e| CallError::host(format!("reading the result buffer: {e}")));
            let _ = tx.send(reply);
        });
    }
}
