//! Spend that could not reach the shared totals.
//!
//! A request admitted before Redis went away may finish while it is gone:
//! its cost cannot be added then, and the totals, if Redis comes back
//! with them, would be short of it for the rest of the budget period. So
//! the cost is owed and paid with the next spend read or write. A total
//! that Redis lost meanwhile (restarted empty) is seeded again from the
//! ledger, which holds the request; the debt is then dropped, not paid
//! twice. "Seeded again" is told by the seed's time, which Redis keeps
//! beside the total: another instance may have seeded it before this one
//! settles. (A debt whose ledger row had not reached the database when
//! another instance seeded is dropped too: the total is then short of
//! it, which errs towards a budget's overshoot, not a false refusal.)
//!
//! One case stays approximate: an add that Redis applied but whose reply
//! was lost (a timeout after the command ran) is owed and paid again.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use switchyard_state::counters::SpendTotals;
use tracing::{info, warn};

use crate::now_ms;

/// A cost that could not be added to one spend key, and when.
struct Debt {
    key: String,
    amount: f64,
    /// Unix ms.
    at: i64,
}

/// Costs per spend key, waiting to be added.
#[derive(Default)]
pub(crate) struct OwedSpend {
    /// Whether anything is owed: the common case is one load, no lock.
    any: AtomicBool,
    owed: Mutex<Vec<Debt>>,
}

impl OwedSpend {
    /// Notes that `amount` could not be added to `keys` now.
    pub(crate) fn owe(&self, keys: &[String], amount: f64) {
        let at = now_ms();
        let mut owed = self.lock();
        owed.extend(keys.iter().map(|key| Debt {
            key: key.clone(),
            amount,
            at,
        }));
        self.any.store(true, Ordering::Release);
    }

    /// Adds what is owed, keeping whatever still cannot be added. A debt
    /// is added only to a total seeded before it arose: one seeded since
    /// (Redis lost it, and this or another instance read it again from
    /// the ledger) holds it already.
    pub(crate) async fn settle(&self, totals: &dyn SpendTotals) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let debts: Vec<Debt> = {
            let mut owed = self.lock();
            self.any.store(false, Ordering::Release);
            std::mem::take(&mut *owed)
        };
        let mut unpaid = Vec::new();
        for debt in debts {
            let keys = std::slice::from_ref(&debt.key);
            match totals.add_owed(keys, debt.amount, debt.at).await {
                Ok(totals) if totals.first().is_some_and(Option::is_some) => {
                    info!(
                        key = debt.key,
                        amount = debt.amount,
                        "owed spend added to the shared totals"
                    );
                }
                // The total is gone, or was seeded since: the ledger the
                // seed is read from holds this spend.
                Ok(_) => info!(
                    key = debt.key,
                    amount = debt.amount,
                    "owed spend dropped: the ledger already holds it"
                ),
                Err(error) => {
                    warn!(%error, key = debt.key, "owed spend still cannot be added");
                    unpaid.push(debt);
                }
            }
        }
        if !unpaid.is_empty() {
            self.lock().extend(unpaid);
            self.any.store(true, Ordering::Release);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Debt>> {
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
        assert_eq!(totals.adds.load(Ordering::SeqCst), 2, "each debt paid once");
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
