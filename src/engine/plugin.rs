//! The host's handle on one running plugin.

use crate::broker::{EndReason, Session};
use crate::capability::{CallError, PluginInfo, Reply};
use crate::ipc::Message;
use crate::sys::{self, WaitStatus};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long a plugin has to exit after `shutdown` before its tree is killed.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How a plugin process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitInfo {
    /// Exit status of its first process, if it was reaped here.
    pub status: Option<WaitStatus>,
    /// Why it ended.
    pub cause: String,
}

/// A loaded, running plugin. Dropping it kills its process tree.
pub struct Plugin {
    session: Arc<Session>,
    info: Arc<PluginInfo>,
    pid: libc::pid_t,
    exit: watch::Receiver<Option<ExitInfo>>,
}

impl Plugin {
    pub(crate) fn new(
        session: Arc<Session>,
        info: Arc<PluginInfo>,
        pid: libc::pid_t,
        exit: watch::Receiver<Option<ExitInfo>>,
    ) -> Self {
        Self {
            session,
            info,
            pid,
            exit,
        }
    }

    /// Manifest name.
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// Manifest version.
    pub fn version(&self) -> &str {
        &self.info.version
    }

    /// Instance id.
    pub fn instance(&self) -> &str {
        &self.info.instance
    }

    /// Process id (and process-group id) of the plugin's first process.
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Calls, denials, errors and latency percentiles so far.
    pub fn stats(&self) -> crate::broker::stats::StatsSnapshot {
        self.session.stats()
    }

    /// The commands the plugin exported in its handshake.
    pub fn commands(&self) -> &[String] {
        self.session.commands()
    }

    /// Calls `command` with keyword arguments `args` (a JSON object). Dropping the returned
    /// future cancels the call: the plugin is sent `cancel` and a late reply is ignored.
    pub async fn call(&self, command: &str, args: Value) -> Result<Reply, CallError> {
        let Value::Object(args) = args else {
            return Err(CallError::invalid("arguments must be a JSON object"));
        };
        self.session.invoke(command, args, None).await
    }

    /// Calls `command` passing `body` as the raw bytes of argument `body_name`.
    pub async fn call_with_body(
        &self,
        command: &str,
        args: Map<String, Value>,
        body_name: &str,
        body: Vec<u8>,
    ) -> Result<Reply, CallError> {
        self.session
            .invoke(command, args, Some((body_name.to_owned(), body)))
            .await
    }

    /// Has the process ended? Returns how, once it has.
    pub fn exited(&self) -> Option<ExitInfo> {
        self.exit.borrow().clone()
    }

    /// Waits until the process tree is gone.
    pub async fn wait(&self) -> ExitInfo {
        let mut rx = self.exit.clone();
        loop {
            if let Some(info) = rx.borrow_and_update().clone() {
                return info;
            }
            if rx.changed().await.is_err() {
                return ExitInfo {
                    status: None,
                    cause: "supervisor stopped".into(),
                };
            }
        }
    }

    /// Asks the plugin to exit, then kills its tree after [`SHUTDOWN_GRACE`].
    pub async fn shutdown(self) -> ExitInfo {
        self.session
            .send_frame(Message::Shutdown {}.encode(&[]))
            .await;
        if let Ok(info) = tokio::time::timeout(SHUTDOWN_GRACE, self.wait()).await {
            return info;
        }
        self.session.terminate(EndReason::Shutdown);
        self.wait().await
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        if self.exit.borrow().is_none() {
            self.session.terminate(EndReason::Shutdown);
            // Also directly, in case the runtime that runs the supervisor is going away.
            let _ = sys::kill_group(self.pid, libc::SIGKILL);
        }
    }
}
