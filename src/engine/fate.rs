//! How an instance's process tree ended, and what each caller with a call still in flight on
//! it is told: the error code says who is responsible. `plugin_crashed`: it died without
//! being asked to (the message carries its exit status or signal); `limit`: a limit stopped it
//! (the message names the limit); `protocol`: it was cut off for breaking the protocol;
//! `host_error`: the host itself failed (its audit log); `unavailable`: the host stopped it.
//!
//! A planned stop (recycle, idle shrink, reload, unload) never reaches this with a call in
//! flight: it drains first (see `drain.rs`).

use crate::audit::EventKind;
use crate::broker::EndReason;
use crate::capability::CallError;
use crate::ipc::ErrorCode;
use crate::sys::WaitStatus;

/// How the cause of a kill at `limits.wall_seconds` begins.
pub(crate) const WALL_CLOCK_CAUSE: &str = "limits.wall_seconds";

/// What ended an instance's process tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Its first process exited by itself (or was killed from outside).
    Exited,
    /// The session ended first, for this reason.
    Session(EndReason),
    /// It reached `limits.wall_seconds` (the hard kill; a planned recycle drains before it).
    WallClock(u64),
    /// The audit log failed: nothing more may happen.
    AuditFailed(String),
}

impl Ending {
    /// The audit event of the end: `exit` when it ended by itself, `kill` when the host did it.
    pub(crate) fn event(&self) -> EventKind {
        match self {
            Ending::Exited | Ending::Session(EndReason::Closed) => EventKind::Exit,
            _ => EventKind::Kill,
        }
    }

    /// The cause, for the exit record and [`ExitInfo`](super::ExitInfo).
    pub(crate) fn cause(&self) -> String {
        match self {
            Ending::Exited => "exited".to_owned(),
            Ending::Session(EndReason::Closed) => "closed its channel".to_owned(),
            Ending::Session(other) => other.describe(),
            Ending::WallClock(n) => format!("{WALL_CLOCK_CAUSE} ({n}) reached"),
            Ending::AuditFailed(why) => format!("the audit log failed: {why}"),
        }
    }

    /// The error of every call still in flight on the instance, once its tree is reaped
    /// (`status`: how its first process ended, if it was reaped here).
    pub(crate) fn caller_error(&self, instance: &str, status: Option<WaitStatus>) -> CallError {
        let ended = status_text(status);
        let (code, text) = match self {
            Ending::Exited | Ending::Session(EndReason::Closed)
                if status == Some(WaitStatus::Signaled(libc::SIGXCPU)) =>
            {
                (ErrorCode::Limit, format!("limits.cpu_seconds reached ({ended})"))
            }
            Ending::Exited | Ending::Session(EndReason::Closed) => (
                ErrorCode::PluginCrashed,
                format!("the plugin {} ({ended})", self.cause()),
            ),
            Ending::Session(EndReason::Supervisor(why)) => (
                ErrorCode::PluginCrashed,
                format!("the plugin was killed: {why} ({ended})"),
            ),
            Ending::Session(EndReason::IgnoredCancel(id)) => (
                ErrorCode::Limit,
                format!("limits.call_timeout_ms: call {id} timed out and its cancel was ignored, so the plugin was killed"),
            ),
            Ending::Session(EndReason::Violation(why)) => (
                ErrorCode::Protocol,
                format!("the plugin was cut off: protocol violation: {why}"),
            ),
            Ending::Session(EndReason::AuditFailed(why)) | Ending::AuditFailed(why) => (
                ErrorCode::HostError,
                format!("the audit log failed: {why}"),
            ),
            Ending::Session(EndReason::Shutdown) => (
                ErrorCode::Unavailable,
                "the instance was stopped by the host".to_owned(),
            ),
            Ending::WallClock(n) => (
                ErrorCode::Limit,
                format!("{WALL_CLOCK_CAUSE} ({n}) reached: the instance was killed"),
            ),
        };
        CallError::new(code, format!("{instance}: {text}"))
    }
}

/// `exit status N`, `killed by signal N (NAME)`, or `not reaped here`.
pub(crate) fn status_text(status: Option<WaitStatus>) -> String {
    match status {
        Some(WaitStatus::Exited(code)) => format!("exit status {code}"),
        Some(WaitStatus::Signaled(sig)) => format!("killed by signal {sig} ({})", signal_name(sig)),
        None => "exit status unknown: not reaped here".to_owned(),
    }
}

/// The common name of signal `sig` (for messages; records carry the number).
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        libc::SIGSYS => "SIGSYS",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_ending_names_who_is_responsible() {
        let killed = Some(WaitStatus::Signaled(libc::SIGKILL));
        let crashed = Ending::Exited.caller_error("p#1", killed);
        assert_eq!(crashed.code, ErrorCode::PluginCrashed);
        assert!(crashed.message.contains("signal 9 (SIGKILL)"), "{crashed}");
        let cpu = Ending::Exited.caller_error("p#1", Some(WaitStatus::Signaled(libc::SIGXCPU)));
        assert_eq!(cpu.code, ErrorCode::Limit);
        assert!(cpu.message.contains("limits.cpu_seconds"));
        let wall = Ending::WallClock(2).caller_error("p#1", killed);
        assert_eq!(wall.code, ErrorCode::Limit);
        assert!(wall.message.contains("limits.wall_seconds (2)"));
        let cancel = Ending::Session(EndReason::IgnoredCancel(4)).caller_error("p#1", killed);
        assert_eq!(cancel.code, ErrorCode::Limit);
        assert!(cancel.message.contains("limits.call_timeout_ms"));
        let audit = Ending::AuditFailed("disk full".into()).caller_error("p#1", None);
        assert_eq!(audit.code, ErrorCode::HostError);
        let cut = Ending::Session(EndReason::Violation("x".into())).caller_error("p#1", None);
        assert_eq!(cut.code, ErrorCode::Protocol);
        let exit = Ending::Exited.caller_error("p#1", Some(WaitStatus::Exited(3)));
        assert!(exit.message.contains("exit status 3"), "{exit}");
    }
}
