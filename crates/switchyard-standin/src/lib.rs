//! Stand-ins for the providers Switchyard talks to, for tests and
//! benchmarks: one server that answers in each provider's documented wire
//! format (OpenAI, Azure OpenAI, Anthropic, Gemini, Bedrock Converse), with the same scripted answers
//! and the same injectable faults behind every face.
//!
//! Answers are deterministic: the reply echoes the last user message
//! (`echo: ...`, noting attached images), answers a tool result with
//! `tool said: ...` (the results of the last round of calls, joined with
//! ` | `), and calls a tool when the request offers tools (the
//! named one, else the first) with `{"query": <last user message>}`.
//!
//! Faults are asked for with request headers, which a Switchyard model
//! config can set with its `headers` table:
//!
//! | header | effect |
//! |---|---|
//! | `x-standin-status: 429` | answer with this status and the provider's error body |
//! | `x-standin-retry-after: 2` | add `Retry-After` to that error |
//! | `x-standin-latency-ms: 200` | wait before sending the response headers |
//! | `x-standin-token-delay-ms: 50` | wait between streamed events |
//! | `x-standin-fault: midstream-disconnect` | send two pieces, then drop the connection |
//! | `x-standin-fault: malformed` | send an event that is not JSON |
//! | `x-standin-fault: error-event` | send two pieces, then the provider's in-stream error |
//! | `x-standin-fault: safety` | (Gemini) stop the answer with a safety finish reason |
//! | `x-standin-fault: blocked-prompt` | (Gemini) block the prompt: no candidates |
//! | `x-standin-fault: reset` | drop the connection before any body |
//! | `x-standin-reply: text` | answer with this text instead of the echo |
//! | `x-standin-replies: ["first", "second"]` | (OpenAI, Anthropic) answer a conversation holding N assistant turns with the Nth text (the last once they run out) |
//! | `x-standin-tool-calls: [{"name": "calculator", "arguments": {...}}]` | (OpenAI) call these tools (in parallel) instead of answering... |
//! | `x-standin-tool-rounds: 2` | ...for this many rounds of calls (default 1; `forever` never answers) |
//! | `x-standin-logprob: -0.05` | (OpenAI) each token's log-probability when `logprobs` is asked for; a last user message containing `[unsure]` gets −3.0 instead |
//! | `x-standin-failure-rate: 0.3` | fail this share of requests at random, with... |
//! | `x-standin-failure-mix: 500,reset,timeout` | ...one of these (a hang lasts `x-standin-timeout-ms`, default 2000) |
//!
//! It also takes OTLP/HTTP trace exports (`POST /v1/traces`) and drops
//! them, as the collector of a benchmark with span export on.
//!
//! Tests can also script failures directly: [`RunningStandin::queue_failures`]
//! for the next requests, [`RunningStandin::set_outage`] for all of them,
//! and slow every answer down with [`RunningStandin::set_latency`].
//!
//! Every request is recorded (`GET /_standin/requests`, or
//! [`RunningStandin::requests`]), so a test can check what the gateway sent.

mod answer;
mod anthropic;
mod bedrock;
mod gemini;
mod openai;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::{Stream, StreamExt};
use serde::Serialize;
use tokio::net::TcpListener;

/// Each answer token's log-probability unless a header says otherwise.
const CONFIDENT_LOGPROB: f32 = -0.05;

/// Each answer token's log-probability when the last user message
/// contains [`UNSURE_MARK`]: a scripted answer of low confidence.
pub const UNSURE_LOGPROB: f32 = -3.0;

/// The mark that makes the OpenAI face answer with [`UNSURE_LOGPROB`].
pub const UNSURE_MARK: &str = "[unsure]";

/// The secret access key the Bedrock face checks SigV4 signatures with
/// (any access key id is accepted).
pub const AWS_SECRET: &str = "standin-aws-secret-key";

/// Behaviour that applies to every request unless a header overrides it.
#[derive(Debug, Clone, Default)]
pub struct StandinConfig {
    /// Wait before the response headers.
    pub latency: Duration,
    /// Wait between streamed events.
    pub token_delay: Duration,
    /// Fixed reply text; `None` echoes the last user message.
    pub reply: Option<String>,
    /// Keep a copy of each request (off for load benchmarks).
    pub record: bool,
}

/// A request as the stand-in saw it.
#[derive(Debug, Clone, Serialize)]
pub struct RecordedRequest {
    /// The path and query.
    pub uri: String,
    /// Lower-cased header names and their values.
    pub headers: Vec<(String, String)>,
    /// The parsed body.
    pub body: serde_json::Value,
}

impl RecordedRequest {
    /// The value of a header, if it was sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone)]
pub(crate) struct Standin {
    pub config: Arc<StandinConfig>,
    recorded: Arc<Mutex<Vec<RecordedRequest>>>,
    abandoned: Arc<AtomicUsize>,
    /// Requests whose handler was dropped before it answered.
    cancelled: Arc<AtomicUsize>,
    /// Failures served to the next requests, in order.
    queued: Arc<Mutex<VecDeque<Failure>>>,
    /// A failure served to every request while set.
    outage: Arc<Mutex<Option<Failure>>>,
    /// The wait before response headers while set, instead of the
    /// config's (a deployment that slows down mid-test).
    latency: Arc<Mutex<Option<Duration>>>,
}

/// A scripted failure: a status and, optionally, a `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The HTTP status.
    pub status: u16,
    /// `Retry-After`, in seconds.
    pub retry_after: Option<u32>,
}

impl Failure {
    /// A failure with this status and no Retry-After.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            retry_after: None,
        }
    }
}

/// Counts a stream as abandoned if it is dropped before its last frame,
/// which is what happens when the downstream hangs up.
pub(crate) struct AbandonGuard {
    abandoned: Arc<AtomicUsize>,
    pub completed: bool,
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        if !self.completed {
            self.abandoned.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Standin {
    pub fn abandon_guard(&self) -> AbandonGuard {
        AbandonGuard {
            abandoned: self.abandoned.clone(),
            completed: false,
        }
    }
}

/// A running stand-in.
pub struct RunningStandin {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Standin,
    task: tokio::task::JoinHandle<()>,
}

impl RunningStandin {
    /// `http://addr/v1`: the `base_url` of an OpenAI-compatible model.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// `http://addr`: the root, for providers whose paths differ.
    pub fn root_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Streams whose reader went away before the stream's end.
    pub fn abandoned_streams(&self) -> usize {
        self.state.abandoned.load(Ordering::SeqCst)
    }

    /// Requests whose handler was dropped (the caller hung up) before the
    /// stand-in answered.
    pub fn cancelled_requests(&self) -> usize {
        self.state.cancelled.load(Ordering::SeqCst)
    }

    /// The next requests fail like this, one each, in order.
    pub fn queue_failures(&self, failures: impl IntoIterator<Item = Failure>) {
        if let Ok(mut queued) = self.state.queued.lock() {
            queued.extend(failures);
        }
    }

    /// Every request fails like this until cleared with `None`.
    pub fn set_outage(&self, failure: Option<Failure>) {
        if let Ok(mut outage) = self.state.outage.lock() {
            *outage = failure;
        }
    }

    /// Every request waits this long before its response headers (unless
    /// it names its own wait), until cleared with `None`.
    pub fn set_latency(&self, latency: Option<Duration>) {
        if let Ok(mut slot) = self.state.latency.lock() {
            *slot = latency;
        }
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state
            .recorded
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }
}

impl Drop for RunningStandin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn router(config: StandinConfig) -> (Router, Standin) {
    let state = Standin {
        config: Arc::new(config),
        recorded: Arc::default(),
        abandoned: Arc::default(),
        cancelled: Arc::default(),
        queued: Arc::default(),
        outage: Arc::default(),
        latency: Arc::default(),
    };
    let app = Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            post(openai::azure_chat_completions),
        )
        .route(
            "/openai/deployments/{deployment}/embeddings",
            post(openai::azure_embeddings),
        )
        .route("/v1/models", get(openai::models))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1beta/models/{action}", post(gemini::model_action))
        .route("/model/{model}/{action}", post(bedrock::converse))
        .route("/_standin/requests", get(recorded_requests))
        .route("/v1/traces", post(otlp_traces))
        .layer(axum::middleware::from_fn_with_state(state.clone(), record))
        .with_state(state.clone());
    (app, state)
}

/// An OTLP/HTTP trace sink (`POST /v1/traces`), so that benchmarks can
/// measure Switchyard with span export on: it accepts the export and
/// answers OTLP's empty success response, in the encoding it was sent.
async fn otlp_traces(headers: HeaderMap, body: Bytes) -> Response {
    tracing::debug!(bytes = body.len(), "spans received");
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json {
        ([(header::CONTENT_TYPE, "application/json")], "{}").into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            Vec::<u8>::new(),
        )
            .into_response()
    }
}

/// Starts a stand-in on `addr` (use port 0 for an ephemeral port).
pub async fn spawn(addr: SocketAddr, config: StandinConfig) -> std::io::Result<RunningStandin> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (app, state) = router(config);
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "stand-in server stopped");
        }
    });
    Ok(RunningStandin { addr, state, task })
}

/// Records every POST before its handler runs, then waits the configured
/// latency.
async fn record(State(standin): State<Standin>, request: Request, next: Next) -> Response {
    if request.method() != axum::http::Method::POST {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 16 * 1024 * 1024).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    if standin.config.record {
        let recorded = RecordedRequest {
            uri: parts.uri.to_string(),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                .collect(),
            body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        };
        if let Ok(mut all) = standin.recorded.lock() {
            all.push(recorded);
        }
    }
    let mut parts = parts;
    // Counts the request as cancelled if this future is dropped before the
    // handler answers (the caller hung up).
    let mut guard = AbandonGuard {
        abandoned: standin.cancelled.clone(),
        completed: false,
    };
    let latency = header_ms(&parts.headers, "x-standin-latency-ms").unwrap_or_else(|| {
        standin
            .latency
            .lock()
            .ok()
            .and_then(|l| *l)
            .unwrap_or(standin.config.latency)
    });
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    // Scripted failures become the headers every provider face obeys.
    let scripted = standin
        .outage
        .lock()
        .ok()
        .and_then(|o| o.clone())
        .or_else(|| standin.queued.lock().ok().and_then(|mut q| q.pop_front()));
    if let Some(failure) = scripted {
        inject(
            &mut parts.headers,
            "x-standin-status",
            &failure.status.to_string(),
        );
        if let Some(seconds) = failure.retry_after {
            inject(
                &mut parts.headers,
                "x-standin-retry-after",
                &seconds.to_string(),
            );
        }
    } else if let Some(rate) =
        header_str(&parts.headers, "x-standin-failure-rate").and_then(|r| r.parse::<f64>().ok())
        && fastrand::f64() < rate
    {
        // A random failure from the mix: a 500, a reset connection, or a
        // hang long enough for the caller's deadline to pass.
        let mix: Vec<String> = header_str(&parts.headers, "x-standin-failure-mix")
            .unwrap_or("500,reset,timeout")
            .split(',')
            .map(|m| m.trim().to_owned())
            .collect();
        match mix
            .get(fastrand::usize(0..mix.len().max(1)))
            .map(String::as_str)
        {
            Some("reset") => inject(&mut parts.headers, "x-standin-fault", "reset"),
            Some("timeout") => {
                let hang = header_ms(&parts.headers, "x-standin-timeout-ms")
                    .unwrap_or(Duration::from_secs(2));
                tokio::time::sleep(hang).await;
            }
            Some(status) => inject(&mut parts.headers, "x-standin-status", status),
            None => {}
        }
    }
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    guard.completed = true;
    response
}

fn inject(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = value.parse() {
        headers.insert(name, value);
    }
}

async fn recorded_requests(State(standin): State<Standin>) -> Response {
    let all = standin
        .recorded
        .lock()
        .map(|r| r.clone())
        .unwrap_or_default();
    axum::Json(all).into_response()
}

pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn header_ms(headers: &HeaderMap, name: &str) -> Option<Duration> {
    header_str(headers, name)
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
}

/// What the request's headers ask the stand-in to do.
#[derive(Debug, Clone)]
pub(crate) struct Script {
    /// Fail with this status.
    pub status: Option<StatusCode>,
    /// With this Retry-After.
    pub retry_after: Option<String>,
    /// Wait between streamed pieces.
    pub token_delay: Duration,
    /// A fault to inject.
    pub fault: Fault,
    /// Reply with this text.
    pub reply: Option<String>,
    /// Replies by the assistant turns a conversation already holds.
    pub replies: Vec<String>,
    /// The log-probability of every answer token, when asked for.
    pub logprob: f32,
    /// Tool calls to make (name, arguments JSON) instead of answering,
    /// while the conversation has had fewer than `tool_rounds` rounds of
    /// calls.
    pub tool_calls: Vec<(String, String)>,
    /// Rounds of scripted calls before answering (`u32::MAX`: never
    /// answer).
    pub tool_rounds: u32,
}

/// Faults the stand-in can inject into an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    None,
    Reset,
    MidstreamDisconnect,
    Malformed,
    ErrorEvent,
    Safety,
    BlockedPrompt,
}

impl Script {
    pub fn read(headers: &HeaderMap, config: &StandinConfig) -> Self {
        Self {
            status: header_str(headers, "x-standin-status")
                .and_then(|s| s.parse::<u16>().ok())
                .and_then(|s| StatusCode::from_u16(s).ok()),
            retry_after: header_str(headers, "x-standin-retry-after").map(str::to_owned),
            token_delay: header_ms(headers, "x-standin-token-delay-ms")
                .unwrap_or(config.token_delay),
            fault: match header_str(headers, "x-standin-fault") {
                Some("reset") => Fault::Reset,
                Some("midstream-disconnect") => Fault::MidstreamDisconnect,
                Some("malformed") => Fault::Malformed,
                Some("error-event") => Fault::ErrorEvent,
                Some("safety") => Fault::Safety,
                Some("blocked-prompt") => Fault::BlockedPrompt,
                _ => Fault::None,
            },
            reply: header_str(headers, "x-standin-reply")
                .map(str::to_owned)
                .or_else(|| config.reply.clone()),
            replies: header_str(headers, "x-standin-replies")
                .and_then(|list| serde_json::from_str(list).ok())
                .unwrap_or_default(),
            logprob: header_str(headers, "x-standin-logprob")
                .and_then(|v| v.parse().ok())
                .unwrap_or(CONFIDENT_LOGPROB),
            tool_calls: header_str(headers, "x-standin-tool-calls")
                .map(scripted_calls)
                .unwrap_or_default(),
            tool_rounds: match header_str(headers, "x-standin-tool-rounds") {
                Some("forever") => u32::MAX,
                Some(rounds) => rounds.parse().unwrap_or(1),
                None => 1,
            },
        }
    }

    /// The text to answer `prompt` with, when scripted: the reply for its
    /// assistant turns so far, else the one reply.
    pub(crate) fn reply_for(&self, prompt: &answer::Prompt) -> Option<&str> {
        let turn = usize::try_from(prompt.assistant_turns).unwrap_or(usize::MAX);
        match self.replies.get(turn).or(self.replies.last()) {
            Some(reply) => Some(reply),
            None => self.reply.as_deref(),
        }
    }

    /// The `Retry-After` header for an error response.
    pub fn with_retry_after(&self, mut response: Response) -> Response {
        if let Some(value) = self.retry_after.as_deref().and_then(|v| v.parse().ok()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

/// The calls of `x-standin-tool-calls`: a JSON list of `{"name": ...,
/// "arguments": {...}}`; anything else scripts no calls.
fn scripted_calls(header: &str) -> Vec<(String, String)> {
    #[derive(serde::Deserialize)]
    struct ScriptedCall {
        name: String,
        #[serde(default)]
        arguments: serde_json::Value,
    }
    serde_json::from_str::<Vec<ScriptedCall>>(header)
        .map(|calls| {
            calls
                .into_iter()
                .map(|call| (call.name, call.arguments.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// A body that fails before sending anything: the connection drops.
pub(crate) fn reset_response() -> Response {
    let failing = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("stand-in reset"))
    });
    Response::new(Body::from_stream(failing))
}

/// The provider-specific frames that faults inject.
pub(crate) struct FaultFrames {
    /// Sent instead of a piece by `malformed`.
    pub malformed: Bytes,
    /// The provider's in-stream error, sent by `error-event`.
    pub error: Bytes,
}

/// Streams `frames` as the response body, applying the script's delay and
/// faults: `frames` are the answer's wire frames in order, each flagged if
/// it carries an answer piece (the frames delays and faults apply to).
pub(crate) fn stream_response(
    standin: &Standin,
    script: &Script,
    content_type: &'static str,
    frames: Vec<(Bytes, bool)>,
    faults: FaultFrames,
) -> Response {
    let guard = standin.abandon_guard();
    let delay = script.token_delay;
    let fault = script.fault;
    let body = async_stream::stream! {
        // Moved in whole: closures capture single fields otherwise, and the
        // guard must live exactly as long as the stream.
        let mut guard = guard;
        let mut piece_index = 0;
        for (frame, is_piece) in frames {
            if is_piece {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if fault == Fault::MidstreamDisconnect && piece_index == 2 {
                    // Let the frames already sent reach the wire first:
                    // hyper drops unflushed frames when a body fails.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    guard.completed = true;
                    yield Err(std::io::Error::other("stand-in disconnect"));
                    return;
                }
                if fault == Fault::Malformed && piece_index == 1 {
                    piece_index += 1;
                    yield Ok(faults.malformed.clone());
                    continue;
                }
                if fault == Fault::ErrorEvent && piece_index == 2 {
                    guard.completed = true;
                    yield Ok(faults.error.clone());
                    return;
                }
                piece_index += 1;
            }
            yield Ok::<Bytes, std::io::Error>(frame);
        }
        guard.completed = true;
    };
    streaming(content_type, body)
}

fn streaming(
    content_type: &'static str,
    body: impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body.boxed()))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// One server-sent event with an optional `event:` name.
pub(crate) fn sse_frame(event: Option<&str>, data: &str) -> Bytes {
    match event {
        Some(name) => Bytes::from(format!("event: {name}\ndata: {data}\n\n")),
        None => Bytes::from(format!("data: {data}\n\n")),
    }
}

/// One server-sent event carrying JSON.
pub(crate) fn sse_json<T: Serialize>(event: Option<&str>, payload: &T) -> Bytes {
    sse_frame(event, &serde_json::to_string(payload).unwrap_or_default())
}
