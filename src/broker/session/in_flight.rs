//! The plugin→host calls a session is serving, by call id: what a drain waits for.
//!
//! A call's slot is reserved before its handler first runs (a drain that starts while the
//! handler runs must count it); a call that goes on in a task of its own gets the task's
//! abort handle, so a cancel or an expired drain can stop it. A drain waits for the last
//! slot to be given back, woken by it rather than polling.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// Slots of the calls being served.
#[derive(Debug, Default)]
pub(super) struct InFlightCalls {
    slots: Mutex<HashMap<u64, Option<AbortHandle>>>,
    /// Notified each time the last slot is given back.
    idle: Notify,
}

impl InFlightCalls {
    fn slots(&self) -> MutexGuard<'_, HashMap<u64, Option<AbortHandle>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Calls being served now.
    pub(super) fn len(&self) -> usize {
        self.slots().len()
    }

    /// Whether call `id` is being served.
    pub(super) fn contains(&self, id: u64) -> bool {
        self.slots().contains_key(&id)
    }

    /// Reserves the slot of call `id`, before its handler first runs.
    pub(super) fn reserve(&self, id: u64) {
        self.slots().insert(id, None);
    }

    /// Call `id` goes on in the task `task`.
    pub(super) fn attach(&self, id: u64, task: AbortHandle) {
        self.slots().insert(id, Some(task));
    }

    /// Gives back the slot of call `id`; returns its task, if it had one.
    pub(super) fn release(&self, id: u64) -> Option<AbortHandle> {
        let mut slots = self.slots();
        let task = slots.remove(&id).flatten();
        self.notify_if_idle(&slots);
        task
    }

    /// Gives back the slot of call `id` if it is still only reserved (no task holds it).
    pub(super) fn release_reserved(&self, id: u64) {
        let mut slots = self.slots();
        if matches!(slots.get(&id), Some(None)) {
            slots.remove(&id);
            self.notify_if_idle(&slots);
        }
    }

    fn notify_if_idle(&self, slots: &HashMap<u64, Option<AbortHandle>>) {
        if slots.is_empty() {
            self.idle.notify_waiters();
        }
    }

    /// Waits until no call is served or `deadline` passes; then aborts the tasks of the calls
    /// still served and gives back every slot.
    pub(super) async fn drain(&self, deadline: Instant) {
        loop {
            // Registered before the check: a release between the two still wakes it.
            let idle = self.idle.notified();
            if self.slots().is_empty() {
                return;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                break;
            }
        }
        for task in self.slots().drain().filter_map(|(_, task)| task) {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn a_drain_wakes_when_the_last_call_is_released() {
        let calls = Arc::new(InFlightCalls::default());
        calls.reserve(1);
        calls.reserve(2);
        let c = Arc::clone(&calls);
        let drain = tokio::spawn(async move {
            c.drain(Instant::now() + Duration::from_secs(60)).await;
        });
        calls.release_reserved(1);
        assert_eq!(calls.len(), 1);
        calls.release(2);
        drain.await.unwrap();
        assert_eq!(calls.len(), 0);
    }

    #[tokio::test]
    async fn an_expired_drain_aborts_the_tasks_left() {
        let calls = InFlightCalls::default();
        let task = tokio::spawn(std::future::pending::<()>());
        calls.attach(7, task.abort_handle());
        calls.reserve(8);
        calls.drain(Instant::now()).await;
        assert!(task.await.unwrap_err().is_cancelled());
        assert_eq!(calls.len(), 0);
    }

    #[test]
    fn a_slot_with_a_task_is_not_released_as_reserved() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let calls = InFlightCalls::default();
        let task = rt.spawn(async {});
        calls.attach(3, task.abort_handle());
        calls.release_reserved(3);
        assert!(calls.contains(3));
        assert!(calls.release(3).is_some());
    }
}
