//! Embeddings: the canonical request and answer, and the backend trait.

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::backend::BackendInfo;
use crate::error::BackendError;

/// Texts to embed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingRequest {
    /// The model name the client asked for.
    pub model: String,
    /// The texts, embedded independently.
    pub inputs: Vec<String>,
    /// Output size, for models that can shorten their vectors.
    pub dimensions: Option<u32>,
    /// An opaque end-user identifier.
    pub user: Option<String>,
}

/// One vector per input, in input order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingResponse {
    /// The model that produced them, as the backend names it.
    pub model: String,
    /// The vectors.
    pub embeddings: Vec<Vec<f32>>,
    /// Tokens read.
    pub prompt_tokens: u32,
}

/// A backend that turns texts into vectors.
pub trait EmbeddingBackend: Send + Sync + 'static {
    /// Describes the backend.
    fn info(&self) -> BackendInfo;

    /// Whether the backend can take requests now.
    fn is_ready(&self) -> bool {
        true
    }

    /// Whether the backend times its own waits on the network (see
    /// `ChatBackend::times_network_waits`).
    fn times_network_waits(&self) -> bool {
        false
    }

    /// Embeds every input.
    fn embed(
        &self,
        request: EmbeddingRequest,
    ) -> BoxFuture<'_, Result<EmbeddingResponse, BackendError>>;
}
