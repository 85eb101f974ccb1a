//! Supervision of one plugin process tree: exit, wall clock, and session end all lead to the
//! same teardown (kill the whole group, reap, audit).

use super::fate::Ending;
use super::instance::ExitInfo;
use super::uids::UidLease;
use crate::audit::{escape_text, AuditLog, EventKind, Record};
use crate::broker::{EndReason, Session};
use crate::sandbox::tree;
use crate::sys::{self, WaitStatus};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Starts watching `tree` (its first process and, for a group, the rest); returns where its exit will be published.
/// Its output `forwarders` are waited for (bounded) once the tree is dead, so the last lines
/// it printed are forwarded before its exit is recorded.
#[allow(clippy::too_many_arguments)] // one owner per resource of the instance; each is moved in
pub(crate) fn start(
    session: Arc<Session>,
    audit: Arc<AuditLog>,
    tree: tree::Tree,
    wall_seconds: u64,
    live: Arc<std::sync::atomic::AtomicUsize>,
    mut lease: Option<UidLease>,
    watchdog: Arc<crate::sandbox::Watchdog>,
    forwarders: super::output::Forwarders,
    zygote: Option<Arc<super::zygote::TemplateGroup>>,
) -> std::io::Result<watch::Receiver<Option<ExitInfo>>> {
    let pid = tree.pid();
    let pidfd = sys::async_owned_fd(sys::pidfd_open(pid)?)?;
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        // 0 is no wall-clock budget: the instance lives until something else ends it.
        let wall = async {
            match wall_seconds {
                0 => std::future::pending().await,
                s => tokio::time::sleep(Duration::from_secs(s)).await,
            }
        };
        let ending = tokio::select! {
            _ = pidfd.readable() => Ending::Exited,
            reason = session.ended() => Ending::Session(reason),
            _ = wall => Ending::WallClock(wall_seconds),
            why = audit.failed() => Ending::AuditFailed(why),
        };
        let (event, cause) = (ending.event(), ending.cause());
        let status = tokio::task::spawn_blocking(move || tree.kill())
            .await
            .ok()
            .and_then(Result::ok)
            .flatten();
        // Every write end of its stdout and stderr is closed: forward what is still in the
        // pipes (a line printed just before a crash) before the exit is recorded.
        forwarders.finished(Duration::from_secs(1)).await;
        // The group is empty: its id may be reused, so the watchdog must forget it. (A zygote
        // instance's group is the template's, forgotten when the last user of it is gone.)
        if tree.is_group() {
            if let Err(e) = watchdog.unregister(pid) {
                tracing::error!(pid, "host-death watchdog: {e}");
            }
        }
        if event == EventKind::Exit {
            // It ended by itself: the whole tree is gone, so its end of the channel is closed.
            // Let the reader take what the plugin wrote before exiting (a last reply, a
            // truncated frame to record as a violation) up to end of stream, before cutting it.
            let _ = tokio::time::timeout(Duration::from_secs(1), session.ended()).await;
        }
        session.terminate(EndReason::Closed);
        // The tree is reaped: every call still waiting on it learns why it ended.
        session.close_calls(ending.caller_error(&session.subject().instance, status));
        // No call is decided after the reader returns: the last count of suppressed
        // refusals is then complete, and is recorded before the exit record.
        let _ = tokio::time::timeout(Duration::from_secs(1), session.reader_finished()).await;
        session.report_suppressed(true);
        session.drain(Duration::from_secs(1)).await;
        let mut r = Record::new(event, session.subject().clone());
        r.reason = Some(escape_text(&cause));
        r.detail = Some(match status {
            Some(WaitStatus::Exited(code)) => serde_json::json!({ "pid": pid, "exit_code": code }),
            Some(WaitStatus::Signaled(sig)) => serde_json::json!({ "pid": pid, "signal": sig }),
            None => serde_json::json!({ "pid": pid }),
        });
        // The tree is gone: remove the System V IPC objects its uid left, before the uid
        // can serve another instance, and say so in the exit record.
        let sysv = lease.as_mut().and_then(UidLease::clear_sysv);
        if let (Some(removed), Some(detail)) = (sysv, r.detail.as_mut()) {
            if removed.total() > 0 || removed.failed > 0 {
                detail["sysv_removed"] = serde_json::json!(removed);
            }
        }
        if let Err(e) = audit.write(&r) {
            tracing::error!("{e}");
        }
        // The tree is gone: its uid may serve another instance, and its template's group may go.
        drop(lease);
        drop(zygote);
        live.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        let _ = tx.send(Some(ExitInfo { status, cause }));
    });
    Ok(rx)
}
