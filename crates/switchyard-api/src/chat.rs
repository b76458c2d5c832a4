//! `POST /v1/chat/completions`, whole and streamed, grounded in a
//! collection when the request asks (the `retrieval` extension, or an
//! assistant's name as the model).

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
use switchyard_pipeline::{Grounded, GroundingAsk};
use switchyard_protocol::openai::{
    ChatCompletion, ChatCompletionRequest, ChunkFactory, Citation, RetrievalOptions,
};
use tracing::{debug, warn};

use crate::AppState;
use crate::calls;
use crate::context::answer_headers;
use crate::error::ApiError;
use crate::extract::OpenAiJson;

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
    let call = calls::call(&headers, body.metadata.take().as_ref());
    let grounding = body.retrieval.take().map(grounding_ask);
    let request = body.into_canonical()?;
    let model = request.model.clone();
    tracing::Span::current().record("model", model.as_str());
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());

    if stream {
        let answer = state.pipeline.chat_stream(call, request, grounding).await?;
        let headers = answer_headers(&answer.routed, &answer.rate_limits);
        let citations = answer.grounded.as_ref().map(citations);
        let chunks = ChunkFactory::new(id, created, model);
        let events = sse_events(answer.routed.value, chunks, include_usage, citations);
        let mut response = Sse::new(events)
            .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
            .into_response();
        // Tell buffering reverse proxies (nginx) to pass events straight on.
        response
            .headers_mut()
            .insert("x-accel-buffering", HeaderValue::from_static("no"));
        response.headers_mut().extend(headers);
        return Ok(response);
    }

    let answer = state.pipeline.chat(call, request, grounding).await?;
    let headers = answer_headers(&answer.routed, &answer.rate_limits);
    let whole = &answer.routed.value;
    debug!(
        finish_reason = whole.finish_reason.as_str(),
        prompt_tokens = whole.usage.prompt_tokens,
        completion_tokens = whole.usage.completion_tokens,
        "completion served"
    );
    let mut completion = ChatCompletion::from_canonical(id, created, model, whole);
    completion.citations = answer.grounded.as_ref().map(citations);
    let mut response = Json(completion).into_response();
    response.headers_mut().extend(headers);
    Ok(response)
}

/// The `retrieval` extension as the pipeline takes it.
pub(crate) fn grounding_ask(options: RetrievalOptions) -> GroundingAsk {
    GroundingAsk {
        collection: options.collection,
        top_k: options.top_k,
        mode: options.mode,
        filter: options.filter,
    }
}

fn citations(grounded: &Grounded) -> Vec<Citation> {
    grounded
        .sources
        .iter()
        .map(|source| Citation {
            index: source.index,
            collection: grounded.collection.clone(),
            document_id: source.hit.document_id.clone(),
            chunk_id: source.hit.chunk_id.clone(),
            title: source.hit.title.clone(),
            heading_path: source.hit.heading_path.clone(),
            source: source.hit.source.clone(),
            start: source.hit.start,
            end: source.hit.end,
            score: source.hit.score,
            text: source.hit.text.clone(),
        })
        .collect()
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
    citations: Option<Vec<Citation>>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    async_stream::stream! {
        let mut first = chunks.role();
        first.citations = citations;
        yield Ok(data(&first));
        let mut completion_tokens = None;
        while let Some(event) = events.next().await {
            match event {
                Ok(StreamEvent::Delta(text)) => yield Ok(data(&chunks.content(text))),
                Ok(StreamEvent::ToolCall(piece)) => yield Ok(data(&chunks.tool_call(piece))),
                Ok(StreamEvent::Finish(reason)) => yield Ok(data(&chunks.finish(reason))),
                // Chat completions have no shape for a tool the gateway
                // runs: the client sees the answer it leads to.
                Ok(StreamEvent::ToolRun(_)) => {}
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
