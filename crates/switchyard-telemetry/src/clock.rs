//! How long a request spent waiting on upstreams, so that the rest of its
//! time can be reported as the gateway's own overhead.
//!
//! Waits may overlap (a hedged request has two attempts in flight): the
//! clock counts the union of the intervals, never the same instant twice.
//! It does so by counting open waits: the clock runs while at least one is
//! open, which is exactly the length of the merged intervals.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

tokio::task_local! {
    /// The clock of the attempt being made, for the waits a backend times
    /// itself (see [`network_wait`]).
    static CURRENT: UpstreamClock;
}

/// Runs an attempt's `work` with `clock` as the one [`network_wait`]
/// counts on.
pub async fn timing<F: Future>(clock: UpstreamClock, work: F) -> F::Output {
    CURRENT.scope(clock, work).await
}

/// A wait on the network inside an attempt (sending a request and reading
/// its answer), timed on the attempt's clock; `None` outside one. Remote
/// adapters time exactly these waits, so their own encoding and decoding
/// count as the gateway's time.
pub fn network_wait() -> Option<Waiting> {
    CURRENT.try_with(UpstreamClock::waiting).ok()
}

#[derive(Debug, Default)]
struct State {
    opened: bool,
    open: u32,
    since: Option<Instant>,
    total: Duration,
}

/// A request's upstream clock. Cheap to clone; clones share the count.
#[derive(Debug, Clone, Default)]
pub struct UpstreamClock(Arc<Mutex<State>>);

/// An open wait: the clock counts until it is dropped.
#[derive(Debug)]
pub struct Waiting(UpstreamClock);

impl UpstreamClock {
    /// A clock with nothing counted.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a wait that lasts until the returned guard is dropped.
    pub fn waiting(&self) -> Waiting {
        self.open(Instant::now());
        Waiting(self.clone())
    }

    fn open(&self, at: Instant) {
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if state.open == 0 {
            state.since = Some(at);
        }
        state.open += 1;
        state.opened = true;
    }

    fn close(&self, at: Instant) {
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        state.open = state.open.saturating_sub(1);
        if state.open == 0
            && let Some(since) = state.since.take()
        {
            state.total += at.saturating_duration_since(since);
        }
    }

    /// Whether the request waited on an upstream at all.
    pub fn reached_upstream(&self) -> bool {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).opened
    }

    /// The merged length of every wait so far, including one still open;
    /// `None` when the request never reached an upstream (refused early,
    /// or answered from the cache).
    pub fn waited(&self) -> Option<Duration> {
        self.reached_upstream().then(|| self.total())
    }

    /// The merged length of every wait so far, including one still open.
    pub fn total(&self) -> Duration {
        let state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        state.total + state.since.map_or(Duration::ZERO, |since| since.elapsed())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.close(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_waits_count_once_and_gaps_not_at_all() {
        let clock = UpstreamClock::new();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // [0, 10) and [5, 20) overlap: 20 ms; then [30, 35): 5 ms.
        clock.open(t0);
        clock.open(t0 + ms(5));
        clock.close(t0 + ms(10));
        clock.close(t0 + ms(20));
        clock.open(t0 + ms(30));
        clock.close(t0 + ms(35));
        assert_eq!(clock.total(), ms(25));
    }

    #[tokio::test]
    async fn network_waits_count_only_inside_an_attempt() {
        assert!(network_wait().is_none());
        let clock = UpstreamClock::new();
        timing(clock.clone(), async {
            let _wait = network_wait();
            std::thread::sleep(Duration::from_millis(2));
        })
        .await;
        assert!(clock.reached_upstream());
        assert!(clock.total() >= Duration::from_millis(2));
    }

    #[test]
    fn a_guard_counts_until_dropped_and_clones_share_the_clock() {
        let clock = UpstreamClock::new();
        let shared = clock.clone();
        let wait = shared.waiting();
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            clock.total() >= Duration::from_millis(5),
            "an open wait counts"
        );
        drop(wait);
        let settled = clock.total();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(clock.total(), settled, "a closed clock stands still");
    }
}
