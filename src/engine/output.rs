//! A plugin's stdout and stderr: captured, bounded by `limits.output_bytes`, forwarded to
//! `tracing` line by line, as each line arrives, with the plugin's identity. Never part of the
//! protocol. The engine runs Python unbuffered (`-u`), so a line printed just before a crash
//! is in the pipe when the plugin dies; the teardown waits for [`Forwarders::finished`]
//! before it writes the exit record, so that line is forwarded, not cut off.

use super::evidence::StderrTail;
use crate::audit::{escape_text, AuditLog, EventKind, Record};
use crate::capability::PluginInfo;
use std::os::fd::OwnedFd;
use std::process::{ChildStderr, ChildStdout};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;

struct Budget {
    left: AtomicU64,
    reported: AtomicBool,
    limit: u64,
}

/// The tasks forwarding one instance's streams.
#[derive(Debug, Default)]
pub(crate) struct Forwarders(Vec<JoinHandle<()>>);

impl Forwarders {
    /// Waits until both streams reached end of file (the whole tree is dead, so every write
    /// end is closed) and every line was forwarded, or `limit` passed.
    pub(crate) async fn finished(self, limit: Duration) {
        let all = async {
            for task in self.0 {
                let _ = task.await;
            }
        };
        let _ = tokio::time::timeout(limit, all).await;
    }
}

/// Starts forwarding both streams; stderr's last bytes are also kept in `tail` (finished
/// when stderr ends or is cut), the evidence of a plugin that fails before it is ready.
pub(crate) fn forward(
    info: &Arc<PluginInfo>,
    audit: &Arc<AuditLog>,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    limit: u64,
    tail: &Arc<StderrTail>,
) -> Forwarders {
    let budget = Arc::new(Budget {
        left: AtomicU64::new(limit),
        reported: AtomicBool::new(false),
        limit,
    });
    let mut tasks = Vec::with_capacity(2);
    if let Some(out) = stdout {
        tasks.extend(spawn_stream(
            OwnedFd::from(out),
            "stdout",
            info,
            audit,
            &budget,
            None,
        ));
    }
    match stderr {
        Some(err) => tasks.extend(spawn_stream(
            OwnedFd::from(err),
            "stderr",
            info,
            audit,
            &budget,
            Some(tail),
        )),
        None => tail.finish(false),
    }
    Forwarders(tasks)
}

fn spawn_stream(
    fd: OwnedFd,
    stream: &'static str,
    info: &Arc<PluginInfo>,
    audit: &Arc<AuditLog>,
    budget: &Arc<Budget>,
    tail: Option<&Arc<StderrTail>>,
) -> Option<JoinHandle<()>> {
    let tail = tail.map(Arc::clone);
    let Ok(mut rx) = pipe::Receiver::from_owned_fd(fd) else {
        if let Some(t) = &tail {
            t.finish(false);
        }
        return None;
    };
    let (info, audit, budget) = (Arc::clone(info), Arc::clone(audit), Arc::clone(budget));
    Some(tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut line = Vec::new();
        loop {
            let n = match rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let allowed = take(&budget, n as u64) as usize;
            if let Some(t) = &tail {
                t.push(&buf[..allowed]);
            }
            for &b in &buf[..allowed] {
                if b == b'\n' {
                    emit(&info, stream, &line);
                    line.clear();
                } else if line.len() < 4096 {
                    line.push(b);
                }
            }
            if allowed < n {
                report_cut(&info, &audit, &budget);
                if let Some(t) = &tail {
                    t.finish(true);
                }
                break;
            }
        }
        if let Some(t) = &tail {
            t.finish(false);
        }
        if !line.is_empty() {
            emit(&info, stream, &line);
        }
        // Dropping `rx` closes the pipe: the plugin's further writes fail with EPIPE.
    }))
}

fn take(budget: &Budget, want: u64) -> u64 {
    let mut left = budget.left.load(Ordering::Acquire);
    loop {
        let granted = want.min(left);
        match budget.left.compare_exchange(
            left,
            left - granted,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return granted,
            Err(now) => left = now,
        }
    }
}

fn emit(info: &PluginInfo, stream: &'static str, line: &[u8]) {
    let text = escape_text(&String::from_utf8_lossy(line));
    tracing::info!(target: "plugin.output", plugin = %info.name, instance = %info.instance, stream, "{text}");
}

fn report_cut(info: &PluginInfo, audit: &AuditLog, budget: &Budget) {
    if budget.reported.swap(true, Ordering::AcqRel) {
        return;
    }
    let subject = info.subject();
    let mut r = Record::new(EventKind::Limit, subject);
    r.rule = Some("limits.output_bytes");
    r.detail = Some(serde_json::json!({ "limit": budget.limit }));
    if let Err(e) = audit.write(&r) {
        tracing::error!("{e}");
    }
}
