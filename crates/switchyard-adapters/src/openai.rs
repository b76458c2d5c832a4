//! The `openai` adapter: any upstream that speaks OpenAI's chat completions
//! API (OpenAI itself, Azure OpenAI, Mistral, DeepSeek, Groq, Together,
//! Fireworks, OpenRouter, vLLM, TGI, Ollama, llama.cpp's server, ...), with
//! each family's quirks in a [`Preset`](crate::presets::Preset).
//!
//! Streams are forwarded event by event as they arrive; the first event is
//! read before the stream is handed back (see [`crate::stream`]).

use futures::stream::BoxStream;
use reqwest::header::HeaderMap;
use switchyard_core::{
    BackendError, BackendInfo, ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse,
    ErrorKind, FinishReason, StreamEvent, ToolCall, ToolCallDelta,
};
use switchyard_protocol::openai::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ErrorBody, parse_finish_reason,
};
use switchyard_protocol::openai_embeddings::{EmbeddingsRequest, EmbeddingsResponse};

use crate::adapter::{EmbeddingWire, HttpAdapter, Wire, encode};
use crate::http::{
    Timeouts, UpstreamTls, header_map, kind_of_status, parse_url, plain_message, retry_after,
    status_error, unreadable,
};
use crate::presets::Quirks;
use crate::stream::{SseEvent, Step, Translate, cut_short, sse_events};
use crate::{AdapterBuildError, Credential};

/// How requests prove who Switchyard is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// No credentials (local servers).
    None,
    /// `Authorization: Bearer KEY` (OpenAI and most others).
    Bearer(Credential),
    /// The key in a named header (Azure's `api-key`).
    Header {
        /// The header's name.
        name: String,
        /// The key.
        key: Credential,
    },
}

/// How to reach one upstream model.
#[derive(Clone, PartialEq)]
pub struct OpenAiConfig {
    /// Base URL; `/chat/completions` and `/embeddings` are appended.
    pub base_url: String,
    /// Query string for every request (Azure's `api-version=...`).
    pub query: Option<String>,
    /// Credentials.
    pub auth: Auth,
    /// The model id sent upstream.
    pub upstream_model: String,
    /// Extra headers for every request.
    pub headers: Vec<(String, String)>,
    /// Deadlines.
    pub timeouts: Timeouts,
    /// TLS toward the upstream beyond the defaults.
    pub tls: UpstreamTls,
    /// What this upstream does differently from OpenAI.
    pub quirks: Quirks,
}

impl std::fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("query", &self.query)
            .field("auth", &self.auth)
            .field("upstream_model", &self.upstream_model)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("timeouts", &self.timeouts)
            .field("quirks", &self.quirks)
            .finish()
    }
}

impl OpenAiConfig {
    /// An OpenAI-compatible upstream at `base_url` with default deadlines,
    /// no credentials and OpenAI's own behaviour.
    pub fn new(base_url: impl Into<String>, upstream_model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            query: None,
            auth: Auth::None,
            upstream_model: upstream_model.into(),
            headers: Vec::new(),
            timeouts: Timeouts::default(),
            tls: UpstreamTls::default(),
            quirks: Quirks::OPENAI,
        }
    }
}

/// An OpenAI-compatible upstream as a chat and embedding backend.
pub type OpenAiAdapter = HttpAdapter<OpenAiWire>;

/// OpenAI's chat completions and embeddings wire format, with one
/// upstream's quirks.
#[derive(Debug)]
pub struct OpenAiWire {
    chat_url: reqwest::Url,
    embeddings_url: reqwest::Url,
    config: OpenAiConfig,
    owned_by: String,
}

impl OpenAiAdapter {
    /// Builds the adapter and its connection pool.
    pub fn new(config: OpenAiConfig) -> Result<Self, AdapterBuildError> {
        let mut pairs: Vec<(String, String)> = config.headers.clone();
        match &config.auth {
            Auth::None => {}
            Auth::Bearer(key) => {
                pairs.push(("authorization".into(), format!("Bearer {}", key.expose())));
            }
            Auth::Header { name, key } => pairs.push((name.clone(), key.expose().to_owned())),
        }
        let headers = header_map(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        let base = config.base_url.trim_end_matches('/');
        let url = |path: &str| match &config.query {
            Some(query) => format!("{base}/{path}?{query}"),
            None => format!("{base}/{path}"),
        };
        let owned_by = reqwest::Url::parse(base)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_else(|| "openai".into());
        let wire = OpenAiWire {
            chat_url: parse_url(&url("chat/completions"))?,
            embeddings_url: parse_url(&url("embeddings"))?,
            owned_by,
            config,
        };
        let timeouts = wire.config.timeouts;
        let tls = wire.config.tls.clone();
        HttpAdapter::with_wire(wire, timeouts, headers, &tls)
    }
}

/// Reads OpenAI's error shape `{"error":{"message","type","code"}}`.
pub(crate) fn classify(status: u16, headers: &HeaderMap, body: &str) -> BackendError {
    let (message, code) = match serde_json::from_str::<ErrorBody>(body) {
        Ok(parsed) => (
            parsed.error.message,
            parsed.error.code.map(|c| match c {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            }),
        ),
        Err(_) => (plain_message(body), None),
    };
    status_error(
        status,
        kind_of_status(status),
        &message,
        code,
        retry_after(headers),
    )
}

impl Wire for OpenAiWire {
    type Event = SseEvent;
    type Translator = ChunkTranslator;

    fn info(&self) -> BackendInfo {
        BackendInfo {
            kind: "openai",
            upstream_model: self.config.upstream_model.clone(),
            owned_by: self.owned_by.clone(),
        }
    }

    fn chat_url(&self, _stream: bool) -> &reqwest::Url {
        &self.chat_url
    }

    fn encode_chat(&self, request: &ChatRequest, stream: bool) -> Result<Vec<u8>, BackendError> {
        let body =
            ChatCompletionRequest::from_canonical(request, &self.config.upstream_model, stream);
        self.config
            .quirks
            .encode(body)
            .map_err(|e| BackendError::internal(format!("cannot encode the request: {e}")))
    }

    fn decode_chat(&self, body: &[u8]) -> Result<ChatResponse, BackendError> {
        let completion: ChatCompletion =
            serde_json::from_slice(body).map_err(|e| unreadable("chat completion", e))?;
        let model = if completion.model.is_empty() {
            self.config.upstream_model.clone()
        } else {
            completion.model
        };
        let choice = completion.choices.into_iter().next().ok_or_else(|| {
            BackendError::new(ErrorKind::Upstream, "the upstream's answer has no choices")
        })?;
        // A refusal (structured outputs) is the model declining on safety
        // grounds: its text is the answer, and the finish says why.
        if let Some(refusal) = choice.message.refusal.filter(|r| !r.is_empty()) {
            return Ok(ChatResponse {
                model,
                content: refusal,
                tool_calls: Vec::new(),
                finish_reason: FinishReason::ContentFilter,
                usage: completion.usage.map(Into::into).unwrap_or_default(),
                logprobs: None,
                tool_runs: Vec::new(),
            });
        }
        Ok(ChatResponse {
            model,
            content: choice.message.content.unwrap_or_default(),
            tool_calls: choice
                .message
                .tool_calls
                .unwrap_or_default()
                .into_iter()
                .map(ToolCall::from)
                .collect(),
            finish_reason: parse_finish_reason(choice.finish_reason.as_deref().unwrap_or("stop")),
            usage: completion.usage.map(Into::into).unwrap_or_default(),
            logprobs: choice.logprobs.and_then(|l| l.into_canonical()),
            tool_runs: Vec::new(),
        })
    }

    fn frames(response: reqwest::Response) -> BoxStream<'static, Result<SseEvent, BackendError>> {
        sse_events(response)
    }

    fn translator(&self) -> ChunkTranslator {
        ChunkTranslator::default()
    }

    fn classify(status: u16, headers: &HeaderMap, body: &str) -> BackendError {
        classify(status, headers, body)
    }
}

impl EmbeddingWire for OpenAiWire {
    fn embeddings_url(&self) -> &reqwest::Url {
        &self.embeddings_url
    }

    fn encode_embed(&self, request: &EmbeddingRequest) -> Result<Vec<u8>, BackendError> {
        encode(&EmbeddingsRequest::from_canonical(
            request,
            &self.config.upstream_model,
        ))
    }

    fn decode_embed(&self, body: &[u8]) -> Result<EmbeddingResponse, BackendError> {
        let parsed: EmbeddingsResponse =
            serde_json::from_slice(body).map_err(|e| unreadable("embeddings", e))?;
        parsed
            .into_canonical(&self.config.upstream_model)
            .ok_or_else(|| unreadable("embeddings", "a vector is not valid base64 floats"))
    }
}

/// Translates OpenAI stream chunks into canonical events, checking that the
/// stream ends properly.
#[derive(Debug, Default)]
pub struct ChunkTranslator {
    finished: bool,
}

impl Translate<SseEvent> for ChunkTranslator {
    fn event(&mut self, event: SseEvent) -> Result<Step, BackendError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            if !self.finished {
                return Err(BackendError::new(
                    ErrorKind::Upstream,
                    "the upstream ended the stream without a finish reason",
                ));
            }
            return Ok(Step::done());
        }
        if data.is_empty() {
            return Ok(Step::default());
        }
        if event.name == "error" || data.starts_with("{\"error\"") {
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
            for piece in choice.delta.tool_calls.unwrap_or_default() {
                events.push(StreamEvent::ToolCall(ToolCallDelta::from(piece)));
            }
            if let Some(reason) = choice.finish_reason {
                self.finished = true;
                events.push(StreamEvent::Finish(parse_finish_reason(&reason)));
            }
        }
        if let Some(usage) = chunk.usage {
            events.push(StreamEvent::Usage(usage.into()));
        }
        Ok(Step::events(events))
    }

    fn end(&mut self) -> Result<Step, BackendError> {
        // Some servers close without `[DONE]`; that is fine once they have
        // said why generation ended.
        if self.finished {
            Ok(Step::done())
        } else {
            Err(cut_short())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_core::{FinishReason, Usage};

    fn event(data: &str) -> SseEvent {
        SseEvent {
            name: "message".into(),
            data: data.into(),
        }
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let mut config = OpenAiConfig::new("http://x/v1", "m");
        config.auth = Auth::Bearer(Credential::from("sk-live-secret"));
        config.headers = vec![("x-api-key".into(), "also-secret".into())];
        let adapter = OpenAiAdapter::new(config).unwrap();
        let printed = format!("{adapter:?}");
        assert!(!printed.contains("sk-live-secret"), "{printed}");
        assert!(!printed.contains("also-secret"), "{printed}");
    }

    #[test]
    fn azure_style_urls_carry_the_query() {
        let mut config = OpenAiConfig::new("https://r.example/openai/deployments/d1", "d1");
        config.query = Some("api-version=2024-10-21".into());
        let adapter = OpenAiAdapter::new(config).unwrap();
        assert_eq!(
            adapter.wire().chat_url.as_str(),
            "https://r.example/openai/deployments/d1/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(
            adapter.wire().embeddings_url.as_str(),
            "https://r.example/openai/deployments/d1/embeddings?api-version=2024-10-21"
        );
    }

    #[test]
    fn translates_an_openai_stream() {
        let mut t = ChunkTranslator::default();
        let role = t
            .event(event(
                r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            ))
            .unwrap();
        assert!(role.events.is_empty());
        let text = t
            .event(event(
                r#"{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#,
            ))
            .unwrap();
        assert_eq!(text.events, vec![StreamEvent::Delta("Hi".into())]);
        let finish = t
            .event(event(
                r#"{"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}"#,
            ))
            .unwrap();
        assert_eq!(
            finish.events,
            vec![StreamEvent::Finish(FinishReason::Length)]
        );
        let usage = t
            .event(event(
                r#"{"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}}"#,
            ))
            .unwrap();
        assert_eq!(usage.events, vec![StreamEvent::Usage(Usage::new(2, 1))]);
        assert!(t.event(event("[DONE]")).unwrap().done);
    }

    #[test]
    fn translates_streamed_tool_calls() {
        let mut t = ChunkTranslator::default();
        let first = t
            .event(event(
                r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]}}]}"#,
            ))
            .unwrap();
        assert_eq!(
            first.events,
            vec![StreamEvent::ToolCall(ToolCallDelta {
                index: 0,
                id: Some("call_1".into()),
                name: Some("get_weather".into()),
                arguments: String::new(),
            })]
        );
        let more = t
            .event(event(
                r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}}]}"#,
            ))
            .unwrap();
        assert_eq!(
            more.events,
            vec![StreamEvent::ToolCall(ToolCallDelta {
                index: 0,
                id: None,
                name: None,
                arguments: "{\"city\":".into(),
            })]
        );
    }

    #[test]
    fn a_stream_cut_before_finishing_is_an_error() {
        let mut t = ChunkTranslator::default();
        t.event(event(r#"{"choices":[{"delta":{"content":"Hi"}}]}"#))
            .unwrap();
        assert_eq!(t.end().unwrap_err().kind, ErrorKind::Upstream);
        let mut t = ChunkTranslator::default();
        assert_eq!(
            t.event(event("[DONE]")).unwrap_err().kind,
            ErrorKind::Upstream
        );
    }

    #[test]
    fn malformed_and_error_events_are_errors() {
        let mut t = ChunkTranslator::default();
        let error = t.event(event("{not json")).unwrap_err();
        assert!(error.message.contains("malformed"), "{}", error.message);
        let error = t
            .event(event(
                r#"{"error":{"message":"overloaded","type":"server_error"}}"#,
            ))
            .unwrap_err();
        assert!(error.message.contains("overloaded"), "{}", error.message);
    }

    #[test]
    fn statuses_map_to_kinds_with_upstream_message() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "2".parse().unwrap());
        let body = r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;
        let error = classify(429, &headers, body);
        assert_eq!(error.kind, ErrorKind::RateLimited);
        assert_eq!(error.code.as_deref(), Some("rate_limit_exceeded"));
        assert_eq!(error.retry_after, Some(std::time::Duration::from_secs(2)));
        assert!(error.message.contains("Rate limit reached"));
        let none = HeaderMap::new();
        assert_eq!(classify(529, &none, "").kind, ErrorKind::Overloaded);
        assert_eq!(classify(500, &none, "boom").kind, ErrorKind::Upstream);
        assert_eq!(classify(401, &none, "").kind, ErrorKind::Authentication);
        assert_eq!(classify(400, &none, "").kind, ErrorKind::InvalidRequest);
        assert_eq!(classify(504, &none, "").kind, ErrorKind::Timeout);
        let long = classify(
            400,
            &none,
            r#"{"error":{"message":"This model's maximum context length is 128000 tokens","type":"invalid_request_error","code":"context_length_exceeded"}}"#,
        );
        assert_eq!(long.code.as_deref(), Some("context_length_exceeded"));
    }
}
