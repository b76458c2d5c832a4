//! The `gemini` adapter: Google's Gemini API (`generateContent`,
//! `streamGenerateContent?alt=sse`, `batchEmbedContents`; key in the
//! `x-goog-api-key` header).
//!
//! Gemini speaks in `contents` of `parts`: the system prompt is a separate
//! `systemInstruction`, the assistant is the `model` role, tool calls are
//! `functionCall` parts with JSON objects for arguments and tool results are
//! `functionResponse` parts that name the function (not the call id). A
//! prompt or answer stopped by safety filters comes back as finish reason
//! `content_filter`.

use std::collections::HashMap;

use futures::stream::BoxStream;
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchyard_core::{
    BackendError, BackendInfo, ChatRequest, ChatResponse, ContentPart, EmbeddingRequest,
    EmbeddingResponse, ErrorKind, FinishReason, ImageSource, ResponseFormat, Role, StreamEvent,
    ToolCall, ToolCallDelta, ToolChoice, Usage,
};

use crate::adapter::{EmbeddingWire, HttpAdapter, Wire, call_arguments, encode};
use crate::http::{
    Timeouts, UpstreamTls, header_map, kind_of_status, parse_url, plain_message, retry_after,
    status_error, unreadable,
};
use crate::stream::{SseEvent, Step, Translate, cut_short, sse_events};
use crate::{AdapterBuildError, Credential};

/// How to reach one Gemini model.
#[derive(Clone, PartialEq)]
pub struct GeminiConfig {
    /// `https://generativelanguage.googleapis.com/v1beta`.
    pub base_url: String,
    /// The `x-goog-api-key`.
    pub api_key: Credential,
    /// The model id, e.g. `gemini-2.0-flash`.
    pub upstream_model: String,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Deadlines.
    pub timeouts: Timeouts,
    /// TLS toward the upstream beyond the defaults.
    pub tls: UpstreamTls,
}

// Extra headers may carry credentials of their own: only their names
// are shown.
impl std::fmt::Debug for GeminiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeminiConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key)
            .field("upstream_model", &self.upstream_model)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("timeouts", &self.timeouts)
            .finish()
    }
}

impl GeminiConfig {
    /// Google's public endpoint with default deadlines.
    pub fn new(api_key: impl Into<Credential>, upstream_model: impl Into<String>) -> Self {
        Self {
            base_url: "https://generativelanguage.googleapis.com/v1beta".into(),
            api_key: api_key.into(),
            upstream_model: upstream_model.into(),
            headers: Vec::new(),
            timeouts: Timeouts::default(),
            tls: UpstreamTls::default(),
        }
    }
}

// ---- Wire types -----------------------------------------------------------

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerateContentRequest {
    contents: Vec<Content>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<Content>,
    #[serde(skip_serializing_if = "Option::is_none")]
    generation_config: Option<GenerationConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<Vec<GeminiTool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<ToolConfig>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Content {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    #[serde(default)]
    parts: Vec<Part>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Part {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    inline_data: Option<Blob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    file_data: Option<FileData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    function_call: Option<FunctionCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    function_response: Option<FunctionResponse>,
    /// Set on thought-summary parts, which are not part of the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    thought: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Blob {
    mime_type: String,
    data: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileData {
    mime_type: String,
    file_uri: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FunctionCall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    name: String,
    #[serde(default)]
    args: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FunctionResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    name: String,
    response: Value,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_sequences: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f32>,
    /// `application/json` for OpenAI's JSON modes.
    #[serde(skip_serializing_if = "Option::is_none")]
    response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_schema: Option<Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct GeminiTool {
    function_declarations: Vec<FunctionDeclaration>,
}

#[derive(Debug, Serialize)]
struct FunctionDeclaration {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    parameters: Value,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig {
    function_calling_config: FunctionCallingConfig,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FunctionCallingConfig {
    mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed_function_names: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateContentResponse {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    prompt_feedback: Option<PromptFeedback>,
    #[serde(default)]
    model_version: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: u32,
    #[serde(default)]
    candidates_token_count: u32,
    #[serde(default)]
    cached_content_token_count: u32,
    #[serde(default)]
    thoughts_token_count: u32,
}

impl From<UsageMetadata> for Usage {
    fn from(usage: UsageMetadata) -> Self {
        Usage {
            prompt_tokens: usage.prompt_token_count,
            completion_tokens: usage.candidates_token_count + usage.thoughts_token_count,
            cache_read_tokens: usage.cached_content_token_count,
            cache_write_tokens: 0,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    #[serde(default)]
    block_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ErrorEnvelope {
    error: ErrorStatus,
}

#[derive(Debug, Deserialize)]
struct ErrorStatus {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    details: Vec<Value>,
}

// ---- Translation ----------------------------------------------------------

/// Gemini accepts an OpenAPI subset of JSON Schema and refuses requests that
/// carry keywords outside it; these are the ones OpenAI-style tool schemas
/// commonly use.
fn gemini_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(key, _)| {
                    !matches!(key.as_str(), "$schema" | "additionalProperties" | "strict")
                })
                .map(|(key, value)| (key.clone(), gemini_schema(value)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(gemini_schema).collect()),
        other => other.clone(),
    }
}

/// A MIME type for an image URL, from its extension.
fn mime_of(url: &str) -> String {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .to_ascii_lowercase();
    let kind = match path.rsplit('.').next() {
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("heic") => "image/heic",
        _ => "image/jpeg",
    };
    kind.to_owned()
}

fn function_response_body(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(object @ Value::Object(_)) => object,
        Ok(other) => json!({ "result": other }),
        Err(_) => json!({ "result": text }),
    }
}

fn request_body(request: &ChatRequest) -> Result<GenerateContentRequest, BackendError> {
    // functionResponse names the function, so remember which call was which.
    let call_names: HashMap<&str, &str> = request
        .messages
        .iter()
        .flat_map(|m| m.tool_calls.iter())
        .map(|call| (call.id.as_str(), call.name.as_str()))
        .collect();
    let mut system = Vec::new();
    let mut contents: Vec<Content> = Vec::new();
    for message in &request.messages {
        let (role, parts): (&str, Vec<Part>) = match message.role {
            Role::System => {
                system.push(message.text());
                continue;
            }
            Role::Tool => {
                let id = message.tool_call_id.clone().unwrap_or_default();
                let name = call_names.get(id.as_str()).copied().unwrap_or("tool");
                (
                    "user",
                    vec![Part {
                        function_response: Some(FunctionResponse {
                            id: Some(id.clone()),
                            name: name.to_owned(),
                            response: function_response_body(&message.text()),
                        }),
                        ..Part::default()
                    }],
                )
            }
            Role::User | Role::Assistant => {
                let mut parts: Vec<Part> = message
                    .content
                    .iter()
                    .filter_map(|part| match part {
                        ContentPart::Text(text) if text.is_empty() => None,
                        ContentPart::Text(text) => Some(Part {
                            text: Some(text.clone()),
                            ..Part::default()
                        }),
                        ContentPart::Image { source, .. } => Some(match source {
                            ImageSource::Base64 { media_type, data } => Part {
                                inline_data: Some(Blob {
                                    mime_type: media_type.clone(),
                                    data: data.clone(),
                                }),
                                ..Part::default()
                            },
                            ImageSource::Url(url) => Part {
                                file_data: Some(FileData {
                                    mime_type: mime_of(url),
                                    file_uri: url.clone(),
                                }),
                                ..Part::default()
                            },
                        }),
                    })
                    .collect();
                for call in &message.tool_calls {
                    parts.push(Part {
                        function_call: Some(FunctionCall {
                            id: None,
                            name: call.name.clone(),
                            args: Value::Object(call_arguments(call)?),
                        }),
                        ..Part::default()
                    });
                }
                let role = if message.role == Role::User {
                    "user"
                } else {
                    "model"
                };
                (role, parts)
            }
        };
        match contents.last_mut() {
            Some(last) if last.role.as_deref() == Some(role) => last.parts.extend(parts),
            _ => contents.push(Content {
                role: Some(role.to_owned()),
                parts,
            }),
        }
    }
    let sampling = &request.sampling;
    let (response_mime_type, response_schema) = match &request.response_format {
        None | Some(ResponseFormat::Text) => (None, None),
        Some(ResponseFormat::JsonObject) => (Some("application/json"), None),
        Some(ResponseFormat::JsonSchema(format)) => (
            Some("application/json"),
            Some(gemini_schema(&format.schema)),
        ),
    };
    let generation_config = GenerationConfig {
        temperature: sampling.temperature,
        top_p: sampling.top_p,
        top_k: sampling.top_k,
        max_output_tokens: request.max_tokens,
        stop_sequences: (!request.stop.is_empty()).then(|| request.stop.clone()),
        seed: sampling.seed.map(|s| s as i64),
        presence_penalty: sampling.presence_penalty,
        frequency_penalty: sampling.frequency_penalty,
        response_mime_type,
        response_schema,
    };
    let tools = (!request.tools.is_empty()).then(|| {
        vec![GeminiTool {
            function_declarations: request
                .tools
                .iter()
                .map(|tool| FunctionDeclaration {
                    name: tool.name.clone(),
                    description: tool.description.clone(),
                    parameters: gemini_schema(&tool.parameters),
                })
                .collect(),
        }]
    });
    let tool_config = request.tool_choice.as_ref().map(|choice| {
        let (mode, allowed) = match choice {
            ToolChoice::Auto => ("AUTO", None),
            ToolChoice::None => ("NONE", None),
            ToolChoice::Required => ("ANY", None),
            ToolChoice::Tool(name) => ("ANY", Some(vec![name.clone()])),
        };
        ToolConfig {
            function_calling_config: FunctionCallingConfig {
                mode,
                allowed_function_names: allowed,
            },
        }
    });
    Ok(GenerateContentRequest {
        contents,
        system_instruction: (!system.is_empty()).then(|| Content {
            role: None,
            parts: vec![Part {
                text: Some(system.join("\n\n")),
                ..Part::default()
            }],
        }),
        generation_config: Some(generation_config),
        tools,
        tool_config,
    })
}

/// The canonical finish for a Gemini finish reason.
fn finish_reason(reason: &str, called_tools: bool) -> FinishReason {
    match reason {
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY"
        | "LANGUAGE" => FinishReason::ContentFilter,
        _ if called_tools => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

/// Parts of the first candidate: the text and the tool calls, with ids for
/// calls that came without one (numbered from `first_call`).
fn read_parts(parts: Vec<Part>, first_call: usize) -> (String, Vec<ToolCall>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for part in parts {
        if part.thought == Some(true) {
            continue;
        }
        if let Some(piece) = part.text {
            text.push_str(&piece);
        }
        if let Some(call) = part.function_call {
            let number = first_call + calls.len();
            calls.push(ToolCall {
                id: call.id.unwrap_or_else(|| format!("call_{number}")),
                name: call.name,
                arguments: call.args.to_string(),
            });
        }
    }
    (text, calls)
}

fn status_kind(status: Option<&str>, code: u16) -> ErrorKind {
    match status {
        Some("INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE") => {
            ErrorKind::InvalidRequest
        }
        Some("UNAUTHENTICATED" | "PERMISSION_DENIED") => ErrorKind::Authentication,
        Some("NOT_FOUND") => ErrorKind::NotFound,
        Some("RESOURCE_EXHAUSTED") => ErrorKind::RateLimited,
        Some("UNAVAILABLE") => ErrorKind::Overloaded,
        Some("DEADLINE_EXCEEDED") => ErrorKind::Timeout,
        _ => kind_of_status(code),
    }
}

/// Google's `RetryInfo.retryDelay` ("37s"), when there is no header.
fn retry_delay(details: &[Value]) -> Option<std::time::Duration> {
    details
        .iter()
        .filter(|d| {
            d.get("@type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with("RetryInfo"))
        })
        .filter_map(|d| d.get("retryDelay").and_then(Value::as_str))
        .filter_map(|delay| delay.strip_suffix('s')?.parse::<f64>().ok())
        .find(|seconds| seconds.is_finite() && *seconds >= 0.0)
        .map(std::time::Duration::from_secs_f64)
}

/// Reads Google's error shape `{"error":{"code","message","status","details"}}`.
fn classify(status: u16, headers: &HeaderMap, body: &str) -> BackendError {
    match serde_json::from_str::<ErrorEnvelope>(body) {
        Ok(envelope) => {
            let error = envelope.error;
            let kind = status_kind(error.status.as_deref(), status);
            let wait = retry_after(headers).or_else(|| retry_delay(&error.details));
            let code = if error
                .message
                .contains("exceeds the maximum number of tokens")
            {
                Some("context_length_exceeded".to_owned())
            } else {
                error.status
            };
            status_error(status, kind, &error.message, code, wait)
        }
        Err(_) => status_error(
            status,
            kind_of_status(status),
            &plain_message(body),
            None,
            retry_after(headers),
        ),
    }
}

// ---- The adapter ----------------------------------------------------------

/// A Gemini model as a chat and embedding backend.
pub type GeminiAdapter = HttpAdapter<GeminiWire>;

/// Gemini's `generateContent` wire format.
#[derive(Debug)]
pub struct GeminiWire {
    generate_url: reqwest::Url,
    stream_url: reqwest::Url,
    embed_url: reqwest::Url,
    config: GeminiConfig,
}

impl GeminiAdapter {
    /// Builds the adapter and its connection pool.
    pub fn new(config: GeminiConfig) -> Result<Self, AdapterBuildError> {
        let mut pairs = config.headers.clone();
        pairs.push(("x-goog-api-key".into(), config.api_key.expose().to_owned()));
        let headers = header_map(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        let model_url = format!(
            "{}/models/{}",
            config.base_url.trim_end_matches('/'),
            config.upstream_model
        );
        let timeouts = config.timeouts;
        let tls = config.tls.clone();
        let wire = GeminiWire {
            generate_url: parse_url(&format!("{model_url}:generateContent"))?,
            stream_url: parse_url(&format!("{model_url}:streamGenerateContent?alt=sse"))?,
            embed_url: parse_url(&format!("{model_url}:batchEmbedContents"))?,
            config,
        };
        HttpAdapter::with_wire(wire, timeouts, headers, &tls)
    }
}

impl Wire for GeminiWire {
    type Event = SseEvent;
    type Translator = ChunkTranslator;

    fn info(&self) -> BackendInfo {
        BackendInfo {
            kind: "gemini",
            upstream_model: self.config.upstream_model.clone(),
            owned_by: "google".into(),
        }
    }

    fn chat_url(&self, stream: bool) -> &reqwest::Url {
        if stream {
            &self.stream_url
        } else {
            &self.generate_url
        }
    }

    fn encode_chat(&self, request: &ChatRequest, _stream: bool) -> Result<Vec<u8>, BackendError> {
        encode(&request_body(request)?)
    }

    fn decode_chat(&self, body: &[u8]) -> Result<ChatResponse, BackendError> {
        let answer: GenerateContentResponse =
            serde_json::from_slice(body).map_err(|e| unreadable("answer", e))?;
        let usage = answer.usage_metadata.map(Usage::from).unwrap_or_default();
        let model = answer
            .model_version
            .unwrap_or_else(|| self.config.upstream_model.clone());
        let Some(candidate) = answer.candidates.into_iter().next() else {
            // The prompt itself was blocked: no candidate at all.
            let reason = answer
                .prompt_feedback
                .and_then(|f| f.block_reason)
                .unwrap_or_else(|| "OTHER".into());
            tracing::info!(%reason, "upstream blocked the prompt");
            return Ok(ChatResponse {
                model,
                content: String::new(),
                tool_calls: Vec::new(),
                finish_reason: FinishReason::ContentFilter,
                usage,
                logprobs: None,
                tool_runs: Vec::new(),
            });
        };
        let (content, tool_calls) = read_parts(candidate.content.unwrap_or_default().parts, 0);
        let finish = finish_reason(
            candidate.finish_reason.as_deref().unwrap_or("STOP"),
            !tool_calls.is_empty(),
        );
        Ok(ChatResponse {
            model,
            content,
            tool_calls,
            finish_reason: finish,
            usage,
            logprobs: None,
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

/// `batchEmbedContents`: one embedding request per input.
#[derive(Serialize)]
struct BatchEmbedRequest<'a> {
    requests: Vec<EmbedContentRequest<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EmbedContentRequest<'a> {
    model: &'a str,
    content: EmbedContent<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_dimensionality: Option<u32>,
}

#[derive(Serialize)]
struct EmbedContent<'a> {
    parts: [EmbedText<'a>; 1],
}

#[derive(Serialize)]
struct EmbedText<'a> {
    text: &'a str,
}

#[derive(Deserialize)]
struct BatchEmbedResponse {
    #[serde(default)]
    embeddings: Vec<EmbeddingValues>,
}

#[derive(Deserialize)]
struct EmbeddingValues {
    values: Vec<f32>,
}

impl EmbeddingWire for GeminiWire {
    fn embeddings_url(&self) -> &reqwest::Url {
        &self.embed_url
    }

    fn encode_embed(&self, request: &EmbeddingRequest) -> Result<Vec<u8>, BackendError> {
        let model = format!("models/{}", self.config.upstream_model);
        encode(&BatchEmbedRequest {
            requests: request
                .inputs
                .iter()
                .map(|text| EmbedContentRequest {
                    model: &model,
                    content: EmbedContent {
                        parts: [EmbedText { text }],
                    },
                    output_dimensionality: request.dimensions,
                })
                .collect(),
        })
    }

    fn decode_embed(&self, body: &[u8]) -> Result<EmbeddingResponse, BackendError> {
        let batch: BatchEmbedResponse =
            serde_json::from_slice(body).map_err(|e| unreadable("embeddings", e))?;
        Ok(EmbeddingResponse {
            model: self.config.upstream_model.clone(),
            embeddings: batch.embeddings.into_iter().map(|e| e.values).collect(),
            // Gemini reports no token counts for embeddings.
            prompt_tokens: 0,
        })
    }
}

/// Translates streamed `GenerateContentResponse` chunks. Gemini closes the
/// stream after the chunk with the finish reason; usage (cumulative) is
/// taken from the last chunk that carried it.
#[derive(Debug, Default)]
pub struct ChunkTranslator {
    usage: Option<UsageMetadata>,
    calls: usize,
    finished: bool,
}

impl Translate<SseEvent> for ChunkTranslator {
    fn event(&mut self, event: SseEvent) -> Result<Step, BackendError> {
        let data = event.data.trim();
        if data.is_empty() {
            return Ok(Step::default());
        }
        if let Ok(envelope) = serde_json::from_str::<ErrorEnvelope>(data) {
            let error = envelope.error;
            return Err(BackendError::new(
                status_kind(error.status.as_deref(), 500),
                format!(
                    "the upstream reported an error mid-stream: {}",
                    error.message
                ),
            ));
        }
        let chunk: GenerateContentResponse = serde_json::from_str(data).map_err(|e| {
            BackendError::new(
                ErrorKind::Upstream,
                format!("the upstream sent a malformed stream chunk: {e}"),
            )
        })?;
        if chunk.usage_metadata.is_some() {
            self.usage = chunk.usage_metadata;
        }
        let mut events = Vec::new();
        let Some(candidate) = chunk.candidates.into_iter().next() else {
            if let Some(reason) = chunk.prompt_feedback.and_then(|f| f.block_reason) {
                tracing::info!(%reason, "upstream blocked the prompt");
                self.finished = true;
                events.push(StreamEvent::Finish(FinishReason::ContentFilter));
            }
            return Ok(Step::events(events));
        };
        let (text, calls) = read_parts(candidate.content.unwrap_or_default().parts, self.calls);
        if !text.is_empty() {
            events.push(StreamEvent::Delta(text));
        }
        for call in calls {
            // Gemini sends each call whole.
            events.push(StreamEvent::ToolCall(ToolCallDelta {
                index: u32::try_from(self.calls).unwrap_or(0),
                id: Some(call.id),
                name: Some(call.name),
                arguments: call.arguments,
            }));
            self.calls += 1;
        }
        if let Some(reason) = candidate.finish_reason {
            self.finished = true;
            events.push(StreamEvent::Finish(finish_reason(&reason, self.calls > 0)));
        }
        Ok(Step::events(events))
    }

    fn end(&mut self) -> Result<Step, BackendError> {
        if !self.finished {
            return Err(cut_short());
        }
        let events = self
            .usage
            .map(|usage| vec![StreamEvent::Usage(usage.into())])
            .unwrap_or_default();
        Ok(Step { events, done: true })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_core::{ChatMessage, ToolDefinition};

    #[test]
    fn request_translation_covers_system_images_tools_and_results() {
        let mut call = ChatMessage::new(Role::Assistant, "");
        call.tool_calls = vec![ToolCall {
            id: "call_0".into(),
            name: "weather".into(),
            arguments: "{\"city\":\"Oslo\"}".into(),
        }];
        let mut result = ChatMessage::new(Role::Tool, "{\"temp\": 3}");
        result.tool_call_id = Some("call_0".into());
        let mut user = ChatMessage::new(Role::User, "what is this");
        user.content.push(ContentPart::Image {
            source: ImageSource::Base64 {
                media_type: "image/png".into(),
                data: "iVBOR".into(),
            },
            detail: None,
        });
        user.content.push(ContentPart::Image {
            source: ImageSource::Url("https://x.test/a.webp?size=2".into()),
            detail: None,
        });
        let mut request = ChatRequest::new(
            "m",
            vec![
                ChatMessage::new(Role::System, "be brief"),
                user,
                call,
                result,
            ],
        );
        request.tools = vec![ToolDefinition {
            name: "weather".into(),
            description: None,
            parameters: json!({"type": "object", "additionalProperties": false,
                                "properties": {"city": {"type": "string"}}}),
        }];
        request.tool_choice = Some(ToolChoice::Tool("weather".into()));
        request.max_tokens = Some(10);
        let wire = serde_json::to_value(request_body(&request).unwrap()).unwrap();
        assert_eq!(wire["systemInstruction"]["parts"][0]["text"], "be brief");
        assert_eq!(wire["contents"][0]["role"], "user");
        assert_eq!(
            wire["contents"][0]["parts"][1]["inlineData"],
            json!({"mimeType": "image/png", "data": "iVBOR"})
        );
        assert_eq!(
            wire["contents"][0]["parts"][2]["fileData"],
            json!({"mimeType": "image/webp", "fileUri": "https://x.test/a.webp?size=2"})
        );
        assert_eq!(wire["contents"][1]["role"], "model");
        assert_eq!(
            wire["contents"][1]["parts"][0]["functionCall"],
            json!({"name": "weather", "args": {"city": "Oslo"}})
        );
        assert_eq!(
            wire["contents"][2]["parts"][0]["functionResponse"],
            json!({"id": "call_0", "name": "weather", "response": {"temp": 3}})
        );
        assert_eq!(wire["generationConfig"]["maxOutputTokens"], 10);
        let declaration = &wire["tools"][0]["functionDeclarations"][0];
        assert!(
            declaration["parameters"]
                .get("additionalProperties")
                .is_none()
        );
        assert_eq!(
            wire["toolConfig"]["functionCallingConfig"],
            json!({"mode": "ANY", "allowedFunctionNames": ["weather"]})
        );
    }

    #[test]
    fn json_response_formats_become_a_json_mime_type_and_schema() {
        let mut request = ChatRequest::new("m", vec![ChatMessage::new(Role::User, "city?")]);
        request.response_format = Some(ResponseFormat::JsonSchema(
            switchyard_core::JsonSchemaFormat {
                name: "place".into(),
                description: None,
                schema: json!({"type": "object", "additionalProperties": false,
                               "properties": {"city": {"type": "string"}}}),
                strict: Some(true),
            },
        ));
        let wire = serde_json::to_value(request_body(&request).unwrap()).unwrap();
        let config = &wire["generationConfig"];
        assert_eq!(config["responseMimeType"], "application/json");
        assert_eq!(
            config["responseSchema"],
            json!({"type": "object", "properties": {"city": {"type": "string"}}})
        );
        request.response_format = Some(ResponseFormat::JsonObject);
        let wire = serde_json::to_value(request_body(&request).unwrap()).unwrap();
        assert_eq!(
            wire["generationConfig"]["responseMimeType"],
            "application/json"
        );
        assert!(wire["generationConfig"].get("responseSchema").is_none());
        request.response_format = None;
        let wire = serde_json::to_value(request_body(&request).unwrap()).unwrap();
        assert!(wire["generationConfig"].get("responseMimeType").is_none());
    }

    fn chunk(data: Value) -> SseEvent {
        SseEvent {
            name: "message".into(),
            data: data.to_string(),
        }
    }

    #[test]
    fn stream_chunks_become_text_calls_finish_and_usage() {
        let mut t = ChunkTranslator::default();
        let first = t
            .event(chunk(
                json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}],
                               "usageMetadata": {"promptTokenCount": 7}}),
            ))
            .unwrap();
        assert_eq!(first.events, vec![StreamEvent::Delta("Hel".into())]);
        let last = t
            .event(chunk(json!({"candidates": [{"content": {"role": "model", "parts": [
                {"functionCall": {"name": "weather", "args": {"city": "Oslo"}}}]},
                "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 4, "totalTokenCount": 11}})))
            .unwrap();
        assert_eq!(
            last.events[0],
            StreamEvent::ToolCall(ToolCallDelta {
                index: 0,
                id: Some("call_0".into()),
                name: Some("weather".into()),
                arguments: "{\"city\":\"Oslo\"}".into(),
            })
        );
        assert_eq!(last.events[1], StreamEvent::Finish(FinishReason::ToolCalls));
        let end = t.end().unwrap();
        assert!(end.done);
        assert_eq!(end.events, vec![StreamEvent::Usage(Usage::new(7, 4))]);
    }

    #[test]
    fn safety_stops_and_blocked_prompts_are_content_filter() {
        let mut t = ChunkTranslator::default();
        let step = t
            .event(chunk(json!({"candidates": [{"finishReason": "SAFETY"}]})))
            .unwrap();
        assert_eq!(
            step.events,
            vec![StreamEvent::Finish(FinishReason::ContentFilter)]
        );
        let mut t = ChunkTranslator::default();
        let step = t
            .event(chunk(json!({"promptFeedback": {"blockReason": "SAFETY"}})))
            .unwrap();
        assert_eq!(
            step.events,
            vec![StreamEvent::Finish(FinishReason::ContentFilter)]
        );
        assert!(ChunkTranslator::default().end().is_err());
    }

    #[test]
    fn google_errors_map_with_retry_info() {
        let body = r#"{"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}]}}"#;
        let error = classify(429, &HeaderMap::new(), body);
        assert_eq!(error.kind, ErrorKind::RateLimited);
        assert_eq!(error.retry_after, Some(std::time::Duration::from_secs(37)));
        assert_eq!(error.code.as_deref(), Some("RESOURCE_EXHAUSTED"));
        let unavailable = classify(
            503,
            &HeaderMap::new(),
            r#"{"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}"#,
        );
        assert_eq!(unavailable.kind, ErrorKind::Overloaded);
        let bad = classify(
            400,
            &HeaderMap::new(),
            r#"{"error": {"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT"}}"#,
        );
        assert_eq!(bad.kind, ErrorKind::InvalidRequest);
    }
}
