//! Why governance refused or failed a request.

use std::time::Duration;

use switchyard_state::StateError;

use crate::limits::RateHeaders;

/// A refusal or failure, each mapped to one HTTP status by the API layer.
#[derive(Debug, thiserror::Error)]
pub enum GovernanceError {
    /// No key, or a key that is unknown, wrong, expired or revoked (401).
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// A rate or concurrency limit is reached (429).
    #[error("{message}")]
    RateLimited {
        /// What was exceeded, for the client.
        message: String,
        /// When to try again, when known.
        retry_after: Option<Duration>,
        /// `x-ratelimit-*` values.
        headers: Box<RateHeaders>,
    },
    /// A hard budget is spent (429, `insufficient_quota`).
    #[error("{message}")]
    BudgetExceeded {
        /// Whose budget, for the client.
        message: String,
        /// When the budget period restarts, if it does.
        retry_after: Option<Duration>,
    },
    /// The object does not exist, or not for this caller (404).
    #[error("{0}")]
    NotFound(String),
    /// The admin request is malformed (400).
    #[error("{0}")]
    Invalid(String),
    /// The store or counters cannot be reached; requests fail closed (503).
    #[error("governance state unavailable: {0}")]
    Unavailable(String),
}

impl GovernanceError {
    /// The HTTP status this refusal answers with (and the ledger records).
    pub fn status(&self) -> u16 {
        match self {
            Self::Unauthenticated(_) => 401,
            Self::Forbidden(_) => 403,
            Self::RateLimited { .. } | Self::BudgetExceeded { .. } => 429,
            Self::NotFound(_) => 404,
            Self::Invalid(_) => 400,
            Self::Unavailable(_) => 503,
        }
    }
}

impl From<StateError> for GovernanceError {
    fn from(error: StateError) -> Self {
        tracing::error!(%error, "governance state failed");
        Self::Unavailable(error.to_string())
    }
}
