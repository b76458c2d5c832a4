//! A circuit breaker per deployment, shared by every request.
//!
//! Closed, it counts consecutive failures and the failure ratio over the
//! last outcomes; past either threshold it opens and refuses traffic for a
//! while; then one probe request is let through (half-open): success closes
//! it, failure opens it again. Written by hand: the state machine is small,
//! and it must hand out probe permits that release themselves when a
//! request is cancelled, which general-purpose crates do not model.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

// tokio's clock, which tests can pause and advance instead of sleeping;
// outside a paused test runtime it is the system's monotonic clock.
use tokio::time::Instant;

/// Thresholds of a breaker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSettings {
    /// Consecutive failures that open it.
    pub failures: u32,
    /// Failure ratio over `window` outcomes that opens it.
    pub error_rate: f64,
    /// Outcomes the ratio looks at.
    pub window: u32,
    /// How long it stays open before a probe.
    pub open_for: Duration,
}

/// What a breaker is doing, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Traffic flows.
    Closed,
    /// Traffic is refused.
    Open,
    /// One probe is allowed.
    HalfOpen,
}

#[derive(Debug)]
enum State {
    Closed {
        consecutive: u32,
        outcomes: VecDeque<bool>,
    },
    Open {
        until: Instant,
    },
    HalfOpen {
        probing: bool,
    },
}

/// A circuit breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    state: Arc<Mutex<State>>,
    settings: BreakerSettings,
}

/// Permission to send one request. Report how it went with
/// [`Permit::success`] or [`Permit::failure`]; a permit dropped without a
/// report (the caller went away) frees its probe slot without judging.
#[derive(Debug)]
pub struct Permit {
    breaker: Breaker,
    probe: bool,
    reported: bool,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(settings: BreakerSettings) -> Self {
        Self {
            state: Arc::new(Mutex::new(State::Closed {
                consecutive: 0,
                outcomes: VecDeque::new(),
            })),
            settings,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the state is still
        // a valid state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        match &*self.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if Instant::now() < *until => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// How long until an open breaker lets a probe through.
    pub fn retry_in(&self) -> Option<Duration> {
        match &*self.lock() {
            State::Open { until } => Some(until.saturating_duration_since(Instant::now())),
            _ => None,
        }
    }

    /// Asks to send a request.
    pub fn try_acquire(&self) -> Option<Permit> {
        let mut state = self.lock();
        let probe = match &mut *state {
            State::Closed { .. } => false,
            State::Open { until } => {
                if Instant::now() < *until {
                    return None;
                }
                *state = State::HalfOpen { probing: true };
                true
            }
            State::HalfOpen { probing } => {
                if *probing {
                    return None;
                }
                *probing = true;
                true
            }
        };
        Some(Permit {
            breaker: self.clone(),
            probe,
            reported: false,
        })
    }

    fn record(&self, success: bool) {
        let settings = self.settings;
        let mut state = self.lock();
        let next = match &mut *state {
            State::Closed {
                consecutive,
                outcomes,
            } => {
                outcomes.push_back(success);
                while outcomes.len() > settings.window as usize {
                    outcomes.pop_front();
                }
                if success {
                    *consecutive = 0;
                    None
                } else {
                    *consecutive += 1;
                    let failures = outcomes.iter().filter(|ok| !**ok).count();
                    let full = outcomes.len() >= settings.window as usize;
                    let rate = failures as f64 / outcomes.len() as f64;
                    (*consecutive >= settings.failures || (full && rate >= settings.error_rate))
                        .then(|| State::Open {
                            until: Instant::now() + settings.open_for,
                        })
                }
            }
            // A late report from before the breaker opened changes nothing.
            State::Open { .. } => None,
            State::HalfOpen { .. } => Some(if success {
                State::Closed {
                    consecutive: 0,
                    outcomes: VecDeque::new(),
                }
            } else {
                State::Open {
                    until: Instant::now() + settings.open_for,
                }
            }),
        };
        if let Some(next) = next {
            let opened = matches!(next, State::Open { .. });
            *state = next;
            drop(state);
            if opened {
                tracing::warn!("circuit breaker opened");
            } else {
                tracing::info!("circuit breaker closed");
            }
        }
    }
}

impl Permit {
    /// The request succeeded.
    pub fn success(mut self) {
        self.reported = true;
        self.breaker.record(true);
    }

    /// The request failed on the deployment's side.
    pub fn failure(mut self) {
        self.reported = true;
        self.breaker.record(false);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.probe
            && !self.reported
            && let State::HalfOpen { probing } = &mut *self.breaker.lock()
        {
            *probing = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(open_for: Duration) -> Breaker {
        Breaker::new(BreakerSettings {
            failures: 3,
            error_rate: 0.5,
            window: 10,
            open_for,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_open_then_a_probe_closes() {
        let b = breaker(Duration::from_millis(30));
        for _ in 0..3 {
            b.try_acquire().unwrap().failure();
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.try_acquire().is_none());
        tokio::time::advance(Duration::from_millis(29)).await;
        assert!(b.try_acquire().is_none(), "still open 29 ms into 30");
        tokio::time::advance(Duration::from_millis(1)).await;
        let probe = b.try_acquire().expect("a probe after the open period");
        assert!(b.try_acquire().is_none(), "only one probe at a time");
        probe.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.try_acquire().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens() {
        let b = breaker(Duration::from_millis(20));
        for _ in 0..3 {
            b.try_acquire().unwrap().failure();
        }
        tokio::time::advance(Duration::from_millis(20)).await;
        b.try_acquire().unwrap().failure();
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn error_rate_over_the_window_opens() {
        let b = breaker(Duration::from_secs(60));
        for i in 0..10 {
            let permit = b.try_acquire().unwrap();
            // Alternating, never three failures in a row: only the ratio
            // can open it, once the window is full.
            if i % 2 == 1 {
                permit.failure();
            } else {
                permit.success();
            }
        }
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_frees_its_slot() {
        let b = breaker(Duration::from_millis(10));
        for _ in 0..3 {
            b.try_acquire().unwrap().failure();
        }
        tokio::time::advance(Duration::from_millis(10)).await;
        drop(b.try_acquire().unwrap());
        assert!(b.try_acquire().is_some());
    }
}
