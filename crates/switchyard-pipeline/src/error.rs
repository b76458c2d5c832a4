//! Why a call was not served, as the front doors encode it.

use switchyard_core::BackendError;
use switchyard_governance::GovernanceError;
use switchyard_retrieval::RetrievalError;
use switchyard_retrieval::grounding::GroundingError;

/// A call the pipeline refused or could not serve.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Authentication, permission, limits, budgets, or the shared state
    /// behind them.
    #[error(transparent)]
    Governance(#[from] GovernanceError),
    /// The backend (or routing over backends) failed.
    #[error("{}", .0.message)]
    Backend(BackendError),
    /// The request's grounding options are wrong, or retrieval failed.
    #[error(transparent)]
    Retrieval(RetrievalError),
    /// A guardrail policy refused the request.
    #[error("{}", .0.message())]
    ContentPolicy(switchyard_guardrails::Blocked),
    /// The request asked for retrieval on a server that has none.
    #[error("retrieval is not available on this server: no embeddings model is configured")]
    RetrievalUnavailable,
}

impl From<BackendError> for PipelineError {
    fn from(error: BackendError) -> Self {
        Self::Backend(error)
    }
}

impl From<RetrievalError> for PipelineError {
    fn from(error: RetrievalError) -> Self {
        match error {
            RetrievalError::Embedding(backend) => Self::Backend(backend),
            other => Self::Retrieval(other),
        }
    }
}

impl From<GroundingError> for PipelineError {
    fn from(error: GroundingError) -> Self {
        match error {
            GroundingError::Retrieval(error) => error.into(),
            GroundingError::Backend(error) => Self::Backend(error),
        }
    }
}

impl PipelineError {
    /// The status the client gets, and the ledger records.
    pub fn status(&self) -> u16 {
        match self {
            Self::Governance(error) => error.status(),
            Self::Backend(error) => error.kind.status(),
            Self::Retrieval(error) => error.status(),
            Self::RetrievalUnavailable | Self::ContentPolicy(_) => 400,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_core::ErrorKind;

    #[test]
    fn statuses_follow_the_failure() {
        let backend = PipelineError::from(BackendError::new(ErrorKind::Overloaded, "busy"));
        assert_eq!(backend.status(), 503);
        let embedding = PipelineError::from(RetrievalError::Embedding(BackendError::new(
            ErrorKind::Timeout,
            "slow",
        )));
        assert!(matches!(embedding, PipelineError::Backend(_)));
        assert_eq!(embedding.status(), 504);
        let missing = PipelineError::from(RetrievalError::NotFound("no such collection".into()));
        assert_eq!(missing.status(), 404);
        assert_eq!(PipelineError::RetrievalUnavailable.status(), 400);
    }
}
