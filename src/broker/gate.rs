//! The gate: the one place every plugin→host call is decided.
//!
//! Checks, in order: the per-plugin rate (every call takes a token, granted or not, so a
//! plugin cannot flood the audit log with calls it was never granted), exact capability-name
//! match against the effective allow-list (no case folding, trimming or normalisation), the
//! request size against the capability's limit, the per-plugin in-flight limit, the per-plugin
//! budget of bytes held for pending replies, and last the capability's own scope check
//! ([`Capability::check`]: a path outside the grant, say). The decision names the rule that
//! made it. Rate-limited refusals are coalesced ([`super::coalesce`]): the first in an interval
//! is recorded, the rest are counted.

use super::coalesce::{Coalescer, SUPPRESS_INTERVAL};
use super::rate::TokenBucket;
use crate::capability::{CallContext, CallRequest, Capability, PluginInfo};
use crate::ipc::ErrorCode;
use crate::manifest::EffectiveCapability;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
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

/// An allowed call: what its dispatch needs.
pub struct Admitted {
    /// The capability.
    pub granted: Granted,
    /// What its handler is given.
    pub ctx: CallContext,
    /// The call's in-flight slot and reply bytes; dropping it gives them back.
    pub permit: Permit,
}

/// What the gate decided.
pub enum Decision {
    /// Dispatch it.
    Allow(Admitted),
    /// Refuse it.
    Deny {
        /// The error code sent back.
        code: ErrorCode,
        /// The rule that decided.
        rule: &'static str,
        /// Human reason.
        reason: String,
    },
    /// Refuse it as rate-limited without a record of its own: it was counted, and the count
    /// is reported by [`Gate::take_suppressed`].
    Suppressed,
}

/// The reason given for a rate-limited call.
pub const RATE_REASON: &str = "call rate exceeded";
/// The rule that refuses rate-limited calls.
pub const RATE_RULE: &str = "limits.calls_per_second";
/// The rule that refuses a call outside its capability's scope.
pub const SCOPE_RULE: &str = "capability.scope";

/// One in-flight slot, and the reply bytes reserved for the call: the capability's
/// `max_bytes` until the reply is built, then the reply's size until it is written.
pub struct Permit {
    /// The in-flight count; `None` once this call's slot was given back.
    counter: Option<Arc<AtomicU32>>,
    pending: Arc<AtomicU64>,
    reserved: u64,
}

impl Permit {
    /// Gives the in-flight slot and the reserved reply bytes back: the reply is built and
    /// its write is starting (with the session's writer held, so at most one reply per
    /// session is being written outside the budget). Not later, because the plugin may send
    /// its next call the moment the reply arrives: an SDK that keeps within `max_in_flight`
    /// must never find this call still counted.
    pub fn release(&mut self) {
        if let Some(counter) = self.counter.take() {
            counter.fetch_sub(1, Ordering::AcqRel);
        }
        self.pending.fetch_sub(self.reserved, Ordering::AcqRel);
        self.reserved = 0;
    }

    /// Shrinks the reservation to `bytes` (the built reply's size); never grows it.
    pub fn settle(&mut self, bytes: u64) {
        let release = self.reserved.saturating_sub(bytes);
        self.pending.fetch_sub(release, Ordering::AcqRel);
        self.reserved -= release;
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.release();
    }
}

/// A plugin's call limits, shared by every instance of it.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    /// Calls per second, sustained.
    pub rate: u32,
    /// Calls above the sustained rate.
    pub burst: u32,
    /// Calls outstanding at once.
    pub in_flight: u32,
    /// Bytes reserved for pending replies at once.
    pub pending_reply_bytes: u64,
}

/// Per-plugin gate.
pub struct Gate {
    allowed: HashMap<String, Granted>,
    limiter: Mutex<Limiter>,
    /// Set (under the limiter's lock) while refusals are counted and not yet reported, so
    /// that the common case, nothing to report, costs each call one load and no second lock.
    counted: AtomicBool,
    in_flight: Arc<AtomicU32>,
    max_in_flight: u32,
    pending: Arc<AtomicU64>,
    max_pending: u64,
}

impl Gate {
    /// A gate over `allowed` with the plugin's call limits.
    pub fn new(allowed: HashMap<String, Granted>, limits: CallLimits) -> Self {
        Self {
            allowed,
            limiter: Mutex::new(Limiter {
                bucket: TokenBucket::new(limits.rate, limits.burst),
                refusals: Coalescer::new(SUPPRESS_INTERVAL),
            }),
            counted: AtomicBool::new(false),
            in_flight: Arc::new(AtomicU32::new(0)),
            max_in_flight: limits.in_flight,
            pending: Arc::new(AtomicU64::new(0)),
            max_pending: limits.pending_reply_bytes,
        }
    }

    /// Bytes reserved now for this plugin's pending replies (all instances together).
    pub fn pending_reply_bytes(&self) -> u64 {
        self.pending.load(Ordering::Acquire)
    }

    /// Reserves `bytes` of the pending-reply budget, or says none is left.
    fn reserve(&self, bytes: u64) -> bool {
        self.pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|&n| n <= self.max_pending)
            })
            .is_ok()
    }

    /// The allow-list, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.allowed.keys().cloned().collect();
        names.sort();
        names
    }

    /// Decides one call of `method` by `plugin` with `request` (`request_bytes` on the wire).
    pub fn decide(
        &self,
        plugin: &Arc<PluginInfo>,
        method: &str,
        request: &CallRequest,
        request_bytes: u64,
    ) -> Decision {
        if let Some(refused) = self.rate(Instant::now()) {
            return refused;
        }
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
        let previous = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let mut permit = Permit {
            counter: Some(Arc::clone(&self.in_flight)),
            pending: Arc::clone(&self.pending),
            reserved: 0,
        };
        if previous >= self.max_in_flight {
            return Decision::Deny {
                code: ErrorCode::RateLimited,
                rule: "limits.calls_in_flight",
                reason: format!("{} calls already in flight", self.max_in_flight),
            };
        }
        if !self.reserve(granted.max_bytes) {
            return Decision::Deny {
                code: ErrorCode::RateLimited,
                rule: "limits.pending_reply_mib",
                reason: format!(
                    "replies of {} bytes already pending; {} more would exceed {}",
                    self.pending_reply_bytes(),
                    granted.max_bytes,
                    self.max_pending
                ),
            };
        }
        permit.reserved = granted.max_bytes;
        let ctx = CallContext {
            plugin: Arc::clone(plugin),
            grant: Arc::clone(&granted.grant),
            max_bytes: granted.max_bytes,
            cause: None,
        };
        // Last: the capability's own check of the arguments (a path outside the grant). A
        // refusal drops the permit, giving its slot back; the call is never dispatched.
        if let Err(e) = granted.handler.check(&ctx, request) {
            return Decision::Deny {
                code: e.code,
                rule: SCOPE_RULE,
                reason: e.message,
            };
        }
        Decision::Allow(Admitted {
            granted: granted.clone(),
            ctx,
            permit,
        })
    }

    /// Takes a token for a call at `now`; if there is none, the refusal (recorded or counted).
    fn rate(&self, now: Instant) -> Option<Decision> {
        let mut limiter = self.limiter();
        if limiter.bucket.try_take(now) {
            return None;
        }
        Some(if limiter.refusals.refuse(now) {
            Decision::Deny {
                code: ErrorCode::RateLimited,
                rule: RATE_RULE,
                reason: RATE_REASON.into(),
            }
        } else {
            self.counted.store(true, Ordering::Release);
            Decision::Suppressed
        })
    }

    /// Rate-limited refusals counted and not yet reported: once their interval has ended, or
    /// all of them when `force` is set (a session of this plugin is ending). Each is returned
    /// once.
    pub fn take_suppressed(&self, force: bool) -> Option<u64> {
        if !force && !self.counted.load(Ordering::Acquire) {
            return None;
        }
        let mut limiter = self.limiter();
        let taken = limiter.refusals.take(Instant::now(), force);
        if taken.is_some() {
            self.counted.store(false, Ordering::Release);
        }
        taken
    }

    fn limiter(&self) -> std::sync::MutexGuard<'_, Limiter> {
        self.limiter.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The rate state of one plugin, under one lock.
struct Limiter {
    bucket: TokenBucket,
    refusals: Coalescer,
}
