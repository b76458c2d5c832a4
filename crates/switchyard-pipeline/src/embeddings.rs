//! The embeddings operation: authenticate → admit → route → finish.

use switchyard_core::{EmbeddingRequest, EmbeddingResponse, Usage};
use switchyard_governance::Operation;

use crate::stages::authenticate::CallKind;
use crate::stages::{admit, authenticate, finish};
use crate::{Answer, Call, Pipeline, PipelineError};

impl Pipeline {
    /// Vectors for the request's inputs.
    pub async fn embed(
        &self,
        mut call: Call,
        request: EmbeddingRequest,
    ) -> Result<Answer<EmbeddingResponse>, PipelineError> {
        let snapshot = self.snapshot();
        let characters: usize = request.inputs.iter().map(String::len).sum();
        let kind = CallKind {
            model: &request.model,
            operation: Operation::Embeddings,
            stream: false,
            estimated_tokens: admit::estimate_text(characters),
        };
        let (caller, facts) =
            authenticate::authenticate(&self.governance, &snapshot, &mut call, kind).await?;
        let admission = admit::admit(&self.governance, &snapshot, &caller, facts).await?;
        let rate_limits = admission.rate_headers().pairs();
        let routed = match snapshot.gateway.embed(request, &call.context).await {
            Ok(routed) => routed,
            Err(error) => return Err(finish::fail(admission, error.into(), &call.context)),
        };
        let usage = Usage::new(routed.value.prompt_tokens, 0);
        admission.finish(finish::served(&routed, Some(&usage), &call.context));
        Ok(Answer {
            routed,
            rate_limits,
            grounded: None,
        })
    }
}
