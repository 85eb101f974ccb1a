//! `plugbox serve`'s stdin: read on a dedicated thread (never tokio's blocking pool, which
//! hostile plugin work can exhaust), parsed there, and handed to the request loop through a
//! bounded queue.
//!
//! A request line is at most [`crate::serve::MAX_REQUEST_BYTES`]. In protocol 2 a `call` line
//! may announce a raw body (`"body": {"arg": NAME, "len": N}`): exactly `N` bytes follow the
//! line. `N` is checked against the named plugin's body limit (or, for a plugin not loaded
//! yet, the protocol's 1 GiB) *before* anything is allocated: an oversized body is read and
//! dropped in small chunks, and its request answered `too_large`, so the stream stays in step
//! and the connection is never cut.

use crate::forwarded::HostCalls;
use plugbox::ipc::bulk::MAX_BULK_BYTES;
use plugbox::serve::{parse, Failure, Request, BODY_PROTOCOL};
use serde_json::Value;
use std::io::{BufRead, Read};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Request lines read ahead of the request loop at most.
const INPUT_LINES: usize = 16;
/// Bytes of an oversized body dropped per read.
const SKIP_CHUNK: usize = 64 * 1024;

/// What the stdin thread read.
pub enum Input {
    /// A request, with its raw body if it announced one.
    Request {
        /// Its `id`.
        id: Value,
        /// The request.
        request: Request,
        /// Its body's bytes (protocol 2).
        body: Option<Vec<u8>>,
    },
    /// A line refused before it became a request: answered at once.
    Refused {
        /// Its `id` (null when it could not be read).
        id: Value,
        /// Why.
        failure: Failure,
    },
    /// stdin failed, or ended inside a body.
    Failed(String),
}

/// The body limit of a loaded plugin, by name (`None`: not loaded).
pub type BodyLimit = Box<dyn Fn(&str) -> Option<u64> + Send>;

/// How requests are read.
pub struct Reading {
    /// Longest request line.
    pub max_line: usize,
    /// The protocol the host speaks (bodies from [`BODY_PROTOCOL`] on).
    pub protocol: u32,
    /// The body limit of a loaded plugin, by name.
    pub limit: BodyLimit,
    /// Host calls waiting for the host's `host_reply`.
    pub host_calls: Arc<HostCalls>,
}

/// Starts the stdin thread (`serve-stdin`): requests arrive on the returned queue, which
/// closes at end of input.
pub fn spawn_reader(reading: Reading) -> std::io::Result<mpsc::Receiver<Input>> {
    let (tx, rx) = mpsc::channel::<Input>(INPUT_LINES);
    let thread = std::thread::Builder::new().name("serve-stdin".into());
    thread.spawn(move || {
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        loop {
            let item = match next(&mut input, &reading) {
                Ok(Some(item)) => item,
                Ok(None) => return,
                Err(e) => Input::Failed(e.to_string()),
            };
            let failed = matches!(item, Input::Failed(_));
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
        }
    })?;
    Ok(rx)
}

/// The next request (blank lines skipped); `None` at end of input.
fn next(input: &mut impl BufRead, reading: &Reading) -> std::io::Result<Option<Input>> {
    loop {
        let mut line = Vec::new();
        let max = reading.max_line;
        if input.take(max as u64 + 1).read_until(b'\n', &mut line)? == 0 {
            return Ok(None);
        }
        if line.len() > max && line.last() != Some(&b'\n') {
            skip_rest_of_line(input)?;
            let why = format!("request longer than {max} bytes");
            return Ok(Some(refused(Value::Null, "too_large", why)));
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        return match parse(&line) {
            // A host's answer to a host call goes straight to the call waiting for it, from
            // this thread: no hop through the request loop.
            Ok((
                id,
                Request::HostReply {
                    call,
                    result,
                    error,
                },
            )) => {
                if reading.host_calls.answer(call, result, error) {
                    continue;
                }
                let why = format!("no host call {call} is waiting (answered, or timed out)");
                Ok(Some(refused(id, "invalid", why)))
            }
            Ok((id, request)) => with_body(input, reading, id, request).map(Some),
            Err((id, failure)) => Ok(Some(Input::Refused { id, failure })),
        };
    }
}

fn refused(id: Value, code: &'static str, why: impl Into<String>) -> Input {
    Input::Refused {
        id,
        failure: Failure::new(code, why),
    }
}

/// Reads the body `request` announces, if any, within its plugin's limit.
fn with_body(
    input: &mut impl BufRead,
    reading: &Reading,
    id: Value,
    request: Request,
) -> std::io::Result<Input> {
    let Request::Call {
        plugin,
        body: Some(header),
        ..
    } = &request
    else {
        return Ok(Input::Request {
            id,
            request,
            body: None,
        });
    };
    if reading.protocol < BODY_PROTOCOL {
        let why =
            format!("a raw body needs protocol {BODY_PROTOCOL} (serve --protocol {BODY_PROTOCOL})");
        return Ok(refused(id, "invalid", why));
    }
    let limit = (reading.limit)(plugin).unwrap_or(MAX_BULK_BYTES);
    if header.len > limit {
        skip(input, header.len)?;
        let why = format!(
            "a body of {} bytes exceeds {plugin}'s limit of {limit} bytes",
            header.len
        );
        return Ok(refused(id, "too_large", why));
    }
    let mut bytes = Vec::new();
    let want = usize::try_from(header.len).unwrap_or(usize::MAX);
    bytes
        .try_reserve_exact(want)
        .map_err(std::io::Error::other)?;
    let got = input.take(header.len).read_to_end(&mut bytes)?;
    if got != want {
        return Ok(Input::Failed(format!(
            "stdin ended inside a body ({got} of {want} bytes)"
        )));
    }
    Ok(Input::Request {
        id,
        request,
        body: Some(bytes),
    })
}

/// Reads and drops `len` bytes.
fn skip(input: &mut impl BufRead, len: u64) -> std::io::Result<()> {
    let mut buf = vec![0u8; SKIP_CHUNK];
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(SKIP_CHUNK).min(SKIP_CHUNK);
        let n = input.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "stdin ended inside a body",
            ));
        }
        left -= n as u64;
    }
    Ok(())
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
