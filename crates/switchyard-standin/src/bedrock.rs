//! The Bedrock face: `POST /model/{modelId}/converse` and
//! `/model/{modelId}/converse-stream`. Requests must carry a valid SigV4
//! signature made with [`AWS_SECRET`](crate::AWS_SECRET) (the stand-in
//! recomputes it and answers 403 `InvalidSignatureException` otherwise);
//! streams are AWS event-stream frames; errors carry `x-amzn-ErrorType`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::answer::{Answer, Piece, Prompt, answer, count_words};
use crate::{AWS_SECRET, Fault, FaultFrames, Script, Standin, header_str, reset_response};

fn error(status: StatusCode, exception: &str, message: &str) -> Response {
    let mut response = (status, axum::Json(json!({"message": message}))).into_response();
    if let Ok(value) =
        format!("{exception}:http://internal.amazon.com/coral/com.amazon.bedrock/").parse()
    {
        response.headers_mut().insert("x-amzn-errortype", value);
    }
    response
}

fn exception_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "ValidationException",
        403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        408 => "ModelTimeoutException",
        424 => "ModelErrorException",
        429 => "ThrottlingException",
        503 => "ServiceUnavailableException",
        _ => "InternalServerException",
    }
}

/// `20261124T230512Z` → a time.
fn amz_date(text: &str) -> Option<SystemTime> {
    let digits = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (digits(0..4)?, digits(4..6)?, digits(6..8)?);
    let (hour, minute, second) = (digits(9..11)?, digits(11..13)?, digits(13..15)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).ok()?))
}

/// Recomputes the request's SigV4 signature with the stand-in's secret.
fn signature_ok(uri: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    let authorization = header_str(headers, "authorization").ok_or("no Authorization header")?;
    let rest = authorization
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("not AWS4-HMAC-SHA256")?;
    let field = |name: &str| {
        rest.split(", ")
            .find_map(|part| part.strip_prefix(name))
            .map(str::to_owned)
    };
    let credential = field("Credential=").ok_or("no Credential")?;
    let signed = field("SignedHeaders=").ok_or("no SignedHeaders")?;
    let mut scope = credential.split('/');
    let access_key = scope.next().unwrap_or_default().to_owned();
    let _date = scope.next();
    let region = scope.next().unwrap_or_default().to_owned();
    let service = scope.next().unwrap_or_default().to_owned();
    if service != "bedrock" {
        return Err(format!("signed for service {service}, not bedrock"));
    }
    let time = header_str(headers, "x-amz-date")
        .and_then(amz_date)
        .ok_or("no x-amz-date")?;
    let host = header_str(headers, "host").ok_or("no Host")?;
    let names: Vec<&str> = signed.split(';').collect();
    let mut to_sign = Vec::new();
    for name in &names {
        if matches!(
            *name,
            "host" | "x-amz-date" | "x-amz-security-token" | "x-amz-content-sha256"
        ) {
            continue;
        }
        let value = header_str(headers, name).ok_or(format!("signed header {name} missing"))?;
        to_sign.push((name.to_string(), value.to_owned()));
    }
    let identity = Credentials::new(
        access_key,
        AWS_SECRET,
        header_str(headers, "x-amz-security-token").map(str::to_owned),
        None,
        "standin",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&region)
        .name("bedrock")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let full_uri = format!("http://{host}{uri}");
    let request = SignableRequest::new(
        "POST",
        full_uri,
        to_sign.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(request, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    let expected = instructions
        .headers()
        .find(|(name, _)| *name == "authorization")
        .map(|(_, value)| value.to_owned())
        .ok_or("signer produced no Authorization")?;
    if expected == authorization {
        Ok(())
    } else {
        Err("The request signature we calculated does not match the signature you provided.".into())
    }
}

fn prompt_of(request: &Value) -> Prompt {
    let mut prompt = Prompt {
        max_tokens: request["inferenceConfig"]["maxTokens"]
            .as_u64()
            .map(|m| m as u32),
        tools_allowed: true,
        ..Prompt::default()
    };
    for block in request["system"].as_array().into_iter().flatten() {
        prompt.words += count_words(block["text"].as_str().unwrap_or(""));
    }
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    for message in &messages {
        let mut text = String::new();
        for block in message["content"].as_array().into_iter().flatten() {
            if let Some(piece) = block["text"].as_str() {
                text.push_str(piece);
            }
            if block.get("image").is_some() {
                prompt.images += 1;
            }
        }
        prompt.words += count_words(&text);
        if message["role"] == "user" && !text.is_empty() {
            prompt.last_user = text;
        }
    }
    if let Some(last) = messages.last()
        && let Some(result) = last["content"]
            .as_array()
            .and_then(|blocks| blocks.iter().find_map(|b| b.get("toolResult")))
    {
        prompt.tool_result = result["content"][0]["text"].as_str().map(str::to_owned);
    }
    prompt.tools = request["toolConfig"]["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["toolSpec"]["name"].as_str().map(str::to_owned))
        .collect();
    prompt.forced_tool = request["toolConfig"]["toolChoice"]["tool"]["name"]
        .as_str()
        .map(str::to_owned);
    prompt
}

fn stop_reason(answer: &Answer) -> &'static str {
    match answer.finish {
        switchyard_core::FinishReason::Length => "max_tokens",
        switchyard_core::FinishReason::ToolCalls => "tool_use",
        _ => "end_turn",
    }
}

fn usage(answer: &Answer) -> Value {
    json!({"inputTokens": answer.usage.prompt_tokens, "outputTokens": answer.usage.completion_tokens,
           "totalTokens": answer.usage.total_tokens()})
}

fn frame(message_type: &str, kind_header: &str, kind: &str, payload: &Value) -> Bytes {
    let message = Message::new(Bytes::from(payload.to_string()))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String(message_type.to_owned().into()),
        ))
        .add_header(Header::new(
            kind_header.to_owned(),
            HeaderValue::String(kind.to_owned().into()),
        ))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".into()),
        ));
    let mut wire = Vec::new();
    // Encoding a well-formed message into memory does not fail.
    let _ = aws_smithy_eventstream::frame::write_message_to(&message, &mut wire);
    Bytes::from(wire)
}

fn event(kind: &str, payload: Value) -> Bytes {
    frame("event", ":event-type", kind, &payload)
}

pub(crate) async fn converse(
    State(standin): State<Standin>,
    Path((model, action)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(reason) = signature_ok(uri.path(), &headers, &body) {
        return error(StatusCode::FORBIDDEN, "InvalidSignatureException", &reason);
    }
    let script = Script::read(&headers, &standin.config);
    if let Some(status) = script.status {
        let mut response = error(
            status,
            exception_of(status),
            &format!("stand-in failure with status {}", status.as_u16()),
        );
        response = script.with_retry_after(response);
        return response;
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                &e.to_string(),
            );
        }
    };
    if script.fault == Fault::Reset {
        return reset_response();
    }
    let prompt = prompt_of(&request);
    let answer = answer(&prompt, script.reply_for(&prompt));
    match action.as_str() {
        "converse" => {
            let mut content = Vec::new();
            if !answer.text().is_empty() {
                content.push(json!({"text": answer.text()}));
            }
            for (id, name, arguments) in answer.calls() {
                let input: Value = serde_json::from_str(&arguments).unwrap_or(json!({}));
                content.push(json!({"toolUse": {"toolUseId": id, "name": name, "input": input}}));
            }
            axum::Json(json!({
                "output": {"message": {"role": "assistant", "content": content}},
                "stopReason": stop_reason(&answer),
                "usage": usage(&answer),
                "metrics": {"latencyMs": 1},
            }))
            .into_response()
        }
        "converse-stream" => stream(&standin, &script, &model, &answer),
        other => error(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            &format!("unknown operation {other}"),
        ),
    }
}

fn stream(standin: &Standin, script: &Script, _model: &str, answer: &Answer) -> Response {
    let mut frames = vec![(event("messageStart", json!({"role": "assistant"})), false)];
    let mut block = 0;
    let mut text_open = false;
    for piece in &answer.pieces {
        match piece {
            Piece::Text(word) => {
                text_open = true;
                frames.push((
                    event(
                        "contentBlockDelta",
                        json!({"contentBlockIndex": block, "delta": {"text": word}}),
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
                        event("contentBlockStop", json!({"contentBlockIndex": block})),
                        false,
                    ));
                    block += 1;
                    text_open = false;
                }
                frames.push((
                    event(
                        "contentBlockStart",
                        json!({"contentBlockIndex": block, "start": {"toolUse": {"toolUseId": id, "name": name}}}),
                    ),
                    true,
                ));
                for fragment in fragments {
                    frames.push((
                        event(
                            "contentBlockDelta",
                            json!({"contentBlockIndex": block, "delta": {"toolUse": {"input": fragment}}}),
                        ),
                        true,
                    ));
                }
                frames.push((
                    event("contentBlockStop", json!({"contentBlockIndex": block})),
                    false,
                ));
                block += 1;
            }
        }
    }
    if text_open {
        frames.push((
            event("contentBlockStop", json!({"contentBlockIndex": block})),
            false,
        ));
    }
    frames.push((
        event("messageStop", json!({"stopReason": stop_reason(answer)})),
        false,
    ));
    frames.push((
        event(
            "metadata",
            json!({"usage": usage(answer), "metrics": {"latencyMs": 1}}),
        ),
        false,
    ));
    crate::stream_response(
        standin,
        script,
        "application/vnd.amazon.eventstream",
        frames,
        FaultFrames {
            // A frame whose prelude promises more bytes than follow.
            malformed: Bytes::from_static(&[0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0, 0]),
            error: frame(
                "exception",
                ":exception-type",
                "throttlingException",
                &json!({"message": "Too many requests, please wait before trying again."}),
            ),
        },
    )
}
