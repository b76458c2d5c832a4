//! Spend that could not reach the shared totals.
//!
//! A request admitted before Redis went away may finish while it is gone:
//! its cost cannot be added then, and the totals, if Redis comes back
//! with them, would be short of it for the rest of the budget period. So
//! the cost is owed and paid with the next spend read or write. A total
//! that Redis lost meanwhile (restarted empty) is seeded again from the
//! ledger, which holds the request; the debt is then dropped, not paid
//! twice.
//!
//! One case stays approximate: an add that Redis applied but whose reply
//! was lost (a timeout after the command ran) is owed and paid again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use switchyard_state::counters::SpendTotals;
use tracing::{info, warn};

/// Costs per spend key, waiting to be added.
#[derive(Default)]
pub(crate) struct OwedSpend {
    /// Whether anything is owed: the common case is one load, no lock.
    any: AtomicBool,
    owed: Mutex<HashMap<String, f64>>,
}

impl OwedSpend {
    /// Notes that `amount` could not be added to `keys`.
    pub(crate) fn owe(&self, keys: &[String], amount: f64) {
        let mut owed = self.lock();
        for key in keys {
            *owed.entry(key.clone()).or_default() += amount;
        }
        self.any.store(true, Ordering::Release);
    }

    /// Adds what is owed, keeping whatever still cannot be added.
    pub(crate) async fn settle(&self, totals: &dyn SpendTotals) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let debts: Vec<(String, f64)> = {
            let mut owed = self.lock();
            self.any.store(false, Ordering::Release);
            owed.drain().collect()
        };
        let mut unpaid = Vec::new();
        for (key, amount) in debts {
            match totals.add(std::slice::from_ref(&key), amount).await {
                // `None`: the total is gone and will be seeded from the
                // ledger, which holds this spend already.
                Ok(_) => info!(key, amount, "owed spend added to the shared totals"),
                Err(error) => {
                    warn!(%error, key, "owed spend still cannot be added");
                    unpaid.push((key, amount));
                }
            }
        }
        for (key, amount) in unpaid {
            self.owe(&[key], amount);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, f64>> {
        self.owed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use futures::future::BoxFuture;
    use switchyard_state::StateError;
    use switchyard_state::counters::MemorySpend;

    use super::*;

    /// Spend totals that fail while `down` is set.
    struct Flaky {
        inner: MemorySpend,
        down: AtomicBool,
        adds: AtomicUsize,
    }

    impl Flaky {
        fn check(&self) -> Result<(), StateError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(StateError::Config("redis is gone".into()));
            }
            Ok(())
        }
    }

    impl SpendTotals for Flaky {
        fn get<'a>(
            &'a self,
            keys: &'a [String],
        ) -> BoxFuture<'a, Result<Vec<Option<f64>>, StateError>> {
            Box::pin(async move {
                self.check()?;
                self.inner.get(keys).await
            })
        }
        fn seed<'a>(
            &'a self,
            key: &'a str,
            total: f64,
            ttl: Duration,
        ) -> BoxFuture<'a, Result<(), StateError>> {
            Box::pin(async move {
                self.check()?;
                self.inner.seed(key, total, ttl).await
            })
        }
        fn add<'a>(
            &'a self,
            keys: &'a [String],
            amount: f64,
        ) -> BoxFuture<'a, Result<Vec<Option<f64>>, StateError>> {
            Box::pin(async move {
                self.check()?;
                self.adds.fetch_add(1, Ordering::SeqCst);
                self.inner.add(keys, amount).await
            })
        }
    }

    #[tokio::test]
    async fn spend_owed_while_the_totals_are_unreachable_is_added_once_they_are_back() {
        let totals = Flaky {
            inner: MemorySpend::new(),
            down: AtomicBool::new(false),
            adds: AtomicUsize::new(0),
        };
        let key = "spend:key:k1:0".to_owned();
        totals
            .seed(&key, 1.0, Duration::from_secs(60))
            .await
            .unwrap();
        let owed = OwedSpend::default();

        totals.down.store(true, Ordering::SeqCst);
        owed.owe(std::slice::from_ref(&key), 0.25);
        owed.owe(std::slice::from_ref(&key), 0.5);
        owed.settle(&totals).await;
        assert_eq!(totals.adds.load(Ordering::SeqCst), 0);

        totals.down.store(false, Ordering::SeqCst);
        owed.settle(&totals).await;
        owed.settle(&totals).await;
        assert_eq!(totals.adds.load(Ordering::SeqCst), 1, "paid once");
        let now = totals.get(std::slice::from_ref(&key)).await.unwrap();
        assert_eq!(now, vec![Some(1.75)]);
    }

    #[tokio::test]
    async fn a_total_lost_meanwhile_is_not_charged_twice() {
        let totals = MemorySpend::new();
        let owed = OwedSpend::default();
        let key = "spend:key:k2:0".to_owned();
        owed.owe(std::slice::from_ref(&key), 0.3);
        owed.settle(&totals).await;
        // Nothing seeded: the ledger seeds it later, this cost included.
        assert_eq!(totals.get(&[key]).await.unwrap(), vec![None]);
        assert!(!owed.any.load(Ordering::SeqCst));
    }
}
