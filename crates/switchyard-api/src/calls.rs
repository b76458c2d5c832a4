//! Between HTTP and the pipeline: the credential a request presents, the
//! [`Call`] built from its headers, the callers of non-model endpoints as
//! extractors, and the pipeline's errors in OpenAI's shape.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use switchyard_governance::{Caller, GovernanceError};
use switchyard_pipeline::stages::DEFAULT_TENANT;
use switchyard_pipeline::{Call, PipelineError, Snapshot};

use crate::AppState;
use crate::context::request_context;
use crate::error::ApiError;

/// The key a request presents: `Authorization: Bearer …` (OpenAI's
/// clients), `x-api-key` (Anthropic's) or `api-key` (Azure's).
pub(crate) fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let mut parts = value.splitn(2, ' ');
        if let (Some(scheme), Some(token)) = (parts.next(), parts.next())
            && scheme.eq_ignore_ascii_case("bearer")
        {
            return Some(token.trim());
        }
    }
    ["x-api-key", "api-key"]
        .iter()
        .find_map(|name| headers.get(*name).and_then(|v| v.to_str().ok()))
}

/// The request's id, as the request-id layer set it.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// The pipeline's view of a request with these headers and body metadata.
pub(crate) fn call(
    headers: &HeaderMap,
    metadata: Option<&BTreeMap<String, serde_json::Value>>,
) -> Call {
    Call::new(
        presented_key(headers),
        request_id(headers),
        crate::arrived(),
        request_context(headers, metadata),
    )
    .with_client_certificate(crate::client_certificate())
}

/// `x-ratelimit-*` headers from the pipeline's name/value pairs.
pub(crate) fn rate_headers(pairs: &[(&'static str, String)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    headers
}

/// The authenticated caller of an endpoint that is not a model call, and
/// the snapshot it was authenticated under.
pub(crate) struct Authenticated {
    pub caller: Caller,
    pub snapshot: Arc<Snapshot>,
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let snapshot = state.pipeline.snapshot();
        let call = Call::new(
            presented_key(&parts.headers),
            request_id(&parts.headers),
            None,
            Default::default(),
        )
        .with_client_certificate(crate::client_certificate());
        let caller = state.pipeline.caller(&snapshot, &call).await?;
        Ok(Self { caller, snapshot })
    }
}

impl Authenticated {
    /// The tenant whose objects the caller works with.
    pub fn tenant(&self) -> String {
        self.caller.tenant_id().unwrap_or(DEFAULT_TENANT).to_owned()
    }
}

/// A caller of the admin API, which always needs a key, whether or not
/// model calls do. Its role and tenant are checked by governance on every
/// object.
pub(crate) struct AdminCaller(pub Caller);

impl FromRequestParts<AppState> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Authenticated::from_request_parts(parts, state).await?.caller {
            Caller::Anonymous => Err(ApiError {
                status: StatusCode::UNAUTHORIZED,
                ..ApiError::invalid_request(
                    "the admin API needs the master key or a key with the admin role: send Authorization: Bearer <key>",
                    None,
                )
            }
            .with_code("invalid_api_key")),
            caller => Ok(Self(caller)),
        }
    }
}

impl From<GovernanceError> for ApiError {
    fn from(error: GovernanceError) -> Self {
        let status =
            StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let (kind, code) = match &error {
            GovernanceError::Unauthenticated(_) => ("invalid_request_error", "invalid_api_key"),
            GovernanceError::Forbidden(_) => ("permission_error", "permission_denied"),
            GovernanceError::RateLimited { .. } => ("rate_limit_error", "rate_limit_exceeded"),
            GovernanceError::BudgetExceeded { .. } => ("insufficient_quota", "budget_exceeded"),
            GovernanceError::NotFound(_) => ("invalid_request_error", "not_found"),
            GovernanceError::Invalid(_) => ("invalid_request_error", "invalid_value"),
            GovernanceError::Unavailable(_) => ("server_error", "governance_unavailable"),
        };
        let mut api = ApiError {
            status,
            kind,
            ..ApiError::invalid_request(error.to_string(), None)
        }
        .with_code(code);
        match error {
            GovernanceError::RateLimited {
                retry_after,
                headers,
                ..
            } => {
                api.retry_after = Some(retry_after.unwrap_or(Duration::from_secs(60)));
                api.headers = Some(Box::new(headers.pairs()));
            }
            GovernanceError::BudgetExceeded { retry_after, .. } => api.retry_after = retry_after,
            GovernanceError::Unavailable(_) => {
                api.message =
                    "the gateway cannot check keys or limits right now; try again shortly"
                        .to_owned();
                api.retry_after = Some(Duration::from_secs(1));
            }
            _ => {}
        }
        api
    }
}

impl From<PipelineError> for ApiError {
    fn from(error: PipelineError) -> Self {
        match error {
            PipelineError::Governance(error) => error.into(),
            PipelineError::Backend(error) => error.into(),
            PipelineError::Retrieval(error) => ApiError {
                param: Some("retrieval".into()),
                ..error.into()
            },
            PipelineError::ContentPolicy(blocked) => {
                ApiError::invalid_request(blocked.message(), Some("messages".into()))
                    .with_code("content_policy_violation")
            }
            PipelineError::RetrievalUnavailable => ApiError::invalid_request(
                PipelineError::RetrievalUnavailable.to_string(),
                Some("retrieval".into()),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_read_from_every_header_clients_use() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer sy-abc"));
        assert_eq!(presented_key(&headers), Some("sy-abc"));
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("bearer  sy-abc "));
        assert_eq!(presented_key(&headers), Some("sy-abc"));
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", HeaderValue::from_static("sy-def"));
        assert_eq!(presented_key(&headers), Some("sy-def"));
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Basic dXNlcg=="));
        assert_eq!(presented_key(&headers), None);
    }
}
