//! What a front door hands the pipeline besides the request body, and what
//! it gets back.

use std::time::Instant;

use secrecy::{ExposeSecret, SecretString};
use switchyard_orchestration::{RequestContext, Routed};

pub use switchyard_retrieval::grounding::Grounded;

/// One call as it arrived: the credential it presented, its id, when it
/// arrived, and what routing may read of it.
pub struct Call {
    credential: Option<SecretString>,
    /// The request's id (`x-request-id`).
    pub request_id: String,
    /// When the request arrived, before its body was read: its latency is
    /// the client's. `None`: when the pipeline first sees it.
    pub arrived: Option<Instant>,
    /// Headers, metadata, cache wishes, the routing trail and the
    /// upstream clock.
    pub context: RequestContext,
    /// The name of the client certificate verified in the TLS handshake
    /// that carried the call (mutual TLS), if any.
    pub client_certificate: Option<String>,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("request_id", &self.request_id)
            .field(
                "credential",
                &self.credential.as_ref().map(|_| "[redacted]"),
            )
            .finish_non_exhaustive()
    }
}

impl Call {
    /// A call that presented `credential` (a key or a bearer token).
    pub fn new(
        credential: Option<&str>,
        request_id: impl Into<String>,
        arrived: Option<Instant>,
        context: RequestContext,
    ) -> Self {
        Self {
            credential: credential.map(|c| SecretString::from(c.to_owned())),
            request_id: request_id.into(),
            arrived,
            context,
            client_certificate: None,
        }
    }

    /// The call, arrived with the verified client certificate `name`.
    pub fn with_client_certificate(mut self, name: Option<String>) -> Self {
        self.client_certificate = name;
        self
    }

    /// The presented credential, for the one check that reads it.
    pub fn credential(&self) -> Option<&str> {
        self.credential.as_ref().map(|c| c.expose_secret())
    }
}

/// How a request asks to be grounded through the `retrieval` extension.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroundingAsk {
    /// One of the caller's collections.
    pub collection: String,
    /// Sources given to the model, at most.
    pub top_k: Option<usize>,
    /// `hybrid`, `keyword` or `vector`.
    pub mode: Option<String>,
    /// `{"document_ids": [...], "metadata": {...}}`.
    pub filter: Option<serde_json::Value>,
}

/// A served call: the answer and how it was reached, the rate-limit state
/// to report, and the sources a grounded answer was given.
#[derive(Debug)]
pub struct Answer<T> {
    /// The answer, with its route, deployment and cache status.
    pub routed: Routed<T>,
    /// `x-ratelimit-*` names and values.
    pub rate_limits: Vec<(&'static str, String)>,
    /// The sources, for a grounded answer.
    pub grounded: Option<Grounded>,
}
