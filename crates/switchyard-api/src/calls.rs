//! The governance steps every model call takes: who is calling, may it go
//! ahead, and, once answered, what it used.

use std::future::Future;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use futures::StreamExt;
use switchyard_core::{BackendError, ChatRequest, ChatResponse, ChatStream, StreamEvent, Usage};
use switchyard_governance::{
    Admission, Caller, GovernanceError, Operation, Outcome, RequestFacts, Tokens,
};
use switchyard_orchestration::{CacheStatus, Gateway, RequestContext, Routed};
use switchyard_telemetry::trace;
use tracing::Instrument;

use crate::AppState;
use crate::context::route_headers;
use crate::error::ApiError;

/// Longest answer a request is assumed to ask for when it sets no
/// `max_tokens`, for the token-limit estimate made before the call.
const DEFAULT_OUTPUT_ESTIMATE: u64 = 256;

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

/// Authenticates the request's key.
pub(crate) async fn caller(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    Ok(state
        .governance
        .authenticate(presented_key(headers))
        .instrument(tracing::debug_span!("authenticate"))
        .await?)
}

/// The request's id, as the request-id layer set it.
pub(crate) fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Prompt tokens guessed from characters (about four per token in English
/// text), plus the answer the request allows.
fn estimate_chat(request: &ChatRequest) -> u64 {
    let characters: usize = request.messages.iter().map(|m| m.text().len()).sum();
    let prompt = u64::try_from(characters.div_ceil(4)).unwrap_or(u64::MAX);
    let output = request
        .max_tokens
        .map_or(DEFAULT_OUTPUT_ESTIMATE, u64::from);
    prompt.saturating_add(output)
}

/// What a model call is, for admission, its metrics and its log line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call<'a> {
    pub model: &'a str,
    pub operation: Operation,
    pub stream: bool,
    pub estimated_tokens: u64,
}

/// Authenticates and admits a model call; ties the cache namespace and
/// routing context to the caller's tenant.
pub(crate) async fn admit(
    state: &AppState,
    headers: &HeaderMap,
    context: &mut RequestContext,
    call: Call<'_>,
) -> Result<Admission, ApiError> {
    let (caller, facts) = authenticate(state, headers, context, call).await?;
    limit(state, &caller, facts).await
}

/// The first half of [`admit`]: who is calling.
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    context: &mut RequestContext,
    call: Call<'_>,
) -> Result<(Caller, RequestFacts), ApiError> {
    let facts = RequestFacts {
        request_id: request_id(headers),
        model: call.model.to_owned(),
        estimated_tokens: call.estimated_tokens,
        trace_id: trace::current_trace_id(),
        known_model: state.gateway.load().knows(call.model),
        operation: call.operation,
        stream: call.stream,
        arrived: crate::arrived(),
        upstream: context.upstream.clone(),
    };
    let authenticated = state
        .governance
        .authenticate(presented_key(headers))
        .instrument(tracing::debug_span!("authenticate"))
        .await;
    let caller = match authenticated {
        Ok(caller) => caller,
        Err(error) => {
            state
                .governance
                .record_refused_authentication(facts, &error);
            return Err(error.into());
        }
    };
    if let Some(tenant) = caller.tenant_id() {
        // Tenants never share cache entries; keys of one tenant may.
        context.caller = format!("tenant:{tenant}");
        context.tenant = Some(tenant.to_owned());
    }
    let request_span = tracing::Span::current();
    trace::annotate(&request_span, || {
        [
            ("gen_ai.operation.name", call.operation.as_str().into()),
            ("gen_ai.request.model", call.model.to_owned().into()),
            (
                "switchyard.tenant",
                caller.tenant_id().unwrap_or("-").to_owned().into(),
            ),
        ]
    });
    Ok((caller, facts))
}

/// The second half of [`admit`]: may it go ahead (limits, budgets).
async fn limit(
    state: &AppState,
    caller: &Caller,
    facts: RequestFacts,
) -> Result<Admission, ApiError> {
    Ok(state
        .governance
        .admit(caller, facts)
        .instrument(tracing::debug_span!("limits"))
        .await?)
}

/// A chat request that governance admitted: everything the chat front
/// doors (OpenAI's and Anthropic's) need around the gateway call, so that
/// each only encodes its own wire format.
pub(crate) struct GovernedChat {
    admission: Admission,
    prompt: Option<String>,
    keep_answer: bool,
    /// Time spent retrieving sources, for a grounded answer.
    pub retrieval: Option<Duration>,
}

/// Authenticates and admits a chat request (see [`admit`]).
pub(crate) async fn admit_chat(
    state: &AppState,
    headers: &HeaderMap,
    context: &mut RequestContext,
    request: &ChatRequest,
    stream: bool,
) -> Result<GovernedChat, ApiError> {
    let nothing = |_: &Caller, _: &RequestContext| async { Ok::<_, ApiError>(()) };
    let (governed, ()) =
        admit_chat_alongside(state, headers, context, request, stream, nothing).await?;
    Ok(governed)
}

/// Authenticates a chat request, then checks its limits while `alongside`
/// runs (retrieval, say) for the caller; a failure of either fails the
/// request, and is recorded once it was admitted.
pub(crate) async fn admit_chat_alongside<T, F, Fut>(
    state: &AppState,
    headers: &HeaderMap,
    context: &mut RequestContext,
    request: &ChatRequest,
    stream: bool,
    alongside: F,
) -> Result<(GovernedChat, T), ApiError>
where
    F: FnOnce(&Caller, &RequestContext) -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let call = Call {
        model: &request.model,
        operation: Operation::Chat,
        stream,
        estimated_tokens: estimate_chat(request),
    };
    let (caller, facts) = authenticate(state, headers, context, call).await?;
    let context: &RequestContext = context;
    let (admission, extra) =
        tokio::join!(limit(state, &caller, facts), alongside(&caller, context));
    let admission = admission?;
    let extra = match extra {
        Ok(extra) => extra,
        Err(error) => {
            let mut outcome = failed(&error);
            outcome.decisions = context.trail.steps();
            admission.finish(outcome);
            return Err(error);
        }
    };
    let settings = state.governance.settings();
    let governed = GovernedChat {
        admission,
        prompt: settings.store_prompts.then(|| prompt_text(request)),
        keep_answer: settings.store_answers,
        retrieval: None,
    };
    Ok((governed, extra))
}

impl GovernedChat {
    /// A whole answer, recorded; with the route and rate-limit headers.
    pub(crate) async fn chat(
        self,
        gateway: &Gateway,
        request: ChatRequest,
        context: &RequestContext,
    ) -> Result<(ChatResponse, HeaderMap), ApiError> {
        let mut headers = rate_headers(&self.admission);
        let routed = match gateway.chat(request, context).await {
            Ok(routed) => routed,
            Err(error) => return Err(backend_failure(self.admission, error, context)),
        };
        let mut outcome = served(&routed, Some(&routed.value.usage), context);
        outcome.retrieval = self.retrieval;
        trace::annotate_strings(
            &tracing::Span::current(),
            "gen_ai.response.finish_reasons",
            vec![routed.value.finish_reason.as_str().to_owned()],
        );
        outcome.prompt = self.prompt;
        outcome.answer = self.keep_answer.then(|| routed.value.content.clone());
        self.admission.finish(outcome);
        headers.extend(route_headers(&routed));
        Ok((routed.value, headers))
    }

    /// A stream that records the request when it ends; with the route and
    /// rate-limit headers.
    pub(crate) async fn chat_stream(
        self,
        gateway: &Gateway,
        request: ChatRequest,
        context: &RequestContext,
    ) -> Result<(ChatStream, HeaderMap), ApiError> {
        let mut headers = rate_headers(&self.admission);
        let routed = match gateway.chat_stream(request, context).await {
            Ok(routed) => routed,
            Err(error) => return Err(backend_failure(self.admission, error, context)),
        };
        headers.extend(route_headers(&routed));
        let mut outcome = served(&routed, None, context);
        outcome.prompt = self.prompt;
        outcome.retrieval = self.retrieval;
        let events = metered(routed.value, self.admission, outcome, self.keep_answer);
        Ok((events, headers))
    }
}

/// `x-ratelimit-*` headers of an admitted request.
pub(crate) fn rate_headers(admission: &Admission) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in admission.rate_headers().pairs() {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    headers
}

fn tokens(usage: &Usage) -> Tokens {
    Tokens {
        input: u64::from(usage.prompt_tokens),
        output: u64::from(usage.completion_tokens),
        cached: u64::from(usage.cache_read_tokens),
    }
}

/// What the ledger keeps of a served request: its route, deployment,
/// usage, and the steps routing took on the way.
pub(crate) fn served<T>(
    routed: &Routed<T>,
    usage: Option<&Usage>,
    context: &RequestContext,
) -> Outcome {
    let span = tracing::Span::current();
    trace::annotate(&span, || {
        [
            ("switchyard.route", routed.route.clone().into()),
            ("switchyard.deployment", routed.deployment.clone().into()),
            ("switchyard.cache", routed.cache.as_str().into()),
        ]
    });
    if let Some(usage) = usage {
        annotate_usage(&span, usage);
    }
    Outcome {
        status: 200,
        deployment: Some(routed.deployment.clone()),
        route: Some(routed.route.clone()),
        cache_hit: routed.cache == CacheStatus::Hit,
        tokens: usage.map(tokens),
        decisions: context.trail.steps(),
        ..Outcome::default()
    }
}

/// Token counts on the request's server span.
fn annotate_usage(span: &tracing::Span, usage: &Usage) {
    trace::annotate(span, || {
        [
            (
                "gen_ai.usage.input_tokens",
                i64::from(usage.prompt_tokens).into(),
            ),
            (
                "gen_ai.usage.output_tokens",
                i64::from(usage.completion_tokens).into(),
            ),
        ]
    });
}

/// What the ledger keeps of a failed request.
pub(crate) fn failed(error: &ApiError) -> Outcome {
    Outcome {
        status: error.status.as_u16(),
        error: Some(error.message.clone()),
        ..Outcome::default()
    }
}

/// The prompt as the audit trail may keep it.
fn prompt_text(request: &ChatRequest) -> String {
    request
        .messages
        .iter()
        .map(|m| format!("{}: {}", m.role.as_str(), m.text()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Passes a stream through unchanged while noting its first token, its
/// usage and how it ended; the admission is finished when the stream
/// ends, and recorded as abandoned (499) if the client drops it first.
/// The stream has a span of its own, a child of the request's.
fn metered(
    mut events: ChatStream,
    mut admission: Admission,
    mut outcome: Outcome,
    keep_answer: bool,
) -> ChatStream {
    let request_span = tracing::Span::current();
    let stream_span = tracing::debug_span!(
        "stream",
        otel.name = "stream",
        otel.status_code = tracing::field::Empty,
    );
    Box::pin(async_stream::stream! {
        let mut answer = String::new();
        let mut chunks: i64 = 0;
        while let Some(event) = events.next().await {
            match &event {
                Ok(StreamEvent::Delta(text)) => {
                    if chunks == 0 {
                        stream_span.in_scope(|| tracing::debug!("first token"));
                    }
                    chunks += 1;
                    admission.first_token();
                    if keep_answer {
                        answer.push_str(text);
                    }
                }
                Ok(StreamEvent::ToolCall(_)) => admission.first_token(),
                Ok(StreamEvent::Usage(usage)) => {
                    outcome.tokens = Some(tokens(usage));
                    annotate_usage(&request_span, usage);
                    annotate_usage(&stream_span, usage);
                }
                Ok(StreamEvent::Finish(reason)) => {
                    trace::annotate_strings(
                        &request_span,
                        "gen_ai.response.finish_reasons",
                        vec![reason.as_str().to_owned()],
                    );
                }
                Err(error) => {
                    let api = ApiError::from(error.clone());
                    outcome.status = api.status.as_u16();
                    outcome.error = Some(error.message.clone());
                    stream_span.record("otel.status_code", "ERROR");
                }
            }
            let failed = event.is_err();
            yield event;
            if failed {
                break;
            }
        }
        trace::annotate(&stream_span, || [("switchyard.stream.chunks", chunks.into())]);
        if keep_answer {
            outcome.answer = Some(answer);
        }
        admission.finish(outcome);
        drop(stream_span);
    })
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

/// Maps a backend error and records it, with the steps routing took, on
/// the admission.
pub(crate) fn backend_failure(
    admission: Admission,
    error: BackendError,
    context: &RequestContext,
) -> ApiError {
    let error = ApiError::from(error);
    let mut outcome = failed(&error);
    outcome.decisions = context.trail.steps();
    admission.finish(outcome);
    error
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

    #[test]
    fn estimates_count_prompt_and_allowed_answer() {
        use switchyard_core::{ChatMessage, Role};
        let mut request =
            ChatRequest::new("m", vec![ChatMessage::new(Role::User, "x".repeat(400))]);
        request.max_tokens = Some(50);
        assert_eq!(estimate_chat(&request), 150);
        request.max_tokens = None;
        assert_eq!(estimate_chat(&request), 100 + DEFAULT_OUTPUT_ESTIMATE);
    }
}
