//! The supervisor's planned stops: recycling an instance before `limits.wall_seconds` (its
//! replacement first, when `min_warm` needs one) and retiring an instance into a drain.

use super::Supervisor;
use crate::engine::drain::{drain, Stop};
use crate::engine::instance::Instance;
use crate::engine::plugin::StartKind;
use std::sync::Arc;

impl Supervisor {
    /// `instance` nears its wall budget. First moment: if the other ready instances cover
    /// `min_warm`, drain it now; else start a replacement and drain it once that is ready.
    /// Last moment (`last`): drain it now, replacement ready or not, so that its calls finish
    /// before the hard kill.
    pub(super) fn recycle(&mut self, instance: Arc<Instance>, last: bool) {
        if !self.m.instances().iter().any(|i| Arc::ptr_eq(i, &instance)) {
            return; // Gone already (drained, failed, or the pool was replaced).
        }
        let min_warm = self.m.validated().manifest.policy.process().min_warm as usize;
        let others = self.m.ready_count() - 1;
        if last {
            self.recycling.retain(|i| !Arc::ptr_eq(i, &instance));
            let why = self.recycle_why("its replacement was not ready in time");
            self.retire(&instance, Stop::Recycle, why);
        } else if others >= min_warm || self.m.circuit_open() {
            let why = self.recycle_why("the other instances cover min_warm");
            self.retire(&instance, Stop::Recycle, why);
        } else {
            self.recycling.push(instance);
            self.start(StartKind::Recycle);
        }
    }

    /// A replacement started for a recycle is ready (and in the pool): drain the oldest
    /// instance that waited for one.
    pub(super) fn replaced(&mut self) {
        while !self.recycling.is_empty() {
            let old = self.recycling.remove(0);
            let why = self.recycle_why("its replacement is ready");
            if self.retire(&old, Stop::Recycle, why) {
                return;
            }
        }
    }

    fn recycle_why(&self, when: &str) -> String {
        let wall = self.m.validated().manifest.policy.limits().wall_seconds;
        format!("limits.wall_seconds ({wall}) is near; {when}")
    }

    /// Takes `instance` out of the pool (no new call can pick it) and drains it in the
    /// background; false if it was no longer in the pool.
    pub(super) fn retire(&self, instance: &Arc<Instance>, stop: Stop, why: String) -> bool {
        if !self.m.remove(instance) {
            return false;
        }
        instance.retire();
        tokio::spawn(drain(
            Arc::clone(&self.m),
            vec![Arc::clone(instance)],
            stop,
            why,
        ));
        true
    }
}
