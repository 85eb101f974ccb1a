//! Planned stops: a recycle before `limits.wall_seconds`, an idle shrink beyond `min_warm`, a
//! reload and an unload all end an instance the same way, so that no call is lost to them:
//!
//! 1. the caller has taken it out of the pool, under the pool's lock: no new call can pick it
//!    (they go to another instance, or wait for a replacement), and every call that picked it
//!    before is counted in its `in_flight`;
//! 2. `ready → draining` is recorded, with the kind of stop in `detail.stop`;
//! 3. calls in flight finish, host→plugin and plugin→host alike, each within its own
//!    `call_timeout_ms` (plus the cancel grace), the whole wait bounded by that sum;
//! 4. it gets `shutdown`, then SIGTERM and SIGKILL after their graces
//!    ([`Instance::shutdown`]);
//! 5. `draining → stopped` is recorded, after its `exit` record.
//!
//! A replacement, when `min_warm` needs one, is the supervisor's business (it starts it before
//! it takes a recycled instance out of the pool).

use super::instance::{Instance, SHUTDOWN_GRACE};
use super::lifecycle::State;
use super::plugin::Managed;
use crate::audit::{escape_text, EventKind, Record};
use crate::broker::session::CANCEL_GRACE;
use futures_util::future::join_all;
use std::sync::Arc;
use std::time::Duration;

/// Why an instance is stopped on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// It nears `limits.wall_seconds`.
    Recycle,
    /// It had no call for `idle_seconds` and the pool is above `min_warm`.
    Idle,
    /// A reload replaced its code.
    Reload,
    /// Its plugin is unloaded (or the engine shuts down).
    Unload,
}

impl Stop {
    /// The spelling in records (`detail.stop`, and the start of `reason`).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Stop::Recycle => "recycle",
            Stop::Idle => "idle",
            Stop::Reload => "reload",
            Stop::Unload => "unload",
        }
    }
}

/// Drains `instances` (already out of the pool) in parallel and stops them; `why` says more.
pub(crate) async fn drain(m: Arc<Managed>, instances: Vec<Arc<Instance>>, stop: Stop, why: String) {
    join_all(instances.iter().map(|i| drain_one(&m, i, stop, &why))).await;
}

async fn drain_one(m: &Managed, instance: &Arc<Instance>, stop: Stop, why: &str) {
    instance.retire();
    let in_flight = serde_json::json!({
        "in_flight": instance.in_flight(),
        "plugin_calls_in_flight": instance.plugin_calls_in_flight(),
    });
    record(
        m,
        instance,
        State::Ready,
        State::Draining,
        stop,
        why,
        in_flight,
    );
    // Each call ends by its own deadline; the bound only stops a plugin that keeps starting
    // plugin→host calls from holding the drain open.
    let limit = instance.call_timeout() + CANCEL_GRACE + Duration::from_secs(1);
    let drained = tokio::time::timeout(limit, instance.calls_done())
        .await
        .is_ok();
    let exit = instance.shutdown().await;
    let detail = serde_json::json!({ "drained": drained, "exit": exit.cause });
    record(
        m,
        instance,
        State::Draining,
        State::Stopped,
        stop,
        why,
        detail,
    );
}

/// One `state` record of `instance`: `detail` holds `from`, `to`, `stop` and `extra`'s fields.
fn record(
    m: &Managed,
    instance: &Instance,
    from: State,
    to: State,
    stop: Stop,
    why: &str,
    extra: serde_json::Value,
) {
    let mut r = Record::new(EventKind::State, instance.subject().clone());
    let mut detail = serde_json::json!({
        "from": from.as_str(),
        "to": to.as_str(),
        "stop": stop.as_str(),
    });
    if let (Some(d), serde_json::Value::Object(more)) = (detail.as_object_mut(), extra) {
        d.extend(more);
    }
    r.detail = Some(detail);
    r.reason = Some(escape_text(&format!("{}: {why}", stop.as_str())));
    if let Err(e) = m.audit().write(&r) {
        tracing::error!("{e}");
    }
}

/// When a recycle must begin for an instance that reached its wall budget `wall` (the hard
/// kill at `wall` stays; see `docs/protocol.md` §3.4): `(start_replacement, drain_by)`, as
/// offsets from the start of that budget.
///
/// `drain_by` leaves a call that started just before it the time to finish or be cancelled,
/// and the instance the time to exit on `shutdown`: `call_timeout + cancel grace + shutdown
/// grace`, but never more than half the budget. The replacement starts earlier by up to 2 s
/// (at most half of `drain_by`), so that it is usually ready before the old one stops taking
/// calls.
pub(crate) fn recycle_times(wall: Duration, call_timeout: Duration) -> (Duration, Duration) {
    let margin = (call_timeout + CANCEL_GRACE + SHUTDOWN_GRACE).min(wall / 2);
    let drain_by = wall.saturating_sub(margin);
    let head_start = Duration::from_secs(2).min(drain_by / 2);
    (drain_by - head_start, drain_by)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycling_leaves_room_for_the_last_call_before_the_hard_kill() {
        let s = Duration::from_secs;
        // Defaults: 5 s calls, 1 s cancel grace, 2 s shutdown grace.
        assert_eq!(recycle_times(s(30), s(5)), (s(20), s(22)));
        // A short budget: never past half of it.
        let ms = Duration::from_millis;
        assert_eq!(recycle_times(s(2), ms(500)), (ms(500), s(1)));
        assert_eq!(recycle_times(s(1), s(5)), (ms(250), ms(500)));
    }
}
