//! `POST /v1/chat/completions`, whole and streamed, grounded in a
//! collection when the request asks (see [`grounding`]).

use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::Serialize;
use std::sync::Arc;

use switchyard_core::{ChatRequest, ChatStream, StreamEvent};
use switchyard_governance::Caller;
use switchyard_orchestration::RequestContext;
use switchyard_orchestration::grounding::{Grounded, GroundingSpec, Retrieval};
use switchyard_protocol::openai::{
    ChatCompletion, ChatCompletionRequest, ChunkFactory, Citation, RetrievalOptions,
};
use tracing::{debug, warn};

use crate::AppState;
use crate::collections::DEFAULT_TENANT;
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
    let extension = body.retrieval.take();
    let mut request = body.into_canonical()?;
    let model = request.model.clone();
    tracing::Span::current().record("model", model.as_str());
    let grounding = grounding(&state, extension, &mut request)?;
    let (mut governed, grounded) = match &grounding {
        None => (
            governed::admit_chat(&state, &headers, &mut context, &request, stream).await?,
            None,
        ),
        Some((retrieval, spec)) => {
            let gateway = state.gateway.load_full();
            let mut grounded_request = request.clone();
            let ground = |caller: &Caller, context: &RequestContext| {
                let tenant = caller.tenant_id().unwrap_or(DEFAULT_TENANT).to_owned();
                let context = context.clone();
                async move {
                    let grounded = retrieval
                        .ground(&gateway, &tenant, &mut grounded_request, spec, &context)
                        .await
                        .map_err(ApiError::from)?;
                    Ok((grounded_request, grounded))
                }
            };
            let (governed, (grounded_request, grounded)) = governed::admit_chat_alongside(
                &state,
                &headers,
                &mut context,
                &request,
                stream,
                ground,
            )
            .await?;
            request = grounded_request;
            (governed, Some(grounded))
        }
    };
    governed.retrieval = grounded.as_ref().map(|g| g.elapsed);
    let citations = grounded.as_ref().map(citations);
    let gateway = state.gateway.load_full();
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());

    if stream {
        let (events, headers) = governed.chat_stream(&gateway, request, &context).await?;
        let chunks = ChunkFactory::new(id, created, model);
        let mut response = Sse::new(sse_events(events, chunks, include_usage, citations))
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
    let mut completion = ChatCompletion::from_canonical(id, created, model, &answer);
    completion.citations = citations;
    let mut response = Json(completion).into_response();
    response.headers_mut().extend(headers);
    Ok(response)
}

/// How the request asks to be grounded, if it does: the `retrieval`
/// extension, or a model name that is an assistant (whose model then
/// answers).
fn grounding(
    state: &AppState,
    extension: Option<RetrievalOptions>,
    request: &mut ChatRequest,
) -> Result<Option<(Arc<Retrieval>, GroundingSpec)>, ApiError> {
    let Some(retrieval) = state.retrieval.clone() else {
        if extension.is_some() {
            return Err(ApiError::invalid_request(
                "retrieval is not available on this server: no embeddings model is configured",
                Some("retrieval".into()),
            ));
        }
        return Ok(None);
    };
    if let Some(options) = extension {
        let spec = retrieval
            .request_spec(
                options.collection,
                options.top_k,
                options.mode.as_deref(),
                options.filter,
            )
            .map_err(|e| ApiError {
                param: Some("retrieval".into()),
                ..ApiError::from(e)
            })?;
        return Ok(Some((retrieval, spec)));
    }
    match retrieval.assistant_spec(&request.model) {
        Some((model, spec)) => {
            request.model = model;
            Ok(Some((retrieval, spec)))
        }
        None => Ok(None),
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
