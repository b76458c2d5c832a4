//! Preparation: grounding a chat request in the caller's collection, when
//! it asks (the `retrieval` extension, or a model name that is an
//! assistant). Runs beside admission, after authentication (it needs the
//! tenant).

use std::sync::Arc;

use switchyard_core::ChatRequest;
use switchyard_governance::Caller;
use switchyard_orchestration::RequestContext;
use switchyard_retrieval::grounding::{Grounded, GroundingSpec, Retrieval};

use super::DEFAULT_TENANT;
use crate::models::RequestModels;
use crate::{GroundingAsk, PipelineError, Snapshot};

/// How the request is to be grounded, if it is: the extension's options,
/// else the assistant its model names (whose own model then answers, so
/// `request.model` is rewritten).
pub fn plan(
    snapshot: &Snapshot,
    ask: Option<GroundingAsk>,
    request: &mut ChatRequest,
) -> Result<Option<(Arc<Retrieval>, GroundingSpec)>, PipelineError> {
    let Some(retrieval) = snapshot.retrieval.clone() else {
        return match ask {
            Some(_) => Err(PipelineError::RetrievalUnavailable),
            None => Ok(None),
        };
    };
    if let Some(ask) = ask {
        let spec =
            retrieval.request_spec(ask.collection, ask.top_k, ask.mode.as_deref(), ask.filter)?;
        return Ok(Some((retrieval, spec)));
    }
    Ok(retrieval
        .assistant_spec(&request.model)
        .map(|(model, spec)| {
            request.model = model;
            (retrieval, spec)
        }))
}

/// Retrieves sources for `request` from `caller`'s collection and puts
/// them in its system message; returns the grounded request.
pub async fn ground(
    snapshot: &Snapshot,
    retrieval: &Retrieval,
    spec: &GroundingSpec,
    caller: &Caller,
    mut request: ChatRequest,
    context: &RequestContext,
) -> Result<(ChatRequest, Grounded), PipelineError> {
    let tenant = caller.tenant_id().unwrap_or(DEFAULT_TENANT);
    let models = RequestModels {
        gateway: &snapshot.gateway,
        context,
        purpose: "query rewrite",
    };
    let grounded = retrieval
        .ground(&models, tenant, &mut request, spec)
        .await?;
    Ok((request, grounded))
}
