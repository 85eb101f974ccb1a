//! `plugbox serve`'s stdout: written on a dedicated thread, never on tokio's blocking pool
//! (which hostile plugin work can exhaust), through a bounded queue (stdin: `serve_input`).
//!
//! The output queue holds at most [`OUTPUT_LINES`] lines; writers wait (asynchronously) for
//! room, so a host that reads its stdout slowly slows `serve` down instead of growing its
//! memory. A `host_call` line whose call has already ended (timed out or cancelled) is dropped
//! before it is written: nobody would take its answer.

use crate::forwarded::HostCalls;
use serde_json::Value;
use std::io::Write;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Lines queued for stdout at most.
pub const OUTPUT_LINES: usize = 64;

/// One line for stdout.
pub enum Line {
    /// A line written as it is: an answer (or an error about a line of input), the ready
    /// line, an event.
    Answer(Value),
    /// Protocol 2: an answer line announcing a raw body, then the body's bytes.
    Body {
        /// The line.
        line: Value,
        /// The bytes written right after it.
        bytes: Vec<u8>,
    },
    /// A host call: written only if call `call` is still waiting for its reply.
    HostCall {
        /// The call's number.
        call: u64,
        /// The line.
        line: Value,
    },
    /// Nothing more will be written (senders kept by plugins still being dropped may
    /// outlive the request loop).
    End,
}

/// Lines at most this long may be written straight from the task that answers (a pipe write of
/// up to `PIPE_BUF` bytes is atomic, and cannot block once `poll` said the pipe has room).
const DIRECT_BYTES: usize = 4096;

/// Where lines for stdout go: written at once by the caller when nothing is queued and stdout
/// has room (no thread hand-off on the common path), else queued for the stdout thread. Lines
/// of one caller keep their order, and no line overtakes one queued before it.
#[derive(Clone)]
pub struct Output {
    tx: mpsc::Sender<Line>,
    shared: Arc<Shared>,
}

struct Shared {
    /// Lines queued or written but not yet flushed by the stdout thread.
    queued: std::sync::Mutex<usize>,
    calls: Arc<HostCalls>,
}

/// The stdout thread has ended: the line was not written.
#[derive(Debug)]
pub struct Closed;

impl Output {
    /// Writes `line` now if it can without waiting, else queues it, waiting for room.
    pub async fn send(&self, line: Line) -> Result<(), Closed> {
        let line = match self.try_direct(line) {
            None => return Ok(()),
            Some(line) => line,
        };
        self.tx.send(line).await.map_err(|_| Closed)
    }

    /// Writes `line` at once when possible (returns `None`); else counts it as queued and
    /// returns it for the queue.
    fn try_direct(&self, line: Line) -> Option<Line> {
        let value = match &line {
            Line::Answer(value) => value,
            Line::HostCall { line: value, .. } => value,
            Line::Body { .. } | Line::End => return self.queue(line),
        };
        let mut queued = self.shared.lock();
        if *queued > 0 || !stdout_has_room() {
            *queued += 1;
            return Some(line);
        }
        if let Line::HostCall { call, .. } = &line {
            if !self.shared.calls.is_waiting(*call) {
                return None;
            }
        }
        let mut bytes = value.to_string().into_bytes();
        bytes.push(b'\n');
        if bytes.len() > DIRECT_BYTES {
            *queued += 1;
            return Some(line);
        }
        // Whole, in one write (stdout's line buffer is empty: every writer flushes).
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&bytes).and_then(|()| out.flush());
        None
    }

    fn queue(&self, line: Line) -> Option<Line> {
        *self.shared.lock() += 1;
        Some(line)
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, usize> {
        self.queued.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Can a line of up to `PIPE_BUF` bytes be written to stdout now without blocking?
fn stdout_has_room() -> bool {
    let mut fds = [libc::pollfd {
        fd: 1,
        events: libc::POLLOUT,
        revents: 0,
    }];
    matches!(plugbox::sys::poll(&mut fds, 0), Ok(1))
        && fds[0].revents & (libc::POLLERR | libc::POLLHUP) == 0
}

/// Starts the stdout thread (`serve-stdout`); returns the output and the thread (it ends at
/// [`Line::End`], or when stdout is closed).
pub fn spawn_writer(
    calls: Arc<HostCalls>,
) -> std::io::Result<(Output, std::thread::JoinHandle<()>)> {
    let (tx, mut rx) = mpsc::channel::<Line>(OUTPUT_LINES);
    let shared = Arc::new(Shared {
        queued: std::sync::Mutex::new(0),
        calls,
    });
    let output = Output {
        tx,
        shared: Arc::clone(&shared),
    };
    let thread = std::thread::Builder::new()
        .name("serve-stdout".into())
        .spawn(move || {
            let stdout = std::io::stdout();
            // Lines taken off the queue and not yet flushed.
            let mut taken = 0;
            while let Some(line) = rx.blocking_recv() {
                taken += 1;
                let (value, body) = match line {
                    Line::Answer(value) => (Some(value), Vec::new()),
                    Line::Body { line, bytes } => (Some(line), bytes),
                    Line::HostCall { call, line } if shared.calls.is_waiting(call) => {
                        (Some(line), Vec::new())
                    }
                    Line::HostCall { .. } => (None, Vec::new()),
                    Line::End => break,
                };
                // Locked per line, not for good: callers write directly when nothing is queued.
                let mut out = stdout.lock();
                if let Some(value) = value {
                    let mut bytes = value.to_string().into_bytes();
                    bytes.push(b'\n');
                    if out.write_all(&bytes).is_err() || out.write_all(&body).is_err() {
                        return;
                    }
                }
                // Once the queue is drained, flushed, callers may write directly again.
                if rx.is_empty() {
                    if out.flush().is_err() {
                        return;
                    }
                    *shared.lock() -= taken;
                    taken = 0;
                }
            }
            let _ = stdout.lock().flush();
        })?;
    Ok((output, thread))
}
