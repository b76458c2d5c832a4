//! The `anthropic` adapter: Anthropic's Messages API (`/v1/messages`,
//! `x-api-key`, `anthropic-version`), whole and streamed.
//!
//! The SSE stream (`message_start`, `content_block_start`/`delta`/`stop`,
//! `message_delta`, `message_stop`, `ping`, `error`) is translated event by
//! event: text deltas become text, `tool_use` blocks and their
//! `input_json_delta` fragments become streamed tool calls, `message_delta`
//! gives the finish reason and usage (cache reads and writes included).

use std::collections::HashMap;

use futures::stream::BoxStream;
use reqwest::header::HeaderMap;
use switchyard_core::{
    BackendError, BackendInfo, ChatRequest, ChatResponse, ErrorKind, StreamEvent, ToolCallDelta,
    Usage,
};
use switchyard_protocol::anthropic::{
    AnthropicUsage, BlockDelta, ContentBlock, ErrorBody, MessagesRequest, MessagesResponse,
    StreamEvent as WireEvent, parse_stop_reason,
};

use crate::adapter::{HttpAdapter, Wire, encode, refuse_json_format};
use crate::http::{
    Timeouts, UpstreamTls, header_map, kind_of_status, parse_url, plain_message, retry_after,
    status_error, unreadable,
};
use crate::stream::{SseEvent, Step, Translate, cut_short, sse_events};
use crate::{AdapterBuildError, Credential};

/// The API version Switchyard speaks.
pub const DEFAULT_VERSION: &str = "2023-06-01";

/// How to reach one Anthropic model.
#[derive(Clone, PartialEq)]
pub struct AnthropicConfig {
    /// `https://api.anthropic.com` (without `/v1`).
    pub base_url: String,
    /// The `x-api-key`.
    pub api_key: Credential,
    /// The `anthropic-version` header.
    pub version: String,
    /// The model id, e.g. `claude-sonnet-4-5`.
    pub upstream_model: String,
    /// `max_tokens` for requests that set none (Anthropic requires one).
    pub default_max_tokens: u32,
    /// Extra headers (e.g. `anthropic-beta`).
    pub headers: Vec<(String, String)>,
    /// Deadlines.
    pub timeouts: Timeouts,
    /// TLS toward the upstream beyond the defaults.
    pub tls: UpstreamTls,
}

// Extra headers may carry credentials of their own: only their names
// are shown.
impl std::fmt::Debug for AnthropicConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnthropicConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key)
            .field("version", &self.version)
            .field("upstream_model", &self.upstream_model)
            .field("default_max_tokens", &self.default_max_tokens)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("timeouts", &self.timeouts)
            .finish()
    }
}

impl AnthropicConfig {
    /// Anthropic's public API with default deadlines and 4,096 max tokens.
    pub fn new(api_key: impl Into<Credential>, upstream_model: impl Into<String>) -> Self {
        Self {
            base_url: "https://api.anthropic.com".into(),
            api_key: api_key.into(),
            version: DEFAULT_VERSION.into(),
            upstream_model: upstream_model.into(),
            default_max_tokens: 4096,
            headers: Vec::new(),
            timeouts: Timeouts::default(),
            tls: UpstreamTls::default(),
        }
    }
}

/// An Anthropic model as a chat backend.
pub type AnthropicAdapter = HttpAdapter<AnthropicWire>;

/// Anthropic's Messages wire format.
#[derive(Debug)]
pub struct AnthropicWire {
    url: reqwest::Url,
    config: AnthropicConfig,
}

impl AnthropicAdapter {
    /// Builds the adapter and its connection pool.
    pub fn new(config: AnthropicConfig) -> Result<Self, AdapterBuildError> {
        let mut pairs = config.headers.clone();
        pairs.push(("x-api-key".into(), config.api_key.expose().to_owned()));
        pairs.push(("anthropic-version".into(), config.version.clone()));
        let headers = header_map(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        let url = parse_url(&format!(
            "{}/v1/messages",
            config.base_url.trim_end_matches('/')
        ))?;
        let timeouts = config.timeouts;
        let tls = config.tls.clone();
        HttpAdapter::with_wire(AnthropicWire { url, config }, timeouts, headers, &tls)
    }
}

/// The error kind Anthropic means by an error class.
fn kind_of_error(kind: &str, status: u16) -> ErrorKind {
    match kind {
        "overloaded_error" => ErrorKind::Overloaded,
        "rate_limit_error" => ErrorKind::RateLimited,
        "authentication_error" | "permission_error" => ErrorKind::Authentication,
        "not_found_error" => ErrorKind::NotFound,
        "invalid_request_error" | "request_too_large" => ErrorKind::InvalidRequest,
        "timeout_error" => ErrorKind::Timeout,
        _ => kind_of_status(status),
    }
}

/// Reads Anthropic's error shape `{"type":"error","error":{"type","message"}}`.
fn classify(status: u16, headers: &HeaderMap, body: &str) -> BackendError {
    let (kind, message, class) = match serde_json::from_str::<ErrorBody>(body) {
        Ok(parsed) => (
            kind_of_error(&parsed.error.kind, status),
            parsed.error.message,
            Some(parsed.error.kind),
        ),
        Err(_) => (kind_of_status(status), plain_message(body), None),
    };
    let code = if message.contains("prompt is too long") {
        Some("context_length_exceeded".to_owned())
    } else {
        class
    };
    status_error(status, kind, &message, code, retry_after(headers))
}

impl Wire for AnthropicWire {
    type Event = SseEvent;
    type Translator = EventTranslator;

    fn info(&self) -> BackendInfo {
        BackendInfo {
            kind: "anthropic",
            upstream_model: self.config.upstream_model.clone(),
            owned_by: "anthropic".into(),
        }
    }

    fn chat_url(&self, _stream: bool) -> &reqwest::Url {
        &self.url
    }

    fn encode_chat(&self, request: &ChatRequest, stream: bool) -> Result<Vec<u8>, BackendError> {
        refuse_json_format(request, "Anthropic")?;
        encode(&MessagesRequest::from_canonical(
            request,
            &self.config.upstream_model,
            self.config.default_max_tokens,
            stream,
        ))
    }

    fn decode_chat(&self, body: &[u8]) -> Result<ChatResponse, BackendError> {
        let message: MessagesResponse =
            serde_json::from_slice(body).map_err(|e| unreadable("message", e))?;
        Ok(message.into_canonical())
    }

    fn frames(response: reqwest::Response) -> BoxStream<'static, Result<SseEvent, BackendError>> {
        sse_events(response)
    }

    fn translator(&self) -> EventTranslator {
        EventTranslator::default()
    }

    fn classify(status: u16, headers: &HeaderMap, body: &str) -> BackendError {
        classify(status, headers, body)
    }
}

/// Translates Anthropic's stream events into canonical ones.
#[derive(Debug, Default)]
pub struct EventTranslator {
    /// Usage reported by `message_start` (input side).
    usage: AnthropicUsage,
    /// Content block index → tool-call index, for `tool_use` blocks.
    tool_blocks: HashMap<u32, u32>,
    finished: bool,
}

impl Translate<SseEvent> for EventTranslator {
    fn event(&mut self, event: SseEvent) -> Result<Step, BackendError> {
        if event.data.trim().is_empty() {
            return Ok(Step::default());
        }
        let parsed: WireEvent = serde_json::from_str(&event.data).map_err(|e| {
            BackendError::new(
                ErrorKind::Upstream,
                format!("the upstream sent a malformed stream event: {e}"),
            )
        })?;
        let events = match parsed {
            WireEvent::MessageStart { message } => {
                self.usage = message.usage;
                Vec::new()
            }
            WireEvent::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                ContentBlock::ToolUse { id, name, .. } => {
                    let tool_index = u32::try_from(self.tool_blocks.len()).unwrap_or(0);
                    self.tool_blocks.insert(index, tool_index);
                    vec![StreamEvent::ToolCall(ToolCallDelta {
                        index: tool_index,
                        id: Some(id),
                        name: Some(name),
                        arguments: String::new(),
                    })]
                }
                ContentBlock::Text { text } if !text.is_empty() => vec![StreamEvent::Delta(text)],
                _ => Vec::new(),
            },
            WireEvent::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { text } => vec![StreamEvent::Delta(text)],
                BlockDelta::InputJsonDelta { partial_json } => match self.tool_blocks.get(&index) {
                    Some(&tool_index) => vec![StreamEvent::ToolCall(ToolCallDelta {
                        index: tool_index,
                        id: None,
                        name: None,
                        arguments: partial_json,
                    })],
                    None => Vec::new(),
                },
                BlockDelta::ThinkingDelta { .. } | BlockDelta::SignatureDelta { .. } => Vec::new(),
            },
            WireEvent::ContentBlockStop { .. } | WireEvent::Ping => Vec::new(),
            WireEvent::MessageDelta { delta, usage } => {
                self.finished = true;
                // message_delta's usage is cumulative; input counts arrive
                // in message_start unless the delta repeats them.
                let merged = AnthropicUsage {
                    input_tokens: if usage.input_tokens > 0 {
                        usage.input_tokens
                    } else {
                        self.usage.input_tokens
                    },
                    output_tokens: usage.output_tokens,
                    cache_creation_input_tokens: usage
                        .cache_creation_input_tokens
                        .or(self.usage.cache_creation_input_tokens),
                    cache_read_input_tokens: usage
                        .cache_read_input_tokens
                        .or(self.usage.cache_read_input_tokens),
                };
                vec![
                    StreamEvent::Finish(parse_stop_reason(
                        delta.stop_reason.as_deref().unwrap_or("end_turn"),
                    )),
                    StreamEvent::Usage(Usage::from(merged)),
                ]
            }
            WireEvent::MessageStop => return Ok(Step::done()),
            WireEvent::Error { error } => {
                let kind = kind_of_error(&error.kind, 500);
                return Err(BackendError::new(
                    kind,
                    format!(
                        "the upstream reported an error mid-stream ({}): {}",
                        error.kind, error.message
                    ),
                )
                .with_code(error.kind));
            }
        };
        Ok(Step::events(events))
    }

    fn end(&mut self) -> Result<Step, BackendError> {
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
    use switchyard_core::FinishReason;

    fn event(name: &str, data: &str) -> SseEvent {
        SseEvent {
            name: name.into(),
            data: data.into(),
        }
    }

    fn run(events: &[(&str, &str)]) -> (Vec<StreamEvent>, Result<Step, BackendError>) {
        let mut translator = EventTranslator::default();
        let mut out = Vec::new();
        for (name, data) in events {
            let step = translator.event(event(name, data)).unwrap();
            out.extend(step.events);
            if step.done {
                return (out, Ok(Step::done()));
            }
        }
        (out, translator.end())
    }

    #[test]
    fn translates_text_and_tool_use_streams() {
        let (events, end) = run(&[
            (
                "message_start",
                r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"output_tokens":1,"cache_read_input_tokens":10}}}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            ),
            ("ping", r#"{"type":"ping"}"#),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Let me check"}}"#,
            ),
            (
                "content_block_stop",
                r#"{"type":"content_block_stop","index":0}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\": "}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\"Oslo\"}"}}"#,
            ),
            (
                "content_block_stop",
                r#"{"type":"content_block_stop","index":1}"#,
            ),
            (
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":15}}"#,
            ),
            ("message_stop", r#"{"type":"message_stop"}"#),
        ]);
        assert!(end.is_ok());
        assert_eq!(events[0], StreamEvent::Delta("Let me check".into()));
        assert_eq!(
            events[1],
            StreamEvent::ToolCall(ToolCallDelta {
                index: 0,
                id: Some("toolu_1".into()),
                name: Some("get_weather".into()),
                arguments: String::new(),
            })
        );
        let arguments: String = events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::ToolCall(d) => Some(d.arguments.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(arguments, "{\"city\": \"Oslo\"}");
        assert_eq!(
            events[events.len() - 2],
            StreamEvent::Finish(FinishReason::ToolCalls)
        );
        let StreamEvent::Usage(usage) = events[events.len() - 1] else {
            panic!("no usage");
        };
        assert_eq!(usage.prompt_tokens, 35);
        assert_eq!(usage.cache_read_tokens, 10);
        assert_eq!(usage.completion_tokens, 15);
    }

    #[test]
    fn error_events_keep_their_kind() {
        let mut translator = EventTranslator::default();
        let error = translator
            .event(event(
                "error",
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            ))
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::Overloaded);
        assert_eq!(error.code.as_deref(), Some("overloaded_error"));
    }

    #[test]
    fn a_stream_cut_before_message_delta_is_an_error() {
        let (_, end) = run(&[(
            "content_block_delta",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
        )]);
        assert_eq!(end.unwrap_err().kind, ErrorKind::Upstream);
    }

    #[test]
    fn errors_map_by_class_and_status() {
        let none = HeaderMap::new();
        let overloaded = classify(
            529,
            &none,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        assert_eq!(overloaded.kind, ErrorKind::Overloaded);
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "12".parse().unwrap());
        let limited = classify(
            429,
            &headers,
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#,
        );
        assert_eq!(limited.kind, ErrorKind::RateLimited);
        assert_eq!(
            limited.retry_after,
            Some(std::time::Duration::from_secs(12))
        );
        let long = classify(
            400,
            &none,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#,
        );
        assert_eq!(long.code.as_deref(), Some("context_length_exceeded"));
        assert_eq!(classify(401, &none, "").kind, ErrorKind::Authentication);
    }
}
