//! Switchyard's request pipeline: the one path every model call takes,
//! below the front doors and above governance and orchestration.
//!
//! Each operation runs named stages in order, on one [`Snapshot`] of the
//! gateway taken when the request arrives:
//!
//! 1. [`stages::authenticate`]: who is calling (a refusal is recorded);
//! 2. [`stages::admit`]: limits and budgets, while [`stages::ground`]
//!    retrieves sources when the request asks to be grounded;
//! 3. [`stages::guard`]: the guardrail policies' input checks (block,
//!    mask, pseudonymise, flag) on what will be sent;
//! 4. [`stages::route`]: the gateway's routes, fallbacks, retries, hedges
//!    and cache, inside [`stages::tools`]' loop when the request has tools
//!    Switchyard runs itself, or [`stages::code_assistant`]'s checks and
//!    repairs when its model is a code assistant;
//! 5. [`stages::guard`] again on the answer (whole, or as it streams,
//!    through a hold-back window), then [`stages::meter`]: a streamed
//!    answer, watched as it passes;
//! 6. [`stages::finish`]: usage, cost, ledger row, audit record, metrics
//!    and the request's log line.
//!
//! The pipeline knows no HTTP: front doors hand it a [`Call`] (the
//! presented credential and what routing may read of the request) and a
//! canonical request, and get back a domain answer or a
//! [`PipelineError`], which they encode in their own API's shape.

pub mod call;
mod chat;
pub mod conversations;
mod embeddings;
pub mod error;
pub mod models;
mod moderation;
pub mod residency;
pub mod responses;
pub mod stages;

use std::sync::Arc;

use arc_swap::ArcSwap;
use switchyard_governance::{Caller, Governance, Policy};
use switchyard_guardrails::Guardrails;
use switchyard_orchestration::Gateway;
use switchyard_retrieval::grounding::Retrieval;

pub use call::{Answer, Call, Grounded, GroundingAsk};
pub use error::PipelineError;

/// Everything a configuration reload replaces, taken once per request.
pub struct Snapshot {
    /// Models, routes, strategies, cache.
    pub gateway: Arc<Gateway>,
    /// Authentication, audit settings, prices.
    pub policy: Arc<Policy>,
    /// Collections and assistants; `None` when no embeddings model is
    /// configured.
    pub retrieval: Option<Arc<Retrieval>>,
    /// Policies on what goes in to models and what comes out.
    pub guardrails: Arc<Guardrails>,
    /// How conversations longer than a model's window are fitted.
    pub fitting: Arc<stages::fit::Fitting>,
    /// What is kept of stored responses and conversations.
    pub keeping: responses::Keeping,
    /// The tools Switchyard runs for models, and the tool loop's limits.
    pub tools: Arc<switchyard_tools::Toolbox>,
    /// Model names that write code, check it in the sandbox and repair it.
    pub code_assistants: std::collections::BTreeMap<String, switchyard_config::CodeAssistantConfig>,
}

/// The request pipeline: governance (which outlives reloads: its store,
/// counters and ledger) and the snapshot in force.
pub struct Pipeline {
    governance: Arc<Governance>,
    current: ArcSwap<Snapshot>,
    /// Writes stored responses in groups; made on first use (it needs the
    /// runtime).
    responses: std::sync::OnceLock<switchyard_governance::switchyard_state::ResponseWriter>,
}

impl Pipeline {
    /// A pipeline serving `snapshot`.
    pub fn new(governance: Arc<Governance>, snapshot: Snapshot) -> Arc<Self> {
        governance.install(snapshot.policy.clone());
        Arc::new(Self {
            governance,
            current: ArcSwap::from_pointee(snapshot),
            responses: std::sync::OnceLock::new(),
        })
    }

    /// The snapshot in force. A request takes it once, at arrival, and
    /// keeps it to its end.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Puts a new snapshot in force for requests that arrive from now on;
    /// requests in flight finish on theirs.
    pub fn replace(&self, snapshot: Snapshot) {
        self.governance.install(snapshot.policy.clone());
        self.current.store(Arc::new(snapshot));
    }

    /// The governance layer (admin operations, the ledger).
    pub fn governance(&self) -> &Arc<Governance> {
        &self.governance
    }

    /// Who presents `call`'s credential, under `snapshot`'s policy, for
    /// operations that are not model calls (admin, collections).
    pub async fn caller(&self, snapshot: &Snapshot, call: &Call) -> Result<Caller, PipelineError> {
        Ok(self
            .governance
            .authenticate_under(
                &snapshot.policy,
                call.credential(),
                call.client_certificate.as_deref(),
            )
            .await?)
    }
}
