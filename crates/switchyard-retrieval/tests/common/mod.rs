//! The real embedder and the corpus the retrieval tests share.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use switchyard_core::{EmbeddingBackend, EmbeddingRequest};
use switchyard_embedder::{EmbedderConfig, LocalEmbedder};
use switchyard_retrieval::{
    ChunkSettings, Collections, DocumentInput, Embedder, Format, Ingestor, RetrievalError,
    TokenizerCount,
};

pub fn model_dir() -> PathBuf {
    let store = switchyard_models::ModelStore::default_location().unwrap();
    let (entry, path) = store.resolve("all-minilm-l6-v2").unwrap();
    assert!(
        store.is_present(entry),
        "all-minilm-l6-v2 is not pulled: run `make models` (or `switchyard models pull`) first"
    );
    path
}

pub struct MiniLm(pub LocalEmbedder);

impl Embedder for MiniLm {
    fn embed(&self, texts: Vec<String>) -> BoxFuture<'_, Result<Vec<Vec<f32>>, RetrievalError>> {
        Box::pin(async move {
            let request = EmbeddingRequest {
                model: "all-minilm-l6-v2".into(),
                inputs: texts,
                dimensions: None,
                user: None,
            };
            self.0
                .embed(request)
                .await
                .map(|r| r.embeddings)
                .map_err(RetrievalError::Embedding)
        })
    }
}

pub async fn minilm() -> Arc<MiniLm> {
    let embedder = LocalEmbedder::start(EmbedderConfig::new(model_dir())).unwrap();
    embedder.wait_ready().await.unwrap();
    Arc::new(MiniLm(embedder))
}

pub fn ingestor(embedder: Arc<MiniLm>) -> Arc<Ingestor> {
    let counter = TokenizerCount::load(&model_dir().join("tokenizer.json")).unwrap();
    Arc::new(Ingestor::new(
        embedder,
        Arc::new(counter),
        ChunkSettings::default(),
    ))
}

pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/rust-book")
}

/// The corpus pages whose names are given (all of them when empty), as
/// documents whose ids are the file names without `.html`.
pub fn book_pages(names: &[&str]) -> Vec<DocumentInput> {
    let mut pages: Vec<_> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let stem = p.file_stem().unwrap().to_str().unwrap();
            names.is_empty() || names.contains(&stem)
        })
        .collect();
    pages.sort();
    pages
        .into_iter()
        .map(|path| DocumentInput {
            id: path.file_stem().unwrap().to_str().unwrap().to_owned(),
            title: None,
            format: Format::Html,
            content: std::fs::read(&path).unwrap(),
            source: Some(format!(
                "rust-book/{}",
                path.file_name().unwrap().to_str().unwrap()
            )),
            metadata: serde_json::Map::new(),
        })
        .collect()
}

pub fn collections(dir: &Path) -> Collections {
    Collections::new(dir, "all-minilm-l6-v2")
}
