//! The `openai` adapter: any upstream that speaks OpenAI's chat completions
//! API (OpenAI itself, vLLM, TGI, Ollama, llama.cpp's server, DeepSeek,
//! Groq, Together, ...).
//!
//! Streams are forwarded event by event as they arrive. The first event is
//! read before the stream is handed back, so that an upstream that fails
//! right after its headers still yields an error the caller can act on
//! (status code, fallback) rather than a broken stream.

use std::sync::Arc;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use futures::future::BoxFuture;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use switchyard_core::{
    BackendError, BackendInfo, ChatBackend, ChatRequest, ChatResponse, ChatStream, ErrorKind,
    StreamEvent,
};
use switchyard_protocol::openai::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ErrorBody, parse_finish_reason,
};
use tokio::time::{Instant, timeout_at};
use tracing::debug;

use crate::http::{classify_status, ensure_crypto_provider, transport_error};

/// How to reach one upstream model. `Debug` leaves the key out.
#[derive(Clone, PartialEq)]
pub struct OpenAiConfig {
    /// Base URL up to the API version, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer …` when set.
    pub api_key: Option<String>,
    /// The model id sent upstream.
    pub upstream_model: String,
    /// Extra headers for every request.
    pub headers: Vec<(String, String)>,
    /// TCP/TLS connect deadline.
    pub connect_timeout: Duration,
    /// Deadline for the response headers and, when streaming, the first event.
    pub first_byte_timeout: Duration,
    /// Deadline for the whole answer.
    pub total_timeout: Duration,
}

impl std::fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("upstream_model", &self.upstream_model)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("connect_timeout", &self.connect_timeout)
            .field("first_byte_timeout", &self.first_byte_timeout)
            .field("total_timeout", &self.total_timeout)
            .finish()
    }
}

impl OpenAiConfig {
    /// A config with the given base URL and model and the default deadlines
    /// (5 s connect, 60 s first byte, 10 min total).
    pub fn new(base_url: impl Into<String>, upstream_model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            upstream_model: upstream_model.into(),
            headers: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            first_byte_timeout: Duration::from_secs(60),
            total_timeout: Duration::from_secs(600),
        }
    }
}

/// The adapter could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum AdapterBuildError {
    /// A configured header is not a valid HTTP header.
    #[error("header {name:?}: {reason}")]
    InvalidHeader {
        /// The header name.
        name: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The HTTP client could not be created.
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// An OpenAI-compatible upstream behind [`ChatBackend`].
#[derive(Debug, Clone)]
pub struct OpenAiAdapter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: reqwest::Client,
    url: String,
    headers: HeaderMap,
    config: OpenAiConfig,
    owned_by: String,
}

impl OpenAiAdapter {
    /// Builds the adapter and its connection pool.
    pub fn new(config: OpenAiConfig) -> Result<Self, AdapterBuildError> {
        ensure_crypto_provider();
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(key) = &config.api_key {
            let mut value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|e| {
                AdapterBuildError::InvalidHeader {
                    name: "authorization".into(),
                    reason: e.to_string(),
                }
            })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        for (name, value) in &config.headers {
            let invalid = |reason: String| AdapterBuildError::InvalidHeader {
                name: name.clone(),
                reason,
            };
            let header_name =
                HeaderName::from_bytes(name.as_bytes()).map_err(|e| invalid(e.to_string()))?;
            let mut header_value =
                HeaderValue::from_str(value).map_err(|e| invalid(e.to_string()))?;
            // Extra headers often carry credentials (`api-key`, `x-api-key`).
            header_value.set_sensitive(true);
            headers.insert(header_name, header_value);
        }
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()?;
        let base = config.base_url.trim_end_matches('/');
        let owned_by = reqwest::Url::parse(base)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_else(|| "openai".into());
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                url: format!("{base}/chat/completions"),
                headers,
                owned_by,
                config,
            }),
        })
    }
}

impl Inner {
    async fn send(
        &self,
        request: &ChatRequest,
        stream: bool,
        deadline: Instant,
    ) -> Result<reqwest::Response, BackendError> {
        let body =
            ChatCompletionRequest::from_canonical(request, &self.config.upstream_model, stream);
        let body = serde_json::to_vec(&body)
            .map_err(|e| BackendError::internal(format!("cannot encode the request: {e}")))?;
        let headers_deadline = deadline.min(Instant::now() + self.config.first_byte_timeout);
        let pending = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .body(body)
            .send();
        let response = timeout_at(headers_deadline, pending)
            .await
            .map_err(|_| self.first_byte_timeout())?
            .map_err(|e| transport_error(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = crate::http::retry_after(response.headers());
        // The error body is small; cap the wait for it by the same deadline.
        let text = timeout_at(deadline, response.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        Err(classify_status(status.as_u16(), retry_after, &text))
    }

    fn first_byte_timeout(&self) -> BackendError {
        BackendError::new(
            ErrorKind::Timeout,
            format!(
                "the upstream sent nothing within {} ms",
                self.config.first_byte_timeout.as_millis()
            ),
        )
    }

    fn total_timeout(&self) -> BackendError {
        BackendError::new(
            ErrorKind::Timeout,
            format!(
                "the upstream did not finish within {} ms",
                self.config.total_timeout.as_millis()
            ),
        )
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, BackendError> {
        let deadline = Instant::now() + self.config.total_timeout;
        let response = self.send(&request, false, deadline).await?;
        let bytes = timeout_at(deadline, response.bytes())
            .await
            .map_err(|_| self.total_timeout())?
            .map_err(|e| transport_error(&e))?;
        let completion: ChatCompletion = serde_json::from_slice(&bytes).map_err(|e| {
            BackendError::new(
                ErrorKind::Upstream,
                format!("the upstream's answer is not a chat completion: {e}"),
            )
        })?;
        let model = if completion.model.is_empty() {
            self.config.upstream_model.clone()
        } else {
            completion.model
        };
        let choice = completion.choices.into_iter().next().ok_or_else(|| {
            BackendError::new(ErrorKind::Upstream, "the upstream's answer has no choices")
        })?;
        Ok(ChatResponse {
            model,
            content: choice.message.content.unwrap_or_default(),
            finish_reason: parse_finish_reason(choice.finish_reason.as_deref().unwrap_or("stop")),
            usage: completion.usage.map(Into::into).unwrap_or_default(),
        })
    }

    async fn chat_stream(
        self: Arc<Self>,
        request: ChatRequest,
    ) -> Result<ChatStream, BackendError> {
        let started = Instant::now();
        let deadline = started + self.config.total_timeout;
        let response = self.send(&request, true, deadline).await?;
        let mut events = response.bytes_stream().eventsource();
        let mut translator = ChunkTranslator::default();

        // Peek: the first event must arrive within the first-byte deadline,
        // and an error there is still an error, not a stream.
        let first_deadline = deadline.min(started + self.config.first_byte_timeout);
        let first = loop {
            let event = timeout_at(first_deadline, events.next())
                .await
                .map_err(|_| self.first_byte_timeout())?;
            let step = translator.step(event)?;
            if !step.events.is_empty() || step.done {
                break step;
            }
        };
        debug!(
            first_event_ms = started.elapsed().as_millis() as u64,
            "upstream stream opened"
        );
        let adapter = self.clone();
        let stream = async_stream::stream! {
            for event in first.events {
                yield Ok(event);
            }
            if first.done {
                return;
            }
            loop {
                let next = match timeout_at(deadline, events.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        yield Err(adapter.total_timeout());
                        return;
                    }
                };
                match translator.step(next) {
                    Ok(step) => {
                        for event in step.events {
                            yield Ok(event);
                        }
                        if step.done {
                            return;
                        }
                    }
                    Err(error) => {
                        yield Err(error);
                        return;
                    }
                }
            }
        };
        Ok(stream.boxed())
    }
}

/// What one upstream SSE event produced.
#[derive(Debug, Default)]
struct Step {
    events: Vec<StreamEvent>,
    done: bool,
}

/// Translates OpenAI stream chunks into canonical events, checking that the
/// stream ends properly.
#[derive(Debug, Default)]
struct ChunkTranslator {
    finished: bool,
}

type SseItem<E> =
    Option<Result<eventsource_stream::Event, eventsource_stream::EventStreamError<E>>>;

impl ChunkTranslator {
    fn step<E: std::fmt::Display>(&mut self, item: SseItem<E>) -> Result<Step, BackendError> {
        let event = match item {
            // Some servers close without `[DONE]`; that is fine once they
            // have said why generation ended.
            None if self.finished => {
                return Ok(Step {
                    events: Vec::new(),
                    done: true,
                });
            }
            None => {
                return Err(BackendError::new(
                    ErrorKind::Upstream,
                    "the upstream closed the stream before the answer was complete",
                ));
            }
            Some(Err(error)) => {
                return Err(BackendError::new(
                    ErrorKind::Upstream,
                    format!("the upstream stream broke: {error}"),
                ));
            }
            Some(Ok(event)) => event,
        };
        let data = event.data.trim();
        if data == "[DONE]" {
            if !self.finished {
                return Err(BackendError::new(
                    ErrorKind::Upstream,
                    "the upstream ended the stream without a finish reason",
                ));
            }
            return Ok(Step {
                events: Vec::new(),
                done: true,
            });
        }
        if data.is_empty() {
            return Ok(Step::default());
        }
        if event.event == "error" || data.starts_with("{\"error\"") {
            let message = serde_json::from_str::<ErrorBody>(data)
                .map(|body| body.error.message)
                .unwrap_or_else(|_| data.to_owned());
            return Err(BackendError::new(
                ErrorKind::Upstream,
                format!("the upstream reported an error mid-stream: {message}"),
            ));
        }
        let chunk: ChatCompletionChunk = serde_json::from_str(data).map_err(|e| {
            BackendError::new(
                ErrorKind::Upstream,
                format!("the upstream sent a malformed stream chunk: {e}"),
            )
        })?;
        let mut events = Vec::new();
        if let Some(choice) = chunk.choices.into_iter().next() {
            if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                events.push(StreamEvent::Delta(text));
            }
            if let Some(reason) = choice.finish_reason {
                self.finished = true;
                events.push(StreamEvent::Finish(parse_finish_reason(&reason)));
            }
        }
        if let Some(usage) = chunk.usage {
            events.push(StreamEvent::Usage(usage.into()));
        }
        Ok(Step {
            events,
            done: false,
        })
    }
}

impl ChatBackend for OpenAiAdapter {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            kind: "openai",
            upstream_model: self.inner.config.upstream_model.clone(),
            owned_by: self.inner.owned_by.clone(),
        }
    }

    fn chat(&self, request: ChatRequest) -> BoxFuture<'_, Result<ChatResponse, BackendError>> {
        Box::pin(self.inner.chat(request))
    }

    fn chat_stream(&self, request: ChatRequest) -> BoxFuture<'_, Result<ChatStream, BackendError>> {
        Box::pin(self.inner.clone().chat_stream(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_core::{FinishReason, Usage};

    fn event(data: &str) -> SseItem<std::io::Error> {
        Some(Ok(eventsource_stream::Event {
            event: "message".into(),
            data: data.into(),
            id: String::new(),
            retry: None,
        }))
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let mut config = OpenAiConfig::new("http://x/v1", "m");
        config.api_key = Some("sk-live-secret".into());
        config.headers = vec![("x-api-key".into(), "also-secret".into())];
        let adapter = OpenAiAdapter::new(config).unwrap();
        let printed = format!("{adapter:?}");
        assert!(!printed.contains("sk-live-secret"), "{printed}");
        assert!(!printed.contains("also-secret"), "{printed}");
    }

    #[test]
    fn translates_an_openai_stream() {
        let mut t = ChunkTranslator::default();
        let role = t
            .step(event(
                r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            ))
            .unwrap();
        assert!(role.events.is_empty());
        let text = t
            .step(event(
                r#"{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#,
            ))
            .unwrap();
        assert_eq!(text.events, vec![StreamEvent::Delta("Hi".into())]);
        let finish = t
            .step(event(
                r#"{"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}"#,
            ))
            .unwrap();
        assert_eq!(
            finish.events,
            vec![StreamEvent::Finish(FinishReason::Length)]
        );
        let usage = t
            .step(event(
                r#"{"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}}"#,
            ))
            .unwrap();
        assert_eq!(
            usage.events,
            vec![StreamEvent::Usage(Usage {
                prompt_tokens: 2,
                completion_tokens: 1
            })]
        );
        assert!(t.step(event("[DONE]")).unwrap().done);
    }

    #[test]
    fn a_stream_cut_before_finishing_is_an_error() {
        let mut t = ChunkTranslator::default();
        t.step(event(r#"{"choices":[{"delta":{"content":"Hi"}}]}"#))
            .unwrap();
        assert_eq!(
            t.step::<std::io::Error>(None).unwrap_err().kind,
            ErrorKind::Upstream
        );
        let mut t = ChunkTranslator::default();
        assert_eq!(
            t.step(event("[DONE]")).unwrap_err().kind,
            ErrorKind::Upstream
        );
    }

    #[test]
    fn malformed_and_error_events_are_errors() {
        let mut t = ChunkTranslator::default();
        let error = t.step(event("{not json")).unwrap_err();
        assert!(error.message.contains("malformed"), "{}", error.message);
        let error = t
            .step(event(
                r#"{"error":{"message":"overloaded","type":"server_error"}}"#,
            ))
            .unwrap_err();
        assert!(error.message.contains("overloaded"), "{}", error.message);
    }
}
