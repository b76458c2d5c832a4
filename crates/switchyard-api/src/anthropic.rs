//! `POST /v1/messages`: the Anthropic-compatible front door. Clients written
//! for Claude (the official `anthropic` SDKs) reach any configured model,
//! the local ones included; errors come back in Anthropic's shape.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use switchyard_core::{BackendError, ChatStream, FinishReason, StreamEvent, Usage};
use switchyard_protocol::anthropic::{
    AnthropicUsage, BlockDelta, ContentBlock, ErrorBody, MessageDeltaBody, MessagesRequest,
    MessagesResponse, StreamEvent as WireEvent, stop_reason,
};
use tracing::{debug, warn};

use crate::AppState;
use crate::calls;
use crate::context::answer_headers;
use crate::error::ApiError;
use crate::extract::read_json;

const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// An error in Anthropic's shape, `{"type":"error","error":{"type","message"}}`.
pub(crate) struct AnthropicError(pub ApiError);

impl From<ApiError> for AnthropicError {
    fn from(error: ApiError) -> Self {
        Self(error)
    }
}

impl From<BackendError> for AnthropicError {
    fn from(error: BackendError) -> Self {
        Self(ApiError::from(error))
    }
}

/// Anthropic's error class for a status.
fn error_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 405 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        _ => "api_error",
    }
}

fn error_body(error: &ApiError) -> ErrorBody {
    ErrorBody::new(error_class(error.status), error.message.clone())
}

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        let error = self.0;
        let body = error_body(&error);
        // Reuse the OpenAI-shaped response for status, logging and
        // Retry-After, then swap the body for Anthropic's shape.
        let mut response = error.into_response();
        let headers = std::mem::take(response.headers_mut());
        let mut anthropic = (response.status(), Json(body)).into_response();
        for (name, value) in &headers {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                anthropic.headers_mut().insert(name.clone(), value.clone());
            }
        }
        anthropic
    }
}

/// A JSON body whose rejections are Anthropic-shaped.
pub(crate) struct AnthropicJson<T>(pub T);

impl<S, T> FromRequest<S> for AnthropicJson<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = AnthropicError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        read_json(request, state)
            .await
            .map(AnthropicJson)
            .map_err(AnthropicError)
    }
}

pub(crate) async fn messages(
    State(state): State<AppState>,
    headers: HeaderMap,
    AnthropicJson(body): AnthropicJson<MessagesRequest>,
) -> Result<Response, AnthropicError> {
    let stream = body.is_stream();
    let call = calls::call(&headers, None);
    let request = body.into_canonical().map_err(ApiError::from)?;
    let model = request.model.clone();
    tracing::Span::current().record("model", model.as_str());
    let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    if stream {
        let answer = state
            .pipeline
            .chat_stream(call, request, None)
            .await
            .map_err(ApiError::from)?;
        let headers = answer_headers(&answer.routed, &answer.rate_limits);
        let mut response = Sse::new(sse_events(answer.routed.value, id, model))
            .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
            .into_response();
        response
            .headers_mut()
            .insert("x-accel-buffering", HeaderValue::from_static("no"));
        response.headers_mut().extend(headers);
        return Ok(response);
    }
    let answer = state
        .pipeline
        .chat(call, request, None)
        .await
        .map_err(ApiError::from)?;
    let headers = answer_headers(&answer.routed, &answer.rate_limits);
    let whole = &answer.routed.value;
    debug!(
        finish_reason = whole.finish_reason.as_str(),
        prompt_tokens = whole.usage.prompt_tokens,
        completion_tokens = whole.usage.completion_tokens,
        "message served"
    );
    let mut response = Json(MessagesResponse::from_canonical(id, model, whole)).into_response();
    response.headers_mut().extend(headers);
    Ok(response)
}

fn event(wire: &WireEvent) -> Event {
    Event::default()
        .event(wire.name())
        .data(serde_json::to_string(wire).unwrap_or_default())
}

/// The block currently open in the stream.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    None,
    Text,
    Tool(u32),
}

/// Anthropic's event sequence from canonical events: `message_start`,
/// `ping`, one `content_block_*` run per text or tool-use block,
/// `message_delta` (stop reason, usage), `message_stop`.
fn sse_events(
    mut events: ChatStream,
    id: String,
    model: String,
) -> impl Stream<Item = Result<Event, Infallible>> {
    async_stream::stream! {
        let start = MessagesResponse {
            id,
            kind: "message".into(),
            role: "assistant".into(),
            model,
            content: Vec::new(),
            stop_reason: None,
            stop_sequence: None,
            usage: AnthropicUsage::default(),
        };
        yield Ok(event(&WireEvent::MessageStart { message: start }));
        yield Ok(event(&WireEvent::Ping));
        let mut open = Open::None;
        let mut next_block: u32 = 0;
        let mut finish = FinishReason::Stop;
        let mut usage = Usage::default();
        while let Some(item) = events.next().await {
            match item {
                Ok(StreamEvent::Delta(text)) => {
                    if open != Open::Text {
                        if open != Open::None {
                            yield Ok(event(&WireEvent::ContentBlockStop { index: next_block - 1 }));
                        }
                        yield Ok(event(&WireEvent::ContentBlockStart {
                            index: next_block,
                            content_block: ContentBlock::Text { text: String::new() },
                        }));
                        next_block += 1;
                        open = Open::Text;
                    }
                    yield Ok(event(&WireEvent::ContentBlockDelta {
                        index: next_block - 1,
                        delta: BlockDelta::TextDelta { text },
                    }));
                }
                Ok(StreamEvent::ToolCall(piece)) => {
                    if let (Some(call_id), Some(name)) = (piece.id.clone(), piece.name.clone()) {
                        if open != Open::None {
                            yield Ok(event(&WireEvent::ContentBlockStop { index: next_block - 1 }));
                        }
                        yield Ok(event(&WireEvent::ContentBlockStart {
                            index: next_block,
                            content_block: ContentBlock::ToolUse {
                                id: call_id,
                                name,
                                input: serde_json::json!({}),
                            },
                        }));
                        next_block += 1;
                        open = Open::Tool(piece.index);
                    }
                    if !piece.arguments.is_empty() {
                        if open != Open::Tool(piece.index) {
                            // Anthropic blocks cannot interleave; upstreams
                            // stream one call's arguments at a time.
                            warn!(index = piece.index, "tool-call fragment for a closed block dropped");
                            continue;
                        }
                        yield Ok(event(&WireEvent::ContentBlockDelta {
                            index: next_block - 1,
                            delta: BlockDelta::InputJsonDelta { partial_json: piece.arguments },
                        }));
                    }
                }
                Ok(StreamEvent::Finish(reason)) => finish = reason,
                Ok(StreamEvent::Usage(counts)) => usage = counts,
                // Messages have no shape for a tool the gateway runs.
                Ok(StreamEvent::ToolRun(_)) => {}
                Err(error) => {
                    warn!(message = %error.message, "stream failed after it started");
                    let body = error_body(&ApiError::from(error));
                    yield Ok(event(&WireEvent::Error { error: body.error }));
                    return;
                }
            }
        }
        if open != Open::None {
            yield Ok(event(&WireEvent::ContentBlockStop { index: next_block - 1 }));
        }
        yield Ok(event(&WireEvent::MessageDelta {
            delta: MessageDeltaBody {
                stop_reason: Some(stop_reason(finish).into()),
                stop_sequence: None,
            },
            usage: usage.into(),
        }));
        debug!(completion_tokens = usage.completion_tokens, "message stream served");
        yield Ok(event(&WireEvent::MessageStop));
    }
}
