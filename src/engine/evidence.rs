//! What a plugin leaves behind when it fails before it is ready (a syntax error, an exception
//! at import, a crash, an exit): how its process ended and the last lines of its stderr (the
//! traceback, usually), for the load error and the `load_refused` audit record.
//!
//! The tail is kept by the stderr forwarder itself ([`super::output`]) in a bounded ring of the
//! last [`TAIL_BYTES`], so nothing is buffered twice. It is read only once it is complete:
//! the process tree is gone (it exited, or was killed) and the forwarder has read the pipe to
//! its end, each wait bounded, so a plugin that keeps stderr open cannot hang a load.

use super::instance::Instance;
use super::LoadError;
use crate::sys::{self, WaitStatus};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Most bytes of stderr kept for the evidence (the last ones).
pub const TAIL_BYTES: usize = 4096;
/// Most lines of stderr kept for the evidence (the last ones).
pub const TAIL_LINES: usize = 40;
/// How long a plugin that closed its channel (or was refused) has to exit by itself before
/// its tree is killed: its exit status is part of the evidence.
const EXIT_WAIT: Duration = Duration::from_secs(2);
/// How long the forwarder has to read stderr to its end once the tree is gone (or, after a
/// failed health probe, for the instance's teardown to finish).
const EOF_WAIT: Duration = Duration::from_secs(5);

/// The last bytes a plugin wrote to stderr, kept as the forwarder reads them.
#[derive(Debug)]
pub(crate) struct StderrTail {
    ring: Mutex<Ring>,
    done: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct Ring {
    bytes: VecDeque<u8>,
    /// Earlier bytes were dropped to keep the last [`TAIL_BYTES`].
    dropped: bool,
    /// The forwarder stopped at `limits.output_bytes`: what came after is lost.
    cut: bool,
}

impl StderrTail {
    /// An empty tail, not yet complete.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            ring: Mutex::default(),
            done: watch::channel(false).0,
        })
    }

    /// Keeps `bytes`, dropping the oldest beyond [`TAIL_BYTES`].
    pub(crate) fn push(&self, bytes: &[u8]) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let keep = bytes
            .get(bytes.len().saturating_sub(TAIL_BYTES)..)
            .unwrap_or(bytes);
        ring.dropped |= keep.len() < bytes.len();
        ring.bytes.extend(keep);
        let excess = ring.bytes.len().saturating_sub(TAIL_BYTES);
        if excess > 0 {
            ring.bytes.drain(..excess);
            ring.dropped = true;
        }
    }

    /// The forwarder is done: end of stream, a read error, or (`cut`) the output limit.
    pub(crate) fn finish(&self, cut: bool) {
        self.ring.lock().unwrap_or_else(|p| p.into_inner()).cut |= cut;
        self.done.send_replace(true);
    }

    /// Waits up to `within` for [`StderrTail::finish`]; whether it came.
    async fn complete(&self, within: Duration) -> bool {
        let mut rx = self.done.subscribe();
        tokio::time::timeout(within, rx.wait_for(|done| *done))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// What is kept now, as evidence.
    fn evidence(&self, status: Option<WaitStatus>, complete: bool) -> Evidence {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let bytes: Vec<u8> = ring.bytes.iter().copied().collect();
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.trim_end_matches(['\n', '\r']).split('\n').collect();
        let first = lines.len().saturating_sub(TAIL_LINES);
        let mut tail = lines.get(first..).unwrap_or_default().join("\n");
        if text.trim().is_empty() {
            tail.clear();
        }
        Evidence {
            status,
            stderr_tail: tail,
            truncated: ring.dropped || first > 0,
            cut: ring.cut,
            complete,
        }
    }
}

/// How a plugin process that failed before it was ready ended, and what it last wrote to
/// stderr. Its `Display` escapes every control character of the plugin's text.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Evidence {
    /// How its first process ended, if it was reaped here.
    pub status: Option<WaitStatus>,
    /// The last lines of its stderr (at most [`TAIL_LINES`] lines and [`TAIL_BYTES`] bytes),
    /// decoded lossily, raw: escape it before printing (as `Display` and
    /// [`Evidence::escaped_lines`] do).
    pub stderr_tail: String,
    /// Earlier stderr output was dropped to keep the tail bounded.
    pub truncated: bool,
    /// Its output reached `limits.output_bytes`: stderr was closed there and the rest lost.
    pub cut: bool,
    /// stderr was read to its end; false if it was still open when the wait gave up.
    pub complete: bool,
}

impl Evidence {
    /// The tail's lines, each with its control, bidi and separator characters escaped.
    pub fn escaped_lines(&self) -> Vec<String> {
        if self.stderr_tail.is_empty() {
            return Vec::new();
        }
        self.stderr_tail
            .split('\n')
            .map(|l| crate::display::escape(l).into_owned())
            .collect()
    }

    /// How the process ended, in words.
    pub fn ending(&self) -> String {
        match self.status {
            Some(WaitStatus::Exited(code)) => format!("the plugin exited with status {code}"),
            Some(WaitStatus::Signaled(sig)) => {
                format!(
                    "the plugin was killed by signal {sig} ({})",
                    super::fate::signal_name(sig)
                )
            }
            None => "the plugin's exit status is unknown".into(),
        }
    }

    /// The `detail` of the `load_refused` record: the ending and the escaped tail.
    pub(crate) fn audit_detail(&self) -> serde_json::Value {
        let mut detail = serde_json::json!({
            "stderr_tail": self.escaped_lines(),
            "stderr_truncated": self.truncated,
            "stderr_cut": self.cut,
            "stderr_complete": self.complete,
        });
        match self.status {
            Some(WaitStatus::Exited(code)) => detail["exit_code"] = code.into(),
            Some(WaitStatus::Signaled(sig)) => detail["signal"] = sig.into(),
            None => {}
        }
        detail
    }
}

impl std::fmt::Display for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.ending())?;
        let lines = self.escaped_lines();
        if lines.is_empty() {
            f.write_str("; it wrote nothing to stderr")?;
        } else {
            f.write_str("; its stderr ended with:")?;
            if self.truncated {
                f.write_str("\n  | …")?;
            }
            for line in &lines {
                write!(f, "\n  | {line}")?;
            }
        }
        if self.cut {
            f.write_str("\n  (stderr was closed at limits.output_bytes: the rest is lost)")?;
        }
        if !self.complete {
            f.write_str("\n  (stderr was still open when plugbox stopped waiting for it)")?;
        }
        Ok(())
    }
}

/// Evidence of a plugin whose tree the loader still owns (it failed at the handshake):
/// `let_it_exit` gives it [`EXIT_WAIT`] to exit by itself (it closed its channel or was just
/// refused), then `reap` kills what is left and returns the first process's status; then the
/// tail is read once complete.
pub(crate) async fn before_hello(
    cause: LoadError,
    pid: libc::pid_t,
    reap: impl FnOnce() -> Option<WaitStatus> + Send + 'static,
    tail: &StderrTail,
    let_it_exit: bool,
) -> LoadError {
    if let_it_exit {
        if let Ok(pidfd) = sys::pidfd_open(pid).and_then(sys::async_owned_fd) {
            let _ = tokio::time::timeout(EXIT_WAIT, pidfd.readable()).await;
        }
    }
    // Not cancellable once started: the tree is reaped even if the load is abandoned.
    let status = tokio::task::spawn_blocking(reap).await.ok().flatten();
    let complete = tail.complete(EOF_WAIT).await;
    LoadError::PluginFailed {
        cause: Box::new(cause),
        evidence: tail.evidence(status, complete),
    }
}

/// Evidence of an instance that said hello but failed its first health probe: it is killed,
/// its teardown awaited (bounded), and its tail read once complete.
pub(crate) async fn after_hello(
    cause: LoadError,
    instance: Instance,
    tail: &StderrTail,
) -> LoadError {
    instance.kill(cause.to_string());
    let status = tokio::time::timeout(EOF_WAIT, instance.wait())
        .await
        .ok()
        .and_then(|exit| exit.status);
    drop(instance);
    let complete = tail.complete(EOF_WAIT).await;
    LoadError::PluginFailed {
        cause: Box::new(cause),
        evidence: tail.evidence(status, complete),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn keeps_the_last_bytes_and_lines_and_escapes_them() {
        let tail = StderrTail::new();
        for i in 0..100 {
            tail.push(format!("line {i}\n").as_bytes());
        }
        tail.push(b"Error: \x1b[31mred\x1b[0m\n");
        tail.finish(false);
        let e = tail.evidence(Some(WaitStatus::Exited(1)), true);
        assert!(e.truncated);
        let lines = e.escaped_lines();
        assert_eq!(lines.len(), TAIL_LINES);
        assert_eq!(lines[TAIL_LINES - 2], "line 99");
        assert_eq!(lines[TAIL_LINES - 1], "Error: \\u{1b}[31mred\\u{1b}[0m");
        let shown = e.to_string();
        assert!(shown.starts_with("the plugin exited with status 1; its stderr ended with:"));
        assert!(!shown.contains('\u{1b}'));
    }

    #[test]
    fn a_huge_write_keeps_only_its_end() {
        let tail = StderrTail::new();
        let mut big = vec![b'x'; 3 * TAIL_BYTES];
        big.extend_from_slice(b"\nthe end");
        tail.push(&big);
        let e = tail.evidence(Some(WaitStatus::Signaled(9)), false);
        assert!(e.truncated && !e.complete);
        assert!(e.stderr_tail.len() <= TAIL_BYTES);
        assert!(e.stderr_tail.ends_with("\nthe end"));
        assert!(e.ending().contains("signal 9 (SIGKILL)"));
    }

    #[test]
    fn nothing_on_stderr_says_so() {
        let tail = StderrTail::new();
        tail.push(b"\n\n");
        let e = tail.evidence(None, true);
        assert!(e.escaped_lines().is_empty());
        assert!(e.to_string().ends_with("it wrote nothing to stderr"));
    }
}
