//! The Anthropic face: `POST /v1/messages` with `x-api-key` and
//! `anthropic-version`, whole messages and the SSE event sequence
//! (`message_start`, `content_block_start`, `ping`, `content_block_delta`,
//! `content_block_stop`, `message_delta`, `message_stop`), errors in
//! `{"type": "error", "error": {...}}`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::answer::{Piece, Prompt, answer, count_words};
use crate::{Fault, FaultFrames, Script, Standin, header_str, reset_response, sse_frame};

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let mut response = (
        status,
        axum::Json(json!({"type": "error", "error": {"type": kind, "message": message}})),
    )
        .into_response();
    if let Ok(id) = "req_standin".parse() {
        response.headers_mut().insert("request-id", id);
    }
    response
}

fn class_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

fn text_and_images(content: &Value) -> (String, usize) {
    match content {
        Value::String(text) => (text.clone(), 0),
        Value::Array(blocks) => {
            let mut text = String::new();
            let mut images = 0;
            for block in blocks {
                match block["type"].as_str() {
                    Some("text") => text.push_str(block["text"].as_str().unwrap_or("")),
                    Some("image") => images += 1,
                    _ => {}
                }
            }
            (text, images)
        }
        _ => (String::new(), 0),
    }
}

fn prompt_of(request: &Value) -> Prompt {
    let mut prompt = Prompt {
        max_tokens: request["max_tokens"].as_u64().map(|m| m as u32),
        tools_allowed: true,
        ..Prompt::default()
    };
    if let Some(system) = request["system"].as_str() {
        prompt.words += count_words(system);
    }
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    for message in &messages {
        let (text, images) = text_and_images(&message["content"]);
        prompt.words += count_words(&text);
        prompt.images += images;
        if message["role"] == "assistant" {
            prompt.assistant_turns += 1;
        }
        if message["role"] == "user" && !text.is_empty() {
            prompt.last_user = text;
        }
    }
    if let Some(last) = messages.last()
        && let Some(blocks) = last["content"].as_array()
        && let Some(result) = blocks.iter().find(|b| b["type"] == "tool_result")
    {
        let content = &result["content"];
        prompt.tool_result = Some(match content {
            Value::String(text) => text.clone(),
            other => text_and_images(other).0,
        });
    }
    prompt.tools = request["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| t["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    match request["tool_choice"]["type"].as_str() {
        Some("none") => prompt.tools_allowed = false,
        Some("tool") => {
            prompt.forced_tool = request["tool_choice"]["name"].as_str().map(str::to_owned)
        }
        _ => {}
    }
    prompt
}

fn stop_reason(finish: switchyard_core::FinishReason) -> &'static str {
    match finish {
        switchyard_core::FinishReason::Length => "max_tokens",
        switchyard_core::FinishReason::ToolCalls => "tool_use",
        _ => "end_turn",
    }
}

fn event(name: &str, payload: Value) -> Bytes {
    sse_frame(Some(name), &payload.to_string())
}

pub(crate) async fn messages(
    State(standin): State<Standin>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if header_str(&headers, "x-api-key").is_none() {
        return error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "x-api-key header is required",
        );
    }
    if header_str(&headers, "anthropic-version").is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "anthropic-version: header is required",
        );
    }
    let script = Script::read(&headers, &standin.config);
    if let Some(status) = script.status {
        return script.with_retry_after(error(
            status,
            class_of(status),
            &format!("stand-in failure with status {}", status.as_u16()),
        ));
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &e.to_string(),
            );
        }
    };
    if request["max_tokens"].as_u64().is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "max_tokens: Field required",
        );
    }
    if script.fault == Fault::Reset {
        return reset_response();
    }
    let prompt = prompt_of(&request);
    let answer = answer(&prompt, script.reply_for(&prompt));
    let model = request["model"].as_str().unwrap_or("claude").to_owned();
    let usage = json!({
        "input_tokens": answer.usage.prompt_tokens,
        "output_tokens": answer.usage.completion_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    });

    if request["stream"] != true {
        let mut content = Vec::new();
        if !answer.text().is_empty() {
            content.push(json!({"type": "text", "text": answer.text()}));
        }
        for (id, name, arguments) in answer.calls() {
            let input: Value = serde_json::from_str(&arguments).unwrap_or(json!({}));
            content.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
        }
        return axum::Json(json!({
            "id": "msg_standin",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop_reason(answer.finish),
            "stop_sequence": null,
            "usage": usage,
        }))
        .into_response();
    }

    let mut frames = vec![
        (
            event(
                "message_start",
                json!({"type": "message_start", "message": {
                    "id": "msg_standin", "type": "message", "role": "assistant", "model": model,
                    "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": answer.usage.prompt_tokens, "output_tokens": 1,
                              "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}),
            ),
            false,
        ),
        (event("ping", json!({"type": "ping"})), false),
    ];
    let mut index = 0;
    let mut text_open = false;
    for piece in &answer.pieces {
        match piece {
            Piece::Text(word) => {
                if !text_open {
                    frames.push((
                        event(
                            "content_block_start",
                            json!({"type": "content_block_start", "index": index,
                                   "content_block": {"type": "text", "text": ""}}),
                        ),
                        false,
                    ));
                    text_open = true;
                }
                frames.push((
                    event(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": index,
                               "delta": {"type": "text_delta", "text": word}}),
                    ),
                    true,
                ));
            }
            Piece::Call {
                id,
                name,
                fragments,
            } => {
                if text_open {
                    frames.push((
                        event(
                            "content_block_stop",
                            json!({"type": "content_block_stop", "index": index}),
                        ),
                        false,
                    ));
                    index += 1;
                    text_open = false;
                }
                frames.push((
                    event(
                        "content_block_start",
                        json!({"type": "content_block_start", "index": index,
                               "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
                    ),
                    true,
                ));
                for fragment in fragments {
                    frames.push((
                        event(
                            "content_block_delta",
                            json!({"type": "content_block_delta", "index": index,
                                   "delta": {"type": "input_json_delta", "partial_json": fragment}}),
                        ),
                        true,
                    ));
                }
                frames.push((
                    event(
                        "content_block_stop",
                        json!({"type": "content_block_stop", "index": index}),
                    ),
                    false,
                ));
                index += 1;
            }
        }
    }
    if text_open {
        frames.push((
            event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            ),
            false,
        ));
    }
    frames.push((
        event(
            "message_delta",
            json!({"type": "message_delta",
                   "delta": {"stop_reason": stop_reason(answer.finish), "stop_sequence": null},
                   "usage": {"output_tokens": answer.usage.completion_tokens}}),
        ),
        false,
    ));
    frames.push((
        event("message_stop", json!({"type": "message_stop"})),
        false,
    ));
    crate::stream_response(
        &standin,
        &script,
        "text/event-stream",
        frames,
        FaultFrames {
            malformed: sse_frame(
                Some("content_block_delta"),
                "{\"type\": \"content_block_delta\", \"ind",
            ),
            // Streams that fail after they started send Anthropic's `error` event.
            error: event(
                "error",
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            ),
        },
    )
}
