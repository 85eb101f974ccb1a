//! The engine's events for a host that polls: one queue per embedded engine, subscribed when
//! the engine starts (so a plugin's first `ready` is never missed), holding the last
//! [`EVENT_BACKLOG`](crate::engine::events::EVENT_BACKLOG) events; a host that falls further
//! behind gets one `lagged` event saying how many it lost (the audit log has them all).

use crate::engine::PluginEvent;
use serde_json::json;
use std::sync::Mutex;
use std::time::Duration;
use tokio::runtime::Runtime;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

/// Events not yet taken by the host.
pub struct EventQueue {
    rx: Mutex<broadcast::Receiver<PluginEvent>>,
}

impl EventQueue {
    /// Queues the events `rx` receives.
    pub fn new(rx: broadcast::Receiver<PluginEvent>) -> Self {
        Self { rx: Mutex::new(rx) }
    }

    /// The next event as JSON, waiting up to `timeout` on `runtime` (`None`: none came, or
    /// the engine is gone). Pollers take turns.
    pub fn next(&self, runtime: &Runtime, timeout: Duration) -> Option<String> {
        let mut rx = self.rx.lock().unwrap_or_else(|p| p.into_inner());
        if timeout.is_zero() {
            return match rx.try_recv() {
                Ok(event) => Some(to_json(&event)),
                Err(TryRecvError::Lagged(n)) => Some(lagged(n)),
                Err(TryRecvError::Empty | TryRecvError::Closed) => None,
            };
        }
        let received = runtime.block_on(async { tokio::time::timeout(timeout, rx.recv()).await });
        match received {
            Ok(Ok(event)) => Some(to_json(&event)),
            Ok(Err(RecvError::Lagged(n))) => Some(lagged(n)),
            Ok(Err(RecvError::Closed)) | Err(_) => None,
        }
    }
}

fn to_json(event: &PluginEvent) -> String {
    serde_json::to_string(event).unwrap_or_else(|_| "{}".to_owned())
}

fn lagged(missed: u64) -> String {
    json!({"event": "lagged", "missed": missed}).to_string()
}
