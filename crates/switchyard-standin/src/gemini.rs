//! The Gemini face: `POST /v1beta/models/{model}:generateContent`,
//! `:streamGenerateContent?alt=sse` and `:batchEmbedContents`, key in
//! `x-goog-api-key`, errors as `{"error": {"code", "message", "status"}}`
//! with `RetryInfo` details on 429.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::answer::{Answer, Piece, Prompt, answer, count_words};
use crate::{Fault, FaultFrames, Script, Standin, header_str, reset_response};

fn status_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

fn error(status: StatusCode, message: &str, retry_delay: Option<&str>) -> Response {
    let mut body = json!({"error": {"code": status.as_u16(), "message": message, "status": status_name(status)}});
    if let Some(delay) = retry_delay {
        body["error"]["details"] = json!([
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format!("{delay}s")}
        ]);
    }
    (status, axum::Json(body)).into_response()
}

fn prompt_of(request: &Value) -> Prompt {
    let mut prompt = Prompt {
        max_tokens: request["generationConfig"]["maxOutputTokens"]
            .as_u64()
            .map(|m| m as u32),
        tools_allowed: true,
        ..Prompt::default()
    };
    for part in request["systemInstruction"]["parts"]
        .as_array()
        .into_iter()
        .flatten()
    {
        prompt.words += count_words(part["text"].as_str().unwrap_or(""));
    }
    let contents = request["contents"].as_array().cloned().unwrap_or_default();
    for content in &contents {
        let mut text = String::new();
        for part in content["parts"].as_array().into_iter().flatten() {
            if let Some(piece) = part["text"].as_str() {
                text.push_str(piece);
            }
            if part.get("inlineData").is_some() || part.get("fileData").is_some() {
                prompt.images += 1;
            }
        }
        prompt.words += count_words(&text);
        if content["role"] == "user" && !text.is_empty() {
            prompt.last_user = text;
        }
    }
    if let Some(last) = contents.last()
        && let Some(response) = last["parts"]
            .as_array()
            .and_then(|parts| parts.iter().find_map(|p| p.get("functionResponse")))
    {
        let body = &response["response"];
        prompt.tool_result = Some(match body.get("result") {
            Some(Value::String(text)) => text.clone(),
            _ => body.to_string(),
        });
    }
    prompt.tools = request["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|tool| {
            tool["functionDeclarations"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|d| d["name"].as_str().map(str::to_owned))
        .collect();
    let config = &request["toolConfig"]["functionCallingConfig"];
    if config["mode"] == "NONE" {
        prompt.tools_allowed = false;
    }
    prompt.forced_tool = config["allowedFunctionNames"][0]
        .as_str()
        .map(str::to_owned);
    prompt
}

fn usage(answer: &Answer) -> Value {
    json!({
        "promptTokenCount": answer.usage.prompt_tokens,
        "candidatesTokenCount": answer.usage.completion_tokens,
        "totalTokenCount": answer.usage.total_tokens(),
    })
}

fn finish_name(answer: &Answer) -> &'static str {
    match answer.finish {
        switchyard_core::FinishReason::Length => "MAX_TOKENS",
        _ => "STOP",
    }
}

fn parts(pieces: &[Piece]) -> Vec<Value> {
    pieces
        .iter()
        .map(|piece| match piece {
            Piece::Text(text) => json!({"text": text}),
            Piece::Call {
                name, fragments, ..
            } => {
                let args: Value = serde_json::from_str(&fragments.concat()).unwrap_or(json!({}));
                json!({"functionCall": {"name": name, "args": args}})
            }
        })
        .collect()
}

fn sse(payload: &Value) -> Bytes {
    // Google separates events with CRLF pairs.
    Bytes::from(format!("data: {payload}\r\n\r\n"))
}

pub(crate) async fn model_action(
    State(standin): State<Standin>,
    Path(action): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if header_str(&headers, "x-goog-api-key").is_none() {
        return error(
            StatusCode::FORBIDDEN,
            "Method doesn't allow unregistered callers. Please use an API key.",
            None,
        );
    }
    let script = Script::read(&headers, &standin.config);
    if let Some(status) = script.status {
        return error(
            status,
            &format!("stand-in failure with status {}", status.as_u16()),
            script.retry_after.as_deref(),
        );
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string(), None),
    };
    let Some((model, method)) = action.split_once(':') else {
        return error(StatusCode::NOT_FOUND, "unknown method", None);
    };
    match method {
        "generateContent" => generate(&standin, &script, model, &request, false),
        "streamGenerateContent" if query.as_deref() == Some("alt=sse") => {
            generate(&standin, &script, model, &request, true)
        }
        "batchEmbedContents" => embed(&request),
        other => error(
            StatusCode::NOT_FOUND,
            &format!("method {other} is not served by the stand-in"),
            None,
        ),
    }
}

fn generate(
    standin: &Standin,
    script: &Script,
    model: &str,
    request: &Value,
    stream: bool,
) -> Response {
    if script.fault == Fault::Reset {
        return reset_response();
    }
    let prompt = prompt_of(request);
    let answer = answer(&prompt, script.reply_for(&prompt));
    if script.fault == Fault::BlockedPrompt {
        let blocked = json!({
            "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
            "usageMetadata": {"promptTokenCount": answer.usage.prompt_tokens, "totalTokenCount": answer.usage.prompt_tokens},
            "modelVersion": model,
        });
        if stream {
            return axum::response::Response::builder()
                .header(axum::http::header::CONTENT_TYPE, "text/event-stream")
                .body(axum::body::Body::from(sse(&blocked)))
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
        }
        return axum::Json(blocked).into_response();
    }
    let finish = if script.fault == Fault::Safety {
        "SAFETY"
    } else {
        finish_name(&answer)
    };
    if !stream {
        let content = if script.fault == Fault::Safety {
            json!({"role": "model", "parts": []})
        } else {
            json!({"role": "model", "parts": parts(&answer.pieces)})
        };
        return axum::Json(json!({
            "candidates": [{"content": content, "finishReason": finish, "index": 0}],
            "usageMetadata": usage(&answer),
            "modelVersion": model,
        }))
        .into_response();
    }
    let mut frames = Vec::new();
    for piece in &answer.pieces {
        let chunk = json!({
            "candidates": [{"content": {"role": "model", "parts": parts(std::slice::from_ref(piece))}, "index": 0}],
            "usageMetadata": {"promptTokenCount": answer.usage.prompt_tokens},
            "modelVersion": model,
        });
        frames.push((sse(&chunk), true));
    }
    frames.push((
        sse(&json!({
            "candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": finish, "index": 0}],
            "usageMetadata": usage(&answer),
            "modelVersion": model,
        })),
        false,
    ));
    crate::stream_response(
        standin,
        script,
        "text/event-stream",
        frames,
        FaultFrames {
            malformed: Bytes::from_static(b"data: {\"candidates\": [\r\n\r\n"),
            error: sse(
                &json!({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}),
            ),
        },
    )
}

fn embed(request: &Value) -> Response {
    let embeddings: Vec<Value> = request["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|one| {
            let text = one["content"]["parts"][0]["text"].as_str().unwrap_or("");
            let dimensions = one["outputDimensionality"].as_u64().unwrap_or(8) as usize;
            json!({"values": crate::openai::vector_for(text, dimensions)})
        })
        .collect();
    axum::Json(json!({"embeddings": embeddings})).into_response()
}
