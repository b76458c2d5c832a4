//! The OpenAI (and Azure OpenAI) face: chat completions whole and streamed
//! (role chunk, one chunk per word or tool-call fragment, finish chunk,
//! usage chunk when asked, `[DONE]`), embeddings, errors in
//! `{"error": {...}}`.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use switchyard_core::ToolCallDelta;
use switchyard_protocol::openai::{
    ChatCompletion, ChatCompletionRequest, Choice, ChoiceLogprobs, ChunkFactory, ErrorBody,
    ErrorObject, MessageContent, ResponseMessage, WireToolCall, WireToolChoice, WireUsage,
};
use switchyard_protocol::openai_embeddings::{
    EmbeddingObject, EmbeddingUsage, EmbeddingVector, EmbeddingsRequest, EmbeddingsResponse,
};

use crate::answer::{Answer, Piece, Prompt, answer, count_words};
use crate::{Fault, FaultFrames, Script, Standin, header_str, reset_response, sse_frame, sse_json};

const CREATED: u64 = 1_700_000_000;

fn error(status: StatusCode, message: &str) -> Response {
    let kind = match status.as_u16() {
        429 => "requests",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    };
    let body = ErrorBody {
        error: ErrorObject {
            message: message.to_owned(),
            kind: Some(kind.to_owned()),
            param: None,
            code: (status == StatusCode::TOO_MANY_REQUESTS)
                .then(|| serde_json::Value::String("rate_limit_exceeded".into())),
        },
    };
    (status, axum::Json(body)).into_response()
}

/// The scripted failure, if the headers ask for one.
fn scripted_failure(script: &Script) -> Option<Response> {
    let status = script.status?;
    Some(script.with_retry_after(error(
        status,
        &format!("stand-in failure with status {}", status.as_u16()),
    )))
}

fn text_of(content: &Option<MessageContent>) -> (String, usize) {
    match content {
        None => (String::new(), 0),
        Some(MessageContent::Text(text)) => (text.clone(), 0),
        Some(MessageContent::Parts(parts)) => {
            let mut text = String::new();
            let mut images = 0;
            for part in parts {
                match part {
                    switchyard_protocol::openai::ContentPart::Text { text: t } => text.push_str(t),
                    switchyard_protocol::openai::ContentPart::ImageUrl { .. } => images += 1,
                    _ => {}
                }
            }
            (text, images)
        }
    }
}

fn prompt_of(request: &ChatCompletionRequest) -> Prompt {
    let mut prompt = Prompt {
        max_tokens: request.max_completion_tokens.or(request.max_tokens),
        tools_allowed: true,
        ..Prompt::default()
    };
    for message in &request.messages {
        let (text, images) = text_of(&message.content);
        prompt.words += count_words(&text);
        prompt.images += images;
        if message.role == "user" {
            prompt.last_user = text.clone();
        }
        if message.role == "assistant" {
            prompt.assistant_turns += 1;
        }
    }
    // The results of the last round of calls: the tool messages the
    // conversation ends with.
    let results: Vec<String> = request
        .messages
        .iter()
        .rev()
        .take_while(|message| message.role == "tool")
        .map(|message| text_of(&message.content).0)
        .collect();
    if !results.is_empty() {
        let in_order: Vec<String> = results.into_iter().rev().collect();
        prompt.tool_result = Some(in_order.join(" | "));
    }
    prompt.tool_rounds = u32::try_from(
        request
            .messages
            .iter()
            .filter(|m| {
                m.role == "assistant" && m.tool_calls.as_ref().is_some_and(|c| !c.is_empty())
            })
            .count(),
    )
    .unwrap_or(u32::MAX);
    prompt.tools = request
        .tools
        .iter()
        .flatten()
        .filter_map(|t| t.function.as_ref().map(|f| f.name.clone()))
        .collect();
    match &request.tool_choice {
        Some(WireToolChoice::Mode(mode)) if mode == "none" => prompt.tools_allowed = false,
        Some(WireToolChoice::Named { function, .. }) => {
            prompt.forced_tool = Some(function.name.clone())
        }
        _ => {}
    }
    prompt
}

/// Each text piece of `answer` as a token, at `logprob` (or the unsure
/// one when the question carries the unsure mark).
fn token_logprobs(answer: &Answer, question: &str, logprob: f32) -> ChoiceLogprobs {
    let logprob = if question.contains(crate::UNSURE_MARK) {
        crate::UNSURE_LOGPROB
    } else {
        logprob
    };
    let tokens: Vec<switchyard_core::TokenLogprob> = answer
        .pieces
        .iter()
        .filter_map(|piece| match piece {
            Piece::Text(word) => Some(switchyard_core::TokenLogprob {
                token: word.clone(),
                logprob,
            }),
            Piece::Call { .. } => None,
        })
        .collect();
    ChoiceLogprobs::from_canonical(&tokens)
}

pub(crate) async fn chat_completions(
    State(standin): State<Standin>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let script = Script::read(&headers, &standin.config);
    if let Some(failure) = scripted_failure(&script) {
        return failure;
    }
    let request: ChatCompletionRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    if script.fault == Fault::Reset {
        return reset_response();
    }
    let mut prompt = prompt_of(&request);
    prompt.scripted_calls = script.tool_calls.clone();
    prompt.scripted_rounds = script.tool_rounds;
    let answer = answer(&prompt, script.reply_for(&prompt));
    let model = request.model.clone();

    if !request.is_stream() {
        let calls: Vec<WireToolCall> = answer
            .calls()
            .into_iter()
            .map(|(id, name, arguments)| {
                WireToolCall::from(&switchyard_core::ToolCall {
                    id,
                    name,
                    arguments,
                })
            })
            .collect();
        let completion = ChatCompletion {
            id: "chatcmpl-standin".into(),
            object: "chat.completion".into(),
            created: CREATED,
            model,
            choices: vec![Choice {
                index: 0,
                message: ResponseMessage {
                    role: "assistant".into(),
                    content: calls.is_empty().then(|| answer.text()),
                    refusal: None,
                    tool_calls: (!calls.is_empty()).then_some(calls),
                },
                finish_reason: Some(answer.finish.as_str().into()),
                logprobs: request
                    .logprobs
                    .unwrap_or(false)
                    .then(|| token_logprobs(&answer, &prompt.last_user, script.logprob)),
            }],
            usage: Some(WireUsage::from(answer.usage)),
            system_fingerprint: Some("fp_standin".into()),
            citations: None,
        };
        return axum::Json(completion).into_response();
    }

    let chunks = ChunkFactory::new("chatcmpl-standin".into(), CREATED, model);
    let mut frames = vec![(sse_json(None, &chunks.role()), false)];
    for (index, piece) in answer.pieces.iter().enumerate() {
        match piece {
            Piece::Text(word) => frames.push((sse_json(None, &chunks.content(word.clone())), true)),
            Piece::Call {
                id,
                name,
                fragments,
            } => {
                let call_index = u32::try_from(index).unwrap_or(0);
                frames.push((
                    sse_json(
                        None,
                        &chunks.tool_call(ToolCallDelta {
                            index: call_index,
                            id: Some(id.clone()),
                            name: Some(name.clone()),
                            arguments: String::new(),
                        }),
                    ),
                    true,
                ));
                for fragment in fragments {
                    frames.push((
                        sse_json(
                            None,
                            &chunks.tool_call(ToolCallDelta {
                                index: call_index,
                                id: None,
                                name: None,
                                arguments: fragment.clone(),
                            }),
                        ),
                        true,
                    ));
                }
            }
        }
    }
    frames.push((sse_json(None, &chunks.finish(answer.finish)), false));
    if request.wants_stream_usage() {
        frames.push((sse_json(None, &chunks.usage(answer.usage)), false));
    }
    frames.push((sse_frame(None, "[DONE]"), false));
    crate::stream_response(
        &standin,
        &script,
        "text/event-stream",
        frames,
        FaultFrames {
            malformed: sse_frame(None, "{\"choices\": [{\"delta\": "),
            error: sse_frame(
                None,
                "{\"error\": {\"message\": \"The server had an error while processing your request.\", \"type\": \"server_error\"}}",
            ),
        },
    )
}

/// A deterministic unit vector for `text`.
pub(crate) fn vector_for(text: &str, dimensions: usize) -> Vec<f32> {
    let mut vector: Vec<f32> = (0..dimensions)
        .map(|i| {
            text.bytes()
                .enumerate()
                .map(|(j, b)| f32::from(b) * (((i + 1) * (j + 1)) % 13) as f32)
                .sum::<f32>()
                + 1.0
        })
        .collect();
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
    vector.iter_mut().for_each(|v| *v /= norm);
    vector
}

pub(crate) async fn embeddings(
    State(standin): State<Standin>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let script = Script::read(&headers, &standin.config);
    if let Some(failure) = scripted_failure(&script) {
        return failure;
    }
    let request: EmbeddingsRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let model = request.model.clone();
    let (canonical, format) = match request.into_canonical() {
        Ok(parsed) => parsed,
        Err(invalid) => return error(StatusCode::BAD_REQUEST, &invalid.message),
    };
    let dimensions = canonical.dimensions.map_or(8, |d| d as usize);
    let words: u32 = canonical.inputs.iter().map(|t| count_words(t)).sum();
    let response = EmbeddingsResponse {
        object: "list".into(),
        data: canonical
            .inputs
            .iter()
            .enumerate()
            .map(|(index, text)| EmbeddingObject {
                object: "embedding".into(),
                index: u32::try_from(index).unwrap_or(0),
                embedding: EmbeddingVector::encode(vector_for(text, dimensions), format),
            })
            .collect(),
        model,
        usage: EmbeddingUsage {
            prompt_tokens: words,
            total_tokens: words,
        },
    };
    axum::Json(response).into_response()
}

/// Azure checks its own key header and `api-version` before anything else.
fn azure_gate(headers: &HeaderMap, query: &Option<String>) -> Option<Response> {
    if header_str(headers, "api-key").is_none() {
        return Some(error(
            StatusCode::UNAUTHORIZED,
            "Access denied due to invalid subscription key or wrong API endpoint.",
        ));
    }
    let has_version = query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|pair| pair.starts_with("api-version=")));
    (!has_version).then(|| error(StatusCode::NOT_FOUND, "Resource not found"))
}

pub(crate) async fn azure_chat_completions(
    State(standin): State<Standin>,
    Path(_deployment): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refusal) = azure_gate(&headers, &query) {
        return refusal;
    }
    chat_completions(State(standin), headers, body).await
}

pub(crate) async fn azure_embeddings(
    State(standin): State<Standin>,
    Path(_deployment): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refusal) = azure_gate(&headers, &query) {
        return refusal;
    }
    embeddings(State(standin), headers, body).await
}

pub(crate) async fn models() -> Response {
    axum::Json(serde_json::json!({
        "object": "list",
        "data": [{"id": "standin", "object": "model", "created": CREATED, "owned_by": "standin"}]
    }))
    .into_response()
}
