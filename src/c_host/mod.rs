//! The engine embedded in a foreign host: the safe core of the C ABI (`sys::c_abi`,
//! `docs/c-abi.md`).
//!
//! A [`HostEngine`] owns its engine and the tokio runtime that drives it, and offers blocking
//! operations a thread of any language can call: load, call (from many threads at once),
//! unload, events, shutdown. Strings cross as JSON; every failure is a [`HostError`] with a
//! stable code.

pub mod callback;
pub mod config;
pub mod error;
pub mod events;

pub use callback::{HostCall, HostHandler};
pub use error::{codes, HostError};

use crate::engine::{Engine, Plugin};
use config::HostConfig;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Runtime;

/// How long dropping a [`HostEngine`] waits for host handlers still running on the blocking
/// pool before it lets their threads go.
pub const RUNTIME_SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// An engine with its own runtime, for hosts outside Rust.
pub struct HostEngine {
    // Dropped in this order: the engine (and its queue) before the runtime that drives it.
    engine: Engine,
    events: events::EventQueue,
    allow_ungranted: bool,
    shut: AtomicBool,
    runtime: Option<Runtime>,
}

impl HostEngine {
    /// Starts an engine from its JSON configuration ([`HostConfig`]).
    pub fn new(config_json: &str) -> Result<Self, HostError> {
        let host = HostConfig::parse(config_json)?;
        let config = host.engine_config()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(host.worker_threads.unwrap_or(2))
            .thread_name("plugbox-engine")
            .enable_all()
            .build()
            .map_err(|e| HostError::new(codes::ENGINE_FAILED, format!("runtime: {e}")))?;
        let engine = {
            let _in_runtime = runtime.enter();
            Engine::new(config).map_err(|e| HostError::new(codes::ENGINE_FAILED, e.to_string()))?
        };
        Ok(Self {
            events: events::EventQueue::new(engine.events()),
            engine,
            allow_ungranted: host.allow_ungranted,
            shut: AtomicBool::new(false),
            runtime: Some(runtime),
        })
    }

    fn runtime(&self) -> Result<&Runtime, HostError> {
        match &self.runtime {
            Some(rt) if !self.shut.load(Ordering::Acquire) => Ok(rt),
            _ => Err(HostError::new(codes::SHUT_DOWN, "the engine was shut down")),
        }
    }

    /// The engine (for Rust code embedding it this way, and benchmarks).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// A handle on the engine's runtime (for Rust code driving the same engine, such as the
    /// `c_abi_calls` benchmark); `None` once dropped.
    pub fn runtime_handle(&self) -> Option<tokio::runtime::Handle> {
        self.runtime.as_ref().map(|rt| rt.handle().clone())
    }

    /// Registers host capability `name`, answered by `handler`.
    pub fn register(&self, name: &str, handler: Arc<dyn HostHandler>) -> Result<(), HostError> {
        self.runtime()?;
        let bridge = callback::Bridge::new(name, handler);
        self.engine
            .register(name, Arc::new(bridge))
            .map_err(|e| HostError::new(codes::CAPABILITY, e.to_string()))
    }

    /// Loads the plugin in `dir` under the grant `grant_json`; answers its description
    /// (name, version, digest, state, ready instances) as JSON.
    pub fn load(&self, dir: &str, grant_json: &str) -> Result<String, HostError> {
        let runtime = self.runtime()?;
        let grants = config::grants(grant_json, self.allow_ungranted)?;
        let plugin = runtime
            .block_on(self.engine.load(dir.as_ref(), &grants))
            .map_err(|e| HostError::new(codes::LOAD_FAILED, format!("{e} at {}", e.step())))?;
        Ok(describe(&plugin))
    }

    /// Calls `command` of loaded plugin `plugin` with `args_json` (a JSON object); answers
    /// the result as JSON. Callable from many threads at once.
    pub fn call(&self, plugin: &str, command: &str, args_json: &str) -> Result<String, HostError> {
        let runtime = self.runtime()?;
        let args = crate::ipc::strict_json::parse(args_json.as_bytes())
            .map_err(|e| HostError::invalid(format!("arguments: {e}")))?;
        let loaded = self.plugin(plugin)?;
        Ok(runtime
            .block_on(loaded.call(command, args))?
            .into_json()
            .to_string())
    }

    fn plugin(&self, name: &str) -> Result<Plugin, HostError> {
        self.engine
            .plugin(name)
            .ok_or_else(|| HostError::new(codes::NOT_LOADED, format!("{name} is not loaded")))
    }

    /// Unloads plugin `plugin` (its calls in flight get the shutdown grace).
    pub fn unload(&self, plugin: &str) -> Result<(), HostError> {
        let runtime = self.runtime()?;
        if runtime.block_on(self.engine.unload(plugin)) {
            Ok(())
        } else {
            Err(HostError::new(
                codes::NOT_LOADED,
                format!("{plugin} is not loaded"),
            ))
        }
    }

    /// The next engine event as JSON, waiting up to `timeout`; `None` if none came.
    pub fn next_event(&self, timeout: Duration) -> Result<Option<String>, HostError> {
        match &self.runtime {
            Some(rt) => Ok(self.events.next(rt, timeout)),
            None => Err(HostError::new(codes::SHUT_DOWN, "the engine was shut down")),
        }
    }

    /// The audit log's path.
    pub fn audit_path(&self) -> String {
        self.engine.audit().path().display().to_string()
    }

    /// Unloads every plugin and seals the audit log. Later operations fail with `shut_down`
    /// (events already queued can still be taken).
    pub fn shutdown(&self) -> Result<(), HostError> {
        let runtime = self.runtime()?;
        self.shut.store(true, Ordering::Release);
        runtime
            .block_on(self.engine.shutdown())
            .map_err(|e| HostError::new(codes::AUDIT, e.to_string()))
    }

    /// Has [`HostEngine::shutdown`] run?
    pub fn is_shut_down(&self) -> bool {
        self.shut.load(Ordering::Acquire)
    }
}

impl Drop for HostEngine {
    /// Shuts down (if the host did not) and stops the runtime, waiting at most
    /// [`RUNTIME_SHUTDOWN_WAIT`] for host handlers still running.
    fn drop(&mut self) {
        if !self.is_shut_down() {
            if let Err(e) = self.shutdown() {
                tracing::error!("{e}");
            }
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(RUNTIME_SHUTDOWN_WAIT);
        }
    }
}

fn describe(plugin: &Plugin) -> String {
    let stats = plugin.stats();
    let value: Value = json!({
        "name": stats.name,
        "version": stats.version,
        "digest": stats.digest,
        "state": stats.state,
        "ready_instances": stats.ready_instances,
    });
    value.to_string()
}
