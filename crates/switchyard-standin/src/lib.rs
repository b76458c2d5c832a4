//! A stand-in for an OpenAI-compatible upstream, for tests and benchmarks.
//!
//! It answers `POST /v1/chat/completions` in OpenAI's exact wire format
//! (whole and streamed: role chunk, one chunk per word, finish chunk, usage
//! chunk, `[DONE]`) and injects faults on request, through headers that a
//! Switchyard model config can set with its `headers` table:
//!
//! | header | effect |
//! |---|---|
//! | `x-standin-status: 429` | answer with this status and an OpenAI error body |
//! | `x-standin-retry-after: 2` | add `Retry-After` to that error |
//! | `x-standin-latency-ms: 200` | wait before sending the response headers |
//! | `x-standin-token-delay-ms: 50` | wait between streamed chunks |
//! | `x-standin-fault: midstream-disconnect` | send two chunks, then drop the connection |
//! | `x-standin-fault: malformed` | send a chunk that is not JSON |
//! | `x-standin-fault: reset` | drop the connection before any body |
//! | `x-standin-reply: text` | answer with this text instead of the echo |
//!
//! Every request it receives is recorded (`GET /_standin/requests`), so a
//! test can check what the gateway actually sent upstream.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use serde::Serialize;
use switchyard_core::{FinishReason, Usage};
use switchyard_protocol::openai::{
    ChatCompletion, ChatCompletionRequest, Choice, ChunkFactory, ErrorBody, ErrorObject,
    MessageContent, ResponseMessage, WireUsage,
};
use tokio::net::TcpListener;

/// Behaviour that applies to every request unless a header overrides it.
#[derive(Debug, Clone, Default)]
pub struct StandinConfig {
    /// Wait before the response headers.
    pub latency: Duration,
    /// Wait between streamed chunks.
    pub token_delay: Duration,
    /// Fixed reply text; `None` echoes the last user message.
    pub reply: Option<String>,
    /// Keep a copy of each request (off for load benchmarks).
    pub record: bool,
}

/// A request as the stand-in saw it.
#[derive(Debug, Clone, Serialize)]
pub struct RecordedRequest {
    /// Lower-cased header names and their values.
    pub headers: Vec<(String, String)>,
    /// The parsed body.
    pub body: serde_json::Value,
}

#[derive(Clone)]
struct Standin {
    config: Arc<StandinConfig>,
    recorded: Arc<Mutex<Vec<RecordedRequest>>>,
    abandoned: Arc<AtomicUsize>,
}

/// Counts a stream as abandoned if it is dropped before its last frame,
/// which is what happens when the downstream hangs up.
struct AbandonGuard {
    abandoned: Arc<AtomicUsize>,
    completed: bool,
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        if !self.completed {
            self.abandoned.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A running stand-in.
pub struct RunningStandin {
    /// Where it listens.
    pub addr: SocketAddr,
    recorded: Arc<Mutex<Vec<RecordedRequest>>>,
    abandoned: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningStandin {
    /// `http://addr/v1`, what a model's `base_url` should be.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Streams whose reader went away before the stream's end.
    pub fn abandoned_streams(&self) -> usize {
        self.abandoned.load(Ordering::SeqCst)
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.recorded.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for RunningStandin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The stand-in's routes.
fn router(config: StandinConfig) -> (Router, Standin) {
    let state = Standin {
        config: Arc::new(config),
        recorded: Arc::default(),
        abandoned: Arc::default(),
    };
    let app = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/_standin/requests", get(recorded_requests))
        .with_state(state.clone());
    (app, state)
}

/// Starts a stand-in on `addr` (use port 0 for an ephemeral port).
pub async fn spawn(addr: SocketAddr, config: StandinConfig) -> std::io::Result<RunningStandin> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (app, state) = router(config);
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "stand-in server stopped");
        }
    });
    Ok(RunningStandin {
        addr,
        recorded: state.recorded,
        abandoned: state.abandoned,
        task,
    })
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn header_ms(headers: &HeaderMap, name: &str) -> Option<Duration> {
    header_str(headers, name)
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
}

fn error_response(status: StatusCode, message: &str, retry_after: Option<&str>) -> Response {
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
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(value) = retry_after.and_then(|v| v.parse().ok()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

fn count_words(text: &str) -> u32 {
    u32::try_from(text.split_whitespace().count()).unwrap_or(u32::MAX)
}

fn message_text(content: &Option<MessageContent>) -> String {
    match content {
        None => String::new(),
        Some(MessageContent::Text(text)) => text.clone(),
        Some(MessageContent::Parts(parts)) => parts
            .iter()
            .filter_map(|p| match p {
                switchyard_protocol::openai::ContentPart::Text { text } => Some(text.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(""),
    }
}

async fn chat_completions(
    State(standin): State<Standin>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if standin.config.record {
        let recorded = RecordedRequest {
            headers: headers
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                .collect(),
            body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        };
        if let Ok(mut all) = standin.recorded.lock() {
            all.push(recorded);
        }
    }
    let latency = header_ms(&headers, "x-standin-latency-ms").unwrap_or(standin.config.latency);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(status) = header_str(&headers, "x-standin-status")
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
    {
        return error_response(
            status,
            &format!("stand-in failure with status {}", status.as_u16()),
            header_str(&headers, "x-standin-retry-after"),
        );
    }
    let request: ChatCompletionRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            return error_response(StatusCode::BAD_REQUEST, &error.to_string(), None);
        }
    };
    let fault = header_str(&headers, "x-standin-fault").unwrap_or("");
    if fault == "reset" {
        let failing = futures::stream::once(async {
            Err::<Bytes, std::io::Error>(std::io::Error::other("stand-in reset"))
        });
        return Response::new(Body::from_stream(failing));
    }

    let prompt_tokens = request
        .messages
        .iter()
        .map(|m| count_words(&message_text(&m.content)))
        .sum();
    let reply = match header_str(&headers, "x-standin-reply") {
        Some(reply) => reply.to_owned(),
        None => standin.config.reply.clone().unwrap_or_else(|| {
            let last_user = request
                .messages
                .iter()
                .rev()
                .find(|m| m.role == "user")
                .map(|m| message_text(&m.content))
                .unwrap_or_default();
            format!("echo: {last_user}")
        }),
    };
    let limit = request
        .max_completion_tokens
        .or(request.max_tokens)
        .map_or(usize::MAX, |m| m as usize);
    let words: Vec<String> = reply
        .split_inclusive(' ')
        .take(limit)
        .map(str::to_owned)
        .collect();
    let finish = if words.len() < reply.split_inclusive(' ').count() {
        FinishReason::Length
    } else {
        FinishReason::Stop
    };
    let usage = Usage {
        prompt_tokens,
        completion_tokens: u32::try_from(words.len()).unwrap_or(u32::MAX),
    };
    let model = request.model.clone();

    if !request.is_stream() {
        let completion = ChatCompletion {
            id: "chatcmpl-standin".into(),
            object: "chat.completion".into(),
            created: 1_700_000_000,
            model,
            choices: vec![Choice {
                index: 0,
                message: ResponseMessage {
                    role: "assistant".into(),
                    content: Some(words.concat()),
                    refusal: None,
                },
                finish_reason: Some(finish.as_str().into()),
                logprobs: None,
            }],
            usage: Some(WireUsage::from(usage)),
            system_fingerprint: Some("fp_standin".into()),
        };
        return axum::Json(completion).into_response();
    }

    let token_delay =
        header_ms(&headers, "x-standin-token-delay-ms").unwrap_or(standin.config.token_delay);
    let include_usage = request.wants_stream_usage();
    let fault = fault.to_owned();
    let chunks = ChunkFactory::new("chatcmpl-standin".into(), 1_700_000_000, model);
    let abandoned = standin.abandoned.clone();
    let events = async_stream::stream! {
        let mut guard = AbandonGuard { abandoned, completed: false };
        yield json_frame(&chunks.role());
        for (index, word) in words.into_iter().enumerate() {
            if !token_delay.is_zero() {
                tokio::time::sleep(token_delay).await;
            }
            if fault == "midstream-disconnect" && index == 2 {
                // Let the chunks already sent reach the wire first: hyper
                // drops unflushed frames when a body fails.
                tokio::time::sleep(Duration::from_millis(50)).await;
                guard.completed = true;
                yield Err(std::io::Error::other("stand-in disconnect"));
                return;
            }
            if fault == "malformed" && index == 1 {
                yield raw_frame("{\"choices\": [{\"delta\": ");
                continue;
            }
            yield json_frame(&chunks.content(word));
        }
        yield json_frame(&chunks.finish(finish));
        if include_usage {
            yield json_frame(&chunks.usage(usage));
        }
        guard.completed = true;
        yield raw_frame("[DONE]");
    };
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(events.boxed()))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn raw_frame(data: &str) -> Result<Bytes, std::io::Error> {
    Ok(Bytes::from(format!("data: {data}\n\n")))
}

fn json_frame<T: Serialize>(payload: &T) -> Result<Bytes, std::io::Error> {
    raw_frame(&serde_json::to_string(payload).unwrap_or_default())
}

async fn models() -> Response {
    axum::Json(serde_json::json!({
        "object": "list",
        "data": [{"id": "standin", "object": "model", "created": 1_700_000_000, "owned_by": "standin"}]
    }))
    .into_response()
}

async fn recorded_requests(State(standin): State<Standin>) -> Response {
    let all = standin
        .recorded
        .lock()
        .map(|r| r.clone())
        .unwrap_or_default();
    axum::Json(all).into_response()
}
