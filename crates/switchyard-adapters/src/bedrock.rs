//! The `bedrock` adapter: AWS Bedrock's Converse and ConverseStream APIs,
//! with requests signed by SigV4 (the `aws-sigv4` crate) and the streamed
//! answer's AWS event-stream framing decoded by `aws-smithy-eventstream`.
//!
//! Converse is one shape for every model on Bedrock: `messages` of content
//! blocks (`text`, `image` bytes, `toolUse`, `toolResult`), a separate
//! `system`, `inferenceConfig`, `toolConfig`. Streams carry `messageStart`,
//! `contentBlockStart`/`Delta`/`Stop`, `messageStop` and `metadata` (usage)
//! events, and exceptions as frames of their own.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_types::event_stream::{HeaderValue as FrameHeaderValue, Message};
use bytes::{Buf, BytesMut};
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_core::{
    BackendError, BackendInfo, ChatBackend, ChatRequest, ChatResponse, ChatStream, ContentPart,
    ErrorKind, FinishReason, ImageSource, Role, StreamEvent, ToolCall, ToolCallDelta, ToolChoice,
    Usage,
};
use tokio::time::Instant;

use crate::http::{
    HttpUpstream, Timeouts, header_map, kind_of_status, plain_message, retry_after, status_error,
    transport_error, unreadable,
};
use crate::stream::{Step, Translate, cut_short, drive};
use crate::{AdapterBuildError, Credential};

/// AWS credentials for signing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: Credential,
    /// Session token, for temporary credentials.
    pub session_token: Option<Credential>,
}

/// How to reach one Bedrock model.
#[derive(Debug, Clone, PartialEq)]
pub struct BedrockConfig {
    /// The AWS region, e.g. `us-east-1`.
    pub region: String,
    /// `https://bedrock-runtime.{region}.amazonaws.com` unless overridden.
    pub base_url: String,
    /// Signing credentials.
    pub credentials: AwsCredentials,
    /// The model id or inference-profile ARN.
    pub upstream_model: String,
    /// Extra headers (signed along with the request).
    pub headers: Vec<(String, String)>,
    /// Deadlines.
    pub timeouts: Timeouts,
}

impl BedrockConfig {
    /// The public regional endpoint with default deadlines.
    pub fn new(
        region: impl Into<String>,
        credentials: AwsCredentials,
        upstream_model: impl Into<String>,
    ) -> Self {
        let region = region.into();
        Self {
            base_url: format!("https://bedrock-runtime.{region}.amazonaws.com"),
            region,
            credentials,
            upstream_model: upstream_model.into(),
            headers: Vec::new(),
            timeouts: Timeouts::default(),
        }
    }
}

// ---- Translation ----------------------------------------------------------

fn image_format(media_type: &str) -> Option<&'static str> {
    match media_type {
        "image/png" => Some("png"),
        "image/jpeg" | "image/jpg" => Some("jpeg"),
        "image/gif" => Some("gif"),
        "image/webp" => Some("webp"),
        _ => None,
    }
}

fn request_body(request: &ChatRequest) -> Result<Value, BackendError> {
    let mut system = Vec::new();
    let mut turns: Vec<(String, Vec<Value>)> = Vec::new();
    for (index, message) in request.messages.iter().enumerate() {
        let (role, blocks) = match message.role {
            Role::System => {
                system.push(json!({"text": message.text()}));
                continue;
            }
            Role::Tool => (
                "user",
                vec![json!({"toolResult": {
                    "toolUseId": message.tool_call_id.clone().unwrap_or_default(),
                    "content": [{"text": message.text()}],
                    "status": "success",
                }})],
            ),
            Role::User | Role::Assistant => {
                let mut blocks = Vec::new();
                for part in &message.content {
                    match part {
                        ContentPart::Text(text) if text.is_empty() => {}
                        ContentPart::Text(text) => blocks.push(json!({"text": text})),
                        ContentPart::Image {
                            source: ImageSource::Base64 { media_type, data },
                            ..
                        } => {
                            let format = image_format(media_type).ok_or_else(|| {
                                BackendError::invalid_request(format!(
                                    "Bedrock takes png, jpeg, gif or webp images; messages[{index}] has {media_type}"
                                ))
                                .with_param(format!("messages[{index}].content"))
                            })?;
                            blocks.push(
                                json!({"image": {"format": format, "source": {"bytes": data}}}),
                            );
                        }
                        ContentPart::Image {
                            source: ImageSource::Url(_),
                            ..
                        } => {
                            return Err(BackendError::invalid_request(format!(
                                "Bedrock takes images as bytes only; send messages[{index}]'s image as a data: URL"
                            ))
                            .with_param(format!("messages[{index}].content")));
                        }
                    }
                }
                for call in &message.tool_calls {
                    let input: Value =
                        serde_json::from_str(&call.arguments).unwrap_or_else(|_| json!({}));
                    blocks.push(json!({"toolUse": {
                        "toolUseId": call.id, "name": call.name, "input": input}}));
                }
                let role = if message.role == Role::User {
                    "user"
                } else {
                    "assistant"
                };
                (role, blocks)
            }
        };
        match turns.last_mut() {
            Some((last, existing)) if last == role => existing.extend(blocks),
            _ => turns.push((role.to_owned(), blocks)),
        }
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    let mut body = json!({"messages": messages});
    if !system.is_empty() {
        body["system"] = Value::Array(system);
    }
    let sampling = &request.sampling;
    let mut inference = serde_json::Map::new();
    if let Some(max) = request.max_tokens {
        inference.insert("maxTokens".into(), json!(max));
    }
    if let Some(t) = sampling.temperature {
        inference.insert("temperature".into(), json!(t.min(1.0)));
    }
    if let Some(p) = sampling.top_p {
        inference.insert("topP".into(), json!(p));
    }
    if !request.stop.is_empty() {
        inference.insert("stopSequences".into(), json!(request.stop));
    }
    if !inference.is_empty() {
        body["inferenceConfig"] = Value::Object(inference);
    }
    if let Some(k) = sampling.top_k {
        // Not part of Converse's common set; the model's own field.
        body["additionalModelRequestFields"] = json!({"top_k": k});
    }
    // Converse has no "none": leaving the tools out is the way to forbid them.
    let tools_allowed = request.tool_choice != Some(ToolChoice::None);
    if !request.tools.is_empty() && tools_allowed {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|tool| {
                let mut spec = json!({"name": tool.name, "inputSchema": {"json": tool.parameters}});
                if let Some(description) = &tool.description {
                    spec["description"] = json!(description);
                }
                json!({"toolSpec": spec})
            })
            .collect();
        let mut config = json!({"tools": tools});
        match &request.tool_choice {
            Some(ToolChoice::Required) => config["toolChoice"] = json!({"any": {}}),
            Some(ToolChoice::Tool(name)) => config["toolChoice"] = json!({"tool": {"name": name}}),
            Some(ToolChoice::Auto) => config["toolChoice"] = json!({"auto": {}}),
            _ => {}
        }
        body["toolConfig"] = config;
    }
    Ok(body)
}

fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "guardrail_intervened" | "content_filtered" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BedrockUsage {
    #[serde(default)]
    input_tokens: u32,
    #[serde(default)]
    output_tokens: u32,
    #[serde(default)]
    cache_read_input_tokens: u32,
    #[serde(default)]
    cache_write_input_tokens: u32,
}

impl From<BedrockUsage> for Usage {
    fn from(usage: BedrockUsage) -> Self {
        Usage {
            prompt_tokens: usage.input_tokens
                + usage.cache_read_input_tokens
                + usage.cache_write_input_tokens,
            completion_tokens: usage.output_tokens,
            cache_read_tokens: usage.cache_read_input_tokens,
            cache_write_tokens: usage.cache_write_input_tokens,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConverseResponse {
    output: ConverseOutput,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: BedrockUsage,
}

#[derive(Debug, Deserialize)]
struct ConverseOutput {
    message: OutputMessage,
}

#[derive(Debug, Deserialize)]
struct OutputMessage {
    #[serde(default)]
    content: Vec<Value>,
}

/// The error kind an AWS exception name means (case-insensitive: streams
/// spell them `throttlingException`, HTTP headers `ThrottlingException`).
fn kind_of_exception(name: &str, status: u16) -> ErrorKind {
    match name.to_ascii_lowercase().as_str() {
        "throttlingexception" | "toomanyrequestsexception" => ErrorKind::RateLimited,
        "serviceunavailableexception" | "modelnotreadyexception" => ErrorKind::Overloaded,
        "validationexception" => ErrorKind::InvalidRequest,
        "accessdeniedexception" | "unrecognizedclientexception" | "expiredtokenexception" => {
            ErrorKind::Authentication
        }
        "resourcenotfoundexception" => ErrorKind::NotFound,
        "modeltimeoutexception" => ErrorKind::Timeout,
        _ => kind_of_status(status),
    }
}

#[derive(Debug, Deserialize)]
struct AwsErrorBody {
    #[serde(default, alias = "Message")]
    message: String,
}

/// Reads AWS's error shape: the exception name in `x-amzn-ErrorType`, the
/// text in `{"message": ...}`.
fn classify(status: u16, headers: &HeaderMap, body: &str) -> BackendError {
    let exception = headers
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(':').next().unwrap_or(v).to_owned());
    let message = serde_json::from_str::<AwsErrorBody>(body)
        .map(|b| b.message)
        .unwrap_or_else(|_| plain_message(body));
    let kind = exception
        .as_deref()
        .map_or_else(|| kind_of_status(status), |e| kind_of_exception(e, status));
    let code = if message.contains("too long") || message.contains("too many input tokens") {
        Some("context_length_exceeded".to_owned())
    } else {
        exception
    };
    status_error(status, kind, &message, code, retry_after(headers))
}

// ---- Event-stream decoding -------------------------------------------------

/// One decoded event-stream frame.
#[derive(Debug)]
struct Frame {
    message_type: String,
    /// `:event-type` or `:exception-type`.
    name: String,
    payload: Value,
}

fn header_string(message: &Message, name: &str) -> String {
    message
        .headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .and_then(|h| match h.value() {
            FrameHeaderValue::String(s) => Some(s.as_str().to_owned()),
            _ => None,
        })
        .unwrap_or_default()
}

/// Decodes the body's AWS event-stream frames as they arrive.
fn frames(
    response: reqwest::Response,
) -> impl Stream<Item = Result<Frame, BackendError>> + Send + Unpin + 'static {
    let body = response.bytes_stream();
    let stream = async_stream::stream! {
        let mut body = body;
        let mut buffer = BytesMut::new();
        let mut decoder = MessageFrameDecoder::new();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(bytes) => buffer.extend_from_slice(&bytes),
                Err(error) => {
                    yield Err(transport_error(&error));
                    return;
                }
            }
            loop {
                match decoder.decode_frame(&mut buffer) {
                    Ok(DecodedFrame::Complete(message)) => {
                        let payload = serde_json::from_slice(message.payload())
                            .unwrap_or(Value::Null);
                        let message_type = header_string(&message, ":message-type");
                        let name = if message_type == "exception" {
                            header_string(&message, ":exception-type")
                        } else {
                            header_string(&message, ":event-type")
                        };
                        yield Ok(Frame { message_type, name, payload });
                    }
                    Ok(DecodedFrame::Incomplete) => break,
                    Err(error) => {
                        yield Err(BackendError::new(
                            ErrorKind::Upstream,
                            format!("the upstream sent a malformed event-stream frame: {error}"),
                        ));
                        return;
                    }
                }
            }
        }
        if buffer.has_remaining() {
            yield Err(BackendError::new(
                ErrorKind::Upstream,
                "the upstream stream ended inside a frame",
            ));
        }
    };
    Box::pin(stream)
}

/// Translates ConverseStream events.
#[derive(Debug, Default)]
struct EventTranslator {
    /// Content block index → tool-call index.
    tool_blocks: HashMap<u64, u32>,
    stopped: bool,
}

impl Translate<Frame> for EventTranslator {
    fn event(&mut self, frame: Frame) -> Result<Step, BackendError> {
        if frame.message_type != "event" {
            let message = frame.payload["message"]
                .as_str()
                .or_else(|| frame.payload["Message"].as_str())
                .unwrap_or("")
                .to_owned();
            return Err(BackendError::new(
                kind_of_exception(&frame.name, 500),
                format!("the upstream reported {} mid-stream: {message}", frame.name),
            )
            .with_code(frame.name));
        }
        let payload = &frame.payload;
        let events = match frame.name.as_str() {
            "contentBlockStart" => {
                let block = payload["contentBlockIndex"].as_u64().unwrap_or(0);
                match payload["start"].get("toolUse") {
                    Some(tool) => {
                        let index = u32::try_from(self.tool_blocks.len()).unwrap_or(0);
                        self.tool_blocks.insert(block, index);
                        vec![StreamEvent::ToolCall(ToolCallDelta {
                            index,
                            id: tool["toolUseId"].as_str().map(str::to_owned),
                            name: tool["name"].as_str().map(str::to_owned),
                            arguments: String::new(),
                        })]
                    }
                    None => Vec::new(),
                }
            }
            "contentBlockDelta" => {
                let block = payload["contentBlockIndex"].as_u64().unwrap_or(0);
                let delta = &payload["delta"];
                if let Some(text) = delta["text"].as_str() {
                    vec![StreamEvent::Delta(text.to_owned())]
                } else if let Some(input) = delta["toolUse"]["input"].as_str() {
                    match self.tool_blocks.get(&block) {
                        Some(&index) => vec![StreamEvent::ToolCall(ToolCallDelta {
                            index,
                            id: None,
                            name: None,
                            arguments: input.to_owned(),
                        })],
                        None => Vec::new(),
                    }
                } else {
                    Vec::new()
                }
            }
            "messageStop" => {
                self.stopped = true;
                vec![StreamEvent::Finish(finish_reason(
                    payload["stopReason"].as_str().unwrap_or("end_turn"),
                ))]
            }
            "metadata" => {
                let usage: BedrockUsage =
                    serde_json::from_value(payload["usage"].clone()).unwrap_or_default();
                return Ok(Step {
                    events: vec![StreamEvent::Usage(usage.into())],
                    done: true,
                });
            }
            _ => Vec::new(),
        };
        Ok(Step::events(events))
    }

    fn end(&mut self) -> Result<Step, BackendError> {
        if self.stopped {
            Ok(Step::done())
        } else {
            Err(cut_short())
        }
    }
}

// ---- The adapter ----------------------------------------------------------

/// A Bedrock model behind [`ChatBackend`].
#[derive(Debug, Clone)]
pub struct BedrockAdapter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: HttpUpstream,
    converse_url: reqwest::Url,
    stream_url: reqwest::Url,
    extra_headers: HeaderMap,
    config: BedrockConfig,
}

impl BedrockAdapter {
    /// Builds the adapter and its connection pool.
    pub fn new(config: BedrockConfig) -> Result<Self, AdapterBuildError> {
        let extra_headers =
            header_map(config.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        let http = HttpUpstream::new(config.timeouts, HeaderMap::new())?;
        let base = reqwest::Url::parse(&config.base_url)
            .map_err(|e| AdapterBuildError::Config(format!("base_url: {e}")))?;
        let url = |action: &str| -> Result<reqwest::Url, AdapterBuildError> {
            // The model id may hold ':' and '/' (ARNs); as one path segment
            // they are percent-encoded, and SigV4 signs that same path.
            let mut url = base.clone();
            url.path_segments_mut()
                .map_err(|()| AdapterBuildError::Config("base_url cannot hold a path".into()))?
                .pop_if_empty()
                .extend(["model", config.upstream_model.as_str(), action]);
            Ok(url)
        };
        let converse_url = url("converse")?;
        let stream_url = url("converse-stream")?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                converse_url,
                stream_url,
                extra_headers,
                config,
            }),
        })
    }
}

impl Inner {
    /// SigV4-signs a POST of `body` to `url`; returns every header to send.
    fn signed_headers(&self, url: &reqwest::Url, body: &[u8]) -> Result<HeaderMap, BackendError> {
        let signing_error = |e: &dyn std::fmt::Display| {
            BackendError::internal(format!("cannot sign the request: {e}"))
        };
        let credentials = &self.config.credentials;
        let identity = Credentials::new(
            credentials.access_key_id.clone(),
            credentials.secret_access_key.expose().to_owned(),
            credentials
                .session_token
                .as_ref()
                .map(|t| t.expose().to_owned()),
            None,
            "switchyard-config",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.config.region)
            .name("bedrock")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| signing_error(&e))?
            .into();
        let mut to_sign: Vec<(String, String)> = vec![
            ("content-type".into(), "application/json".into()),
            ("accept".into(), "application/json".into()),
        ];
        for (name, value) in &self.extra_headers {
            if let Ok(value) = value.to_str() {
                to_sign.push((name.as_str().to_owned(), value.to_owned()));
            }
        }
        let signable = SignableRequest::new(
            "POST",
            url.as_str(),
            to_sign.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(body),
        )
        .map_err(|e| signing_error(&e))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| signing_error(&e))?
            .into_parts();
        let mut headers = HeaderMap::new();
        for (name, value) in to_sign
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(instructions.headers())
        {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| signing_error(&e))?;
            let mut value = HeaderValue::from_str(value).map_err(|e| signing_error(&e))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        Ok(headers)
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, BackendError> {
        let deadline = self.http.deadline();
        let body = serde_json::to_vec(&request_body(&request)?)
            .map_err(|e| BackendError::internal(format!("cannot encode the request: {e}")))?;
        let signed = self.signed_headers(&self.converse_url, &body)?;
        let response = self
            .http
            .post(&self.converse_url, body, signed, deadline, classify)
            .await?;
        let bytes = self.http.body(response, deadline).await?;
        let answer: ConverseResponse =
            serde_json::from_slice(&bytes).map_err(|e| unreadable("answer", e))?;
        let mut content = String::new();
        let mut tool_calls = Vec::new();
        for block in answer.output.message.content {
            if let Some(text) = block["text"].as_str() {
                content.push_str(text);
            }
            if let Some(tool) = block.get("toolUse") {
                tool_calls.push(ToolCall {
                    id: tool["toolUseId"].as_str().unwrap_or_default().to_owned(),
                    name: tool["name"].as_str().unwrap_or_default().to_owned(),
                    arguments: tool["input"].to_string(),
                });
            }
        }
        Ok(ChatResponse {
            model: self.config.upstream_model.clone(),
            content,
            tool_calls,
            finish_reason: finish_reason(answer.stop_reason.as_deref().unwrap_or("end_turn")),
            usage: answer.usage.into(),
        })
    }

    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream, BackendError> {
        let started = Instant::now();
        let deadline = started + self.http.timeouts().total;
        let body = serde_json::to_vec(&request_body(&request)?)
            .map_err(|e| BackendError::internal(format!("cannot encode the request: {e}")))?;
        let signed = self.signed_headers(&self.stream_url, &body)?;
        let response = self
            .http
            .post(&self.stream_url, body, signed, deadline, classify)
            .await?;
        drive(
            frames(response),
            EventTranslator::default(),
            started + self.http.timeouts().first_byte,
            deadline,
            self.http.first_byte_timeout(),
            self.http.total_timeout(),
        )
        .await
    }
}

impl ChatBackend for BedrockAdapter {
    fn times_network_waits(&self) -> bool {
        true
    }

    fn info(&self) -> BackendInfo {
        BackendInfo {
            kind: "bedrock",
            upstream_model: self.inner.config.upstream_model.clone(),
            owned_by: "aws-bedrock".into(),
        }
    }

    fn chat(&self, request: ChatRequest) -> BoxFuture<'_, Result<ChatResponse, BackendError>> {
        Box::pin(self.inner.chat(request))
    }

    fn chat_stream(&self, request: ChatRequest) -> BoxFuture<'_, Result<ChatStream, BackendError>> {
        Box::pin(self.inner.chat_stream(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_types::event_stream::Header;
    use switchyard_core::{ChatMessage, ToolDefinition};

    fn config() -> BedrockConfig {
        BedrockConfig::new(
            "us-east-1",
            AwsCredentials {
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: "secret".into(),
                session_token: Some("session-secret-xyz".into()),
            },
            "anthropic.claude-3-haiku-20240307-v1:0",
        )
    }

    #[test]
    fn urls_encode_the_model_id_as_one_segment() {
        let adapter = BedrockAdapter::new(config()).unwrap();
        assert_eq!(
            adapter.inner.converse_url.as_str(),
            "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-3-haiku-20240307-v1:0/converse"
        );
        assert!(
            adapter
                .inner
                .stream_url
                .as_str()
                .ends_with("-v1:0/converse-stream")
        );
    }

    #[test]
    fn requests_are_signed_with_sigv4() {
        let adapter = BedrockAdapter::new(config()).unwrap();
        let headers = adapter
            .inner
            .signed_headers(&adapter.inner.converse_url, b"{}")
            .unwrap();
        let authorization = headers["authorization"].to_str().unwrap();
        assert!(authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"));
        assert!(authorization.contains("/us-east-1/bedrock/aws4_request"));
        assert!(authorization.contains("SignedHeaders="));
        assert!(headers.contains_key("x-amz-date"));
        assert_eq!(headers["x-amz-security-token"], "session-secret-xyz");
        assert!(!format!("{headers:?}").contains("session-secret-xyz"));
    }

    #[test]
    fn request_translation() {
        let mut call = ChatMessage::new(Role::Assistant, "");
        call.tool_calls = vec![ToolCall {
            id: "tooluse_1".into(),
            name: "weather".into(),
            arguments: "{\"city\":\"Oslo\"}".into(),
        }];
        let mut result = ChatMessage::new(Role::Tool, "sunny");
        result.tool_call_id = Some("tooluse_1".into());
        let mut user = ChatMessage::new(Role::User, "hi");
        user.content.push(ContentPart::Image {
            source: ImageSource::Base64 {
                media_type: "image/png".into(),
                data: "iVBOR".into(),
            },
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
            description: Some("Weather".into()),
            parameters: json!({"type": "object"}),
        }];
        request.tool_choice = Some(ToolChoice::Required);
        request.max_tokens = Some(9);
        let body = request_body(&request).unwrap();
        assert_eq!(body["system"], json!([{"text": "be brief"}]));
        assert_eq!(
            body["messages"][0]["content"][1],
            json!({"image": {"format": "png", "source": {"bytes": "iVBOR"}}})
        );
        assert_eq!(
            body["messages"][1]["content"][0],
            json!({"toolUse": {"toolUseId": "tooluse_1", "name": "weather", "input": {"city": "Oslo"}}})
        );
        assert_eq!(
            body["messages"][2]["content"][0]["toolResult"]["content"],
            json!([{"text": "sunny"}])
        );
        assert_eq!(body["inferenceConfig"]["maxTokens"], 9);
        assert_eq!(body["toolConfig"]["toolChoice"], json!({"any": {}}));
        assert_eq!(
            body["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"],
            json!({"json": {"type": "object"}})
        );

        let mut url_image = ChatRequest::new("m", vec![ChatMessage::new(Role::User, "x")]);
        url_image.messages[0].content.push(ContentPart::Image {
            source: ImageSource::Url("https://x/a.png".into()),
            detail: None,
        });
        let error = request_body(&url_image).unwrap_err();
        assert_eq!(error.kind, ErrorKind::InvalidRequest);
    }

    fn frame(event: &str, payload: Value) -> Frame {
        Frame {
            message_type: "event".into(),
            name: event.into(),
            payload,
        }
    }

    #[test]
    fn stream_events_translate() {
        let mut t = EventTranslator::default();
        let mut events = Vec::new();
        for f in [
            frame("messageStart", json!({"role": "assistant"})),
            frame(
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
            ),
            frame("contentBlockStop", json!({"contentBlockIndex": 0})),
            frame(
                "contentBlockStart",
                json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t1", "name": "w"}}}),
            ),
            frame(
                "contentBlockDelta",
                json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"a\":1}"}}}),
            ),
            frame("messageStop", json!({"stopReason": "tool_use"})),
        ] {
            events.extend(t.event(f).unwrap().events);
        }
        let last = t
            .event(frame(
                "metadata",
                json!({"usage": {"inputTokens": 5, "outputTokens": 3, "cacheReadInputTokens": 2}}),
            ))
            .unwrap();
        assert!(last.done);
        assert_eq!(events[0], StreamEvent::Delta("Hi".into()));
        assert_eq!(
            events[2],
            StreamEvent::ToolCall(ToolCallDelta {
                index: 0,
                id: None,
                name: None,
                arguments: "{\"a\":1}".into()
            })
        );
        assert_eq!(events[3], StreamEvent::Finish(FinishReason::ToolCalls));
        let StreamEvent::Usage(usage) = last.events[0] else {
            panic!("no usage")
        };
        assert_eq!(usage.prompt_tokens, 7);
    }

    #[test]
    fn exception_frames_become_errors_of_their_kind() {
        let mut t = EventTranslator::default();
        let error = t
            .event(Frame {
                message_type: "exception".into(),
                name: "throttlingException".into(),
                payload: json!({"message": "Too many requests"}),
            })
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::RateLimited);
    }

    #[test]
    fn frames_decode_from_wire_bytes() {
        let message = Message::new(bytes::Bytes::from_static(b"{\"role\":\"assistant\"}"))
            .add_header(Header::new(
                ":message-type",
                FrameHeaderValue::String("event".into()),
            ))
            .add_header(Header::new(
                ":event-type",
                FrameHeaderValue::String("messageStart".into()),
            ));
        let mut wire = Vec::new();
        aws_smithy_eventstream::frame::write_message_to(&message, &mut wire).unwrap();
        let mut decoder = MessageFrameDecoder::new();
        let mut buffer = BytesMut::from(&wire[..wire.len() - 3]);
        assert!(matches!(
            decoder.decode_frame(&mut buffer).unwrap(),
            DecodedFrame::Incomplete
        ));
        buffer.extend_from_slice(&wire[wire.len() - 3..]);
        let DecodedFrame::Complete(decoded) = decoder.decode_frame(&mut buffer).unwrap() else {
            panic!("incomplete");
        };
        assert_eq!(header_string(&decoded, ":event-type"), "messageStart");
    }

    #[test]
    fn aws_errors_map_by_exception() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-amzn-errortype",
            "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"
                .parse()
                .unwrap(),
        );
        let error = classify(
            429,
            &headers,
            r#"{"message":"Too many requests, please wait before trying again."}"#,
        );
        assert_eq!(error.kind, ErrorKind::RateLimited);
        assert_eq!(error.code.as_deref(), Some("ThrottlingException"));
        let mut headers = HeaderMap::new();
        headers.insert("x-amzn-errortype", "ValidationException".parse().unwrap());
        let long = classify(
            400,
            &headers,
            r#"{"message":"Input is too long for requested model."}"#,
        );
        assert_eq!(long.code.as_deref(), Some("context_length_exceeded"));
    }
}
