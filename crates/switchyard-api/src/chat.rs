//! `POST /v1/chat/completions`, whole and streamed.

use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::Serialize;
use switchyard_core::{ChatStream, StreamEvent};
use switchyard_protocol::openai::{ChatCompletion, ChatCompletionRequest, ChunkFactory};
use tracing::{debug, warn};

use crate::AppState;
use crate::context::request_context;
use crate::error::ApiError;
use crate::extract::OpenAiJson;
use crate::governed;

/// Comment lines that keep idle streams open through proxies while a request
/// waits for a slot.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub(crate) async fn chat_completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    OpenAiJson(mut body): OpenAiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let stream = body.is_stream();
    let include_usage = body.wants_stream_usage();
    let mut context = request_context(&headers, body.metadata.take().as_ref());
    let request = body.into_canonical()?;
    let model = request.model.clone();
    tracing::Span::current().record("model", model.as_str());
    let governed = governed::admit_chat(&state, &headers, &mut context, &request, stream).await?;
    let gateway = state.gateway.load_full();
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());

    if stream {
        let (events, headers) = governed.chat_stream(&gateway, request, &context).await?;
        let chunks = ChunkFactory::new(id, created, model);
        let mut response = Sse::new(sse_events(events, chunks, include_usage))
            .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
            .into_response();
        // Tell buffering reverse proxies (nginx) to pass events straight on.
        response
            .headers_mut()
            .insert("x-accel-buffering", HeaderValue::from_static("no"));
        response.headers_mut().extend(headers);
        return Ok(response);
    }

    let (answer, headers) = governed.chat(&gateway, request, &context).await?;
    debug!(
        finish_reason = answer.finish_reason.as_str(),
        prompt_tokens = answer.usage.prompt_tokens,
        completion_tokens = answer.usage.completion_tokens,
        "completion served"
    );
    let mut response =
        Json(ChatCompletion::from_canonical(id, created, model, &answer)).into_response();
    response.headers_mut().extend(headers);
    Ok(response)
}

fn data<T: Serialize>(payload: &T) -> Event {
    // Serialising these plain structs cannot fail; an empty event would be
    // ignored by clients rather than break the stream.
    Event::default().data(serde_json::to_string(payload).unwrap_or_default())
}

/// OpenAI's event sequence: a role chunk, content chunks, a finish chunk, the
/// usage chunk when asked for, then `[DONE]`. A failure after the stream has
/// started becomes an error event followed by `[DONE]`, so clients never
/// hang on a half-finished stream.
fn sse_events(
    mut events: ChatStream,
    chunks: ChunkFactory,
    include_usage: bool,
) -> impl Stream<Item = Result<Event, Infallible>> {
    async_stream::stream! {
        yield Ok(data(&chunks.role()));
        let mut completion_tokens = None;
        while let Some(event) = events.next().await {
            match event {
                Ok(StreamEvent::Delta(text)) => yield Ok(data(&chunks.content(text))),
                Ok(StreamEvent::ToolCall(piece)) => yield Ok(data(&chunks.tool_call(piece))),
                Ok(StreamEvent::Finish(reason)) => yield Ok(data(&chunks.finish(reason))),
                Ok(StreamEvent::Usage(usage)) => {
                    completion_tokens = Some(usage.completion_tokens);
                    if include_usage {
                        yield Ok(data(&chunks.usage(usage)));
                    }
                }
                Err(error) => {
                    warn!(message = %error.message, "stream failed after it started");
                    yield Ok(data(&ApiError::from(error).body()));
                    break;
                }
            }
        }
        debug!(completion_tokens, "stream served");
        yield Ok(Event::default().data("[DONE]"));
    }
}
