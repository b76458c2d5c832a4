//! OpenAI's Responses API: `POST /v1/responses` (whole, or streamed as
//! semantic events), `GET` and `DELETE /v1/responses/{id}`, and
//! `GET /v1/responses/{id}/input_items`. Handlers parse, call the
//! pipeline (which answers on the chat path with the stored history and
//! keeps the response), and encode.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use switchyard_core::{ChatStream, ContentPart, Item, Role, StreamEvent, ToolRun, Usage};
use switchyard_pipeline::responses::{Continuation, Finished, Turn};
use switchyard_pipeline::{Grounded, Pipeline};
use switchyard_protocol::openai_responses::{
    Annotation, OutputContent, OutputItem, ResponseError, ResponseEvent, ResponseObject,
    ResponsesRequest, Sequenced, answer_items, input_item, new_id, output_item, status_of,
    tool_run_item,
};
use tracing::warn;

use crate::AppState;
use crate::calls::{self, Authenticated};
use crate::context::answer_headers;
use crate::error::ApiError;
use crate::extract::OpenAiJson;

/// Comment lines that keep idle streams open through proxies.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// A grounded answer's sources, as citations on its text.
fn annotations(grounded: Option<&Grounded>) -> Vec<Annotation> {
    grounded.map_or_else(Vec::new, |grounded| {
        grounded
            .sources
            .iter()
            .map(|source| Annotation {
                kind: "file_citation".into(),
                file_id: source.hit.document_id.clone(),
                filename: if source.hit.title.is_empty() {
                    source
                        .hit
                        .source
                        .clone()
                        .unwrap_or_else(|| source.hit.document_id.clone())
                } else {
                    source.hit.title.clone()
                },
                index: source.index,
            })
            .collect()
    })
}

fn render(items: &[Item], annotations: &[Annotation]) -> Vec<OutputItem> {
    items
        .iter()
        .filter_map(|item| output_item(item, annotations))
        .collect()
}

/// Settles `object` from the answer's end (`shown`: its output as the
/// client sees it) and stores it (with `output`, the items a later turn
/// continues from) when the turn asked to be stored.
async fn finish(
    pipeline: &Pipeline,
    continuation: Continuation,
    object: &mut ResponseObject,
    finish_reason: Option<switchyard_core::FinishReason>,
    usage: Usage,
    output: Vec<Item>,
    shown: Vec<OutputItem>,
) -> Result<(), ApiError> {
    let (status, incomplete) =
        status_of(finish_reason.unwrap_or(switchyard_core::FinishReason::Stop));
    object.status = status.to_owned();
    object.incomplete_details = incomplete;
    object.usage = Some(usage.into());
    object.output = shown;
    let body = serde_json::to_string(&*object).map_err(|error| {
        ApiError::from(switchyard_core::BackendError::internal(format!(
            "cannot encode the response: {error}"
        )))
    })?;
    let finished = Finished {
        created_at: i64::try_from(object.created_at.saturating_mul(1000)).unwrap_or(i64::MAX),
        model: object.model.clone(),
        status: status.to_owned(),
        body,
        output,
    };
    Ok(pipeline.remember(continuation, finished).await?)
}

/// `POST /v1/responses`.
pub(crate) async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    OpenAiJson(mut body): OpenAiJson<ResponsesRequest>,
) -> Result<Response, ApiError> {
    let routing_metadata: Option<BTreeMap<String, serde_json::Value>> =
        body.metadata.as_ref().map(|metadata| {
            metadata
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect()
        });
    let call = calls::call(&headers, routing_metadata.as_ref());
    let grounding = body.retrieval.take().map(crate::chat::grounding_ask);
    let (request, turn) = body.into_canonical()?;
    tracing::Span::current().record("model", request.model.as_str());
    let id = new_id("resp");
    let object = ResponseObject::new(id.clone(), now().as_secs(), request.model.clone(), &turn);
    let stream = turn.stream;
    let pipeline_turn = Turn {
        response_id: id,
        instructions: turn.instructions,
        input: turn.input,
        previous_response_id: turn.previous_response_id,
        conversation_id: turn.conversation_id,
        store: turn.store,
        truncation_auto: turn.truncation_auto,
    };

    if stream {
        let (answer, continuation) = state
            .pipeline
            .respond_stream(call, request, grounding, pipeline_turn)
            .await?;
        let headers = answer_headers(&answer.routed, &answer.rate_limits);
        let notes = annotations(answer.grounded.as_ref());
        let events = semantic_events(
            state.pipeline.clone(),
            answer.routed.value,
            object,
            continuation,
            notes,
        );
        let mut response = Sse::new(events)
            .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
            .into_response();
        response
            .headers_mut()
            .insert("x-accel-buffering", HeaderValue::from_static("no"));
        response.headers_mut().extend(headers);
        return Ok(response);
    }

    let (answer, continuation) = state
        .pipeline
        .respond(call, request, grounding, pipeline_turn)
        .await?;
    let headers = answer_headers(&answer.routed, &answer.rate_limits);
    let whole = &answer.routed.value;
    let notes = annotations(answer.grounded.as_ref());
    let output = answer_items(&new_id("msg"), &whole.content, &whole.tool_calls);
    // The calls Switchyard ran come first, as they did when streamed.
    let shown = whole
        .tool_runs
        .iter()
        .map(|run| tool_run_item(&new_id("mcp"), run))
        .chain(render(&output, &notes))
        .collect();
    let mut object = object;
    finish(
        &state.pipeline,
        continuation,
        &mut object,
        Some(whole.finish_reason),
        whole.usage,
        output,
        shown,
    )
    .await?;
    let mut response = Json(object).into_response();
    response.headers_mut().extend(headers);
    Ok(response)
}

/// The items of an answer as they stream: text opens a message, each
/// call its own item, in the order they come.
enum Open {
    Message {
        id: String,
        text: String,
    },
    Call {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
        index: u32,
    },
    /// A tool Switchyard runs for the model: shown, but not an item a
    /// later turn continues from (its result is in the answer).
    Run {
        id: String,
        run: ToolRun,
    },
}

impl Open {
    /// The item a later turn continues from, if it is one.
    fn item(&self) -> Option<Item> {
        match self {
            Open::Message { id, text } => Some(Item::Message {
                id: id.clone(),
                role: Role::Assistant,
                content: vec![ContentPart::Text(text.clone())],
            }),
            Open::Call {
                id,
                call_id,
                name,
                arguments,
                ..
            } => Some(Item::FunctionCall {
                id: id.clone(),
                call_id: call_id.clone(),
                name: name.clone(),
                arguments: arguments.clone(),
            }),
            Open::Run { .. } => None,
        }
    }

    /// The item as the client sees it.
    fn shown(&self, annotations: &[Annotation]) -> Option<OutputItem> {
        match self {
            Open::Run { id, run } => Some(tool_run_item(id, run)),
            other => other
                .item()
                .and_then(|item| output_item(&item, annotations)),
        }
    }

    /// The events that close this item, at `output_index`.
    fn close(&self, output_index: usize, annotations: &[Annotation]) -> Vec<ResponseEvent> {
        let item = self.shown(annotations);
        let mut events = match self {
            Open::Message { id, text } => vec![
                ResponseEvent::OutputTextDone {
                    item_id: id.clone(),
                    output_index,
                    content_index: 0,
                    text: text.clone(),
                    logprobs: Vec::new(),
                },
                ResponseEvent::ContentPartDone {
                    item_id: id.clone(),
                    output_index,
                    content_index: 0,
                    part: OutputContent::text(text.clone(), annotations.to_vec()),
                },
            ],
            Open::Call {
                id,
                name,
                arguments,
                ..
            } => vec![ResponseEvent::FunctionCallArgumentsDone {
                item_id: id.clone(),
                output_index,
                name: name.clone(),
                arguments: arguments.clone(),
            }],
            Open::Run { id, run } => {
                let item_id = id.clone();
                vec![match &run.ended {
                    Some(end) if end.failed => ResponseEvent::McpCallFailed {
                        item_id,
                        output_index,
                    },
                    _ => ResponseEvent::McpCallCompleted {
                        item_id,
                        output_index,
                    },
                }]
            }
        };
        if let Some(item) = item {
            events.push(ResponseEvent::OutputItemDone { output_index, item });
        }
        events
    }
}

/// OpenAI's semantic events for a streamed answer, in order, each with
/// its `sequence_number`: created, in progress, items added and their
/// text or arguments as deltas, items done, then completed (or
/// incomplete) once the response is stored; a failure after the start is
/// `response.failed`.
fn semantic_events(
    pipeline: std::sync::Arc<Pipeline>,
    mut events: ChatStream,
    mut object: ResponseObject,
    continuation: Continuation,
    annotations: Vec<Annotation>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    async_stream::stream! {
        let mut sequence = 0u64;
        let mut emit = |event: ResponseEvent| {
            // Serialising these plain structs cannot fail; an empty event
            // would be ignored by clients rather than break the stream.
            let data = serde_json::to_string(&Sequenced { event: &event, sequence_number: sequence })
                .unwrap_or_default();
            sequence += 1;
            Ok::<_, Infallible>(Event::default().event(event.name()).data(data))
        };
        yield emit(ResponseEvent::Created { response: Box::new(object.clone()) });
        yield emit(ResponseEvent::InProgress { response: Box::new(object.clone()) });
        let mut done: Vec<Open> = Vec::new();
        let mut open: Option<Open> = None;
        // Tool calls the gateway runs, started and not yet ended, in
        // order (they end in that order; their places follow `done`).
        let mut running: Vec<Open> = Vec::new();
        let mut finish_reason = None;
        let mut usage = Usage::default();
        while let Some(event) = events.next().await {
            match event {
                Ok(StreamEvent::Delta(text)) => {
                    if !matches!(open, Some(Open::Message { .. })) {
                        if let Some(previous) = open.take() {
                            for event in previous.close(done.len(), &annotations) {
                                yield emit(event);
                            }
                            done.push(previous);
                        }
                        let id = new_id("msg");
                        yield emit(ResponseEvent::OutputItemAdded {
                            output_index: done.len(),
                            item: OutputItem::Message {
                                id: id.clone(),
                                status: "in_progress".into(),
                                role: "assistant".into(),
                                content: Vec::new(),
                            },
                        });
                        yield emit(ResponseEvent::ContentPartAdded {
                            item_id: id.clone(),
                            output_index: done.len(),
                            content_index: 0,
                            part: OutputContent::text(String::new(), Vec::new()),
                        });
                        open = Some(Open::Message { id, text: String::new() });
                    }
                    if let Some(Open::Message { id, text: so_far }) = &mut open {
                        so_far.push_str(&text);
                        yield emit(ResponseEvent::OutputTextDelta {
                            item_id: id.clone(),
                            output_index: done.len(),
                            content_index: 0,
                            delta: text,
                            logprobs: Vec::new(),
                        });
                    }
                }
                Ok(StreamEvent::ToolCall(piece)) => {
                    let same_call = matches!(&open, Some(Open::Call { index, .. }) if *index == piece.index);
                    if !same_call {
                        if let Some(previous) = open.take() {
                            for event in previous.close(done.len(), &annotations) {
                                yield emit(event);
                            }
                            done.push(previous);
                        }
                        let call_id = piece.id.clone().unwrap_or_else(|| new_id("call"));
                        let id = new_id("fc");
                        let name = piece.name.clone().unwrap_or_default();
                        yield emit(ResponseEvent::OutputItemAdded {
                            output_index: done.len(),
                            item: OutputItem::FunctionCall {
                                id: id.clone(),
                                call_id: call_id.clone(),
                                name: name.clone(),
                                arguments: String::new(),
                                status: "in_progress".into(),
                            },
                        });
                        open = Some(Open::Call { id, call_id, name, arguments: String::new(), index: piece.index });
                    }
                    if let Some(Open::Call { id, arguments, .. }) = &mut open
                        && !piece.arguments.is_empty()
                    {
                        arguments.push_str(&piece.arguments);
                        yield emit(ResponseEvent::FunctionCallArgumentsDelta {
                            item_id: id.clone(),
                            output_index: done.len(),
                            delta: piece.arguments,
                        });
                    }
                }
                Ok(StreamEvent::ToolRun(run)) if run.ended.is_none() => {
                    if let Some(previous) = open.take() {
                        for event in previous.close(done.len(), &annotations) {
                            yield emit(event);
                        }
                        done.push(previous);
                    }
                    let id = new_id("mcp");
                    let output_index = done.len() + running.len();
                    let arguments = run.arguments.clone();
                    yield emit(ResponseEvent::OutputItemAdded { output_index, item: tool_run_item(&id, &run) });
                    yield emit(ResponseEvent::McpCallInProgress { item_id: id.clone(), output_index });
                    yield emit(ResponseEvent::McpCallArgumentsDelta { item_id: id.clone(), output_index, delta: arguments.clone() });
                    yield emit(ResponseEvent::McpCallArgumentsDone { item_id: id.clone(), output_index, arguments });
                    running.push(Open::Run { id, run });
                }
                Ok(StreamEvent::ToolRun(ended)) => {
                    for waiting in &mut running {
                        if let Open::Run { run, .. } = waiting
                            && run.call_id == ended.call_id
                            && run.ended.is_none()
                        {
                            run.ended = ended.ended.clone();
                            break;
                        }
                    }
                    while running.first().is_some_and(|first| matches!(first, Open::Run { run, .. } if run.ended.is_some())) {
                        let finished = running.remove(0);
                        for event in finished.close(done.len(), &annotations) {
                            yield emit(event);
                        }
                        done.push(finished);
                    }
                }
                Ok(StreamEvent::Finish(reason)) => finish_reason = Some(reason),
                Ok(StreamEvent::Usage(counts)) => usage = counts,
                Err(error) => {
                    warn!(message = %error.message, "response stream failed after it started");
                    let error = ApiError::from(error);
                    object.status = "failed".into();
                    object.error = Some(ResponseError {
                        code: error.code.unwrap_or_else(|| error.kind.to_owned()),
                        message: error.message,
                    });
                    yield emit(ResponseEvent::Failed { response: Box::new(object) });
                    return;
                }
            }
        }
        if let Some(last) = open.take() {
            for event in last.close(done.len(), &annotations) {
                yield emit(event);
            }
            done.push(last);
        }
        if finish_reason.is_none() {
            object.status = "failed".into();
            object.error = Some(ResponseError {
                code: "server_error".into(),
                message: "the answer ended before the model finished".into(),
            });
            yield emit(ResponseEvent::Failed { response: Box::new(object) });
            return;
        }
        let output: Vec<Item> = done.iter().filter_map(Open::item).collect();
        let shown: Vec<OutputItem> = done.iter().filter_map(|item| item.shown(&annotations)).collect();
        let stored = finish(&pipeline, continuation, &mut object, finish_reason, usage, output, shown).await;
        if let Err(error) = stored {
            object.status = "failed".into();
            object.error = Some(ResponseError {
                code: error.code.unwrap_or_else(|| "server_error".into()),
                message: error.message,
            });
            yield emit(ResponseEvent::Failed { response: Box::new(object) });
            return;
        }
        let response = Box::new(object);
        if response.status == "incomplete" {
            yield emit(ResponseEvent::Incomplete { response });
        } else {
            yield emit(ResponseEvent::Completed { response });
        }
    }
}

/// `GET /v1/responses/{id}`.
pub(crate) async fn retrieve(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let stored = state.pipeline.stored_response(&who.caller, &id).await?;
    let object: ResponseObject = serde_json::from_str(&stored.body).map_err(|error| {
        ApiError::from(switchyard_core::BackendError::internal(format!(
            "the stored response {id:?} does not decode: {error}"
        )))
    })?;
    Ok(Json(object).into_response())
}

/// `DELETE /v1/responses/{id}`.
pub(crate) async fn delete(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.pipeline.delete_response(&who.caller, &id).await?;
    Ok(
        Json(serde_json::json!({"id": id, "object": "response.deleted", "deleted": true}))
            .into_response(),
    )
}

/// Paging of item lists.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Paging {
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub order: Option<String>,
    #[serde(default)]
    pub after: Option<String>,
}

/// `GET /v1/responses/{id}/input_items`: the items the model was given,
/// newest first unless `order=asc`, `limit` (1 to 100, default 20) at a
/// time after the item `after`.
pub(crate) async fn input_items(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
    Query(paging): Query<Paging>,
) -> Result<Response, ApiError> {
    let items = state.pipeline.response_input(&who.caller, &id).await?;
    Ok(Json(page(items, &paging)?).into_response())
}

/// One page of `items` as OpenAI lists them: newest first unless
/// `order=asc`, `limit` (1 to 100, default 20) at a time after the item
/// `after`.
pub(crate) fn page(mut items: Vec<Item>, paging: &Paging) -> Result<serde_json::Value, ApiError> {
    let limit = paging.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid_request(
            "`limit` must be between 1 and 100",
            Some("limit".into()),
        ));
    }
    match paging.order.as_deref() {
        None | Some("desc") => items.reverse(),
        Some("asc") => {}
        Some(other) => {
            return Err(ApiError::invalid_request(
                format!("`order` must be asc or desc; got {other:?}"),
                Some("order".into()),
            ));
        }
    }
    let start = match &paging.after {
        None => 0,
        Some(after) => match items.iter().position(|item| item.id() == after) {
            Some(at) => at + 1,
            None => {
                return Err(ApiError::invalid_request(
                    format!("no input item {after:?} in this response"),
                    Some("after".into()),
                ));
            }
        },
    };
    let page: Vec<&Item> = items.iter().skip(start).take(limit).collect();
    let has_more = start + page.len() < items.len();
    Ok(serde_json::json!({
        "object": "list",
        "data": page.iter().map(|item| input_item(item)).collect::<Vec<_>>(),
        "first_id": page.first().map(|item| item.id()),
        "last_id": page.last().map(|item| item.id()),
        "has_more": has_more,
    }))
}
