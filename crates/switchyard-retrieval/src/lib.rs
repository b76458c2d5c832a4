//! Switchyard's retrieval: collections of documents owned by tenants, their
//! text extraction and chunking, a hybrid index (BM25 over the text, HNSW
//! over the embeddings, fused by reciprocal rank), and ingestion jobs that
//! run in the background; and grounding, which answers a chat request from
//! a collection's best chunks (the models it calls come in through
//! [`grounding::GroundingModels`]).
//!
//! The index sits behind [`ChunkIndex`], so that a remote vector database
//! can replace the local one for deployments that outgrow one machine.

mod chunk;
mod collections;
mod error;
mod extract;
mod fusion;
pub mod grounding;
mod index;
mod ingest;
mod local;
mod vectors;

pub use chunk::{CharEstimate, Chunk, ChunkSettings, TokenCount, TokenizerCount, chunk_text};
pub use collections::{Collection, CollectionInfo, Collections, validate_name};
pub use error::RetrievalError;
pub use extract::{Extracted, Format, extract};
pub use fusion::RRF_K;
pub use index::{
    ChunkIndex, ChunkRecord, DocumentRecord, DocumentSummary, Filter, Hit, IndexStats, SearchMode,
    SearchQuery, WriteBatch,
};
pub use ingest::{DocumentInput, Embedder, Ingestor, JobSnapshot, JobStatus};
pub use local::LocalIndex;
