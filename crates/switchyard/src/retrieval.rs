//! Retrieval's assembly: collections in the data folder, ingestion that
//! embeds through the gateway, and each model's context size for fitting
//! sources.

use std::sync::Arc;

use anyhow::anyhow;
use switchyard_config::{Config, ModelConfig, RetrievalConfig};
use switchyard_models::ModelKind;
use switchyard_pipeline::models::{CurrentGateway, GatewayEmbedder};
use switchyard_retrieval::grounding::Retrieval;
use switchyard_retrieval::{
    CharEstimate, ChunkSettings, Collections, Ingestor, TokenCount, TokenizerCount,
};
use tracing::{info, warn};

/// Retrieval for `config`, or `None` when its embeddings model is not
/// configured (the collection endpoints then answer 503). A reload passes
/// the retrieval in force as `previous`: its collections and ingestion
/// (open indexes, running jobs) carry over, and the assistants, query
/// settings and context windows are the new configuration's.
pub fn build(
    config: &Config,
    previous: Option<&Retrieval>,
    gateway: &CurrentGateway,
) -> anyhow::Result<Option<Arc<Retrieval>>> {
    let settings = &config.retrieval;
    let model = &settings.embedding_model;
    if !config.models.contains_key(model) && !config.routes.contains_key(model) {
        info!(model = %model, "retrieval is off: its embeddings model is not configured");
        return Ok(None);
    }
    let (collections, ingestor) = match previous {
        Some(previous) => (previous.collections().clone(), previous.ingestor().clone()),
        None => {
            let collections = Arc::new(Collections::new(
                crate::governance::data_dir()?.join("collections"),
                model.clone(),
            ));
            let embedder = GatewayEmbedder::new(gateway.clone(), model.clone());
            let ingestor = Arc::new(Ingestor::new(
                Arc::new(embedder),
                token_counter(config, model),
                ChunkSettings {
                    max_tokens: settings.chunk_tokens,
                    overlap_tokens: settings.chunk_overlap,
                },
            ));
            (collections, ingestor)
        }
    };
    let retrieval = Retrieval::new(
        collections,
        ingestor,
        settings.clone(),
        crate::context::context_windows(config),
    )
    .map_err(|e| anyhow!(e))?;
    Ok(Some(Arc::new(retrieval)))
}

/// The `[retrieval]` settings a reload cannot change: collections keep the
/// embeddings model and chunking they were opened with.
pub fn needs_restart(before: &RetrievalConfig, after: &RetrievalConfig) -> bool {
    before.embedding_model != after.embedding_model
        || before.chunk_tokens != after.chunk_tokens
        || before.chunk_overlap != after.chunk_overlap
}

/// Opens every collection in the background, so that the first search of
/// each does not wait for its index to be read (large collections then
/// build their vector graphs on threads of their own).
pub fn warm(retrieval: Arc<Retrieval>) {
    tokio::spawn(async move {
        let collections = retrieval.collections();
        for (tenant, name) in collections.all().await {
            if let Err(error) = collections.get(&tenant, &name).await {
                warn!(collection = %name, %error, "a collection could not be opened");
            }
        }
    });
}

/// Chunks are measured in the embedder's own tokens when its tokenizer is
/// at hand (a local model), else estimated from characters.
fn token_counter(config: &Config, model: &str) -> Arc<dyn TokenCount> {
    if let Some(ModelConfig::LocalEmbedding(local)) = config.models.get(model) {
        let counter =
            crate::backends::local_path(model, &local.path, &local.catalog, ModelKind::Embedding)
                .map_err(|e| e.to_string())
                .and_then(|(dir, _)| {
                    TokenizerCount::load(&dir.join("tokenizer.json")).map_err(|e| e.to_string())
                });
        match counter {
            Ok(counter) => return Arc::new(counter),
            Err(error) => warn!(%error, "chunk sizes will be estimated from characters"),
        }
    }
    Arc::new(CharEstimate)
}
