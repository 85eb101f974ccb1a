//! The restart policy as arithmetic: how long to wait before the next restart, and when too
//! many restarts in a window open the circuit. No clocks are read here; callers pass `now`.

use crate::policy::file::RestartMode;
use crate::policy::Supervision;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What to do after an instance failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Start a replacement after this delay.
    RestartAfter(Duration),
    /// Too many restarts in the window: stop restarting, fail calls fast.
    OpenCircuit {
        /// Restarts counted in the window.
        restarts: usize,
    },
    /// The policy says never restart.
    Never,
}

/// Restarts within the sliding window, and the backoff they imply.
#[derive(Debug)]
pub(crate) struct RestartTracker {
    policy: Supervision,
    recent: VecDeque<Instant>,
}

impl RestartTracker {
    pub(crate) fn new(policy: Supervision) -> Self {
        Self {
            policy,
            recent: VecDeque::new(),
        }
    }

    /// An instance failed at `now`: restart it (after a backoff), or open the circuit.
    pub(crate) fn on_failure(&mut self, now: Instant) -> Verdict {
        if self.policy.restart == RestartMode::Never {
            return Verdict::Never;
        }
        self.prune(now);
        let n = self.recent.len();
        if n >= self.policy.max_restarts as usize {
            return Verdict::OpenCircuit { restarts: n };
        }
        self.recent.push_back(now);
        let factor = 1u32.checked_shl(n.min(31) as u32).unwrap_or(u32::MAX);
        let delay = self
            .policy
            .backoff
            .checked_mul(factor)
            .unwrap_or(self.policy.backoff_max)
            .min(self.policy.backoff_max);
        Verdict::RestartAfter(delay)
    }

    /// Restarts counted in the window ending at `now`.
    pub(crate) fn restarts_in_window(&mut self, now: Instant) -> usize {
        self.prune(now);
        self.recent.len()
    }

    /// Forgets the history (a trial restart after an open circuit succeeded, or a reload).
    pub(crate) fn reset(&mut self) {
        self.recent.clear();
    }

    fn prune(&mut self, now: Instant) {
        let window = self.policy.restart_window;
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            self.recent.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::policy::Policy;

    fn tracker(extra: &str) -> RestartTracker {
        let policy = Policy::from_toml(&format!("schema = 1\n[supervision]\n{extra}\n")).unwrap();
        RestartTracker::new(policy.supervision().clone())
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_then_the_circuit_opens() {
        let mut t = tracker("max_restarts = 5\nbackoff_ms = 100\nbackoff_max_ms = 350");
        let now = Instant::now();
        let delays: Vec<Verdict> = (0..6).map(|_| t.on_failure(now)).collect();
        let ms = |n| Verdict::RestartAfter(Duration::from_millis(n));
        assert_eq!(
            delays,
            vec![
                ms(100),
                ms(200),
                ms(350),
                ms(350),
                ms(350),
                Verdict::OpenCircuit { restarts: 5 }
            ]
        );
    }

    #[test]
    fn restarts_leave_the_window() {
        let mut t = tracker("max_restarts = 2\nrestart_window_seconds = 10");
        let start = Instant::now();
        assert!(matches!(t.on_failure(start), Verdict::RestartAfter(_)));
        assert!(matches!(t.on_failure(start), Verdict::RestartAfter(_)));
        assert!(matches!(
            t.on_failure(start),
            Verdict::OpenCircuit { restarts: 2 }
        ));
        let later = start + Duration::from_secs(10);
        assert_eq!(t.restarts_in_window(later), 0);
        assert_eq!(
            t.on_failure(later),
            Verdict::RestartAfter(Duration::from_millis(100))
        );
    }

    #[test]
    fn never_means_never_and_zero_restarts_opens_at_once() {
        assert_eq!(
            tracker("restart = \"never\"").on_failure(Instant::now()),
            Verdict::Never
        );
        assert_eq!(
            tracker("max_restarts = 0").on_failure(Instant::now()),
            Verdict::OpenCircuit { restarts: 0 }
        );
    }
}
