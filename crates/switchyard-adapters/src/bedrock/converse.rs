//! Converse's wire types and their translation: the request body, the whole
//! answer, and the events of ConverseStream.
//!
//! Converse is one shape for every model on Bedrock: `messages` of content
//! blocks (`text`, `image` bytes, `toolUse`, `toolResult`), a separate
//! `system`, `inferenceConfig`, `toolConfig`.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use switchyard_core::{
    BackendError, ChatRequest, ChatResponse, ContentPart, ErrorKind, FinishReason, ImageSource,
    Role, StreamEvent, ToolCall, ToolCallDelta, ToolChoice, Usage,
};

use super::eventstream::Frame;
use super::kind_of_exception;
use crate::adapter::call_arguments;
use crate::http::unreadable;
use crate::stream::{Step, Translate, cut_short};

// ---- The request ------------------------------------------------------------

/// The body of `converse` and `converse-stream`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ConverseRequest<'a> {
    messages: Vec<Turn<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    system: Vec<TextBlock<'a>>,
    #[serde(skip_serializing_if = "InferenceConfig::is_empty")]
    inference_config: InferenceConfig<'a>,
    /// Fields outside Converse's common set, passed to the model as they are.
    #[serde(skip_serializing_if = "Option::is_none")]
    additional_model_request_fields: Option<ModelFields>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<ToolConfig<'a>>,
}

#[derive(Debug, Serialize)]
struct Turn<'a> {
    role: &'static str,
    content: Vec<Block<'a>>,
}

/// One content block; serialised as `{"text": ...}`, `{"image": {...}}`...
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
enum Block<'a> {
    Text(Cow<'a, str>),
    Image(ImageBlock<'a>),
    ToolUse(ToolUseBlock<'a>),
    ToolResult(ToolResultBlock<'a>),
}

#[derive(Debug, Serialize)]
struct TextBlock<'a> {
    text: Cow<'a, str>,
}

#[derive(Debug, Serialize)]
struct ImageBlock<'a> {
    format: &'static str,
    source: ImageBytes<'a>,
}

#[derive(Debug, Serialize)]
struct ImageBytes<'a> {
    /// Base64, as the JSON form of the API takes them.
    bytes: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolUseBlock<'a> {
    tool_use_id: &'a str,
    name: &'a str,
    input: Map<String, Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolResultBlock<'a> {
    tool_use_id: &'a str,
    content: [TextBlock<'a>; 1],
    status: &'static str,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct InferenceConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
}

impl InferenceConfig<'_> {
    fn is_empty(&self) -> bool {
        self.max_tokens.is_none()
            && self.temperature.is_none()
            && self.top_p.is_none()
            && self.stop_sequences.is_empty()
    }
}

#[derive(Debug, Serialize)]
struct ModelFields {
    top_k: u32,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig<'a> {
    tools: Vec<ToolEntry<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ToolChoiceWire<'a>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
enum ToolEntry<'a> {
    ToolSpec(ToolSpec<'a>),
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolSpec<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: InputSchema<'a>,
}

#[derive(Debug, Serialize)]
struct InputSchema<'a> {
    json: &'a Value,
}

/// `{"auto": {}}`, `{"any": {}}` or `{"tool": {"name": ...}}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
enum ToolChoiceWire<'a> {
    Auto(Empty),
    Any(Empty),
    Tool(NamedTool<'a>),
}

#[derive(Debug, Serialize)]
struct Empty {}

#[derive(Debug, Serialize)]
struct NamedTool<'a> {
    name: &'a str,
}

fn image_format(media_type: &str) -> Option<&'static str> {
    match media_type {
        "image/png" => Some("png"),
        "image/jpeg" | "image/jpg" => Some("jpeg"),
        "image/gif" => Some("gif"),
        "image/webp" => Some("webp"),
        _ => None,
    }
}

/// The content blocks of a user or assistant message.
fn blocks_of(
    index: usize,
    message: &switchyard_core::ChatMessage,
) -> Result<Vec<Block<'_>>, BackendError> {
    let mut blocks = Vec::new();
    for part in &message.content {
        match part {
            ContentPart::Text(text) if text.is_empty() => {}
            ContentPart::Text(text) => blocks.push(Block::Text(Cow::Borrowed(text))),
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
                blocks.push(Block::Image(ImageBlock {
                    format,
                    source: ImageBytes { bytes: data },
                }));
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
        blocks.push(Block::ToolUse(ToolUseBlock {
            tool_use_id: &call.id,
            name: &call.name,
            input: call_arguments(call)?,
        }));
    }
    Ok(blocks)
}

/// The Converse body of a canonical request. Consecutive messages of one
/// role merge into one turn, as Converse requires alternating roles.
pub(super) fn request_body(request: &ChatRequest) -> Result<ConverseRequest<'_>, BackendError> {
    let mut system = Vec::new();
    let mut turns: Vec<Turn<'_>> = Vec::new();
    for (index, message) in request.messages.iter().enumerate() {
        let (role, blocks) = match message.role {
            Role::System => {
                system.push(TextBlock {
                    text: Cow::Owned(message.text()),
                });
                continue;
            }
            Role::Tool => (
                "user",
                vec![Block::ToolResult(ToolResultBlock {
                    tool_use_id: message.tool_call_id.as_deref().unwrap_or_default(),
                    content: [TextBlock {
                        text: Cow::Owned(message.text()),
                    }],
                    status: "success",
                })],
            ),
            Role::User => ("user", blocks_of(index, message)?),
            Role::Assistant => ("assistant", blocks_of(index, message)?),
        };
        match turns.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => turns.push(Turn {
                role,
                content: blocks,
            }),
        }
    }
    let sampling = &request.sampling;
    // Converse has no "none": leaving the tools out is the way to forbid them.
    let tools_allowed = request.tool_choice != Some(ToolChoice::None);
    let tool_config = (!request.tools.is_empty() && tools_allowed).then(|| ToolConfig {
        tools: request
            .tools
            .iter()
            .map(|tool| {
                ToolEntry::ToolSpec(ToolSpec {
                    name: &tool.name,
                    description: tool.description.as_deref(),
                    input_schema: InputSchema {
                        json: &tool.parameters,
                    },
                })
            })
            .collect(),
        tool_choice: match &request.tool_choice {
            Some(ToolChoice::Required) => Some(ToolChoiceWire::Any(Empty {})),
            Some(ToolChoice::Tool(name)) => Some(ToolChoiceWire::Tool(NamedTool { name })),
            Some(ToolChoice::Auto) => Some(ToolChoiceWire::Auto(Empty {})),
            _ => None,
        },
    });
    Ok(ConverseRequest {
        messages: turns,
        system,
        inference_config: InferenceConfig {
            max_tokens: request.max_tokens,
            // Converse takes temperatures up to 1.
            temperature: sampling.temperature.map(|t| t.min(1.0)),
            top_p: sampling.top_p,
            stop_sequences: &request.stop,
        },
        additional_model_request_fields: sampling.top_k.map(|top_k| ModelFields { top_k }),
        tool_config,
    })
}

// ---- The answer -------------------------------------------------------------

pub(super) fn finish_reason(reason: &str) -> FinishReason {
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
    content: Vec<OutputBlock>,
}

/// An answer's content block. Kinds Switchyard does not read (reasoning,
/// citations) deserialise with both fields empty and are skipped.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OutputBlock {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    tool_use: Option<ToolUseOutput>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolUseOutput {
    tool_use_id: String,
    name: String,
    /// The arguments: any JSON the model produced.
    input: Value,
}

/// A whole Converse answer as a canonical response.
pub(super) fn decode(body: &[u8], model: &str) -> Result<ChatResponse, BackendError> {
    let answer: ConverseResponse =
        serde_json::from_slice(body).map_err(|e| unreadable("answer", e))?;
    let mut content = String::new();
    let mut tool_calls = Vec::new();
    for block in answer.output.message.content {
        if let Some(text) = block.text {
            content.push_str(&text);
        }
        if let Some(tool) = block.tool_use {
            tool_calls.push(ToolCall {
                id: tool.tool_use_id,
                name: tool.name,
                arguments: tool.input.to_string(),
            });
        }
    }
    Ok(ChatResponse {
        model: model.to_owned(),
        content,
        tool_calls,
        finish_reason: finish_reason(answer.stop_reason.as_deref().unwrap_or("end_turn")),
        usage: answer.usage.into(),
        logprobs: None,
        tool_runs: Vec::new(),
    })
}

// ---- The stream -------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockStart {
    content_block_index: u64,
    #[serde(default)]
    start: BlockStartKind,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockStartKind {
    #[serde(default)]
    tool_use: Option<ToolUseStart>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolUseStart {
    tool_use_id: String,
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockDelta {
    content_block_index: u64,
    delta: DeltaKind,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeltaKind {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    tool_use: Option<ToolUseDelta>,
}

#[derive(Debug, Deserialize)]
struct ToolUseDelta {
    /// A fragment of the arguments' JSON text.
    input: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageStop {
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    #[serde(default)]
    usage: BedrockUsage,
}

#[derive(Debug, Default, Deserialize)]
struct ExceptionBody {
    #[serde(default, alias = "Message")]
    message: String,
}

fn payload<'a, T: Deserialize<'a>>(frame: &'a Frame) -> Result<T, BackendError> {
    serde_json::from_slice(&frame.payload).map_err(|e| {
        BackendError::new(
            ErrorKind::Upstream,
            format!("the upstream sent a malformed {} event: {e}", frame.name),
        )
    })
}

/// Translates ConverseStream events.
#[derive(Debug, Default)]
pub struct EventTranslator {
    /// Content block index → tool-call index.
    tool_blocks: HashMap<u64, u32>,
    stopped: bool,
}

impl Translate<Frame> for EventTranslator {
    fn event(&mut self, frame: Frame) -> Result<Step, BackendError> {
        if frame.message_type != "event" {
            let body: ExceptionBody = serde_json::from_slice(&frame.payload).unwrap_or_default();
            return Err(BackendError::new(
                kind_of_exception(&frame.name, 500),
                format!(
                    "the upstream reported {} mid-stream: {}",
                    frame.name, body.message
                ),
            )
            .with_code(frame.name));
        }
        let events = match frame.name.as_str() {
            "contentBlockStart" => {
                let start: BlockStart = payload(&frame)?;
                match start.start.tool_use {
                    Some(tool) => {
                        let index = u32::try_from(self.tool_blocks.len()).unwrap_or(u32::MAX);
                        self.tool_blocks.insert(start.content_block_index, index);
                        vec![StreamEvent::ToolCall(ToolCallDelta {
                            index,
                            id: Some(tool.tool_use_id),
                            name: Some(tool.name),
                            arguments: String::new(),
                        })]
                    }
                    None => Vec::new(),
                }
            }
            "contentBlockDelta" => {
                let delta: BlockDelta = payload(&frame)?;
                match (delta.delta.text, delta.delta.tool_use) {
                    (Some(text), _) => vec![StreamEvent::Delta(text)],
                    (None, Some(tool)) => match self.tool_blocks.get(&delta.content_block_index) {
                        Some(&index) => vec![StreamEvent::ToolCall(ToolCallDelta {
                            index,
                            id: None,
                            name: None,
                            arguments: tool.input,
                        })],
                        None => Vec::new(),
                    },
                    (None, None) => Vec::new(),
                }
            }
            "messageStop" => {
                let stop: MessageStop = payload(&frame)?;
                self.stopped = true;
                vec![StreamEvent::Finish(finish_reason(
                    stop.stop_reason.as_deref().unwrap_or("end_turn"),
                ))]
            }
            "metadata" => {
                let metadata: Metadata = payload(&frame)?;
                return Ok(Step {
                    events: vec![StreamEvent::Usage(metadata.usage.into())],
                    done: true,
                });
            }
            // messageStart, contentBlockStop: nothing to say.
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use switchyard_core::{ChatMessage, ToolDefinition};

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
        request.sampling.top_k = Some(4);
        let body = serde_json::to_value(request_body(&request).unwrap()).unwrap();
        assert_eq!(body["system"], json!([{"text": "be brief"}]));
        assert_eq!(
            body["messages"][0]["content"],
            json!([{"text": "hi"}, {"image": {"format": "png", "source": {"bytes": "iVBOR"}}}])
        );
        assert_eq!(
            body["messages"][1]["content"][0],
            json!({"toolUse": {"toolUseId": "tooluse_1", "name": "weather", "input": {"city": "Oslo"}}})
        );
        assert_eq!(
            body["messages"][2]["content"][0],
            json!({"toolResult": {"toolUseId": "tooluse_1", "content": [{"text": "sunny"}], "status": "success"}})
        );
        assert_eq!(body["inferenceConfig"], json!({"maxTokens": 9}));
        assert_eq!(body["additionalModelRequestFields"], json!({"top_k": 4}));
        assert_eq!(body["toolConfig"]["toolChoice"], json!({"any": {}}));
        assert_eq!(
            body["toolConfig"]["tools"][0],
            json!({"toolSpec": {"name": "weather", "description": "Weather", "inputSchema": {"json": {"type": "object"}}}})
        );

        let plain = ChatRequest::new("m", vec![ChatMessage::new(Role::User, "x")]);
        let body = serde_json::to_value(request_body(&plain).unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"messages": [{"role": "user", "content": [{"text": "x"}]}]}),
            "nothing Converse would reject as empty"
        );

        let mut url_image = ChatRequest::new("m", vec![ChatMessage::new(Role::User, "x")]);
        url_image.messages[0].content.push(ContentPart::Image {
            source: ImageSource::Url("https://x/a.png".into()),
            detail: None,
        });
        let error = request_body(&url_image).unwrap_err();
        assert_eq!(error.kind, ErrorKind::InvalidRequest);
    }

    #[test]
    fn tool_calls_whose_arguments_are_not_an_object_are_refused() {
        let mut call = ChatMessage::new(Role::Assistant, "");
        call.tool_calls = vec![ToolCall {
            id: "t1".into(),
            name: "weather".into(),
            arguments: "not json".into(),
        }];
        let request = ChatRequest::new("m", vec![ChatMessage::new(Role::User, "x"), call]);
        let error = request_body(&request).unwrap_err();
        assert_eq!(error.kind, ErrorKind::InvalidRequest);
        assert!(error.message.contains("t1"), "{}", error.message);
    }

    #[test]
    fn whole_answers_decode_text_and_tool_use() {
        let body = json!({
            "output": {"message": {"role": "assistant", "content": [
                {"text": "Let me look."},
                {"reasoningContent": {"reasoningText": {"text": "hidden"}}},
                {"toolUse": {"toolUseId": "t1", "name": "weather", "input": {"city": "Oslo"}}}
            ]}},
            "stopReason": "tool_use",
            "usage": {"inputTokens": 4, "outputTokens": 2, "totalTokens": 6}
        });
        let answer = decode(body.to_string().as_bytes(), "m").unwrap();
        assert_eq!(answer.content, "Let me look.");
        assert_eq!(answer.tool_calls[0].arguments, r#"{"city":"Oslo"}"#);
        assert_eq!(answer.finish_reason, FinishReason::ToolCalls);
        assert_eq!(answer.usage.prompt_tokens, 4);
        assert!(decode(b"{\"output\": 3}", "m").is_err());
    }

    fn frame(event: &str, payload: Value) -> Frame {
        Frame {
            message_type: "event".into(),
            name: event.into(),
            payload: payload.to_string().into(),
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

        let malformed = EventTranslator::default()
            .event(frame("contentBlockDelta", json!({"delta": 3})))
            .unwrap_err();
        assert!(malformed.message.contains("malformed contentBlockDelta"));
    }

    #[test]
    fn exception_frames_become_errors_of_their_kind() {
        let mut t = EventTranslator::default();
        let error = t
            .event(Frame {
                message_type: "exception".into(),
                name: "throttlingException".into(),
                payload: br#"{"message": "Too many requests"}"#.as_slice().into(),
            })
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::RateLimited);
        assert!(error.message.contains("Too many requests"));
    }
}
