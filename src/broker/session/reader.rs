//! The reader loop of a session: frames from the plugin, routed in order (calls, replies,
//! cancels), each decided and answered before the next is read.

use super::plugin_calls::Finished;
use super::*;

/// Bytes the reader asks the channel for at a time: a small frame (and often the next) comes
/// in one `recvmsg`, not one for each of its length, header length and header. Larger bodies
/// are read straight into their own buffer.
pub const READ_BUFFER_BYTES: usize = 16 * 1024;

/// The host end of the channel, read as frames through a buffer of [`READ_BUFFER_BYTES`].
pub type PluginReader = FrameReader<tokio::io::BufReader<ChannelReader>>;

/// The channel's read half as a [`PluginReader`].
pub fn plugin_reader(half: tokio::net::unix::OwnedReadHalf) -> PluginReader {
    let buffered = tokio::io::BufReader::with_capacity(READ_BUFFER_BYTES, ChannelReader::new(half));
    FrameReader::new(buffered, crate::ipc::frame::FrameLimits::default())
}

impl Session {
    /// Resolves once the reader loop has returned (no call is decided after that).
    pub async fn reader_finished(&self) {
        let mut rx = self.reader_done.subscribe();
        let _ = rx.wait_for(|done| *done).await;
    }

    /// Reads frames until the channel closes or the session must end.
    pub async fn run_reader(self: Arc<Self>, reader: PluginReader) {
        self.read_frames(reader).await;
        self.reader_done.send_replace(true);
    }

    async fn read_frames(self: &Arc<Self>, mut reader: PluginReader) {
        loop {
            let frame = tokio::select! {
                frame = reader.next() => frame,
                _ = self.ended() => return,
            };
            match frame {
                Ok(Some(frame)) => {
                    // A plugin→host call answered here: the reply goes out before the next
                    // read, bounded like every write by the call timeout.
                    if let Some(finished) = self.on_frame(frame) {
                        finished.answer(self).await;
                    }
                    if !self.flush_immediate().await {
                        return;
                    }
                }
                Ok(None) => return self.terminate(EndReason::Closed),
                Err(FrameError::Io(e)) if is_fd_passing(&e) => {
                    return self.fatal("passed file descriptors (SCM_RIGHTS)")
                }
                Err(e) => return self.fatal(&e.to_string()),
            }
        }
    }

    /// Routes one frame; returns a plugin→host call that finished at once, to be answered.
    fn on_frame(self: &Arc<Self>, frame: Frame) -> Option<Finished> {
        match Message::decode(&frame.header) {
            Ok(Message::Call {
                id, bulk: Some(_), ..
            }) => {
                let why = "a plugin passes no bulk body (it passes no descriptors)";
                self.violation(Some(id), ErrorCode::Protocol, why)
            }
            Ok(Message::Call {
                id,
                method,
                args,
                body,
                bulk: None,
                cause,
            }) => return self.on_call(id, method, args, body, cause, frame),
            Ok(Message::Result {
                id,
                result,
                body,
                bulk,
            }) => {
                let reply = match bulk {
                    Some(len) => {
                        self.on_bulk_result(id, len);
                        return None;
                    }
                    None if body => Ok(Reply::Bytes(frame.body)),
                    None => Ok(Reply::Json(result.unwrap_or(Value::Null))),
                };
                self.on_reply(id, reply);
            }
            Ok(Message::Error { id, error }) => {
                let e = self.plugin_error(id, error);
                self.on_reply(id, Err(e));
            }
            Ok(Message::Cancel { id }) => self.on_cancel(id),
            Ok(other) => self.violation(
                None,
                ErrorCode::Protocol,
                &format!("unexpected {} message", kind(&other)),
            ),
            Err(MessageError::Shape { reason, id }) => {
                self.violation(id, ErrorCode::Invalid, &reason)
            }
            Err(e @ MessageError::Json(_)) => {
                self.violation(None, ErrorCode::Protocol, &e.to_string())
            }
        }
        None
    }

    fn on_reply(&self, id: u64, reply: Result<Reply, CallError>) {
        if let Some(tx) = self.waiter(id) {
            let _ = tx.send(reply);
        }
    }

    /// Who waits for the reply to host→plugin call `id`, taken out of `pending`; `None` for a
    /// call its caller abandoned, and a violation for one never made or already answered.
    pub(super) fn waiter(&self, id: u64) -> Option<Pending> {
        let waiter = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        match waiter {
            Some((tx, _)) => return Some(tx),
            None if self
                .abandoned
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id) => {}
            None => self.violation(
                None,
                ErrorCode::Protocol,
                &format!("reply to unknown or already answered call {id}"),
            ),
        }
        None
    }

    fn on_cancel(&self, id: u64) {
        if let Some(task) = self.in_flight.release(id) {
            task.abort();
            self.send_now(error_frame(
                id,
                ErrorCode::Cancelled,
                "cancelled by the plugin",
            ));
        }
    }
}

fn kind(m: &Message) -> &'static str {
    match m {
        Message::Hello { .. } => "hello",
        Message::Welcome { .. } => "welcome",
        Message::Refuse { .. } => "refuse",
        Message::Call { .. } => "call",
        Message::Result { .. } => "result",
        Message::Error { .. } => "error",
        Message::Cancel { .. } => "cancel",
        Message::Shutdown {} => "shutdown",
    }
}
