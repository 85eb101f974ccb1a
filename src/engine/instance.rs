//! The host's handle on one plugin process (one instance): calls, health probes, shutdown.

use crate::broker::{EndReason, Session};
use crate::capability::{CallError, PluginInfo, Reply};
use crate::ipc::Message;
use crate::sandbox::tree::Tree;
use crate::sys::WaitStatus;
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long a plugin has to exit after `shutdown` before its tree gets SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How long the tree has after SIGTERM before SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_millis(500);

/// How a plugin process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitInfo {
    /// Exit status of its first process, if it was reaped here.
    pub status: Option<WaitStatus>,
    /// Why it ended.
    pub cause: String,
}

/// One running plugin process. Dropping it kills its process tree.
///
/// [`Engine::spawn_instance`](super::Engine::spawn_instance) returns one unmanaged: nothing
/// restarts it. A managed [`Plugin`](super::Plugin) keeps a pool of them.
pub struct Instance {
    session: Arc<Session>,
    info: Arc<PluginInfo>,
    tree: Tree,
    exit: watch::Receiver<Option<ExitInfo>>,
    in_flight: AtomicUsize,
    retiring: AtomicBool,
    /// When it last finished a call (or started), as milliseconds since `born`.
    last_active_ms: AtomicU64,
    born: std::time::Instant,
    /// Notified when the last host→plugin call in flight finishes.
    idle: tokio::sync::Notify,
    /// A health probe is outstanding: the next interval sends none (a timeout longer than
    /// the interval would otherwise stack probes, each failing with its own record).
    probing: AtomicBool,
    /// A health check failed: recorded once, whatever probes were still outstanding.
    unhealthy: AtomicBool,
}

impl Instance {
    pub(crate) fn new(
        session: Arc<Session>,
        info: Arc<PluginInfo>,
        tree: Tree,
        exit: watch::Receiver<Option<ExitInfo>>,
    ) -> Self {
        Self {
            session,
            info,
            tree,
            exit,
            in_flight: AtomicUsize::new(0),
            retiring: AtomicBool::new(false),
            last_active_ms: AtomicU64::new(0),
            born: std::time::Instant::now(),
            idle: tokio::sync::Notify::new(),
            probing: AtomicBool::new(false),
            unhealthy: AtomicBool::new(false),
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

    /// Instance id (`name#n`, unique in this engine).
    pub fn instance(&self) -> &str {
        &self.info.instance
    }

    /// Process id (and process-group id) of the plugin's first process.
    pub fn pid(&self) -> libc::pid_t {
        self.tree.pid()
    }

    /// What ends it: its process group, or (forked from a zygote) its one process.
    pub(crate) fn tree(&self) -> Tree {
        self.tree
    }

    /// Calls, denials, errors and latency percentiles so far (shared by every instance of a
    /// managed plugin).
    pub fn stats(&self) -> crate::broker::stats::StatsSnapshot {
        self.session.stats()
    }

    /// The commands the plugin exported in its handshake.
    pub fn commands(&self) -> &[String] {
        self.session.commands()
    }

    /// Their argument and result schemas and descriptions, as the plugin sent them in its
    /// handshake (and as they were accepted), by command.
    pub fn schemas(&self) -> &serde_json::Map<String, serde_json::Value> {
        self.session.schemas().sent()
    }

    /// Host calls to this instance not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Calls `command` with keyword arguments `args` (a JSON object). Dropping the returned
    /// future cancels the call: the plugin is sent `cancel` and a late reply is ignored.
    pub async fn call(&self, command: &str, args: Value) -> Result<Reply, CallError> {
        let args = object_args(args)?;
        let _busy = Busy::enter(self);
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
        let _busy = Busy::enter(self);
        self.session
            .invoke(command, args, Some((body_name.to_owned(), body)))
            .await
    }

    /// How long since it last finished a call (or started, if it never served one).
    pub(crate) fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_active_ms.load(Ordering::Acquire));
        self.born.elapsed().saturating_sub(last)
    }

    fn finished_call(&self) {
        let now = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active_ms.store(now, Ordering::Release);
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// When it became ready (its wall-clock budget started just before).
    pub(crate) fn born(&self) -> std::time::Instant {
        self.born
    }

    /// Its audit subject.
    pub(crate) fn subject(&self) -> &crate::audit::Subject {
        self.session.subject()
    }

    /// The deadline of each of its calls.
    pub(crate) fn call_timeout(&self) -> Duration {
        self.session.call_timeout()
    }

    /// Plugin→host calls it has being served now.
    pub(crate) fn plugin_calls_in_flight(&self) -> usize {
        self.session.plugin_calls_in_flight()
    }

    /// Resolves once no call is in flight in either direction. Out of the pool, nothing adds
    /// host→plugin calls, and each ends within its own timeout; the plugin may still start
    /// plugin→host calls, so callers bound the wait.
    pub(crate) async fn calls_done(&self) {
        loop {
            let idle = self.idle.notified();
            if self.in_flight() == 0 && self.plugin_calls_in_flight() == 0 {
                return;
            }
            // Plugin→host calls end without a notification: look again shortly.
            let _ = tokio::time::timeout(Duration::from_millis(5), idle).await;
        }
    }

    /// One health probe (`plugbox.ping`) with deadline `timeout`; returns the round trip.
    pub async fn ping(&self, timeout: Duration) -> Result<Duration, CallError> {
        self.session.probe(timeout).await
    }

    /// Claims the one outstanding health probe: `false` while another is outstanding.
    pub(crate) fn begin_probe(&self) -> bool {
        !self.probing.swap(true, Ordering::AcqRel)
    }

    /// The outstanding health probe has ended.
    pub(crate) fn end_probe(&self) {
        self.probing.store(false, Ordering::Release);
    }

    /// Marks a failed health check: `true` only the first time.
    pub(crate) fn mark_unhealthy(&self) -> bool {
        !self.unhealthy.swap(true, Ordering::AcqRel)
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

    /// Ends the process tree at once (SIGKILL), recording `why` as the cause.
    pub fn kill(&self, why: impl Into<String>) {
        self.session.terminate(EndReason::Supervisor(why.into()));
    }

    /// Graceful shutdown: the `shutdown` message, [`SHUTDOWN_GRACE`] to exit, then SIGTERM to
    /// the whole tree, [`TERM_GRACE`], then SIGKILL.
    pub async fn shutdown(&self) -> ExitInfo {
        self.retiring.store(true, Ordering::Release);
        if self.exited().is_none() {
            self.session
                .send_frame(Message::Shutdown {}.encode(&[]))
                .await;
        }
        if let Ok(info) = tokio::time::timeout(SHUTDOWN_GRACE, self.wait()).await {
            return info;
        }
        let _ = self.tree.signal(libc::SIGTERM);
        if let Ok(info) = tokio::time::timeout(TERM_GRACE, self.wait()).await {
            return info;
        }
        self.session.terminate(EndReason::Shutdown);
        self.wait().await
    }

    /// Was this instance asked to go (shutdown or retirement), so its exit is planned?
    pub(crate) fn retiring(&self) -> bool {
        self.retiring.load(Ordering::Acquire)
    }

    /// Marks the exit that follows as planned.
    pub(crate) fn retire(&self) {
        self.retiring.store(true, Ordering::Release);
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if self.exit.borrow().is_none() {
            self.session.terminate(EndReason::Shutdown);
            // Also directly, in case the runtime that runs the supervisor is going away.
            let _ = self.tree.signal(libc::SIGKILL);
        }
    }
}

/// A call's keyword arguments: `args` must be a JSON object.
pub(crate) fn object_args(args: Value) -> Result<Map<String, Value>, CallError> {
    match args {
        Value::Object(map) => Ok(map),
        _ => Err(CallError::invalid("arguments must be a JSON object")),
    }
}

/// Counts one call in flight for as long as it lives (a dropped call future included).
struct Busy<'a>(&'a Instance);

impl<'a> Busy<'a> {
    fn enter(instance: &'a Instance) -> Self {
        instance.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(instance)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.finished_call();
    }
}

/// A call counted in flight on an instance from the moment it was chosen from the pool, so
/// that taking an instance out of the pool and waiting for its calls to finish cannot miss
/// one that was chosen but not yet sent.
pub(crate) struct Reserved(pub(crate) Arc<Instance>);

impl Reserved {
    /// Counts a call on `instance` (call while it is still in the pool, under its lock).
    pub(crate) fn new(instance: &Arc<Instance>) -> Self {
        instance.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(instance))
    }
}

impl Reserved {
    /// Sends the reserved call (`body`: an argument carried as raw bytes), tagged `tag` (see
    /// [`super::CallOptions::tag`]; `None` for an untagged call).
    pub(crate) async fn invoke_tagged(
        &self,
        command: &str,
        args: Map<String, Value>,
        body: Option<(String, Vec<u8>)>,
        tag: Option<u64>,
    ) -> Result<Reply, CallError> {
        self.0.session.invoke_tagged(command, args, body, tag).await
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.0.finished_call();
    }
}
