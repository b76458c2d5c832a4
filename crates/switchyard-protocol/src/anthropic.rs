//! Anthropic's Messages API wire format, both directions: Switchyard's
//! `/v1/messages` front door reads requests and writes responses and SSE
//! events in it; the `anthropic` adapter writes requests and reads
//! responses and events.
//!
//! Anthropic differs from OpenAI in ways the conversions below take care of:
//! the system prompt is a top-level field, roles alternate strictly (tool
//! results are user turns), `max_tokens` is required, temperature runs 0..1,
//! tool calls are content blocks with JSON objects for input, and usage
//! counts cached prompt tokens separately from `input_tokens`.

use serde::{Deserialize, Serialize};
use switchyard_core::{
    ChatMessage, ChatRequest, ChatResponse, ContentPart, FinishReason, ImageSource, Role,
    SamplingParams, ToolCall, ToolChoice, ToolDefinition, Usage,
};

use crate::openai::InvalidField;

/// `POST /v1/messages` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessagesRequest {
    /// Model name.
    pub model: String,
    /// Upper bound on generated tokens (required by Anthropic).
    pub max_tokens: u32,
    /// The conversation, user and assistant turns.
    pub messages: Vec<Message>,
    /// Instructions, outside the turns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemPrompt>,
    /// Stop strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    /// 0..1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus mass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Top-k.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    /// Stream as server-sent events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Tools the model may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    /// Whether and which tool the model must use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<AnthropicToolChoice>,
    /// Request metadata (`user_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
}

/// `metadata`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// An opaque end-user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

/// `system`: a string or text blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SystemPrompt {
    /// Plain text.
    Text(String),
    /// Text blocks.
    Blocks(Vec<ContentBlock>),
}

/// One turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `user` or `assistant`.
    pub role: String,
    /// Text or blocks.
    pub content: MessageContent,
}

/// A turn's content: a string or blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Typed blocks.
    Blocks(Vec<ContentBlock>),
}

/// A content block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock {
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// An image.
    Image {
        /// Where it is.
        source: ImageBlockSource,
    },
    /// A tool call by the assistant.
    ToolUse {
        /// The call's id (`toolu_...`).
        id: String,
        /// The tool.
        name: String,
        /// Its arguments as a JSON object.
        input: serde_json::Value,
    },
    /// A tool's answer, in a user turn.
    ToolResult {
        /// The call answered.
        tool_use_id: String,
        /// What the tool returned.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<ToolResultContent>,
        /// Whether the tool failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        is_error: Option<bool>,
    },
    /// Extended thinking (passed over: it is not part of the answer).
    Thinking {
        /// The reasoning text.
        thinking: String,
        /// Anthropic's signature over it.
        #[serde(default)]
        signature: Option<String>,
    },
}

/// An image block's source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ImageBlockSource {
    /// Inline bytes.
    Base64 {
        /// MIME type.
        media_type: String,
        /// Base64 text.
        data: String,
    },
    /// A URL Anthropic fetches.
    Url {
        /// The URL.
        url: String,
    },
}

/// A tool result's content: a string or blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolResultContent {
    /// Plain text.
    Text(String),
    /// Blocks (text and images).
    Blocks(Vec<ContentBlock>),
}

/// A tool definition, or (`"type": "switchyard"`) a tool Switchyard runs
/// itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// `custom` (the default) or `switchyard`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Its name.
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of its input (not needed for a `switchyard` tool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<serde_json::Value>,
}

/// `tool_choice`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AnthropicToolChoice {
    /// The model decides.
    Auto {
        /// One call per turn at most.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    /// Some tool must be used.
    Any {
        /// One call per turn at most.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    /// This tool must be used.
    Tool {
        /// The tool.
        name: String,
        /// One call per turn at most.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    /// No tools.
    None,
}

/// A whole answer: `type: "message"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessagesResponse {
    /// `msg_...`.
    pub id: String,
    /// Always `message`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Always `assistant`.
    pub role: String,
    /// The model.
    pub model: String,
    /// Text and tool-use blocks.
    pub content: Vec<ContentBlock>,
    /// `end_turn`, `max_tokens`, `stop_sequence`, `tool_use`, `refusal`...
    pub stop_reason: Option<String>,
    /// The stop sequence that ended it, if one did.
    #[serde(default)]
    pub stop_sequence: Option<String>,
    /// Token counts.
    pub usage: AnthropicUsage,
}

/// Anthropic's token counts: `input_tokens` excludes cached tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnthropicUsage {
    /// Uncached input tokens.
    #[serde(default)]
    pub input_tokens: u32,
    /// Output tokens.
    #[serde(default)]
    pub output_tokens: u32,
    /// Input tokens written to the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u32>,
    /// Input tokens read from the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u32>,
}

impl From<AnthropicUsage> for Usage {
    fn from(usage: AnthropicUsage) -> Self {
        let written = usage.cache_creation_input_tokens.unwrap_or(0);
        let read = usage.cache_read_input_tokens.unwrap_or(0);
        Usage {
            prompt_tokens: usage.input_tokens + written + read,
            completion_tokens: usage.output_tokens,
            cache_read_tokens: read,
            cache_write_tokens: written,
        }
    }
}

impl From<Usage> for AnthropicUsage {
    fn from(usage: Usage) -> Self {
        let cached = usage.cache_read_tokens + usage.cache_write_tokens;
        AnthropicUsage {
            input_tokens: usage.prompt_tokens.saturating_sub(cached),
            output_tokens: usage.completion_tokens,
            cache_creation_input_tokens: Some(usage.cache_write_tokens),
            cache_read_input_tokens: Some(usage.cache_read_tokens),
        }
    }
}

/// One server-sent event of a streamed answer (the `data:` payload; the
/// `event:` name repeats its `type`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    /// The message opens (empty content).
    MessageStart {
        /// The message so far.
        message: MessagesResponse,
    },
    /// A content block opens.
    ContentBlockStart {
        /// Its position.
        index: u32,
        /// The block, empty.
        content_block: ContentBlock,
    },
    /// More of a block.
    ContentBlockDelta {
        /// The block's position.
        index: u32,
        /// What is new.
        delta: BlockDelta,
    },
    /// A block is complete.
    ContentBlockStop {
        /// Its position.
        index: u32,
    },
    /// Why the message ended, and final usage.
    MessageDelta {
        /// The stop reason.
        delta: MessageDeltaBody,
        /// Cumulative usage.
        usage: AnthropicUsage,
    },
    /// The message is complete.
    MessageStop,
    /// Keep-alive.
    Ping,
    /// A failure after the stream started.
    Error {
        /// What went wrong.
        error: ErrorDetail,
    },
}

impl StreamEvent {
    /// The SSE `event:` name (the same as the payload's `type`).
    pub fn name(&self) -> &'static str {
        match self {
            StreamEvent::MessageStart { .. } => "message_start",
            StreamEvent::ContentBlockStart { .. } => "content_block_start",
            StreamEvent::ContentBlockDelta { .. } => "content_block_delta",
            StreamEvent::ContentBlockStop { .. } => "content_block_stop",
            StreamEvent::MessageDelta { .. } => "message_delta",
            StreamEvent::MessageStop => "message_stop",
            StreamEvent::Ping => "ping",
            StreamEvent::Error { .. } => "error",
        }
    }
}

/// A block delta.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockDelta {
    /// More text.
    TextDelta {
        /// The text.
        text: String,
    },
    /// More of a tool call's input JSON.
    InputJsonDelta {
        /// A fragment of JSON text.
        partial_json: String,
    },
    /// More extended thinking.
    ThinkingDelta {
        /// The reasoning text.
        thinking: String,
    },
    /// The signature of the thinking block.
    SignatureDelta {
        /// The signature.
        signature: String,
    },
}

/// `message_delta`'s `delta`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageDeltaBody {
    /// The stop reason.
    pub stop_reason: Option<String>,
    /// The stop sequence, if one ended the message.
    #[serde(default)]
    pub stop_sequence: Option<String>,
}

/// Anthropic's error envelope: `{"type": "error", "error": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Always `error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The error.
    pub error: ErrorDetail,
}

/// An error's class and message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// `invalid_request_error`, `overloaded_error`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// What went wrong.
    pub message: String,
}

impl ErrorBody {
    /// An error of class `kind`.
    pub fn new(kind: &str, message: impl Into<String>) -> Self {
        Self {
            kind: "error".into(),
            error: ErrorDetail {
                kind: kind.into(),
                message: message.into(),
            },
        }
    }
}

/// Anthropic's stop reason for a canonical finish.
pub fn stop_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "end_turn",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls => "tool_use",
        FinishReason::ContentFilter => "refusal",
    }
}

/// The canonical finish for an Anthropic stop reason.
pub fn parse_stop_reason(reason: &str) -> FinishReason {
    match reason {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

fn invalid(param: impl Into<String>, message: impl Into<String>) -> InvalidField {
    InvalidField {
        param: param.into(),
        message: message.into(),
    }
}

fn image_source(source: ImageBlockSource) -> ImageSource {
    match source {
        ImageBlockSource::Base64 { media_type, data } => ImageSource::Base64 { media_type, data },
        ImageBlockSource::Url { url } => ImageSource::Url(url),
    }
}

fn image_block(source: &ImageSource) -> ContentBlock {
    ContentBlock::Image {
        source: match source {
            ImageSource::Base64 { media_type, data } => ImageBlockSource::Base64 {
                media_type: media_type.clone(),
                data: data.clone(),
            },
            ImageSource::Url(url) => ImageBlockSource::Url { url: url.clone() },
        },
    }
}

fn tool_result_text(content: Option<ToolResultContent>) -> String {
    match content {
        None => String::new(),
        Some(ToolResultContent::Text(text)) => text,
        Some(ToolResultContent::Blocks(blocks)) => blocks
            .into_iter()
            .filter_map(|block| match block {
                ContentBlock::Text { text } => Some(text),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

impl MessagesRequest {
    /// Whether the client asked for a stream.
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Validates the request and turns it into the canonical form. Tool
    /// results become tool messages; tool-use blocks become tool calls.
    pub fn into_canonical(self) -> Result<ChatRequest, InvalidField> {
        if self.model.trim().is_empty() {
            return Err(invalid("model", "`model` must name a model"));
        }
        if self.max_tokens == 0 {
            return Err(invalid("max_tokens", "`max_tokens` must be at least 1"));
        }
        if self.messages.is_empty() {
            return Err(invalid(
                "messages",
                "`messages` must contain at least one message",
            ));
        }
        if let Some(t) = self.temperature
            && !(0.0..=1.0).contains(&t)
        {
            return Err(invalid(
                "temperature",
                format!("`temperature` must be between 0 and 1; got {t}"),
            ));
        }
        let mut messages = Vec::new();
        if let Some(system) = self.system {
            let text = match system {
                SystemPrompt::Text(text) => text,
                SystemPrompt::Blocks(blocks) => blocks
                    .into_iter()
                    .filter_map(|b| match b {
                        ContentBlock::Text { text } => Some(text),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
            };
            messages.push(ChatMessage::new(Role::System, text));
        }
        for (index, message) in self.messages.into_iter().enumerate() {
            let role = match message.role.as_str() {
                "user" => Role::User,
                "assistant" => Role::Assistant,
                other => {
                    return Err(invalid(
                        format!("messages.{index}.role"),
                        format!("unknown role {other:?}; expected user or assistant"),
                    ));
                }
            };
            let blocks = match message.content {
                MessageContent::Text(text) => vec![ContentBlock::Text { text }],
                MessageContent::Blocks(blocks) => blocks,
            };
            let mut turn = ChatMessage {
                role,
                content: Vec::new(),
                name: None,
                tool_call_id: None,
                tool_calls: Vec::new(),
            };
            for block in blocks {
                match block {
                    ContentBlock::Text { text } => turn.content.push(ContentPart::Text(text)),
                    ContentBlock::Image { source } => turn.content.push(ContentPart::Image {
                        source: image_source(source),
                        detail: None,
                    }),
                    ContentBlock::ToolUse { id, name, input } if role == Role::Assistant => {
                        turn.tool_calls.push(ToolCall {
                            id,
                            name,
                            arguments: input.to_string(),
                        });
                    }
                    ContentBlock::ToolResult {
                        tool_use_id,
                        content,
                        is_error,
                    } if role == Role::User => {
                        let mut text = tool_result_text(content);
                        if is_error == Some(true) {
                            text = format!("Error: {text}");
                        }
                        let mut result = ChatMessage::new(Role::Tool, text);
                        result.tool_call_id = Some(tool_use_id);
                        messages.push(result);
                    }
                    ContentBlock::Thinking { .. } => {}
                    ContentBlock::ToolUse { .. } => {
                        return Err(invalid(
                            format!("messages.{index}.content"),
                            "tool_use blocks belong in assistant turns",
                        ));
                    }
                    ContentBlock::ToolResult { .. } => {
                        return Err(invalid(
                            format!("messages.{index}.content"),
                            "tool_result blocks belong in user turns",
                        ));
                    }
                }
            }
            if !turn.content.is_empty() || !turn.tool_calls.is_empty() {
                messages.push(turn);
            }
        }
        let mut gateway_tools = Vec::new();
        let mut tools = Vec::new();
        for (index, tool) in self.tools.unwrap_or_default().into_iter().enumerate() {
            match (tool.kind.as_deref(), tool.input_schema) {
                (Some(crate::GATEWAY_TOOL_TYPE), _) => gateway_tools.push(tool.name),
                (None | Some("custom"), Some(input_schema)) => tools.push(ToolDefinition {
                    name: tool.name,
                    description: tool.description,
                    parameters: input_schema,
                }),
                (None | Some("custom"), None) => {
                    return Err(invalid(
                        format!("tools.{index}.input_schema"),
                        "a tool needs its `input_schema`",
                    ));
                }
                (Some(kind), _) => {
                    return Err(invalid(
                        format!("tools.{index}.type"),
                        format!("only custom and switchyard tools are served; got {kind:?}"),
                    ));
                }
            }
        }
        let (tool_choice, parallel) = match self.tool_choice {
            None => (None, None),
            Some(AnthropicToolChoice::Auto {
                disable_parallel_tool_use,
            }) => (Some(ToolChoice::Auto), disable_parallel_tool_use),
            Some(AnthropicToolChoice::Any {
                disable_parallel_tool_use,
            }) => (Some(ToolChoice::Required), disable_parallel_tool_use),
            Some(AnthropicToolChoice::Tool {
                name,
                disable_parallel_tool_use,
            }) => (Some(ToolChoice::Tool(name)), disable_parallel_tool_use),
            Some(AnthropicToolChoice::None) => (Some(ToolChoice::None), None),
        };
        Ok(ChatRequest {
            model: self.model,
            messages,
            sampling: SamplingParams {
                temperature: self.temperature,
                top_p: self.top_p,
                top_k: self.top_k,
                ..SamplingParams::default()
            },
            max_tokens: Some(self.max_tokens),
            stop: self.stop_sequences.unwrap_or_default(),
            user: self.metadata.and_then(|m| m.user_id),
            tools,
            tool_choice,
            parallel_tool_calls: parallel.map(|disabled| !disabled),
            response_format: None,
            logprobs: false,
            gateway_tools,
        })
    }

    /// The request Anthropic receives for `request`, addressed to
    /// `upstream_model`. Consecutive turns of one role are merged (tool
    /// results are user turns), since Anthropic requires alternation.
    pub fn from_canonical(
        request: &ChatRequest,
        upstream_model: &str,
        default_max_tokens: u32,
        stream: bool,
    ) -> Self {
        let mut system = Vec::new();
        let mut turns: Vec<Message> = Vec::new();
        for message in &request.messages {
            let (role, blocks) = match message.role {
                Role::System => {
                    system.push(message.text());
                    continue;
                }
                Role::Tool => (
                    "user",
                    vec![ContentBlock::ToolResult {
                        tool_use_id: message.tool_call_id.clone().unwrap_or_default(),
                        content: Some(ToolResultContent::Text(message.text())),
                        is_error: None,
                    }],
                ),
                Role::User | Role::Assistant => {
                    let mut blocks: Vec<ContentBlock> = message
                        .content
                        .iter()
                        .filter_map(|part| match part {
                            ContentPart::Text(text) if text.is_empty() => None,
                            ContentPart::Text(text) => {
                                Some(ContentBlock::Text { text: text.clone() })
                            }
                            ContentPart::Image { source, .. } => Some(image_block(source)),
                        })
                        .collect();
                    blocks.extend(message.tool_calls.iter().map(|call| {
                        ContentBlock::ToolUse {
                            id: call.id.clone(),
                            name: call.name.clone(),
                            input: serde_json::from_str(&call.arguments)
                                .unwrap_or_else(|_| serde_json::json!({})),
                        }
                    }));
                    let role = if message.role == Role::User {
                        "user"
                    } else {
                        "assistant"
                    };
                    (role, blocks)
                }
            };
            match turns.last_mut() {
                Some(last) if last.role == role => {
                    if let MessageContent::Blocks(existing) = &mut last.content {
                        existing.extend(blocks);
                    }
                }
                _ => turns.push(Message {
                    role: role.into(),
                    content: MessageContent::Blocks(blocks),
                }),
            }
        }
        let disable_parallel = request.parallel_tool_calls.map(|p| !p);
        let tool_choice = request.tool_choice.as_ref().map(|choice| match choice {
            ToolChoice::Auto => AnthropicToolChoice::Auto {
                disable_parallel_tool_use: disable_parallel,
            },
            ToolChoice::Required => AnthropicToolChoice::Any {
                disable_parallel_tool_use: disable_parallel,
            },
            ToolChoice::Tool(name) => AnthropicToolChoice::Tool {
                name: name.clone(),
                disable_parallel_tool_use: disable_parallel,
            },
            ToolChoice::None => AnthropicToolChoice::None,
        });
        let sampling = &request.sampling;
        Self {
            model: upstream_model.to_owned(),
            max_tokens: request.max_tokens.unwrap_or(default_max_tokens),
            messages: turns,
            system: (!system.is_empty()).then(|| SystemPrompt::Text(system.join("\n\n"))),
            stop_sequences: (!request.stop.is_empty()).then(|| request.stop.clone()),
            // OpenAI's scale runs to 2, Anthropic's to 1.
            temperature: sampling.temperature.map(|t| t.min(1.0)),
            top_p: sampling.top_p,
            top_k: sampling.top_k,
            stream: stream.then_some(true),
            tools: (!request.tools.is_empty()).then(|| {
                request
                    .tools
                    .iter()
                    .map(|tool| Tool {
                        kind: None,
                        name: tool.name.clone(),
                        description: tool.description.clone(),
                        input_schema: Some(tool.parameters.clone()),
                    })
                    .collect()
            }),
            tool_choice,
            metadata: request.user.clone().map(|user_id| Metadata {
                user_id: Some(user_id),
            }),
        }
    }
}

impl MessagesResponse {
    /// The Anthropic shape of a canonical answer.
    pub fn from_canonical(id: String, model: String, response: &ChatResponse) -> Self {
        let mut content = Vec::new();
        if !response.content.is_empty() {
            content.push(ContentBlock::Text {
                text: response.content.clone(),
            });
        }
        content.extend(
            response
                .tool_calls
                .iter()
                .map(|call| ContentBlock::ToolUse {
                    id: call.id.clone(),
                    name: call.name.clone(),
                    input: serde_json::from_str(&call.arguments)
                        .unwrap_or_else(|_| serde_json::json!({})),
                }),
        );
        Self {
            id,
            kind: "message".into(),
            role: "assistant".into(),
            model,
            content,
            stop_reason: Some(stop_reason(response.finish_reason).into()),
            stop_sequence: None,
            usage: response.usage.into(),
        }
    }

    /// The canonical answer.
    pub fn into_canonical(self) -> ChatResponse {
        let mut text = String::new();
        let mut tool_calls = Vec::new();
        for block in self.content {
            match block {
                ContentBlock::Text { text: piece } => text.push_str(&piece),
                ContentBlock::ToolUse { id, name, input } => tool_calls.push(ToolCall {
                    id,
                    name,
                    arguments: input.to_string(),
                }),
                _ => {}
            }
        }
        ChatResponse {
            model: self.model,
            content: text,
            tool_calls,
            finish_reason: parse_stop_reason(self.stop_reason.as_deref().unwrap_or("end_turn")),
            usage: self.usage.into(),
            logprobs: None,
            tool_runs: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn front_door_request_becomes_canonical() {
        let request: MessagesRequest = serde_json::from_value(json!({
            "model": "m",
            "max_tokens": 100,
            "system": [{"type": "text", "text": "be brief"}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "what's this?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"x": 1}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a cat"},
                    {"type": "text", "text": "and now?"}
                ]}
            ],
            "tools": [{"name": "look", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "stop_sequences": ["END"],
            "metadata": {"user_id": "u-1"}
        }))
        .unwrap();
        let canonical = request.into_canonical().unwrap();
        let roles: Vec<Role> = canonical.messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            vec![
                Role::System,
                Role::User,
                Role::Assistant,
                Role::Tool,
                Role::User
            ]
        );
        assert!(canonical.messages[1].has_images());
        assert_eq!(canonical.messages[2].tool_calls[0].arguments, "{\"x\":1}");
        assert_eq!(
            canonical.messages[3].tool_call_id.as_deref(),
            Some("toolu_1")
        );
        assert_eq!(canonical.messages[3].text(), "a cat");
        assert_eq!(canonical.tool_choice, Some(ToolChoice::Required));
        assert_eq!(canonical.parallel_tool_calls, Some(false));
        assert_eq!(canonical.max_tokens, Some(100));
        assert_eq!(canonical.user.as_deref(), Some("u-1"));
    }

    #[test]
    fn upstream_request_lifts_system_and_merges_turns() {
        let mut call = ChatMessage::new(Role::Assistant, "");
        call.tool_calls = vec![ToolCall {
            id: "toolu_1".into(),
            name: "look".into(),
            arguments: "{\"x\":1}".into(),
        }];
        let mut result = ChatMessage::new(Role::Tool, "a cat");
        result.tool_call_id = Some("toolu_1".into());
        let mut canonical = ChatRequest::new(
            "public",
            vec![
                ChatMessage::new(Role::System, "be brief"),
                ChatMessage::new(Role::User, "one"),
                ChatMessage::new(Role::User, "two"),
                call,
                result,
                ChatMessage::new(Role::User, "and now?"),
            ],
        );
        canonical.sampling.temperature = Some(1.7);
        let wire = serde_json::to_value(MessagesRequest::from_canonical(
            &canonical, "claude", 4096, true,
        ))
        .unwrap();
        assert_eq!(wire["system"], "be brief");
        assert_eq!(wire["max_tokens"], 4096);
        assert_eq!(wire["temperature"], 1.0);
        assert_eq!(wire["stream"], true);
        let messages = wire["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 3, "{wire}");
        assert_eq!(messages[0]["content"].as_array().unwrap().len(), 2);
        assert_eq!(
            messages[1]["content"][0],
            json!({"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"x": 1}})
        );
        assert_eq!(
            messages[2]["content"][0],
            json!({"type": "tool_result", "tool_use_id": "toolu_1", "content": "a cat"})
        );
        assert_eq!(
            messages[2]["content"][1],
            json!({"type": "text", "text": "and now?"})
        );
    }

    #[test]
    fn usage_counts_cached_tokens_both_ways() {
        let usage: Usage = AnthropicUsage {
            input_tokens: 10,
            output_tokens: 5,
            cache_creation_input_tokens: Some(3),
            cache_read_input_tokens: Some(100),
        }
        .into();
        assert_eq!(usage.prompt_tokens, 113);
        assert_eq!(usage.cache_read_tokens, 100);
        let back = AnthropicUsage::from(usage);
        assert_eq!(back.input_tokens, 10);
    }

    #[test]
    fn stream_events_serialise_with_their_type() {
        let event = StreamEvent::ContentBlockDelta {
            index: 1,
            delta: BlockDelta::InputJsonDelta {
                partial_json: "{\"a".into(),
            },
        };
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            json!({"type": "content_block_delta", "index": 1,
                   "delta": {"type": "input_json_delta", "partial_json": "{\"a"}})
        );
        assert_eq!(event.name(), "content_block_delta");
        let parsed: StreamEvent = serde_json::from_str(r#"{"type":"ping"}"#).unwrap();
        assert_eq!(parsed, StreamEvent::Ping);
    }
}
