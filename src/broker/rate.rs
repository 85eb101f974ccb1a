//! A token bucket: `rate` calls per second sustained, `burst` above it.

use std::time::Instant;

/// Token bucket state.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_second: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate_per_second),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: Instant::now(),
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn allows_the_burst_then_the_rate() {
        let start = Instant::now();
        let mut b = TokenBucket::new(10, 5);
        let taken = (0..20).filter(|_| b.try_take(start)).count();
        assert_eq!(taken, 5);
        assert!(b.try_take(start + Duration::from_millis(100)));
        assert!(!b.try_take(start + Duration::from_millis(100)));
    }
}
