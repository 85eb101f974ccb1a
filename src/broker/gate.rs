//! The gate: the one place every plugin→host call is decided.
//!
//! Checks, in order: exact capability-name match against the effective allow-list (no case
//! folding, trimming or normalisation), the request size against the capability's limit, the
//! per-plugin rate, and the per-plugin in-flight limit. The decision names the rule that made it.

use super::rate::TokenBucket;
use crate::capability::Capability;
use crate::ipc::ErrorCode;
use crate::manifest::EffectiveCapability;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A granted capability: its handler and the plugin's effective grant.
#[derive(Clone)]
pub struct Granted {
    /// The handler.
    pub handler: Arc<dyn Capability>,
    /// Scope and limits.
    pub grant: Arc<EffectiveCapability>,
    /// Largest request or reply payload, bytes.
    pub max_bytes: u64,
}

/// What the gate decided.
pub enum Decision {
    /// Dispatch it. Dropping the permit ends the call's in-flight slot.
    Allow(Granted, Permit),
    /// Refuse it.
    Deny {
        /// The error code sent back.
        code: ErrorCode,
        /// The rule that decided.
        rule: &'static str,
        /// Human reason.
        reason: String,
    },
}

/// One in-flight slot.
pub struct Permit {
    counter: Arc<AtomicU32>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Per-plugin gate.
pub struct Gate {
    allowed: HashMap<String, Granted>,
    bucket: Mutex<TokenBucket>,
    in_flight: Arc<AtomicU32>,
    max_in_flight: u32,
}

impl Gate {
    /// A gate over `allowed` with the plugin's call limits.
    pub fn new(
        allowed: HashMap<String, Granted>,
        rate: u32,
        burst: u32,
        max_in_flight: u32,
    ) -> Self {
        Self {
            allowed,
            bucket: Mutex::new(TokenBucket::new(rate, burst)),
            in_flight: Arc::new(AtomicU32::new(0)),
            max_in_flight,
        }
    }

    /// The allow-list, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.allowed.keys().cloned().collect();
        names.sort();
        names
    }

    /// Decides one call.
    pub fn decide(&self, method: &str, request_bytes: u64) -> Decision {
        let Some(granted) = self.allowed.get(method) else {
            return Decision::Deny {
                code: ErrorCode::Denied,
                rule: "allow-list",
                reason: format!("capability {method:?} is not granted"),
            };
        };
        if request_bytes > granted.max_bytes {
            return Decision::Deny {
                code: ErrorCode::TooLarge,
                rule: "capability.max_bytes",
                reason: format!(
                    "request of {request_bytes} bytes exceeds {}",
                    granted.max_bytes
                ),
            };
        }
        let rate_ok = self
            .bucket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_take(Instant::now());
        if !rate_ok {
            return Decision::Deny {
                code: ErrorCode::RateLimited,
                rule: "limits.calls_per_second",
                reason: "call rate exceeded".into(),
            };
        }
        let previous = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let permit = Permit {
            counter: Arc::clone(&self.in_flight),
        };
        if previous >= self.max_in_flight {
            return Decision::Deny {
                code: ErrorCode::RateLimited,
                rule: "limits.calls_in_flight",
                reason: format!("{} calls already in flight", self.max_in_flight),
            };
        }
        Decision::Allow(granted.clone(), permit)
    }
}
