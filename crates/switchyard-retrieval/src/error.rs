//! What can go wrong in retrieval, with the HTTP status each maps to.

use switchyard_core::BackendError;

/// A retrieval failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RetrievalError {
    /// The request was malformed (bad name, empty document, unknown format).
    #[error("{0}")]
    Invalid(String),
    /// No such collection, document or job for this tenant.
    #[error("{0}")]
    NotFound(String),
    /// The collection exists already, or was built with another embedder.
    #[error("{0}")]
    Conflict(String),
    /// A document's format is not one Switchyard can read.
    #[error("{0}")]
    Unsupported(String),
    /// The embedding model failed.
    #[error("embedding failed: {}", .0.message)]
    Embedding(BackendError),
    /// The index on disk could not be read or written.
    #[error("index error: {0}")]
    Index(String),
}

impl RetrievalError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> u16 {
        match self {
            RetrievalError::Invalid(_) => 400,
            RetrievalError::NotFound(_) => 404,
            RetrievalError::Conflict(_) => 409,
            RetrievalError::Unsupported(_) => 415,
            RetrievalError::Embedding(_) => 502,
            RetrievalError::Index(_) => 500,
        }
    }
}

impl From<tantivy::TantivyError> for RetrievalError {
    fn from(error: tantivy::TantivyError) -> Self {
        RetrievalError::Index(error.to_string())
    }
}

impl From<std::io::Error> for RetrievalError {
    fn from(error: std::io::Error) -> Self {
        RetrievalError::Index(error.to_string())
    }
}
