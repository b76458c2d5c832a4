//! The one error type backends return, classified by what the caller should
//! do about it rather than by where it came from.

use std::time::Duration;

/// What kind of failure a [`BackendError`] is. The API layer maps each kind to
/// a status code; orchestration (retries, fallbacks) decides on the kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request itself is wrong (bad parameter, prompt too long); retrying
    /// it unchanged cannot help.
    InvalidRequest,
    /// The model or resource does not exist.
    NotFound,
    /// The upstream refused the credentials Switchyard holds for it.
    Authentication,
    /// The upstream's rate limit was hit.
    RateLimited,
    /// The backend is at capacity (full queue, upstream overloaded).
    Overloaded,
    /// The upstream failed or answered something Switchyard cannot read.
    Upstream,
    /// A connect, first-byte or total deadline passed.
    Timeout,
    /// The caller went away and the work was stopped.
    Cancelled,
    /// A bug or an unexpected state inside Switchyard.
    Internal,
}

impl ErrorKind {
    /// The kind in snake case, for metric labels and `error.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::NotFound => "not_found",
            Self::Authentication => "authentication",
            Self::RateLimited => "rate_limited",
            Self::Overloaded => "overloaded",
            Self::Upstream => "upstream",
            Self::Timeout => "timeout",
            Self::Cancelled => "cancelled",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status a client gets for this kind, and the ledger records.
    /// Credentials the upstream refused are the gateway's, not the
    /// client's: a bad gateway, not a 401. A cancelled call is nginx's 499
    /// (client closed request).
    pub fn status(self) -> u16 {
        match self {
            Self::InvalidRequest => 400,
            Self::NotFound => 404,
            Self::Authentication | Self::Upstream => 502,
            Self::RateLimited => 429,
            Self::Overloaded => 503,
            Self::Timeout => 504,
            Self::Cancelled => 499,
            Self::Internal => 500,
        }
    }
}

/// A classified failure from a backend, with a message for humans.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    /// The classification.
    pub kind: ErrorKind,
    /// A message that says what went wrong and, where possible, what to fix.
    pub message: String,
    /// The request field at fault, for invalid requests.
    pub param: Option<String>,
    /// A machine-readable code, e.g. `context_length_exceeded`.
    pub code: Option<String>,
    /// When the caller may try again, if the backend said so.
    pub retry_after: Option<Duration>,
    /// The status code the upstream answered with, for remote backends.
    pub upstream_status: Option<u16>,
}

impl BackendError {
    /// An error of `kind` with `message` and nothing else.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            param: None,
            code: None,
            retry_after: None,
            upstream_status: None,
        }
    }

    /// Shorthand for [`ErrorKind::InvalidRequest`].
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, message)
    }

    /// Shorthand for [`ErrorKind::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// Names the request field at fault.
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// Adds a machine-readable code.
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// Says when to retry.
    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Records the upstream's status code.
    pub fn with_upstream_status(mut self, status: u16) -> Self {
        self.upstream_status = Some(status);
        self
    }
}
