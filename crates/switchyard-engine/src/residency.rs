//! Which local models are in memory: a budget shared by every model of a
//! process, least recently used idle models unloaded to make room.
//!
//! A model reserves its estimated footprint before its weights are read and
//! gives it back when its engine thread has ended (its weights unmapped and
//! its KV cache freed), so the sum of reservations bounds what local models
//! hold at any instant, including models still finishing their last
//! requests after being told to unload.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::info;

/// Why a model left memory, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnloadReason {
    /// Idle for its `keep_alive`.
    Idle,
    /// Another model needed the room.
    Memory,
    /// An operator asked.
    Admin,
}

impl UnloadReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Memory => "memory",
            Self::Admin => "admin",
        }
    }
}

/// What the budget needs to know of a loaded model to choose one to unload.
pub(crate) trait Evictable: Send + Sync {
    /// Unloads the model if it is loaded and serving nobody; says whether
    /// it did.
    fn unload_if_idle(&self, reason: UnloadReason) -> bool;
    /// The model's name, for logs.
    fn name(&self) -> &str;
}

/// Why a model could not get memory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReserveError {
    /// The model alone is larger than the whole budget.
    #[error(
        "the model needs about {needed} bytes, more than the whole `max_memory` budget of local models ({budget} bytes)"
    )]
    TooLarge {
        /// Its estimated footprint.
        needed: u64,
        /// The budget.
        budget: u64,
    },
    /// Every other loaded model stayed busy for the whole wait.
    #[error(
        "local models are using {used} of {budget} bytes and none became idle within {waited:?}; this model needs about {needed} bytes"
    )]
    Busy {
        /// Its estimated footprint.
        needed: u64,
        /// What loaded models hold.
        used: u64,
        /// The budget.
        budget: u64,
        /// How long the request waited.
        waited: Duration,
    },
}

struct Holder {
    bytes: u64,
    /// The model, while it may be asked to unload (a model still loading,
    /// or one already told to unload, is not asked again).
    model: Option<Weak<dyn Evictable>>,
    /// Last time the model answered (or started to load), for LRU order.
    last_used: tokio::time::Instant,
}

#[derive(Default)]
struct Ledger {
    max: Option<u64>,
    next_id: u64,
    holders: BTreeMap<u64, Holder>,
}

impl Ledger {
    fn used(&self) -> u64 {
        self.holders.values().map(|h| h.bytes).sum()
    }
}

struct Inner {
    ledger: Mutex<Ledger>,
    /// Woken when memory is given back or a model becomes idle.
    changed: Notify,
}

/// The memory budget every local chat model of a process shares.
/// Cloning gives another handle to the same budget.
#[derive(Clone)]
pub struct MemoryBudget {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBudget")
            .field("max", &self.max())
            .field("used", &self.used())
            .finish()
    }
}

impl Default for MemoryBudget {
    fn default() -> Self {
        Self::new(None)
    }
}

impl MemoryBudget {
    /// A budget of `max` bytes; `None` holds any number of models.
    pub fn new(max: Option<u64>) -> Self {
        Self {
            inner: Arc::new(Inner {
                ledger: Mutex::new(Ledger {
                    max,
                    ..Ledger::default()
                }),
                changed: Notify::new(),
            }),
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // The ledger is a plain table whose every update is one statement:
        // a panic elsewhere cannot leave it half written.
        self.inner
            .ledger
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The budget in bytes, if any.
    pub fn max(&self) -> Option<u64> {
        self.ledger().max
    }

    /// Changes the budget (a configuration reload). Models already loaded
    /// stay until something needs their room.
    pub fn set_max(&self, max: Option<u64>) {
        self.ledger().max = max;
        self.inner.changed.notify_waiters();
    }

    /// Bytes that loaded (and unloading) models hold.
    pub fn used(&self) -> u64 {
        self.ledger().used()
    }

    /// Reserves `bytes` for `model`, unloading least recently used idle
    /// models as needed, and waiting up to `wait` for busy ones to become
    /// idle or unloading ones to finish.
    pub(crate) async fn reserve(
        &self,
        model: Weak<dyn Evictable>,
        bytes: u64,
        wait: Duration,
    ) -> Result<Reservation, ReserveError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            // Registered before the ledger is read, so a release between
            // the check and the wait is not missed.
            changed.as_mut().enable();
            let victims = {
                let mut ledger = self.ledger();
                let used = ledger.used();
                let Some(max) = ledger.max else {
                    return Ok(self.hold(&mut ledger, model, bytes));
                };
                if bytes > max {
                    return Err(ReserveError::TooLarge {
                        needed: bytes,
                        budget: max,
                    });
                }
                if used + bytes <= max {
                    return Ok(self.hold(&mut ledger, model, bytes));
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(ReserveError::Busy {
                        needed: bytes,
                        used,
                        budget: max,
                        waited: wait,
                    });
                }
                // Least recently used first, enough to make room.
                let mut candidates: Vec<(tokio::time::Instant, u64, u64)> = ledger
                    .holders
                    .iter()
                    .filter(|(_, h)| h.model.is_some())
                    .map(|(id, h)| (h.last_used, *id, h.bytes))
                    .collect();
                candidates.sort();
                let mut victims = Vec::new();
                let mut freed = 0;
                for (_, id, held) in candidates {
                    if used - freed + bytes <= max {
                        break;
                    }
                    if let Some(holder) = ledger.holders.get(&id)
                        && let Some(model) = holder.model.as_ref().and_then(Weak::upgrade)
                    {
                        victims.push((id, held, model));
                        freed += held;
                    }
                }
                victims
            };
            // Unloading takes each model's own lock: done outside the ledger's.
            for (id, _, victim) in victims {
                if victim.unload_if_idle(UnloadReason::Memory) {
                    info!(
                        model = victim.name(),
                        "unloading to make room for another model"
                    );
                    if let Some(holder) = self.ledger().holders.get_mut(&id) {
                        holder.model = None;
                    }
                }
            }
            let _ = tokio::time::timeout_at(deadline, changed).await;
        }
    }

    fn hold(&self, ledger: &mut Ledger, model: Weak<dyn Evictable>, bytes: u64) -> Reservation {
        let id = ledger.next_id;
        ledger.next_id += 1;
        ledger.holders.insert(
            id,
            Holder {
                bytes,
                // A loading model is not asked to unload until it is ready.
                model: None,
                last_used: tokio::time::Instant::now(),
            },
        );
        Reservation {
            budget: self.clone(),
            id,
            model,
        }
    }

    /// Wakes reservations waiting for room: a model became idle.
    pub(crate) fn idle_now(&self) {
        self.inner.changed.notify_waiters();
    }
}

/// Memory held for one load of a model, given back when dropped (when its
/// engine thread ends).
pub(crate) struct Reservation {
    budget: MemoryBudget,
    id: u64,
    model: Weak<dyn Evictable>,
}

impl Reservation {
    /// The model is loaded: from now on it may be asked to unload.
    pub(crate) fn evictable(&self) {
        if let Some(holder) = self.budget.ledger().holders.get_mut(&self.id) {
            holder.model = Some(self.model.clone());
        }
    }

    /// The model is being unloaded: nobody should ask it again.
    pub(crate) fn unloading(&self) {
        if let Some(holder) = self.budget.ledger().holders.get_mut(&self.id) {
            holder.model = None;
        }
    }

    /// The bytes held.
    pub(crate) fn bytes(&self) -> u64 {
        self.budget
            .ledger()
            .holders
            .get(&self.id)
            .map_or(0, |holder| holder.bytes)
    }

    /// The model answered: it moves to the back of the eviction order.
    pub(crate) fn touch(&self) {
        if let Some(holder) = self.budget.ledger().holders.get_mut(&self.id) {
            holder.last_used = tokio::time::Instant::now();
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.ledger().holders.remove(&self.id);
        self.budget.inner.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// A model that unloads when asked unless busy; the reservation is
    /// dropped when it does, as the engine thread's end would.
    struct Fake {
        name: String,
        busy: AtomicBool,
        unloaded: AtomicBool,
        reservation: Mutex<Option<Reservation>>,
    }

    impl Evictable for Fake {
        fn unload_if_idle(&self, _reason: UnloadReason) -> bool {
            if self.busy.load(Ordering::SeqCst) {
                return false;
            }
            self.unloaded.store(true, Ordering::SeqCst);
            self.reservation.lock().unwrap().take();
            true
        }
        fn name(&self) -> &str {
            &self.name
        }
    }

    fn fake(name: &str) -> Arc<Fake> {
        Arc::new(Fake {
            name: name.into(),
            busy: AtomicBool::new(false),
            unloaded: AtomicBool::new(false),
            reservation: Mutex::new(None),
        })
    }

    async fn load(
        budget: &MemoryBudget,
        model: &Arc<Fake>,
        bytes: u64,
    ) -> Result<(), ReserveError> {
        let weak: Weak<dyn Evictable> = Arc::downgrade(&(model.clone() as Arc<dyn Evictable>));
        let reservation = budget.reserve(weak, bytes, Duration::from_secs(5)).await?;
        reservation.evictable();
        *model.reservation.lock().unwrap() = Some(reservation);
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn the_least_recently_used_idle_model_makes_room() {
        let budget = MemoryBudget::new(Some(100));
        let (a, b, c) = (fake("a"), fake("b"), fake("c"));
        load(&budget, &a, 40).await.unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        load(&budget, &b, 40).await.unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        // `a` was used after `b`: `b` is the one to go.
        a.reservation.lock().unwrap().as_ref().unwrap().touch();
        load(&budget, &c, 40).await.unwrap();
        assert!(b.unloaded.load(Ordering::SeqCst));
        assert!(!a.unloaded.load(Ordering::SeqCst));
        assert_eq!(budget.used(), 80);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_model_is_waited_for_then_unloaded() {
        let budget = MemoryBudget::new(Some(50));
        let (a, b) = (fake("a"), fake("b"));
        load(&budget, &a, 40).await.unwrap();
        a.busy.store(true, Ordering::SeqCst);
        let loading = {
            let budget = budget.clone();
            let b = b.clone();
            tokio::spawn(async move { load(&budget, &b, 40).await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!loading.is_finished());
        a.busy.store(false, Ordering::SeqCst);
        budget.idle_now();
        loading.await.unwrap().unwrap();
        assert!(a.unloaded.load(Ordering::SeqCst));
        assert_eq!(budget.used(), 40);
    }

    #[tokio::test(start_paused = true)]
    async fn a_model_that_stays_busy_is_a_bounded_wait_and_too_large_is_refused_at_once() {
        let budget = MemoryBudget::new(Some(50));
        let (a, b) = (fake("a"), fake("b"));
        load(&budget, &a, 40).await.unwrap();
        a.busy.store(true, Ordering::SeqCst);
        let error = load(&budget, &b, 40).await.unwrap_err();
        assert!(
            matches!(error, ReserveError::Busy { used: 40, .. }),
            "{error}"
        );
        let error = load(&budget, &b, 60).await.unwrap_err();
        assert_eq!(
            error,
            ReserveError::TooLarge {
                needed: 60,
                budget: 50
            }
        );
    }

    #[tokio::test]
    async fn without_a_budget_every_model_fits() {
        let budget = MemoryBudget::new(None);
        let (a, b) = (fake("a"), fake("b"));
        load(&budget, &a, u64::MAX / 4).await.unwrap();
        load(&budget, &b, u64::MAX / 4).await.unwrap();
        assert!(!a.unloaded.load(Ordering::SeqCst));
    }
}
