//! Retrieval's and the guardrail judges' view of the models: the gateway,
//! behind the traits those crates call (so that they do not depend on
//! routing, and the gateway builds without them).

use std::sync::Arc;

use futures::future::BoxFuture;
use switchyard_core::{BackendError, ChatRequest, Completer, Decision, EmbeddingRequest};
use switchyard_orchestration::{Gateway, RequestContext};
use switchyard_retrieval::grounding::GroundingModels;
use switchyard_retrieval::{Embedder, RetrievalError};

/// One request's gateway and context, as grounding's models: the query
/// embedding and the rewrite are routed, retried and traced as parts of
/// that request.
pub struct RequestModels<'a> {
    /// The gateway of the request's snapshot.
    pub gateway: &'a Gateway,
    /// The request's routing context; each call is noted in its trail
    /// (and so billed with the request).
    pub context: &'a RequestContext,
    /// What the calls are for, in the trail.
    pub purpose: &'static str,
}

impl GroundingModels for RequestModels<'_> {
    fn embed_one<'a>(
        &'a self,
        model: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, Result<Vec<f32>, BackendError>> {
        Box::pin(async move {
            let vectors = embed(self.gateway, model, vec![text.to_owned()], self.context).await?;
            vectors
                .into_iter()
                .next()
                .ok_or_else(|| BackendError::internal("the embeddings model returned no vector"))
        })
    }
}

/// Grounding's query rewrite and the guardrail judges.
impl Completer for RequestModels<'_> {
    fn complete(&self, request: ChatRequest) -> BoxFuture<'_, Result<String, BackendError>> {
        Box::pin(async move {
            let started = std::time::Instant::now();
            let routed = self.gateway.chat(request, self.context).await?;
            if routed.cache != switchyard_orchestration::CacheStatus::Hit
                && routed.cache != switchyard_orchestration::CacheStatus::SemanticHit
            {
                self.context.trail.note(Decision::Call {
                    purpose: self.purpose,
                    deployment: routed.deployment.clone(),
                    input_tokens: u64::from(routed.value.usage.prompt_tokens),
                    output_tokens: u64::from(routed.value.usage.completion_tokens),
                    latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                });
            }
            Ok(routed.value.content)
        })
    }

    fn embed<'a>(
        &'a self,
        model: &'a str,
        inputs: Vec<String>,
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, BackendError>> {
        Box::pin(embed(self.gateway, model, inputs, self.context))
    }
}

async fn embed(
    gateway: &Gateway,
    model: &str,
    inputs: Vec<String>,
    context: &RequestContext,
) -> Result<Vec<Vec<f32>>, BackendError> {
    let request = EmbeddingRequest {
        model: model.to_owned(),
        inputs,
        dimensions: None,
        user: None,
    };
    let routed = gateway.embed(request, context).await?;
    Ok(routed.value.embeddings)
}

/// Where ingestion finds the gateway to embed through: the one in force
/// when each batch is embedded (jobs outlive reloads).
pub type CurrentGateway = Arc<dyn Fn() -> Arc<Gateway> + Send + Sync>;

/// Embeds ingested chunks through the current gateway's embeddings model.
pub struct GatewayEmbedder {
    gateway: CurrentGateway,
    model: String,
}

impl GatewayEmbedder {
    /// Embeds with `model` on whatever gateway `gateway` returns at the time.
    pub fn new(gateway: CurrentGateway, model: String) -> Self {
        Self { gateway, model }
    }
}

impl Embedder for GatewayEmbedder {
    fn embed(&self, texts: Vec<String>) -> BoxFuture<'_, Result<Vec<Vec<f32>>, RetrievalError>> {
        Box::pin(async move {
            let gateway = (self.gateway)();
            embed(&gateway, &self.model, texts, &RequestContext::default())
                .await
                .map_err(RetrievalError::Embedding)
        })
    }
}
