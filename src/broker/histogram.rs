//! A fixed-bucket latency histogram that any thread records into with a few relaxed atomic
//! adds (no lock), for the Prometheus exposition of call durations (`engine::metrics`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, microseconds; a last `+Inf` bucket is implied. From 50 µs (a
/// warm call's round trip is about 15-30 µs here) to 10 s (past the longest call timeout).
pub const BUCKETS_US: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 10_000_000,
];

/// Live counts: per bucket (not cumulative), plus the `+Inf` overflow, the sum and the count.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS_US.len()],
    over: AtomicU64,
    sum_us: AtomicU64,
    count: AtomicU64,
}

/// A point-in-time copy, cumulative as Prometheus wants it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// `(le in microseconds, observations at or below it)`, one per [`BUCKETS_US`] bound.
    pub buckets: Vec<(u64, u64)>,
    /// Observations in all (the `+Inf` bucket).
    pub count: u64,
    /// The sum of the observations, microseconds.
    pub sum_us: u64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        match BUCKETS_US.iter().position(|&le| us <= le) {
            Some(i) => self.buckets[i].fetch_add(1, Ordering::Relaxed),
            None => self.over.fetch_add(1, Ordering::Relaxed),
        };
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now. Read without a lock, so a snapshot taken while calls finish may count
    /// a call in `count` and not yet in its bucket; every count only grows.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0;
        let buckets = BUCKETS_US
            .iter()
            .zip(&self.buckets)
            .map(|(&le, n)| {
                running += n.load(Ordering::Relaxed);
                (le, running)
            })
            .collect();
        let count =
            (running + self.over.load(Ordering::Relaxed)).max(self.count.load(Ordering::Relaxed));
        HistogramSnapshot {
            buckets,
            count,
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_the_overflow_counts_only_in_count() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(10));
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_micros(51));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.buckets[0], (50, 2));
        assert_eq!(s.buckets[1], (100, 3));
        assert_eq!(s.buckets.last(), Some(&(10_000_000, 3)));
        assert_eq!(s.count, 4);
        assert_eq!(s.sum_us, 10 + 50 + 51 + 60_000_000);
    }
}
