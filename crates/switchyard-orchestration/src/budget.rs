//! A retry budget: retries may be at most a share of recent requests (plus
//! a small floor per second), so that in an outage retries never multiply
//! the load on an upstream that is already failing.
//!
//! Counts live in ten one-second buckets; each bucket is reused when its
//! second comes round again. Written by hand: it is two atomic counters per
//! bucket, and no well-kept crate offers this policy.

use std::sync::atomic::{AtomicU64, Ordering};
// tokio's clock: tests pause and advance it.
use tokio::time::Instant;

const BUCKETS: usize = 10;

#[derive(Debug, Default)]
struct Bucket {
    /// Which second this bucket holds counts for.
    second: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

/// The shared budget.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    min_per_sec: u64,
    started: Instant,
    buckets: [Bucket; BUCKETS],
}

impl RetryBudget {
    /// Retries may be `ratio` of requests over ten seconds, and at least
    /// `min_per_sec` per second.
    pub fn new(ratio: f64, min_per_sec: u32) -> Self {
        Self {
            ratio,
            min_per_sec: u64::from(min_per_sec),
            started: Instant::now(),
            buckets: Default::default(),
        }
    }

    fn bucket(&self) -> &Bucket {
        let second = self.started.elapsed().as_secs() + 1;
        let bucket = &self.buckets[(second as usize) % BUCKETS];
        let held = bucket.second.load(Ordering::Acquire);
        if held != second
            && bucket
                .second
                .compare_exchange(held, second, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            bucket.requests.store(0, Ordering::Release);
            bucket.retries.store(0, Ordering::Release);
        }
        bucket
    }

    fn totals(&self) -> (u64, u64) {
        let now = self.started.elapsed().as_secs() + 1;
        self.buckets
            .iter()
            .filter(|b| now.saturating_sub(b.second.load(Ordering::Acquire)) < BUCKETS as u64)
            .fold((0, 0), |(requests, retries), b| {
                (
                    requests + b.requests.load(Ordering::Relaxed),
                    retries + b.retries.load(Ordering::Relaxed),
                )
            })
    }

    /// Counts one request.
    pub fn record_request(&self) {
        self.bucket().requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget, if there is one left.
    pub fn try_retry(&self) -> bool {
        let (requests, retries) = self.totals();
        let allowed = (requests as f64 * self.ratio) as u64 + self.min_per_sec * BUCKETS as u64;
        if retries >= allowed {
            return false;
        }
        self.bucket().retries.fetch_add(1, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_capped_by_the_share_of_requests() {
        let budget = RetryBudget::new(0.2, 0);
        for _ in 0..100 {
            budget.record_request();
        }
        let granted = (0..100).filter(|_| budget.try_retry()).count();
        assert_eq!(granted, 20);
    }

    #[test]
    fn the_floor_allows_retries_at_low_traffic() {
        let budget = RetryBudget::new(0.0, 1);
        let granted = (0..100).filter(|_| budget.try_retry()).count();
        assert_eq!(granted, 10);
    }
}
