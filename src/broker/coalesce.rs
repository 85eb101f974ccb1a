//! Coalescing of rate-limited refusals, per plugin: the first refusal in an interval is
//! recorded in full, the rest are counted, and the count is reported in one
//! `calls_suppressed` record once the interval has ended (or when a session ends), so a flood
//! writes a bounded number of records and no attempt goes uncounted.

use std::time::{Duration, Instant};

/// How long one interval of coalesced refusals lasts.
pub const SUPPRESS_INTERVAL: Duration = Duration::from_secs(1);

/// The refusals of one plugin (all its instances share it, through the gate).
#[derive(Debug)]
pub struct Coalescer {
    interval: Duration,
    /// When the current interval started (at its recorded refusal).
    window: Option<Instant>,
    /// Refusals counted and not yet reported.
    suppressed: u64,
}

impl Coalescer {
    /// No refusal yet.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            window: None,
            suppressed: 0,
        }
    }

    /// One rate-limited refusal at `now`: `true` if it opens an interval (record it in full),
    /// `false` if it was counted instead.
    pub fn refuse(&mut self, now: Instant) -> bool {
        match self.window {
            Some(start) if now.saturating_duration_since(start) < self.interval => {
                self.suppressed += 1;
                false
            }
            _ => {
                // A count left from an earlier interval stays: it is reported with this one's.
                self.window = Some(now);
                true
            }
        }
    }

    /// The count to report now: every refusal counted so far, once the interval they were
    /// counted in has ended, or at once when `force` is set (the session is ending).
    pub fn take(&mut self, now: Instant, force: bool) -> Option<u64> {
        if self.suppressed == 0 {
            return None;
        }
        let ended = self
            .window
            .is_none_or(|start| now.saturating_duration_since(start) >= self.interval);
        (ended || force).then(|| std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_recorded_refusal_per_interval_and_every_other_counted_once() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut c = Coalescer::new(Duration::from_secs(1));
        assert!(c.refuse(t0));
        assert!((0..99).all(|i| !c.refuse(ms(i * 10))));
        assert_eq!(c.take(ms(999), false), None, "the interval has not ended");
        assert_eq!(c.take(ms(1000), false), Some(99));
        assert_eq!(c.take(ms(1001), true), None, "counted once");
        assert!(
            c.refuse(ms(1500)),
            "a new interval opens with a recorded refusal"
        );
        assert!(!c.refuse(ms(1600)));
        assert_eq!(
            c.take(ms(1700), true),
            Some(1),
            "a session end reports at once"
        );
    }

    #[test]
    fn a_count_not_yet_taken_carries_into_the_next_interval() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Duration::from_secs(1));
        assert!(c.refuse(t0));
        assert!(!c.refuse(t0));
        assert!(c.refuse(t0 + Duration::from_secs(2)));
        assert!(!c.refuse(t0 + Duration::from_secs(2)));
        assert_eq!(c.take(t0 + Duration::from_secs(3), false), Some(2));
    }
}
