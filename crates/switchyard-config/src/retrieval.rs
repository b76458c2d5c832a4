//! The `[retrieval]` table: collections, chunking, and the assistants that
//! answer from a collection.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Retrieval-augmented generation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrievalConfig {
    /// The embeddings model (or route) that embeds chunks and queries.
    #[serde(default = "default_embedding_model")]
    pub embedding_model: String,
    /// Most tokens in a chunk (the embedder's tokens).
    #[serde(default = "default_chunk_tokens")]
    pub chunk_tokens: usize,
    /// Tokens a chunk repeats from the one before it.
    #[serde(default = "default_chunk_overlap")]
    pub chunk_overlap: usize,
    /// Chunks a grounded answer is given, at most.
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    /// A cheap chat model that rewrites follow-up questions into standalone
    /// search queries; without one the query is formed from the recent
    /// user turns.
    #[serde(default)]
    pub rewrite_model: Option<String>,
    /// Model names that answer from a collection: `[retrieval.assistants.NAME]`.
    #[serde(default)]
    pub assistants: BTreeMap<String, AssistantConfig>,
}

impl Default for RetrievalConfig {
    fn default() -> Self {
        Self {
            embedding_model: default_embedding_model(),
            chunk_tokens: default_chunk_tokens(),
            chunk_overlap: default_chunk_overlap(),
            top_k: default_top_k(),
            rewrite_model: None,
            assistants: BTreeMap::new(),
        }
    }
}

/// A model name whose answers are grounded in a collection.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssistantConfig {
    /// The model or route that writes the answer.
    pub model: String,
    /// The collection searched (the caller's tenant's collection of this name).
    pub collection: String,
    /// Chunks given to the model, at most [default: `retrieval.top_k`].
    #[serde(default)]
    pub top_k: Option<usize>,
    /// `hybrid`, `keyword` or `vector` [default: hybrid].
    #[serde(default)]
    pub mode: Option<String>,
    /// A minijinja template for the instructions and sources, given
    /// `sources` (each with `index`, `title`, `section`, `text`,
    /// `document_id`) and `question`.
    #[serde(default)]
    pub template: Option<String>,
    /// Tokens the sources may take, at most [default: what the model's
    /// context leaves after the conversation and the answer].
    #[serde(default)]
    pub context_tokens: Option<usize>,
    /// Overrides `retrieval.rewrite_model`.
    #[serde(default)]
    pub rewrite_model: Option<String>,
}

fn default_embedding_model() -> String {
    crate::DEFAULT_EMBEDDING_MODEL.to_owned()
}
fn default_chunk_tokens() -> usize {
    200
}
fn default_chunk_overlap() -> usize {
    40
}
fn default_top_k() -> usize {
    5
}
