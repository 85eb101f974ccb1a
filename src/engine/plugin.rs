//! A loaded plugin under supervision: a pool of instances, its lifecycle state, its restart
//! circuit and its counters. [`Plugin`] is the host's cheap, cloneable handle on it.

use super::instance::{object_args, Instance, Reserved};
use super::lifecycle::{record_transition, State};
use super::validate::Validated;
use crate::audit::{AuditLog, EventKind, Record, Subject};
use crate::broker::stats::{Stats, StatsSnapshot};
use crate::capability::{CallError, Reply};
use crate::ipc::ErrorCode;
use serde::Serialize;
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::{mpsc, watch};

/// What wakes a plugin's supervisor.
pub(crate) enum Wake {
    /// An instance's process tree is gone.
    Exited {
        instance: Arc<Instance>,
        cause: String,
        wall_clock: bool,
    },
    /// Every ready instance is busy: start another if `instances` allows.
    Busy,
    /// An instance nears `limits.wall_seconds`: start its replacement (if `min_warm` needs
    /// one) and drain it once that is ready, or at once when `last`.
    Recycle { instance: Arc<Instance>, last: bool },
    /// A start the supervisor asked for finished.
    Started {
        result: Result<Instance, super::LoadError>,
        why: StartKind,
    },
    /// A reload swapped in new code: restart history and health interval start over.
    Reloaded,
    /// The plugin was unloaded: the supervisor ends now.
    Stop,
}

/// Why an instance was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StartKind {
    /// Replacing one that failed.
    Restart,
    /// Load grew past the ready instances.
    ScaleUp,
    /// One trial after the circuit was open for `circuit_open_seconds`.
    Trial,
    /// Replacing one that reached `limits.wall_seconds` (planned; not counted as a failure).
    Recycle,
}

/// A plugin's shared state. One per loaded plugin name; it outlives reloads.
pub(crate) struct Managed {
    pub(crate) validated: RwLock<Arc<Validated>>,
    pool: RwLock<Vec<Arc<Instance>>>,
    state: Mutex<State>,
    /// Why calls fail fast, while the circuit is open.
    circuit: Mutex<Option<String>>,
    pub(crate) stats: Arc<Stats>,
    restarts: AtomicU64,
    changed: watch::Sender<u64>,
    pub(crate) wake: mpsc::UnboundedSender<Wake>,
    audit: Arc<AuditLog>,
}

impl Managed {
    pub(crate) fn new(
        validated: Validated,
        audit: Arc<AuditLog>,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Wake>) {
        let (wake, rx) = mpsc::unbounded_channel();
        let m = Arc::new(Self {
            validated: RwLock::new(Arc::new(validated)),
            pool: RwLock::new(Vec::new()),
            state: Mutex::new(State::Validated),
            circuit: Mutex::new(None),
            stats: Arc::default(),
            restarts: AtomicU64::new(0),
            changed: watch::channel(0).0,
            wake,
            audit,
        });
        (m, rx)
    }

    pub(crate) fn validated(&self) -> Arc<Validated> {
        Arc::clone(&self.validated.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The plugin's audit subject (instance `-`), for the code now loaded.
    pub(crate) fn subject(&self) -> Subject {
        self.validated().subject.clone()
    }

    pub(crate) fn audit(&self) -> &AuditLog {
        &self.audit
    }

    pub(crate) fn state(&self) -> State {
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves to `to` (if not there already) and audits the transition.
    pub(crate) fn set_state(&self, to: State, reason: Option<&str>) {
        self.transition(to, reason, false);
    }

    /// Moves to `to` and audits it even when already there (a reload: new code, same state).
    pub(crate) fn restate(&self, to: State, reason: &str) {
        self.transition(to, Some(reason), true);
    }

    fn transition(&self, to: State, reason: Option<&str>, even_if_same: bool) {
        let from = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let from = *state;
            // Stopped is final; a late event cannot revive it.
            if (from == to && !even_if_same) || from == State::Stopped {
                return;
            }
            *state = to;
            from
        };
        if let Err(e) = record_transition(&self.audit, &self.subject(), Some(from), to, reason) {
            tracing::error!("{e}");
        }
        self.bump();
    }

    /// Ready instances now.
    pub(crate) fn instances(&self) -> Vec<Arc<Instance>> {
        self.pool.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn ready_count(&self) -> usize {
        self.pool.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub(crate) fn add(&self, instance: Arc<Instance>) {
        self.pool
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(instance);
        self.bump();
    }

    /// Takes `instance` out of the pool; false if it was not there.
    pub(crate) fn remove(&self, instance: &Arc<Instance>) -> bool {
        let mut pool = self.pool.write().unwrap_or_else(|p| p.into_inner());
        let before = pool.len();
        pool.retain(|i| !Arc::ptr_eq(i, instance));
        let removed = pool.len() != before;
        drop(pool);
        self.bump();
        removed
    }

    /// Empties the pool, returning what was in it.
    pub(crate) fn take_all(&self) -> Vec<Arc<Instance>> {
        let taken = std::mem::take(&mut *self.pool.write().unwrap_or_else(|p| p.into_inner()));
        self.bump();
        taken
    }

    /// Replaces the pool (a reload), returning the old instances.
    pub(crate) fn replace_all(&self, fresh: Vec<Arc<Instance>>) -> Vec<Arc<Instance>> {
        let old = std::mem::replace(
            &mut *self.pool.write().unwrap_or_else(|p| p.into_inner()),
            fresh,
        );
        self.bump();
        old
    }

    pub(crate) fn open_circuit(&self, why: String) {
        let mut r = Record::new(EventKind::Circuit, self.subject());
        r.decision = Some("deny");
        r.reason = Some(crate::audit::escape_text(&why));
        r.detail = Some(serde_json::json!({ "circuit": "open" }));
        if let Err(e) = self.audit.write(&r) {
            tracing::error!("{e}");
        }
        *self.circuit.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
        self.bump();
    }

    pub(crate) fn close_circuit(&self) {
        let was = self
            .circuit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if was.is_some() {
            let mut r = Record::new(EventKind::Circuit, self.subject());
            r.decision = Some("allow");
            r.detail = Some(serde_json::json!({ "circuit": "closed" }));
            if let Err(e) = self.audit.write(&r) {
                tracing::error!("{e}");
            }
        }
        self.bump();
    }

    pub(crate) fn circuit_open(&self) -> bool {
        self.circuit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    pub(crate) fn count_restart(&self) -> u64 {
        self.restarts.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Wakes callers waiting for a ready instance (and anyone watching the state).
    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Why calls cannot be served now, if they cannot (`name`: the plugin's, for the message).
    fn unavailable(&self, name: &str) -> Option<CallError> {
        let fail = |why: String| Some(CallError::new(ErrorCode::Unavailable, why));
        if let Some(why) = &*self.circuit.lock().unwrap_or_else(|p| p.into_inner()) {
            return fail(format!("{name}: circuit open: {why}"));
        }
        match self.state() {
            State::Draining | State::Stopped => fail(format!("{name} is {}", self.state())),
            State::Failed => fail(format!("{name} has failed")),
            _ => None,
        }
    }

    /// The ready instance with the fewest calls in flight; waits (up to the call timeout)
    /// while none is ready, and asks for another instance when all are busy.
    pub(crate) async fn pick(&self) -> Result<Reserved, CallError> {
        // Read once per call: the loaded code only changes under reload.
        let validated = self.validated();
        let policy = &validated.manifest.policy;
        let timeout = policy.limits().call_timeout;
        let max = policy.process().instances as usize;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = self.changed.subscribe();
        loop {
            changed.borrow_and_update();
            if let Some(e) = self.unavailable(&validated.manifest.name) {
                return Err(e);
            }
            let (best, count) = {
                let pool = self.pool.read().unwrap_or_else(|p| p.into_inner());
                // Reserved under the lock: whoever takes it out of the pool sees the call.
                let best = pool.iter().min_by_key(|i| i.in_flight()).map(Reserved::new);
                (best, pool.len())
            };
            if let Some(reserved) = best {
                // Busy beyond this call: ask for another instance.
                if reserved.0.in_flight() > 1 && count < max {
                    let _ = self.wake.send(Wake::Busy);
                }
                return Ok(reserved);
            }
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                return Err(CallError::new(
                    ErrorCode::Unavailable,
                    format!("no instance became ready within {timeout:?}"),
                ));
            }
        }
    }

    /// Waits until the state is one of `states`.
    pub(crate) async fn wait_for(&self, states: &[State]) -> State {
        let mut changed = self.changed.subscribe();
        loop {
            changed.borrow_and_update();
            let now = self.state();
            if states.contains(&now) {
                return now;
            }
            if changed.changed().await.is_err() {
                return now;
            }
        }
    }

    pub(crate) fn snapshot(&self) -> PluginStats {
        let v = self.validated();
        PluginStats {
            name: v.manifest.name.clone(),
            version: v.manifest.version.to_string(),
            digest: v.digest.clone(),
            state: self.state(),
            ready_instances: self.ready_count(),
            restarts: self.restarts.load(Ordering::Acquire),
            circuit_open: self.circuit_open(),
            calls: self.stats.snapshot(),
        }
    }
}

/// A plugin's counters and state, readable through [`Plugin::stats`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginStats {
    /// Manifest name.
    pub name: String,
    /// Manifest version now loaded.
    pub version: String,
    /// Code digest now loaded.
    pub digest: String,
    /// Lifecycle state.
    pub state: State,
    /// Instances ready to take calls.
    pub ready_instances: usize,
    /// Instances started to replace failed ones, since the plugin was loaded (replacements
    /// of instances that reached `limits.wall_seconds` are not counted).
    pub restarts: u64,
    /// Do calls fail fast because restarts were exhausted?
    pub circuit_open: bool,
    /// Calls, denials, errors and latencies, over every instance it ran.
    #[serde(flatten)]
    pub calls: StatsSnapshot,
}

/// A loaded plugin, supervised by its engine: calls go to a ready instance, failed instances
/// are restarted under the plugin's restart policy. Cheap to clone; every clone is the same
/// plugin. It stays loaded until [`Engine::unload`](super::Engine::unload) (dropping handles
/// does not unload it).
#[derive(Clone)]
pub struct Plugin {
    pub(crate) m: Arc<Managed>,
}

impl Plugin {
    /// Manifest name.
    pub fn name(&self) -> String {
        self.m.validated().manifest.name.clone()
    }

    /// Manifest version now loaded.
    pub fn version(&self) -> String {
        self.m.validated().manifest.version.to_string()
    }

    /// Lifecycle state now.
    pub fn state(&self) -> State {
        self.m.state()
    }

    /// Counters and state.
    pub fn stats(&self) -> PluginStats {
        self.m.snapshot()
    }

    /// The ready instances now (ids, pids, per-instance calls in flight).
    pub fn instances(&self) -> Vec<Arc<Instance>> {
        self.m.instances()
    }

    /// The commands the plugin exports (from its handshake).
    pub async fn commands(&self) -> Result<Vec<String>, CallError> {
        Ok(self.m.pick().await?.0.commands().to_vec())
    }

    /// Calls `command` on a ready instance. Fails fast with
    /// [`ErrorCode::Unavailable`] while the plugin is stopped, failed or its circuit is
    /// open; waits up to the call timeout while instances restart.
    pub async fn call(&self, command: &str, args: Value) -> Result<Reply, CallError> {
        let args = object_args(args)?;
        let reserved = self.m.pick().await?;
        reserved.invoke_tagged(command, args, None, None).await
    }

    /// Calls `command` passing `body` as the raw bytes of argument `body_name`.
    pub async fn call_with_body(
        &self,
        command: &str,
        args: Map<String, Value>,
        body_name: &str,
        body: Vec<u8>,
    ) -> Result<Reply, CallError> {
        let reserved = self.m.pick().await?;
        let body = Some((body_name.to_owned(), body));
        reserved.invoke_tagged(command, args, body, None).await
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name())
            .field("state", &self.state())
            .finish()
    }
}
