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

/// The sending side of the output queue.
pub type Output = mpsc::Sender<Line>;

/// Starts the stdout thread; returns the queue and the thread (it ends at [`Line::End`], or
/// when stdout is closed).
pub fn spawn_writer(calls: Arc<HostCalls>) -> (Output, std::thread::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Line>(OUTPUT_LINES);
    let thread = std::thread::spawn(move || {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        while let Some(line) = rx.blocking_recv() {
            let (value, body) = match line {
                Line::Answer(value) => (value, Vec::new()),
                Line::Body { line, bytes } => (line, bytes),
                Line::HostCall { call, line } if calls.is_waiting(call) => (line, Vec::new()),
                Line::HostCall { .. } => continue,
                Line::End => break,
            };
            let mut bytes = value.to_string().into_bytes();
            bytes.push(b'\n');
            if out.write_all(&bytes).is_err() || out.write_all(&body).is_err() {
                return;
            }
            // Flush once the queue is drained: a burst goes out in few writes.
            if rx.is_empty() && out.flush().is_err() {
                return;
            }
        }
        let _ = out.flush();
    });
    (tx, thread)
}
