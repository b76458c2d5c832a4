//! A deployment: one configured model (a backend plus its price) with the
//! live statistics routing decides on: requests in flight, a latency EWMA,
//! and its circuit breaker.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::route::Price;
use switchyard_core::{ChatBackend, EmbeddingBackend};

use switchyard_telemetry::Operation;

use crate::breaker::{Breaker, BreakerSettings};
use crate::observe::Target;

/// Weight of a new latency sample in the moving average.
const EWMA_ALPHA: f64 = 0.2;

/// One model that routes can send requests to.
pub struct Deployment {
    /// The model's name in `[models]`.
    pub name: String,
    /// What serves chat completions.
    pub chat: Option<Arc<dyn ChatBackend>>,
    /// What serves embeddings.
    pub embeddings: Option<Arc<dyn EmbeddingBackend>>,
    /// Its price, for cost-based routing.
    pub pricing: Option<Price>,
    inflight: AtomicU32,
    /// Latency EWMA in microseconds, as f64 bits; 0 until measured.
    latency_ewma_us: AtomicU64,
    breaker: Breaker,
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment")
            .field("name", &self.name)
            .field("inflight", &self.inflight())
            .field("latency_us", &self.latency_us())
            .finish()
    }
}

/// Counts a request in flight for as long as it lives.
pub(crate) struct InflightGuard(Arc<Deployment>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Deployment {
    /// A deployment with fresh statistics.
    pub fn new(
        name: impl Into<String>,
        chat: Option<Arc<dyn ChatBackend>>,
        embeddings: Option<Arc<dyn EmbeddingBackend>>,
        pricing: Option<Price>,
        breaker: BreakerSettings,
    ) -> Self {
        Self {
            name: name.into(),
            chat,
            embeddings,
            pricing,
            inflight: AtomicU32::new(0),
            latency_ewma_us: AtomicU64::new(0f64.to_bits()),
            breaker: Breaker::new(breaker),
        }
    }

    /// Requests in flight now.
    pub fn inflight(&self) -> u32 {
        self.inflight.load(Ordering::Relaxed)
    }

    /// The latency EWMA (0 until the first answer).
    pub fn latency_us(&self) -> f64 {
        f64::from_bits(self.latency_ewma_us.load(Ordering::Relaxed))
    }

    /// Its circuit breaker.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Whether it can serve now (local models loaded, and so on).
    pub fn is_ready(&self) -> bool {
        self.chat.as_ref().is_none_or(|b| b.is_ready())
            && self.embeddings.as_ref().is_none_or(|b| b.is_ready())
    }

    /// Whether its backend for `operation` times its own network waits.
    pub(crate) fn times_network_waits(&self, operation: Operation) -> bool {
        match operation {
            Operation::Chat => self.chat.as_ref().is_some_and(|c| c.times_network_waits()),
            Operation::Embeddings => self
                .embeddings
                .as_ref()
                .is_some_and(|e| e.times_network_waits()),
        }
    }

    /// Who an attempt of `operation` on it goes to, for spans and metrics.
    pub(crate) fn target(&self, operation: Operation) -> Target {
        let info = match operation {
            Operation::Chat => self.chat.as_ref().map(|c| c.info()),
            Operation::Embeddings => self.embeddings.as_ref().map(|e| e.info()),
        };
        let (backend_kind, upstream_model) =
            info.map_or(("other", String::new()), |i| (i.kind, i.upstream_model));
        Target {
            operation,
            backend_kind,
            deployment: self.name.clone(),
            upstream_model,
        }
    }

    pub(crate) fn start(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        InflightGuard(self.clone())
    }

    /// Folds a latency sample into the average. Concurrent updates may lose
    /// a sample, which an average shrugs off.
    pub(crate) fn observe_latency(&self, latency: Duration) {
        let sample = latency.as_secs_f64() * 1e6;
        let old = self.latency_us();
        let new = if old == 0.0 {
            sample
        } else {
            old + EWMA_ALPHA * (sample - old)
        };
        self.latency_ewma_us.store(new.to_bits(), Ordering::Relaxed);
    }

    /// Load-aware latency for least-latency routing (peak-EWMA style):
    /// a deployment with requests queued is slower than its average says.
    pub(crate) fn latency_score(&self) -> f64 {
        self.latency_us() * f64::from(self.inflight() + 1)
    }

    /// Price per million prompt plus completion tokens; unpriced sorts last.
    pub(crate) fn price(&self) -> f64 {
        self.pricing.map_or(f64::INFINITY, |p| p.input + p.output)
    }
}
