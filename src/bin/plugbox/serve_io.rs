//! `plugbox serve`'s pipes: stdin is read and stdout written on dedicated threads, never on
//! tokio's blocking pool (which hostile plugin work can exhaust), through bounded queues.
//!
//! The output queue holds at most [`OUTPUT_LINES`] lines; writers wait (asynchronously) for
//! room, so a host that reads its stdout slowly slows `serve` down instead of growing its
//! memory. A `host_call` line whose call has already ended (timed out or cancelled) is dropped
//! before it is written: nobody would take its answer.

use crate::forwarded::HostCalls;
use serde_json::Value;
use std::io::{BufRead, Read, Write};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Lines queued for stdout at most.
pub const OUTPUT_LINES: usize = 64;
/// Request lines read ahead of the request loop at most.
const INPUT_LINES: usize = 16;

/// One line for stdout.
pub enum Line {
    /// A line written as it is: an answer (or an error about a line of input), the ready
    /// line, an event.
    Answer(Value),
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

/// What the stdin thread read.
pub enum Input {
    /// One request line (without its length checked against anything else).
    Line(Vec<u8>),
    /// A line longer than the limit, skipped.
    TooLong,
    /// stdin failed.
    Failed(String),
}

/// Starts the stdout thread; returns the queue and the thread (it ends at [`Line::End`], or
/// when stdout is closed).
pub fn spawn_writer(calls: Arc<HostCalls>) -> (Output, std::thread::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Line>(OUTPUT_LINES);
    let thread = std::thread::spawn(move || {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        while let Some(line) = rx.blocking_recv() {
            let value = match line {
                Line::Answer(value) => value,
                Line::HostCall { call, line } if calls.is_waiting(call) => line,
                Line::HostCall { .. } => continue,
                Line::End => break,
            };
            let mut bytes = value.to_string().into_bytes();
            bytes.push(b'\n');
            if out.write_all(&bytes).is_err() {
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

/// Starts the stdin thread: request lines of at most `max` bytes arrive on the returned
/// queue, which closes at end of input.
pub fn spawn_reader(max: usize) -> mpsc::Receiver<Input> {
    let (tx, rx) = mpsc::channel::<Input>(INPUT_LINES);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        loop {
            let mut line = Vec::new();
            let item = match (&mut input)
                .take(max as u64 + 1)
                .read_until(b'\n', &mut line)
            {
                Ok(0) => return,
                Ok(_) if line.len() > max && line.last() != Some(&b'\n') => {
                    match skip_rest_of_line(&mut input) {
                        Ok(()) => Input::TooLong,
                        Err(e) => Input::Failed(e.to_string()),
                    }
                }
                Ok(_) => Input::Line(line),
                Err(e) => Input::Failed(e.to_string()),
            };
            let failed = matches!(item, Input::Failed(_));
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
        }
    });
    rx
}

/// Reads and drops the rest of an overlong line.
fn skip_rest_of_line(input: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        match buf.iter().position(|b| *b == b'\n') {
            Some(i) => {
                input.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = buf.len();
                input.consume(n);
            }
        }
    }
}
