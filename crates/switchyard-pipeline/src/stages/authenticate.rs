//! Stage 1: who is calling. A refused credential is recorded (ledger row
//! and audit record, status 401) before the refusal goes back.

use std::sync::Arc;

use switchyard_governance::{Caller, Governance, Operation, RequestFacts};
use switchyard_telemetry::trace;
use tracing::Instrument;

use crate::{Call, PipelineError, Snapshot};

/// What a model call is, for admission, its metrics and its log line.
#[derive(Debug, Clone, Copy)]
pub struct CallKind<'a> {
    /// The public model (or route) name asked for.
    pub model: &'a str,
    /// Chat or embeddings.
    pub operation: Operation,
    /// Streamed.
    pub stream: bool,
    /// Tokens it is expected to use, charged until the real count is known.
    pub estimated_tokens: u64,
}

/// Authenticates `call`; ties its cache namespace and routing context to
/// the caller's tenant. Returns the caller and the facts admission needs.
pub async fn authenticate(
    governance: &Arc<Governance>,
    snapshot: &Snapshot,
    call: &mut Call,
    kind: CallKind<'_>,
) -> Result<(Caller, RequestFacts), PipelineError> {
    let facts = RequestFacts {
        request_id: call.request_id.clone(),
        model: kind.model.to_owned(),
        estimated_tokens: kind.estimated_tokens,
        trace_id: trace::current_trace_id(),
        known_model: snapshot.gateway.knows(kind.model),
        operation: kind.operation,
        stream: kind.stream,
        arrived: call.arrived,
        upstream: call.context.upstream.clone(),
        response_id: None,
    };
    let authenticated = governance
        .authenticate_under(
            &snapshot.policy,
            call.credential(),
            call.client_certificate.as_deref(),
        )
        .instrument(tracing::debug_span!("authenticate"))
        .await;
    let caller = match authenticated {
        Ok(caller) => caller,
        Err(error) => {
            governance.record_refused_authentication(snapshot.policy.clone(), facts, &error);
            return Err(error.into());
        }
    };
    if let Some(tenant) = caller.tenant_id() {
        // Tenants never share cache entries; keys of one tenant may.
        call.context.caller = format!("tenant:{tenant}");
        call.context.tenant = Some(tenant.to_owned());
    }
    let request_span = tracing::Span::current();
    trace::annotate(&request_span, || {
        [
            ("gen_ai.operation.name", kind.operation.as_str().into()),
            ("gen_ai.request.model", kind.model.to_owned().into()),
            (
                "switchyard.tenant",
                caller.tenant_id().unwrap_or("-").to_owned().into(),
            ),
        ]
    });
    Ok((caller, facts))
}
