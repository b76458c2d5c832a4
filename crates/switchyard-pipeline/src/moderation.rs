//! The moderation operation: the guardrail policies' input checks run over
//! texts without generating anything, so applications can check content
//! the way a chat request would be checked (judges and topic checks
//! included, asked through the snapshot's gateway).

use switchyard_governance::Caller;
use switchyard_guardrails::Flag;
use switchyard_orchestration::RequestContext;

use crate::models::RequestModels;
use crate::{Pipeline, Snapshot};

impl Pipeline {
    /// What the input checks that apply to `model` (the defaults, plus
    /// those attached to it when it names a model or route, plus the
    /// caller's tenant's and key's) find in each text, under `snapshot`:
    /// the one `caller` was authenticated with.
    pub async fn moderate(
        &self,
        snapshot: &Snapshot,
        caller: &Caller,
        model: Option<&str>,
        texts: &[String],
    ) -> Vec<Vec<Flag>> {
        let named = match caller {
            Caller::Key(key) => Some(key.tenant.guardrails.iter().chain(&key.key.guardrails)),
            Caller::Anonymous | Caller::Master => None,
        };
        let applied = snapshot
            .guardrails
            .for_call(model.unwrap_or(""), named.into_iter().flatten());
        // The judges' calls are the caller's: its tenant's cache namespace.
        let context = RequestContext {
            caller: caller
                .tenant_id()
                .map_or_else(|| "moderation".to_owned(), |t| format!("tenant:{t}")),
            tenant: caller.tenant_id().map(str::to_owned),
            ..RequestContext::default()
        };
        let models = RequestModels {
            gateway: &snapshot.gateway,
            context: &context,
            purpose: "moderation judge",
        };
        futures::future::join_all(
            texts
                .iter()
                .map(|text| applied.moderate_with_models(text, &models)),
        )
        .await
    }
}
