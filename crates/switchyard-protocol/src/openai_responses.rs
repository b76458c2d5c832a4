//! OpenAI's Responses API wire format (`POST /v1/responses` and its
//! stream of semantic events), translated onto Switchyard's canonical chat
//! request and conversation items, so that every backend can answer it.
//!
//! Requests are read leniently (unknown fields are ignored, an input
//! message may leave out its `type`); responses and events serialise to the
//! shapes OpenAI's SDKs parse.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use switchyard_core::{
    ChatRequest, ContentPart, FinishReason, ImageSource, Item, ResponseFormat, Role,
    SamplingParams, ToolChoice, ToolDefinition, Usage,
};

use crate::openai::{
    InvalidField, RetrievalOptions, WireJsonSchema, WireResponseFormat, check_range, invalid,
};

/// `POST /v1/responses` body.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ResponsesRequest {
    /// A model, route or assistant name.
    pub model: String,
    /// A string (one user message) or a list of items.
    #[serde(default)]
    pub input: Option<ResponsesInput>,
    /// A system message for this response only (not carried into the
    /// next turn).
    #[serde(default)]
    pub instructions: Option<String>,
    /// The stored response this one continues.
    #[serde(default)]
    pub previous_response_id: Option<String>,
    /// A conversation to continue and append to.
    #[serde(default)]
    pub conversation: Option<ConversationParam>,
    /// Keep the response, so that it can be retrieved and continued
    /// (default true).
    #[serde(default)]
    pub store: Option<bool>,
    /// The answer's token budget.
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
    /// 0..2.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// 0..1.
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Function tools.
    #[serde(default)]
    pub tools: Option<Vec<ResponsesTool>>,
    /// `auto`, `none`, `required` or `{"type": "function", "name": ...}`.
    #[serde(default)]
    pub tool_choice: Option<ResponsesToolChoice>,
    /// Whether several calls may come in one turn.
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    /// `{"format": {...}}`.
    #[serde(default)]
    pub text: Option<TextOptions>,
    /// `disabled` (default) or `auto`.
    #[serde(default)]
    pub truncation: Option<String>,
    /// Up to 16 string pairs, kept with the response; routing rules read them.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// End-user id.
    #[serde(default)]
    pub user: Option<String>,
    /// Stream semantic events.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Switchyard's extension: ground the answer in a collection.
    #[serde(default)]
    pub retrieval: Option<RetrievalOptions>,
}

/// `conversation`: an id, or `{"id": ...}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ConversationParam {
    /// `conv_…`.
    Id(String),
    /// `{"id": "conv_…"}`.
    Object {
        /// `conv_…`.
        id: String,
    },
}

/// `input`: a string or items.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ResponsesInput {
    /// One user message.
    Text(String),
    /// Messages, function calls and their outputs.
    Items(Vec<InputItem>),
}

/// One input item, read loosely: a message may come without its `type`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct InputItem {
    /// `message` (or absent), `function_call`, `function_call_output`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// An item id the client gives (kept when present).
    #[serde(default)]
    pub id: Option<String>,
    /// Messages: `user`, `assistant`, `system`, `developer`.
    #[serde(default)]
    pub role: Option<String>,
    /// Messages: a string or content parts.
    #[serde(default)]
    pub content: Option<InputContent>,
    /// Function calls and outputs: the call's id.
    #[serde(default)]
    pub call_id: Option<String>,
    /// Function calls: the function.
    #[serde(default)]
    pub name: Option<String>,
    /// Function calls: JSON arguments.
    #[serde(default)]
    pub arguments: Option<String>,
    /// Function call outputs: a string, or text parts.
    #[serde(default)]
    pub output: Option<InputContent>,
}

/// Message content: a string or typed parts.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum InputContent {
    /// Plain text.
    Text(String),
    /// Typed parts.
    Parts(Vec<InputPart>),
}

/// One content part of an input message.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct InputPart {
    /// `input_text`, `output_text`, `input_image`, `refusal`, `input_file`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Text parts.
    #[serde(default)]
    pub text: Option<String>,
    /// `refusal` parts.
    #[serde(default)]
    pub refusal: Option<String>,
    /// `input_image`: a URL or `data:` URL.
    #[serde(default)]
    pub image_url: Option<String>,
    /// `input_image`: `low`, `high` or `auto`.
    #[serde(default)]
    pub detail: Option<String>,
}

/// A tool of a Responses request: `{"type": "function", "name", ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponsesTool {
    /// `function`, or `switchyard` for a tool Switchyard runs itself
    /// (other tool types are refused).
    #[serde(rename = "type")]
    pub kind: String,
    /// The function's name.
    #[serde(default)]
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of its arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Value>,
    /// Structured-outputs strictness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// `tool_choice` of a Responses request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ResponsesToolChoice {
    /// `auto`, `none` or `required`.
    Mode(String),
    /// `{"type": "function", "name": ...}`.
    Named {
        /// Always `function`.
        #[serde(rename = "type")]
        kind: String,
        /// The function to call.
        name: String,
    },
}

/// `text` of a Responses request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TextOptions {
    /// The answer's format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<TextFormat>,
}

/// `text.format`: `text`, `json_object` or `json_schema` (flat).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TextFormat {
    /// Free text.
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON following a schema.
    JsonSchema {
        /// `[a-zA-Z0-9_-]{1,64}`.
        name: String,
        /// What the schema is for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        /// The schema.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        schema: Option<serde_json::Value>,
        /// Follow the schema exactly.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        strict: Option<bool>,
    },
}

impl TextFormat {
    fn into_canonical(self) -> Result<ResponseFormat, InvalidField> {
        let wire = match self {
            TextFormat::Text => WireResponseFormat::Text,
            TextFormat::JsonObject => WireResponseFormat::JsonObject,
            TextFormat::JsonSchema {
                name,
                description,
                schema,
                strict,
            } => WireResponseFormat::JsonSchema {
                json_schema: WireJsonSchema {
                    name,
                    description,
                    schema,
                    strict,
                },
            },
        };
        wire.into_canonical().map_err(|mut error| {
            error.param = error
                .param
                .replace("response_format.json_schema", "text.format");
            error
        })
    }
}

/// What a Responses request asks beyond a chat request: the items it
/// adds, and what to continue and keep.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponsesTurn {
    /// This turn's system message, not carried into the next.
    pub instructions: Option<String>,
    /// The new input items, with ids.
    pub input: Vec<Item>,
    /// The stored response this one continues.
    pub previous_response_id: Option<String>,
    /// The conversation this one continues and is added to.
    pub conversation_id: Option<String>,
    /// Keep the response.
    pub store: bool,
    /// `truncation: "auto"`: drop the oldest turns of a conversation too
    /// long for the model.
    pub truncation_auto: bool,
    /// Kept with the response and echoed.
    pub metadata: BTreeMap<String, String>,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// The request's settings as the response object echoes them.
    pub echo: Echo,
}

/// The request settings a response object repeats.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Echo {
    /// `max_output_tokens`.
    pub max_output_tokens: Option<u32>,
    /// `temperature`.
    pub temperature: Option<f32>,
    /// `top_p`.
    pub top_p: Option<f32>,
    /// `tools`.
    pub tools: Vec<ResponsesTool>,
    /// `tool_choice` (default `auto`).
    pub tool_choice: Option<ResponsesToolChoice>,
    /// `parallel_tool_calls` (default true).
    pub parallel_tool_calls: Option<bool>,
    /// `text`.
    pub text: TextOptions,
    /// `user`.
    pub user: Option<String>,
}

/// A fresh id with OpenAI's prefix for its kind (`resp`, `msg`, `fc`...).
/// Time-ordered (UUID v7), so that stored rows are appended at the end of
/// their indexes instead of scattered through them.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

fn parse_role(field: &str, index: usize, role: Option<&str>) -> Result<Role, InvalidField> {
    match role {
        Some("user") => Ok(Role::User),
        Some("assistant") => Ok(Role::Assistant),
        Some("system" | "developer") => Ok(Role::System),
        Some(other) => Err(invalid(
            format!("{field}[{index}].role"),
            format!("unknown role {other:?}; expected user, assistant, system or developer"),
        )),
        None => Err(invalid(
            format!("{field}[{index}].role"),
            "a message item needs a `role`",
        )),
    }
}

fn content_parts(
    param: &str,
    content: Option<InputContent>,
) -> Result<Vec<ContentPart>, InvalidField> {
    match content {
        None => Ok(Vec::new()),
        Some(InputContent::Text(text)) => Ok(vec![ContentPart::Text(text)]),
        Some(InputContent::Parts(parts)) => parts
            .into_iter()
            .enumerate()
            .map(|(i, part)| match part.kind.as_str() {
                "input_text" | "output_text" | "text" => Ok(ContentPart::Text(
                    part.text.unwrap_or_default(),
                )),
                "refusal" => Ok(ContentPart::Text(part.refusal.unwrap_or_default())),
                "input_image" => match part.image_url {
                    Some(url) => Ok(ContentPart::Image {
                        source: ImageSource::from_url(&url),
                        detail: part.detail,
                    }),
                    None => Err(invalid(
                        format!("{param}[{i}].image_url"),
                        "an input_image part needs an `image_url` (a URL or data: URL); file ids are not supported",
                    )),
                },
                other => Err(invalid(
                    format!("{param}[{i}].type"),
                    format!(
                        "content parts of type {other:?} are not supported; send input_text, output_text or input_image"
                    ),
                )),
            })
            .collect(),
    }
}

fn text_of(parts: &[ContentPart]) -> String {
    parts
        .iter()
        .filter_map(|part| match part {
            ContentPart::Text(text) => Some(text.as_str()),
            ContentPart::Image { .. } => None,
        })
        .collect()
}

fn input_items(input: Option<ResponsesInput>) -> Result<Vec<Item>, InvalidField> {
    let items = match input {
        None => return Ok(Vec::new()),
        Some(ResponsesInput::Text(text)) => {
            return Ok(vec![Item::Message {
                id: new_id("msg"),
                role: Role::User,
                content: vec![ContentPart::Text(text)],
            }]);
        }
        Some(ResponsesInput::Items(items)) => items,
    };
    parse_items("input", items)
}

/// Items of a request (`input` of a response, `items` of a conversation),
/// with ids for those that bring none; `field` names them in errors.
pub fn parse_items(field: &str, items: Vec<InputItem>) -> Result<Vec<Item>, InvalidField> {
    let list = field;
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            let field = |name: &str| format!("{list}[{index}].{name}");
            match item.kind.as_deref().unwrap_or("message") {
                "message" => Ok(Item::Message {
                    id: item.id.unwrap_or_else(|| new_id("msg")),
                    role: parse_role(list, index, item.role.as_deref())?,
                    content: content_parts(&field("content"), item.content)?,
                }),
                "function_call" => {
                    let call_id = item
                        .call_id
                        .ok_or_else(|| invalid(field("call_id"), "a function_call needs its `call_id`"))?;
                    let arguments = item.arguments.unwrap_or_else(|| "{}".into());
                    if !serde_json::from_str::<serde_json::Value>(&arguments)
                        .is_ok_and(|v| v.is_object())
                    {
                        return Err(invalid(
                            field("arguments"),
                            "a function_call's `arguments` must be a JSON object as text",
                        ));
                    }
                    Ok(Item::FunctionCall {
                        id: item.id.unwrap_or_else(|| new_id("fc")),
                        call_id,
                        name: item
                            .name
                            .ok_or_else(|| invalid(field("name"), "a function_call needs its `name`"))?,
                        arguments,
                    })
                }
                "function_call_output" => {
                    let call_id = item.call_id.ok_or_else(|| {
                        invalid(field("call_id"), "a function_call_output needs the `call_id` it answers")
                    })?;
                    let output = text_of(&content_parts(&field("output"), item.output)?);
                    Ok(Item::FunctionCallOutput {
                        id: item.id.unwrap_or_else(|| new_id("fco")),
                        call_id,
                        output,
                    })
                }
                other => Err(invalid(
                    field("type"),
                    format!(
                        "input items of type {other:?} are not supported; send message, function_call or function_call_output"
                    ),
                )),
            }
        })
        .collect()
}

impl ResponsesRequest {
    /// Validates the request: the chat request it becomes (without its
    /// messages, which the history and the new input make), and the turn.
    pub fn into_canonical(self) -> Result<(ChatRequest, ResponsesTurn), InvalidField> {
        if self.model.trim().is_empty() {
            return Err(invalid("model", "`model` must name a model"));
        }
        let conversation_id = match self.conversation {
            None => None,
            Some(ConversationParam::Id(id)) | Some(ConversationParam::Object { id }) => Some(id),
        };
        if conversation_id.is_some() && self.previous_response_id.is_some() {
            return Err(invalid(
                "conversation",
                "a response continues either a `conversation` or a `previous_response_id`, not both",
            ));
        }
        let truncation_auto = match self.truncation.as_deref() {
            None | Some("disabled") => false,
            Some("auto") => true,
            Some(other) => {
                return Err(invalid(
                    "truncation",
                    format!("unknown truncation {other:?}; expected disabled or auto"),
                ));
            }
        };
        if self.max_output_tokens == Some(0) {
            return Err(invalid(
                "max_output_tokens",
                "`max_output_tokens` must be at least 1",
            ));
        }
        if let Some(metadata) = &self.metadata
            && metadata.len() > 16
        {
            return Err(invalid("metadata", "`metadata` holds at most 16 pairs"));
        }
        let input = input_items(self.input)?;
        if input.is_empty() && self.previous_response_id.is_none() && conversation_id.is_none() {
            return Err(invalid(
                "input",
                "`input` must hold at least one item (or continue a `previous_response_id` or `conversation`)",
            ));
        }
        let sampling = SamplingParams {
            temperature: check_range("temperature", self.temperature, 0.0, 2.0)?,
            top_p: check_range("top_p", self.top_p, 0.0, 1.0)?,
            ..SamplingParams::default()
        };
        let wire_tools = self.tools.unwrap_or_default();
        let mut gateway_tools = Vec::new();
        let mut tools = Vec::new();
        for (index, tool) in wire_tools.iter().enumerate() {
            let gateway_tool = match tool.kind.as_str() {
                crate::GATEWAY_TOOL_TYPE => true,
                "function" => false,
                kind => {
                    return Err(invalid(
                        format!("tools[{index}].type"),
                        format!(
                            "only tools of type function or switchyard are served; got {kind:?}"
                        ),
                    ));
                }
            };
            if tool.name.is_empty() {
                return Err(invalid(
                    format!("tools[{index}].name"),
                    "every tool needs a name",
                ));
            }
            if gateway_tool {
                gateway_tools.push(tool.name.clone());
                continue;
            }
            tools.push(ToolDefinition {
                name: tool.name.clone(),
                description: tool.description.clone(),
                parameters: tool
                    .parameters
                    .clone()
                    .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}})),
            });
        }
        let tool_choice = match &self.tool_choice {
            None => None,
            Some(ResponsesToolChoice::Mode(mode)) => Some(match mode.as_str() {
                "auto" => ToolChoice::Auto,
                "none" => ToolChoice::None,
                "required" => ToolChoice::Required,
                other => {
                    return Err(invalid(
                        "tool_choice",
                        format!(
                            "unknown tool_choice {other:?}; expected auto, none, required or a named function"
                        ),
                    ));
                }
            }),
            Some(ResponsesToolChoice::Named { name, .. }) => {
                if !tools.iter().any(|t| &t.name == name) {
                    return Err(invalid(
                        "tool_choice",
                        format!("tool_choice names {name:?}, which is not among `tools`"),
                    ));
                }
                Some(ToolChoice::Tool(name.clone()))
            }
        };
        let text = self.text.unwrap_or_default();
        let response_format = text
            .format
            .clone()
            .map(TextFormat::into_canonical)
            .transpose()?;
        let request = ChatRequest {
            model: self.model,
            messages: Vec::new(),
            sampling,
            max_tokens: self.max_output_tokens,
            stop: Vec::new(),
            user: self.user.clone(),
            tools,
            tool_choice,
            parallel_tool_calls: self.parallel_tool_calls,
            response_format,
            logprobs: false,
            gateway_tools,
        };
        let turn = ResponsesTurn {
            instructions: self.instructions,
            input,
            previous_response_id: self.previous_response_id,
            conversation_id,
            store: self.store.unwrap_or(true),
            truncation_auto,
            metadata: self.metadata.unwrap_or_default(),
            stream: self.stream.unwrap_or(false),
            echo: Echo {
                max_output_tokens: self.max_output_tokens,
                temperature: self.temperature,
                top_p: self.top_p,
                tools: wire_tools,
                tool_choice: self.tool_choice,
                parallel_tool_calls: self.parallel_tool_calls,
                text,
                user: self.user,
            },
        };
        Ok((request, turn))
    }
}

/// The response object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseObject {
    /// `resp_…`.
    pub id: String,
    /// Always `response`.
    pub object: String,
    /// Unix seconds.
    pub created_at: u64,
    /// `in_progress`, `completed`, `incomplete` or `failed`.
    pub status: String,
    /// Why it failed.
    pub error: Option<ResponseError>,
    /// Why it is incomplete.
    pub incomplete_details: Option<IncompleteDetails>,
    /// This turn's instructions.
    pub instructions: Option<String>,
    /// The answer's budget.
    pub max_output_tokens: Option<u32>,
    /// The model (or route, or assistant) asked for.
    pub model: String,
    /// The answer: messages and function calls.
    pub output: Vec<OutputItem>,
    /// Whether several calls may come in one turn.
    pub parallel_tool_calls: bool,
    /// The response this one continues.
    pub previous_response_id: Option<String>,
    /// The conversation it belongs to.
    pub conversation: Option<ConversationRef>,
    /// No reasoning settings are served.
    pub reasoning: Reasoning,
    /// Whether it is kept.
    pub store: bool,
    /// As asked (1 when not).
    pub temperature: f32,
    /// The answer's format.
    pub text: TextOptions,
    /// As asked (`auto` when not).
    pub tool_choice: ResponsesToolChoice,
    /// As asked.
    pub tools: Vec<ResponsesTool>,
    /// As asked (1 when not).
    pub top_p: f32,
    /// `disabled` or `auto`, as asked.
    pub truncation: String,
    /// Tokens used, once known.
    pub usage: Option<ResponseUsage>,
    /// End-user id.
    pub user: Option<String>,
    /// As given.
    pub metadata: BTreeMap<String, String>,
}

/// `conversation` of a response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationRef {
    /// `conv_…`.
    pub id: String,
}

/// `reasoning`: not served, echoed empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reasoning {
    /// Always null.
    pub effort: Option<String>,
    /// Always null.
    pub summary: Option<String>,
}

/// `error` of a failed response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseError {
    /// A code (`server_error`, `rate_limit_exceeded`, ...).
    pub code: String,
    /// What went wrong.
    pub message: String,
}

/// `incomplete_details`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncompleteDetails {
    /// `max_output_tokens` or `content_filter`.
    pub reason: String,
}

/// One output item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputItem {
    /// The model's text.
    Message {
        /// `msg_…`.
        id: String,
        /// `in_progress` or `completed`.
        status: String,
        /// Always `assistant`.
        role: String,
        /// Text parts.
        content: Vec<OutputContent>,
    },
    /// A call of one of the request's functions.
    FunctionCall {
        /// `fc_…`.
        id: String,
        /// The id the client's output answers to.
        call_id: String,
        /// The function.
        name: String,
        /// JSON arguments.
        arguments: String,
        /// `in_progress` or `completed`.
        status: String,
    },
    /// A call of a tool Switchyard ran for the model. OpenAI's shape for a
    /// tool the server runs through MCP fits it (and its SDKs know it):
    /// an MCP tool under its server's label, a built-in one under
    /// `switchyard`.
    McpCall {
        /// `mcp_…`.
        id: String,
        /// The MCP server, or `switchyard`.
        server_label: String,
        /// The tool.
        name: String,
        /// JSON arguments.
        arguments: String,
        /// `in_progress`, `completed` or `failed`.
        status: String,
        /// What it returned.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<String>,
        /// Why it failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ToolRunError>,
    },
}

/// Why a tool call failed: OpenAI's `mcp_tool_execution_error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolRunError {
    /// Always `mcp_tool_execution_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The error, as text parts.
    pub content: Vec<ToolRunErrorText>,
}

/// A text part of [`ToolRunError`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolRunErrorText {
    /// Always `text`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The error.
    pub text: String,
}

/// The label Switchyard's built-in tools go under in `mcp_call` items.
pub const BUILT_IN_TOOLS_LABEL: &str = "switchyard";

/// The `mcp_call` item of `run` (`id` is the item's), as it stands:
/// in progress, or ended with its output or error. A tool offered as
/// `SERVER__TOOL` is its MCP server's.
pub fn tool_run_item(id: &str, run: &switchyard_core::ToolRun) -> OutputItem {
    let (server_label, name) = run
        .name
        .split_once("__")
        .unwrap_or((BUILT_IN_TOOLS_LABEL, run.name.as_str()));
    let (status, output, error) = match &run.ended {
        None => ("in_progress", None, None),
        Some(end) if end.failed => (
            "failed",
            None,
            Some(ToolRunError {
                kind: "mcp_tool_execution_error".into(),
                content: vec![ToolRunErrorText {
                    kind: "text".into(),
                    text: end.output.clone(),
                }],
            }),
        ),
        Some(end) => ("completed", Some(end.output.clone()), None),
    };
    OutputItem::McpCall {
        id: id.to_owned(),
        server_label: server_label.to_owned(),
        name: name.to_owned(),
        arguments: run.arguments.clone(),
        status: status.into(),
        output,
        error,
    }
}

/// One part of an output message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputContent {
    /// Always `output_text`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text.
    pub text: String,
    /// Citations of a grounded answer.
    pub annotations: Vec<Annotation>,
}

impl OutputContent {
    /// An `output_text` part.
    pub fn text(text: String, annotations: Vec<Annotation>) -> Self {
        Self {
            kind: "output_text".into(),
            text,
            annotations,
        }
    }
}

/// A citation of a grounded answer, on the text that used it: OpenAI's
/// `file_citation` shape, the document standing for the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Annotation {
    /// Always `file_citation`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The cited document's id.
    pub file_id: String,
    /// Its title (or source).
    pub filename: String,
    /// The source's number in the answer (`[1]`).
    pub index: u32,
}

/// `usage` of a response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseUsage {
    /// Prompt tokens.
    pub input_tokens: u32,
    /// Of which read from a cache.
    pub input_tokens_details: InputTokensDetails,
    /// Answer tokens.
    pub output_tokens: u32,
    /// Of which reasoning.
    pub output_tokens_details: OutputTokensDetails,
    /// Their sum.
    pub total_tokens: u32,
}

/// `usage.input_tokens_details`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputTokensDetails {
    /// Prompt tokens read from a cache.
    pub cached_tokens: u32,
}

/// `usage.output_tokens_details`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputTokensDetails {
    /// Always 0: no reasoning models are served.
    pub reasoning_tokens: u32,
}

impl From<Usage> for ResponseUsage {
    fn from(usage: Usage) -> Self {
        Self {
            input_tokens: usage.prompt_tokens,
            input_tokens_details: InputTokensDetails {
                cached_tokens: usage.cache_read_tokens,
            },
            output_tokens: usage.completion_tokens,
            output_tokens_details: OutputTokensDetails::default(),
            total_tokens: usage.total_tokens(),
        }
    }
}

/// A response's status and, when incomplete, why, for a finish reason.
pub fn status_of(reason: FinishReason) -> (&'static str, Option<IncompleteDetails>) {
    match reason {
        FinishReason::Length => (
            "incomplete",
            Some(IncompleteDetails {
                reason: "max_output_tokens".into(),
            }),
        ),
        FinishReason::ContentFilter => (
            "incomplete",
            Some(IncompleteDetails {
                reason: "content_filter".into(),
            }),
        ),
        _ => ("completed", None),
    }
}

impl ResponseObject {
    /// A response to `turn` for `model`, in progress, with no output yet.
    pub fn new(id: String, created_at: u64, model: String, turn: &ResponsesTurn) -> Self {
        let echo = &turn.echo;
        Self {
            id,
            object: "response".into(),
            created_at,
            status: "in_progress".into(),
            error: None,
            incomplete_details: None,
            instructions: turn.instructions.clone(),
            max_output_tokens: echo.max_output_tokens,
            model,
            output: Vec::new(),
            parallel_tool_calls: echo.parallel_tool_calls.unwrap_or(true),
            previous_response_id: turn.previous_response_id.clone(),
            conversation: turn
                .conversation_id
                .clone()
                .map(|id| ConversationRef { id }),
            reasoning: Reasoning::default(),
            store: turn.store,
            temperature: echo.temperature.unwrap_or(1.0),
            text: TextOptions {
                format: Some(echo.text.format.clone().unwrap_or(TextFormat::Text)),
            },
            tool_choice: echo
                .tool_choice
                .clone()
                .unwrap_or_else(|| ResponsesToolChoice::Mode("auto".into())),
            tools: echo.tools.clone(),
            top_p: echo.top_p.unwrap_or(1.0),
            truncation: if turn.truncation_auto {
                "auto".into()
            } else {
                "disabled".into()
            },
            usage: None,
            user: echo.user.clone(),
            metadata: turn.metadata.clone(),
        }
    }
}

/// The output items of an answer, as conversation items: its text (one
/// message, when there is any), then its function calls.
pub fn answer_items(
    message_id: &str,
    text: &str,
    calls: &[switchyard_core::ToolCall],
) -> Vec<Item> {
    let mut items = Vec::with_capacity(calls.len() + 1);
    if !text.is_empty() || calls.is_empty() {
        items.push(Item::Message {
            id: message_id.to_owned(),
            role: Role::Assistant,
            content: vec![ContentPart::Text(text.to_owned())],
        });
    }
    // Item ids are Switchyard's own: call ids repeat across turns (some
    // providers number them per answer).
    items.extend(calls.iter().map(|call| Item::FunctionCall {
        id: new_id("fc"),
        call_id: call.id.clone(),
        name: call.name.clone(),
        arguments: call.arguments.clone(),
    }));
    items
}

/// An output item as the API shows it.
pub fn output_item(item: &Item, annotations: &[Annotation]) -> Option<OutputItem> {
    match item {
        Item::Message { id, content, .. } => Some(OutputItem::Message {
            id: id.clone(),
            status: "completed".into(),
            role: "assistant".into(),
            content: vec![OutputContent::text(text_of(content), annotations.to_vec())],
        }),
        Item::FunctionCall {
            id,
            call_id,
            name,
            arguments,
        } => Some(OutputItem::FunctionCall {
            id: id.clone(),
            call_id: call_id.clone(),
            name: name.clone(),
            arguments: arguments.clone(),
            status: "completed".into(),
        }),
        Item::FunctionCallOutput { .. } => None,
    }
}

/// An input item as `GET /v1/responses/{id}/input_items` lists it.
pub fn input_item(item: &Item) -> serde_json::Value {
    match item {
        Item::Message { id, role, content } => {
            let assistant = *role == Role::Assistant;
            let parts: Vec<serde_json::Value> = content
                .iter()
                .map(|part| match part {
                    ContentPart::Text(text) if assistant => {
                        serde_json::json!({"type": "output_text", "text": text, "annotations": []})
                    }
                    ContentPart::Text(text) => {
                        serde_json::json!({"type": "input_text", "text": text})
                    }
                    ContentPart::Image { source, detail } => serde_json::json!({
                        "type": "input_image",
                        "image_url": source.to_url(),
                        "detail": detail.as_deref().unwrap_or("auto"),
                    }),
                })
                .collect();
            serde_json::json!({
                "type": "message",
                "id": id,
                "role": role.as_str(),
                "status": "completed",
                "content": parts,
            })
        }
        Item::FunctionCall {
            id,
            call_id,
            name,
            arguments,
        } => serde_json::json!({
            "type": "function_call",
            "id": id,
            "call_id": call_id,
            "name": name,
            "arguments": arguments,
            "status": "completed",
        }),
        Item::FunctionCallOutput {
            id,
            call_id,
            output,
        } => serde_json::json!({
            "type": "function_call_output",
            "id": id,
            "call_id": call_id,
            "output": output,
            "status": "completed",
        }),
    }
}

/// A streamed event, before its `sequence_number` is given.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum ResponseEvent {
    /// The response exists.
    #[serde(rename = "response.created")]
    Created {
        /// It, in progress.
        response: Box<ResponseObject>,
    },
    /// It is being generated.
    #[serde(rename = "response.in_progress")]
    InProgress {
        /// It, in progress.
        response: Box<ResponseObject>,
    },
    /// An output item begins.
    #[serde(rename = "response.output_item.added")]
    OutputItemAdded {
        /// Its place in `output`.
        output_index: usize,
        /// It, in progress.
        item: OutputItem,
    },
    /// A content part of a message begins.
    #[serde(rename = "response.content_part.added")]
    ContentPartAdded {
        /// The message.
        item_id: String,
        /// Its place in `output`.
        output_index: usize,
        /// The part's place in the message.
        content_index: usize,
        /// The part, empty.
        part: OutputContent,
    },
    /// More text.
    #[serde(rename = "response.output_text.delta")]
    OutputTextDelta {
        /// The message.
        item_id: String,
        /// Its place in `output`.
        output_index: usize,
        /// The part's place in the message.
        content_index: usize,
        /// The new text.
        delta: String,
        /// Not served: always empty.
        logprobs: Vec<serde_json::Value>,
    },
    /// The text is whole.
    #[serde(rename = "response.output_text.done")]
    OutputTextDone {
        /// The message.
        item_id: String,
        /// Its place in `output`.
        output_index: usize,
        /// The part's place in the message.
        content_index: usize,
        /// All of it.
        text: String,
        /// Not served: always empty.
        logprobs: Vec<serde_json::Value>,
    },
    /// A content part is whole.
    #[serde(rename = "response.content_part.done")]
    ContentPartDone {
        /// The message.
        item_id: String,
        /// Its place in `output`.
        output_index: usize,
        /// The part's place in the message.
        content_index: usize,
        /// The part, whole.
        part: OutputContent,
    },
    /// More of a function call's arguments.
    #[serde(rename = "response.function_call_arguments.delta")]
    FunctionCallArgumentsDelta {
        /// The call item.
        item_id: String,
        /// Its place in `output`.
        output_index: usize,
        /// The new text.
        delta: String,
    },
    /// A function call's arguments are whole.
    #[serde(rename = "response.function_call_arguments.done")]
    FunctionCallArgumentsDone {
        /// The call item.
        item_id: String,
        /// Its place in `output`.
        output_index: usize,
        /// The function.
        name: String,
        /// All of them.
        arguments: String,
    },
    /// Arguments of a tool call Switchyard runs (all at once: the call
    /// is run only once they are whole).
    #[serde(rename = "response.mcp_call_arguments.delta")]
    McpCallArgumentsDelta {
        /// The call's item.
        item_id: String,
        /// Its place in `output`.
        output_index: usize,
        /// The arguments.
        delta: String,
    },
    /// The arguments are whole.
    #[serde(rename = "response.mcp_call_arguments.done")]
    McpCallArgumentsDone {
        /// The call's item.
        item_id: String,
        /// Its place in `output`.
        output_index: usize,
        /// All of them.
        arguments: String,
    },
    /// The call runs.
    #[serde(rename = "response.mcp_call.in_progress")]
    McpCallInProgress {
        /// The call's item.
        item_id: String,
        /// Its place in `output`.
        output_index: usize,
    },
    /// The call returned; its output is in the item.
    #[serde(rename = "response.mcp_call.completed")]
    McpCallCompleted {
        /// The call's item.
        item_id: String,
        /// Its place in `output`.
        output_index: usize,
    },
    /// The call failed; its error is in the item.
    #[serde(rename = "response.mcp_call.failed")]
    McpCallFailed {
        /// The call's item.
        item_id: String,
        /// Its place in `output`.
        output_index: usize,
    },
    /// An output item is whole.
    #[serde(rename = "response.output_item.done")]
    OutputItemDone {
        /// Its place in `output`.
        output_index: usize,
        /// It, whole.
        item: OutputItem,
    },
    /// The response is whole.
    #[serde(rename = "response.completed")]
    Completed {
        /// It.
        response: Box<ResponseObject>,
    },
    /// The response ended early (budget or content filter).
    #[serde(rename = "response.incomplete")]
    Incomplete {
        /// It.
        response: Box<ResponseObject>,
    },
    /// The response failed after it started.
    #[serde(rename = "response.failed")]
    Failed {
        /// It, with its error.
        response: Box<ResponseObject>,
    },
}

impl ResponseEvent {
    /// Its `type`, as the SSE `event:` line repeats it.
    pub fn name(&self) -> &'static str {
        match self {
            ResponseEvent::Created { .. } => "response.created",
            ResponseEvent::InProgress { .. } => "response.in_progress",
            ResponseEvent::OutputItemAdded { .. } => "response.output_item.added",
            ResponseEvent::ContentPartAdded { .. } => "response.content_part.added",
            ResponseEvent::OutputTextDelta { .. } => "response.output_text.delta",
            ResponseEvent::OutputTextDone { .. } => "response.output_text.done",
            ResponseEvent::ContentPartDone { .. } => "response.content_part.done",
            ResponseEvent::FunctionCallArgumentsDelta { .. } => {
                "response.function_call_arguments.delta"
            }
            ResponseEvent::FunctionCallArgumentsDone { .. } => {
                "response.function_call_arguments.done"
            }
            ResponseEvent::McpCallArgumentsDelta { .. } => "response.mcp_call_arguments.delta",
            ResponseEvent::McpCallArgumentsDone { .. } => "response.mcp_call_arguments.done",
            ResponseEvent::McpCallInProgress { .. } => "response.mcp_call.in_progress",
            ResponseEvent::McpCallCompleted { .. } => "response.mcp_call.completed",
            ResponseEvent::McpCallFailed { .. } => "response.mcp_call.failed",
            ResponseEvent::OutputItemDone { .. } => "response.output_item.done",
            ResponseEvent::Completed { .. } => "response.completed",
            ResponseEvent::Incomplete { .. } => "response.incomplete",
            ResponseEvent::Failed { .. } => "response.failed",
        }
    }
}

/// An event with its place in the stream, as sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sequenced<'a> {
    /// The event.
    #[serde(flatten)]
    pub event: &'a ResponseEvent,
    /// 0, 1, 2, ... in the order sent.
    pub sequence_number: u64,
}

/// `POST /v1/conversations` body.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConversationCreate {
    /// Its first items.
    #[serde(default)]
    pub items: Option<Vec<InputItem>>,
    /// Up to 16 string pairs.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// `POST /v1/conversations/{id}` body.
#[derive(Debug, Clone, Deserialize)]
pub struct ConversationUpdate {
    /// The new metadata, replacing the old.
    pub metadata: BTreeMap<String, String>,
}

/// `POST /v1/conversations/{id}/items` body.
#[derive(Debug, Clone, Deserialize)]
pub struct ConversationItemsCreate {
    /// The items to append.
    pub items: Vec<InputItem>,
}

/// A conversation object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationObject {
    /// `conv_…`.
    pub id: String,
    /// Always `conversation`.
    pub object: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Up to 16 string pairs.
    pub metadata: BTreeMap<String, String>,
}

/// Checks the 16-pair limit on `metadata`.
pub fn check_metadata(metadata: &BTreeMap<String, String>) -> Result<(), InvalidField> {
    if metadata.len() > 16 {
        return Err(invalid("metadata", "`metadata` holds at most 16 pairs"));
    }
    if let Some((key, _)) = metadata.iter().find(|(k, v)| k.len() > 64 || v.len() > 512) {
        return Err(invalid(
            "metadata",
            format!("metadata keys are at most 64 characters and values 512; {key:?} is over"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parse(body: serde_json::Value) -> Result<(ChatRequest, ResponsesTurn), InvalidField> {
        serde_json::from_value::<ResponsesRequest>(body)
            .unwrap()
            .into_canonical()
    }

    #[test]
    fn a_string_input_is_one_user_message_and_settings_carry_over() {
        let (request, turn) = parse(serde_json::json!({
            "model": "m", "input": "Hello", "instructions": "Be brief.",
            "max_output_tokens": 20, "temperature": 0.5,
            "text": {"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}}},
            "metadata": {"topic": "greeting"}
        }))
        .unwrap();
        assert_eq!(request.max_tokens, Some(20));
        assert_eq!(request.sampling.temperature, Some(0.5));
        assert!(matches!(
            request.response_format,
            Some(ResponseFormat::JsonSchema(_))
        ));
        assert_eq!(turn.instructions.as_deref(), Some("Be brief."));
        assert!(turn.store);
        assert!(
            matches!(&turn.input[0], Item::Message { role: Role::User, id, .. } if id.starts_with("msg_"))
        );
        assert_eq!(turn.metadata["topic"], "greeting");
    }

    #[test]
    fn items_become_messages_calls_and_outputs() {
        let (_, turn) = parse(serde_json::json!({
            "model": "m",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "weather?"},
                                             {"type": "input_image", "image_url": "https://x/y.png"}]},
                {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Oslo\"}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "rain"}
            ],
            "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "weather"}
        }))
        .unwrap();
        assert_eq!(turn.input.len(), 3);
        assert!(matches!(&turn.input[0], Item::Message { content, .. } if content.len() == 2));
        assert!(
            matches!(&turn.input[2], Item::FunctionCallOutput { output, .. } if output == "rain")
        );
    }

    #[test]
    fn mistakes_name_their_field() {
        let cases = [
            (serde_json::json!({"model": "m"}), "input"),
            (
                serde_json::json!({"model": "m", "input": [{"type": "web_search_call"}]}),
                "input[0].type",
            ),
            (
                serde_json::json!({"model": "m", "input": [{"content": "x"}]}),
                "input[0].role",
            ),
            (
                serde_json::json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}),
                "tools[0].type",
            ),
            (
                serde_json::json!({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "bad name"}}}),
                "text.format.name",
            ),
            (
                serde_json::json!({"model": "m", "input": "x", "truncation": "some"}),
                "truncation",
            ),
            (
                serde_json::json!({"model": "m", "input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"}]}),
                "input[0].arguments",
            ),
        ];
        for (body, param) in cases {
            assert_eq!(parse(body.clone()).unwrap_err().param, param, "{body}");
        }
    }

    #[test]
    fn events_carry_their_type_and_sequence_number() {
        let event = ResponseEvent::OutputTextDelta {
            item_id: "msg_1".into(),
            output_index: 0,
            content_index: 0,
            delta: "Hi".into(),
            logprobs: Vec::new(),
        };
        let json = serde_json::to_value(Sequenced {
            event: &event,
            sequence_number: 4,
        })
        .unwrap();
        assert_eq!(json["type"], "response.output_text.delta");
        assert_eq!(json["type"], event.name());
        assert_eq!(json["sequence_number"], 4);
        assert_eq!(json["delta"], "Hi");
    }
}
