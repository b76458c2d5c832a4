//! The index interface and what goes in and out of it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::RetrievalError;
use crate::chunk::Chunk;

/// One chunk as the index stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkRecord {
    /// Its place in the document, from 0.
    pub position: u32,
    /// The text.
    pub text: String,
    /// Character offsets in the document's extracted text.
    pub start: usize,
    /// Character offset just past its end.
    pub end: usize,
    /// Headings it sits under, outermost first.
    pub heading_path: Vec<String>,
    /// Its size in the embedder's tokens.
    pub tokens: usize,
    /// Its embedding (any length; normalised by the index).
    pub vector: Vec<f32>,
}

impl ChunkRecord {
    /// A chunk as cut from its document, with its embedding.
    pub fn new(chunk: Chunk, vector: Vec<f32>) -> Self {
        Self {
            position: chunk.position,
            text: chunk.text,
            start: chunk.start,
            end: chunk.end,
            heading_path: chunk.heading_path,
            tokens: chunk.tokens,
            vector,
        }
    }
}

/// A document with all of its chunks: written as a whole, replacing any
/// earlier version with the same id.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentRecord {
    /// The caller's id for the document.
    pub id: String,
    /// Its title.
    pub title: String,
    /// Where it came from (a file path, a URL), when known.
    pub source: Option<String>,
    /// The format it was read as.
    pub format: String,
    /// SHA-256 of its content and the chunk settings: equal hashes mean
    /// re-ingesting it would change nothing.
    pub content_hash: String,
    /// Caller-defined fields, usable in search filters.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Its chunks.
    pub chunks: Vec<ChunkRecord>,
}

/// Changes committed together: after a crash either all of them are in the
/// index or none is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteBatch {
    /// Documents to add or replace.
    pub upserts: Vec<DocumentRecord>,
    /// Ids of documents to remove.
    pub deletes: Vec<String>,
}

/// Which rankings a search uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// BM25 and vectors fused by reciprocal rank.
    #[default]
    Hybrid,
    /// BM25 over the text alone.
    Keyword,
    /// Nearest neighbours of the query's embedding alone.
    Vector,
}

/// Restricts a search to chunks whose documents match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Only these documents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub document_ids: Vec<String>,
    /// Metadata fields that must equal these values (strings, integers or
    /// booleans).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, serde_json::Value>,
}

impl Filter {
    /// Whether the filter lets every chunk through.
    pub fn is_empty(&self) -> bool {
        self.document_ids.is_empty() && self.metadata.is_empty()
    }
}

/// A search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    /// The query text, for BM25.
    pub text: String,
    /// The query's embedding, for the vector ranking.
    pub vector: Option<Vec<f32>>,
    /// How many chunks to return.
    pub top_k: usize,
    /// Which rankings to use.
    pub mode: SearchMode,
    /// Which chunks may be returned.
    pub filter: Filter,
}

/// A chunk found by a search, with its provenance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    /// `document id#position`.
    pub chunk_id: String,
    /// The document's id.
    pub document_id: String,
    /// The document's title.
    pub title: String,
    /// Where the document came from, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Headings the chunk sits under.
    pub heading_path: Vec<String>,
    /// Its place in the document.
    pub position: u32,
    /// The chunk's text.
    pub text: String,
    /// Character offsets in the document's extracted text.
    pub start: usize,
    /// Character offset just past its end.
    pub end: usize,
    /// Its size in the embedder's tokens.
    pub tokens: usize,
    /// The fused score: the sum of 1 / (60 + rank) over the rankings that
    /// found it.
    pub score: f64,
    /// Its rank in the BM25 ranking (from 1), if BM25 found it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keyword_rank: Option<usize>,
    /// Its rank by vector similarity (from 1), if the vector search found it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector_rank: Option<usize>,
    /// The document's metadata.
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// A document in a collection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DocumentSummary {
    /// Its id.
    pub id: String,
    /// Its title.
    pub title: String,
    /// Where it came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The format it was read as.
    pub format: String,
    /// Its chunks.
    pub chunks: u64,
    /// SHA-256 of its content and the chunk settings.
    pub content_hash: String,
    /// Caller-defined fields.
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// What an index holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct IndexStats {
    /// Documents.
    pub documents: u64,
    /// Chunks.
    pub chunks: u64,
    /// Chunks whose vectors are searched by exact scan while the vector
    /// graph is being built (0 once it is ready).
    pub vectors_awaiting_graph: u64,
}

/// A hybrid chunk index. Every method blocks (disk, CPU): call them from a
/// blocking thread. Implementations: [`crate::LocalIndex`] (tantivy and an
/// in-memory HNSW graph); a client of a vector database can take its place.
pub trait ChunkIndex: Send + Sync {
    /// Applies a batch atomically.
    fn write(&self, batch: WriteBatch) -> Result<(), RetrievalError>;
    /// The best chunks for a query, best first.
    fn search(&self, query: &SearchQuery) -> Result<Vec<Hit>, RetrievalError>;
    /// The content hash of a stored document, if there is one.
    fn content_hash(&self, document_id: &str) -> Result<Option<String>, RetrievalError>;
    /// Every document.
    fn documents(&self) -> Result<Vec<DocumentSummary>, RetrievalError>;
    /// Documents and chunks held.
    fn stats(&self) -> IndexStats;
}
