//! OpenAI's chat completions wire format, both directions: Switchyard's
//! server reads requests and writes responses in it, the `openai` adapter
//! writes requests and reads responses in it.
//!
//! Request types are lenient where OpenAI is (unknown fields are ignored,
//! `content` may be a string or parts, `stop` a string or a list); response
//! types serialise to exactly the shapes OpenAI's SDKs parse, and
//! deserialise tolerantly, since OpenAI-compatible servers differ in what
//! they leave out.

use serde::{Deserialize, Serialize};
use switchyard_core::{
    ChatMessage, ChatRequest, ChatResponse, ContentPart as CanonicalPart, FinishReason,
    ImageSource, JsonSchemaFormat, ResponseFormat, Role, SamplingParams, TokenLogprob, ToolCall,
    ToolCallDelta, ToolChoice, ToolDefinition, Usage,
};

/// `POST /v1/chat/completions` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    /// Model name.
    pub model: String,
    /// The conversation.
    pub messages: Vec<RequestMessage>,
    /// Sampling temperature, 0..2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus mass, 0..1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Legacy token limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Current token limit; wins over `max_tokens` when both are set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// Stop sequences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopSequences>,
    /// Sampling seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Stream the answer as server-sent events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Streaming options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// End-user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// -2..2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f32>,
    /// -2..2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f32>,
    /// Number of choices; only 1 is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Top-k (vLLM, llama.cpp server and TGI extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    /// Min-p (vLLM and llama.cpp server extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f32>,
    /// Multiplicative repetition penalty (vLLM, llama.cpp server, TGI extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repetition_penalty: Option<f32>,
    /// Functions the model may call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<WireTool>>,
    /// `auto`, `none`, `required` or a named function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<WireToolChoice>,
    /// Whether several calls may come in one turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// `text`, `json_object` or `json_schema`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<WireResponseFormat>,
    /// Return each answer token's log-probability (whole answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    /// Tags for routing rules and logs; never sent upstream.
    #[serde(default, skip_serializing)]
    pub metadata: Option<std::collections::BTreeMap<String, serde_json::Value>>,
    /// Switchyard's extension: ground the answer in a collection (from
    /// OpenAI's SDKs, pass it in `extra_body`); never sent upstream.
    #[serde(default, skip_serializing)]
    pub retrieval: Option<RetrievalOptions>,
}

/// `response_format` of a chat request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WireResponseFormat {
    /// Free text.
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON following a schema.
    JsonSchema {
        /// The schema and its name.
        json_schema: WireJsonSchema,
    },
}

/// `response_format.json_schema`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireJsonSchema {
    /// `[a-zA-Z0-9_-]{1,64}`.
    pub name: String,
    /// What the schema is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The JSON schema; absent allows any JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<serde_json::Value>,
    /// Follow the schema exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

impl WireResponseFormat {
    /// The canonical format, or which field is wrong.
    pub(crate) fn into_canonical(self) -> Result<ResponseFormat, InvalidField> {
        Ok(match self {
            WireResponseFormat::Text => ResponseFormat::Text,
            WireResponseFormat::JsonObject => ResponseFormat::JsonObject,
            WireResponseFormat::JsonSchema { json_schema } => {
                let name_ok = (1..=64).contains(&json_schema.name.len())
                    && json_schema
                        .name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if !name_ok {
                    return Err(invalid(
                        "response_format.json_schema.name",
                        "the schema's name must be 1 to 64 letters, digits, `_` or `-`",
                    ));
                }
                let schema = json_schema
                    .schema
                    .unwrap_or_else(|| serde_json::Value::Object(serde_json::Map::new()));
                if !schema.is_object() {
                    return Err(invalid(
                        "response_format.json_schema.schema",
                        "the schema must be a JSON object",
                    ));
                }
                ResponseFormat::JsonSchema(JsonSchemaFormat {
                    name: json_schema.name,
                    description: json_schema.description,
                    schema,
                    strict: json_schema.strict,
                })
            }
        })
    }

    fn from_canonical(format: &ResponseFormat) -> Self {
        match format {
            ResponseFormat::Text => WireResponseFormat::Text,
            ResponseFormat::JsonObject => WireResponseFormat::JsonObject,
            ResponseFormat::JsonSchema(format) => WireResponseFormat::JsonSchema {
                json_schema: WireJsonSchema {
                    name: format.name.clone(),
                    description: format.description.clone(),
                    schema: Some(format.schema.clone()),
                    strict: format.strict,
                },
            },
        }
    }
}

/// The `retrieval` extension of a chat request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrievalOptions {
    /// The collection to search (one of the caller's tenant's).
    pub collection: String,
    /// Chunks given to the model, at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    /// `hybrid` (default), `keyword` or `vector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Restricts the sources: `{"document_ids": [...], "metadata": {...}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<serde_json::Value>,
}

/// A source a grounded answer was given: the `citations` field of the
/// response, and of the first chunk of a stream. `index` is the number the
/// model was told to cite it by (`[1]`, `[2]`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Citation {
    /// The number the answer cites it by, from 1.
    pub index: u32,
    /// The collection it came from.
    pub collection: String,
    /// The document's id.
    pub document_id: String,
    /// `document id#position`.
    pub chunk_id: String,
    /// The document's title.
    pub title: String,
    /// Headings the chunk sits under.
    pub heading_path: Vec<String>,
    /// Where the document came from (a path, a URL), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Character offsets of the chunk in the document's extracted text.
    pub start: usize,
    /// Character offset just past the chunk's end.
    pub end: usize,
    /// Its retrieval score (reciprocal rank fusion).
    pub score: f64,
    /// The chunk's text, as the model saw it.
    pub text: String,
}

/// A tool definition: `{"type": "function", "function": {...}}`, or a
/// tool Switchyard runs itself: `{"type": "switchyard", "name": ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireTool {
    /// `function`, or `switchyard`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The function, for `function` tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<WireFunction>,
    /// The tool's name, for `switchyard` tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A function definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireFunction {
    /// Its name.
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

/// `tool_choice`: a mode string or a named function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WireToolChoice {
    /// `auto`, `none` or `required`.
    Mode(String),
    /// `{"type": "function", "function": {"name": ...}}`.
    Named {
        /// Always `function`.
        #[serde(rename = "type")]
        kind: String,
        /// The function to call.
        function: NamedFunction,
    },
}

/// The function a named `tool_choice` points at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedFunction {
    /// Its name.
    pub name: String,
}

/// A tool call in a message or response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireToolCall {
    /// The call's id.
    pub id: String,
    /// Always `function`.
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    /// What was called.
    pub function: WireFunctionCall,
}

fn function_type() -> String {
    "function".into()
}

/// A function call: name and JSON arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireFunctionCall {
    /// The function.
    pub name: String,
    /// Its arguments as JSON text.
    #[serde(default)]
    pub arguments: String,
}

impl From<&ToolCall> for WireToolCall {
    fn from(call: &ToolCall) -> Self {
        Self {
            id: call.id.clone(),
            kind: function_type(),
            function: WireFunctionCall {
                name: call.name.clone(),
                arguments: call.arguments.clone(),
            },
        }
    }
}

impl From<WireToolCall> for ToolCall {
    fn from(call: WireToolCall) -> Self {
        Self {
            id: call.id,
            name: call.function.name,
            arguments: call.function.arguments,
        }
    }
}

/// A tool call the client sends back in its history. Providers that take
/// arguments as a JSON object (Anthropic, Gemini, Bedrock) cannot be given
/// text that is not one, and guessing `{}` would change the call, so it is
/// refused naming the field.
fn checked_call(message: usize, call: usize, wire: WireToolCall) -> Result<ToolCall, InvalidField> {
    let arguments = wire.function.arguments.trim();
    let is_object = arguments.is_empty()
        || serde_json::from_str::<serde_json::Value>(arguments).is_ok_and(|v| v.is_object());
    if !is_object {
        return Err(invalid(
            format!("messages[{message}].tool_calls[{call}].function.arguments"),
            "a tool call's `arguments` must be a JSON object encoded as a string, e.g. \"{\\\"city\\\": \\\"Paris\\\"}\"",
        ));
    }
    Ok(ToolCall::from(wire))
}

/// `stop`: one string or several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StopSequences {
    /// A single stop string.
    One(String),
    /// Several stop strings.
    Many(Vec<String>),
}

impl StopSequences {
    /// The stop strings as a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StopSequences::One(stop) => vec![stop],
            StopSequences::Many(stops) => stops,
        }
    }
}

/// `stream_options`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Send a final chunk with token usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
}

/// One message of a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestMessage {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: String,
    /// Text or content parts; may be null on assistant messages.
    #[serde(default)]
    pub content: Option<MessageContent>,
    /// Participant name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// For `tool` messages: the call answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// For `assistant` messages: the calls it made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<WireToolCall>>,
}

/// `content`: a string or a list of typed parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Typed parts.
    Parts(Vec<ContentPart>),
}

/// One typed content part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// An image by URL or data URL.
    ImageUrl {
        /// The image reference.
        image_url: ImageUrl,
    },
    /// Audio input.
    InputAudio {
        /// The audio.
        input_audio: serde_json::Value,
    },
    /// A file.
    File {
        /// The file reference.
        file: serde_json::Value,
    },
}

/// `image_url`: a URL (or `data:` URL) and a detail hint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageUrl {
    /// `https://...` or `data:image/png;base64,...`.
    pub url: String,
    /// `low`, `high` or `auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A request that is well-formed JSON but not a valid chat request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidField {
    /// The field, e.g. `messages[2].role`.
    pub param: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

pub(crate) fn invalid(param: impl Into<String>, message: impl Into<String>) -> InvalidField {
    InvalidField {
        param: param.into(),
        message: message.into(),
    }
}

pub(crate) fn check_range(
    param: &str,
    value: Option<f32>,
    low: f32,
    high: f32,
) -> Result<Option<f32>, InvalidField> {
    match value {
        Some(v) if !(low..=high).contains(&v) => Err(invalid(
            param,
            format!("`{param}` must be between {low} and {high}; got {v}"),
        )),
        other => Ok(other),
    }
}

fn parse_role(index: usize, role: &str) -> Result<Role, InvalidField> {
    match role {
        "system" | "developer" => Ok(Role::System),
        "user" => Ok(Role::User),
        "assistant" => Ok(Role::Assistant),
        "tool" => Ok(Role::Tool),
        other => Err(invalid(
            format!("messages[{index}].role"),
            format!(
                "unknown role {other:?}; expected one of system, developer, user, assistant, tool"
            ),
        )),
    }
}

fn message_parts(
    index: usize,
    content: Option<MessageContent>,
) -> Result<Vec<CanonicalPart>, InvalidField> {
    match content {
        None => Ok(Vec::new()),
        Some(MessageContent::Text(text)) => Ok(vec![CanonicalPart::Text(text)]),
        Some(MessageContent::Parts(parts)) => parts
            .into_iter()
            .enumerate()
            .map(|(part_index, part)| match part {
                ContentPart::Text { text } => Ok(CanonicalPart::Text(text)),
                ContentPart::ImageUrl { image_url } => Ok(CanonicalPart::Image {
                    source: ImageSource::from_url(&image_url.url),
                    detail: image_url.detail,
                }),
                other => {
                    let kind = match other {
                        ContentPart::InputAudio { .. } => "input_audio",
                        _ => "file",
                    };
                    Err(invalid(
                        format!("messages[{index}].content[{part_index}].type"),
                        format!(
                            "content parts of type {kind} are not supported; send text and image_url parts"
                        ),
                    ))
                }
            })
            .collect(),
    }
}

fn parse_tool_choice(choice: WireToolChoice) -> Result<ToolChoice, InvalidField> {
    match choice {
        WireToolChoice::Mode(mode) => match mode.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" => Ok(ToolChoice::Required),
            other => Err(invalid(
                "tool_choice",
                format!(
                    "unknown tool_choice {other:?}; expected auto, none, required or a named function"
                ),
            )),
        },
        WireToolChoice::Named { function, .. } => Ok(ToolChoice::Tool(function.name)),
    }
}

fn wire_tool_choice(choice: &ToolChoice) -> WireToolChoice {
    match choice {
        ToolChoice::Auto => WireToolChoice::Mode("auto".into()),
        ToolChoice::None => WireToolChoice::Mode("none".into()),
        ToolChoice::Required => WireToolChoice::Mode("required".into()),
        ToolChoice::Tool(name) => WireToolChoice::Named {
            kind: function_type(),
            function: NamedFunction { name: name.clone() },
        },
    }
}

impl ChatCompletionRequest {
    /// Whether the client asked for a stream.
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether a streaming client asked for a usage chunk.
    pub fn wants_stream_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    /// Validates the request and turns it into Switchyard's canonical form.
    pub fn into_canonical(self) -> Result<ChatRequest, InvalidField> {
        if self.model.trim().is_empty() {
            return Err(invalid("model", "`model` must name a model"));
        }
        if self.messages.is_empty() {
            return Err(invalid(
                "messages",
                "`messages` must contain at least one message",
            ));
        }
        if let Some(n) = self.n
            && n != 1
        {
            return Err(invalid("n", format!("only n = 1 is supported; got {n}")));
        }
        let max_tokens = self.max_completion_tokens.or(self.max_tokens);
        if max_tokens == Some(0) {
            let param = if self.max_completion_tokens.is_some() {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            return Err(invalid(param, format!("`{param}` must be at least 1")));
        }
        if self.stream_options.is_some() && !self.is_stream() {
            return Err(invalid(
                "stream_options",
                "`stream_options` is only allowed when `stream` is true",
            ));
        }
        let stop = self.stop.map(StopSequences::into_vec).unwrap_or_default();
        if stop.len() > 4 {
            return Err(invalid(
                "stop",
                format!("at most 4 stop sequences are allowed; got {}", stop.len()),
            ));
        }
        let sampling = SamplingParams {
            temperature: check_range("temperature", self.temperature, 0.0, 2.0)?,
            top_p: check_range("top_p", self.top_p, 0.0, 1.0)?,
            top_k: self.top_k,
            min_p: check_range("min_p", self.min_p, 0.0, 1.0)?,
            seed: self.seed.map(|s| s as u64),
            presence_penalty: check_range("presence_penalty", self.presence_penalty, -2.0, 2.0)?,
            frequency_penalty: check_range("frequency_penalty", self.frequency_penalty, -2.0, 2.0)?,
            repetition_penalty: check_range(
                "repetition_penalty",
                self.repetition_penalty,
                0.01,
                10.0,
            )?,
        };
        let messages = self
            .messages
            .into_iter()
            .enumerate()
            .map(|(index, message)| {
                let role = parse_role(index, &message.role)?;
                if role == Role::Tool && message.tool_call_id.is_none() {
                    return Err(invalid(
                        format!("messages[{index}].tool_call_id"),
                        "tool messages must carry the `tool_call_id` of the call they answer",
                    ));
                }
                Ok(ChatMessage {
                    role,
                    content: message_parts(index, message.content)?,
                    name: message.name,
                    tool_call_id: message.tool_call_id,
                    tool_calls: message
                        .tool_calls
                        .unwrap_or_default()
                        .into_iter()
                        .enumerate()
                        .map(|(call, wire)| checked_call(index, call, wire))
                        .collect::<Result<_, _>>()?,
                })
            })
            .collect::<Result<Vec<_>, InvalidField>>()?;
        let mut gateway_tools = Vec::new();
        let mut tools = Vec::new();
        for (index, tool) in self.tools.unwrap_or_default().into_iter().enumerate() {
            match (tool.kind.as_str(), tool.function, tool.name) {
                (crate::GATEWAY_TOOL_TYPE, _, Some(name)) if !name.is_empty() => {
                    gateway_tools.push(name);
                }
                (crate::GATEWAY_TOOL_TYPE, _, _) => {
                    return Err(invalid(
                        format!("tools[{index}].name"),
                        "a switchyard tool needs the name of the tool to run",
                    ));
                }
                ("function", Some(function), _) => {
                    if function.name.is_empty() {
                        return Err(invalid(
                            format!("tools[{index}].function.name"),
                            "every tool needs a name",
                        ));
                    }
                    tools.push(ToolDefinition {
                        name: function.name,
                        description: function.description,
                        parameters: function.parameters.unwrap_or_else(
                            || serde_json::json!({"type": "object", "properties": {}}),
                        ),
                    });
                }
                ("function", None, _) => {
                    return Err(invalid(
                        format!("tools[{index}].function"),
                        "a function tool needs its `function`",
                    ));
                }
                (kind, _, _) => {
                    return Err(invalid(
                        format!("tools[{index}].type"),
                        format!(
                            "only tools of type function or switchyard are supported; got {kind:?}"
                        ),
                    ));
                }
            }
        }
        let tool_choice = self.tool_choice.map(parse_tool_choice).transpose()?;
        if let Some(ToolChoice::Tool(name)) = &tool_choice
            && !tools.iter().any(|t| &t.name == name)
        {
            return Err(invalid(
                "tool_choice",
                format!("tool_choice names {name:?}, which is not among `tools`"),
            ));
        }
        let response_format = self
            .response_format
            .map(WireResponseFormat::into_canonical)
            .transpose()?;
        Ok(ChatRequest {
            model: self.model,
            messages,
            sampling,
            max_tokens,
            stop,
            user: self.user,
            tools,
            tool_choice,
            parallel_tool_calls: self.parallel_tool_calls,
            response_format,
            logprobs: self.logprobs.unwrap_or(false),
            gateway_tools,
        })
    }

    /// The request an OpenAI-compatible upstream receives for `request`,
    /// addressed to `upstream_model`.
    pub fn from_canonical(request: &ChatRequest, upstream_model: &str, stream: bool) -> Self {
        let sampling = &request.sampling;
        Self {
            model: upstream_model.to_owned(),
            messages: request.messages.iter().map(wire_message).collect(),
            temperature: sampling.temperature,
            top_p: sampling.top_p,
            max_tokens: None,
            max_completion_tokens: request.max_tokens,
            stop: (!request.stop.is_empty()).then(|| StopSequences::Many(request.stop.clone())),
            seed: sampling.seed.map(|s| s as i64),
            stream: stream.then_some(true),
            stream_options: stream.then_some(StreamOptions {
                include_usage: Some(true),
            }),
            user: request.user.clone(),
            presence_penalty: sampling.presence_penalty,
            frequency_penalty: sampling.frequency_penalty,
            n: None,
            top_k: sampling.top_k,
            min_p: sampling.min_p,
            repetition_penalty: sampling.repetition_penalty,
            tools: (!request.tools.is_empty()).then(|| {
                request
                    .tools
                    .iter()
                    .map(|tool| WireTool {
                        kind: function_type(),
                        function: Some(WireFunction {
                            name: tool.name.clone(),
                            description: tool.description.clone(),
                            parameters: Some(tool.parameters.clone()),
                            strict: None,
                        }),
                        name: None,
                    })
                    .collect()
            }),
            tool_choice: request.tool_choice.as_ref().map(wire_tool_choice),
            parallel_tool_calls: request.parallel_tool_calls,
            response_format: request
                .response_format
                .as_ref()
                .map(WireResponseFormat::from_canonical),
            logprobs: request.logprobs.then_some(true),
            metadata: None,
            retrieval: None,
        }
    }
}

/// A canonical message in OpenAI's shape: plain text stays a string, text
/// with images becomes parts.
fn wire_message(message: &ChatMessage) -> RequestMessage {
    let content = if message.has_images() {
        Some(MessageContent::Parts(
            message
                .content
                .iter()
                .map(|part| match part {
                    CanonicalPart::Text(text) => ContentPart::Text { text: text.clone() },
                    CanonicalPart::Image { source, detail } => ContentPart::ImageUrl {
                        image_url: ImageUrl {
                            url: source.to_url(),
                            detail: detail.clone(),
                        },
                    },
                })
                .collect(),
        ))
    } else if message.role == Role::Assistant
        && !message.tool_calls.is_empty()
        && message.text().is_empty()
    {
        None
    } else {
        Some(MessageContent::Text(message.text()))
    };
    RequestMessage {
        role: message.role.as_str().to_owned(),
        content,
        name: message.name.clone(),
        tool_call_id: message.tool_call_id.clone(),
        tool_calls: (!message.tool_calls.is_empty())
            .then(|| message.tool_calls.iter().map(WireToolCall::from).collect()),
    }
}

/// Token counts as OpenAI reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireUsage {
    /// Prompt tokens.
    #[serde(default)]
    pub prompt_tokens: u32,
    /// Completion tokens.
    #[serde(default)]
    pub completion_tokens: u32,
    /// Their sum.
    #[serde(default)]
    pub total_tokens: u32,
    /// Cached prompt tokens, when there were any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

/// `usage.prompt_tokens_details`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens read from the cache.
    #[serde(default)]
    pub cached_tokens: u32,
}

impl From<Usage> for WireUsage {
    fn from(usage: Usage) -> Self {
        Self {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            total_tokens: usage.total_tokens(),
            prompt_tokens_details: (usage.cache_read_tokens > 0).then_some(PromptTokensDetails {
                cached_tokens: usage.cache_read_tokens,
            }),
        }
    }
}

impl From<WireUsage> for Usage {
    fn from(usage: WireUsage) -> Self {
        Self {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cache_read_tokens: usage.prompt_tokens_details.map_or(0, |d| d.cached_tokens),
            cache_write_tokens: 0,
        }
    }
}

/// A whole answer: `object: "chat.completion"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    /// `chatcmpl-…`.
    #[serde(default)]
    pub id: String,
    /// Always `chat.completion`.
    #[serde(default = "chat_completion_object")]
    pub object: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// The model.
    #[serde(default)]
    pub model: String,
    /// One choice per `n`.
    #[serde(default)]
    pub choices: Vec<Choice>,
    /// Token counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<WireUsage>,
    /// Backend configuration fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    /// The sources of a grounded answer (Switchyard's extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub citations: Option<Vec<Citation>>,
}

fn chat_completion_object() -> String {
    "chat.completion".into()
}

/// One choice of a whole answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// Position among the choices.
    #[serde(default)]
    pub index: u32,
    /// The assistant's message.
    pub message: ResponseMessage,
    /// Why it ended.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Each answer token's log-probability, when the request asked.
    #[serde(default, deserialize_with = "lenient_logprobs")]
    pub logprobs: Option<ChoiceLogprobs>,
}

/// Reads `logprobs` as OpenAI shapes it, and as nothing when a compatible
/// server shapes it otherwise: an answer is never refused for its
/// log-probabilities.
fn lenient_logprobs<'de, D>(deserializer: D) -> Result<Option<ChoiceLogprobs>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).ok())
}

/// `choices[].logprobs`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChoiceLogprobs {
    /// The answer's tokens; null when there are none.
    #[serde(default)]
    pub content: Option<Vec<WireTokenLogprob>>,
    /// The refusal's tokens (never given by Switchyard).
    #[serde(default)]
    pub refusal: Option<Vec<WireTokenLogprob>>,
}

/// One token of `choices[].logprobs.content`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireTokenLogprob {
    /// The token.
    pub token: String,
    /// Its log-probability.
    pub logprob: f32,
    /// Its UTF-8 bytes.
    #[serde(default)]
    pub bytes: Option<Vec<u8>>,
    /// The most likely tokens at this position (Switchyard asks for
    /// none, so always empty from it).
    #[serde(default)]
    pub top_logprobs: Vec<WireTopLogprob>,
}

/// One of `top_logprobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireTopLogprob {
    /// The token.
    pub token: String,
    /// Its log-probability.
    pub logprob: f32,
    /// Its UTF-8 bytes.
    #[serde(default)]
    pub bytes: Option<Vec<u8>>,
}

impl ChoiceLogprobs {
    /// The wire form of canonical log-probabilities.
    pub fn from_canonical(tokens: &[TokenLogprob]) -> Self {
        Self {
            content: Some(
                tokens
                    .iter()
                    .map(|t| WireTokenLogprob {
                        token: t.token.clone(),
                        logprob: t.logprob,
                        bytes: Some(t.token.as_bytes().to_vec()),
                        top_logprobs: Vec::new(),
                    })
                    .collect(),
            ),
            refusal: None,
        }
    }

    /// The canonical log-probabilities of the answer's tokens, if given.
    pub fn into_canonical(self) -> Option<Vec<TokenLogprob>> {
        self.content.map(|tokens| {
            tokens
                .into_iter()
                .map(|t| TokenLogprob {
                    token: t.token,
                    logprob: t.logprob,
                })
                .collect()
        })
    }
}

/// The assistant message of a whole answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseMessage {
    /// `assistant`.
    pub role: String,
    /// The text; null when the model only called tools.
    #[serde(default)]
    pub content: Option<String>,
    /// A refusal message, when the model refused.
    #[serde(default)]
    pub refusal: Option<String>,
    /// Tool calls the model made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<WireToolCall>>,
}

impl ChatCompletion {
    /// The OpenAI shape of a canonical answer.
    pub fn from_canonical(
        id: String,
        created: u64,
        model: String,
        response: &ChatResponse,
    ) -> Self {
        Self {
            id,
            object: chat_completion_object(),
            created,
            model,
            choices: vec![Choice {
                index: 0,
                message: ResponseMessage {
                    role: "assistant".into(),
                    // OpenAI sends null content when the model only called tools.
                    content: (!response.content.is_empty() || response.tool_calls.is_empty())
                        .then(|| response.content.clone()),
                    refusal: None,
                    tool_calls: (!response.tool_calls.is_empty())
                        .then(|| response.tool_calls.iter().map(WireToolCall::from).collect()),
                },
                finish_reason: Some(response.finish_reason.as_str().to_owned()),
                logprobs: response
                    .logprobs
                    .as_deref()
                    .map(ChoiceLogprobs::from_canonical),
            }],
            usage: Some(response.usage.into()),
            system_fingerprint: None,
            citations: None,
        }
    }
}

/// One streamed event: `object: "chat.completion.chunk"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    /// Same id on every chunk of a stream.
    #[serde(default)]
    pub id: String,
    /// Always `chat.completion.chunk`.
    #[serde(default = "chunk_object")]
    pub object: String,
    /// Unix seconds, same on every chunk.
    #[serde(default)]
    pub created: u64,
    /// The model.
    #[serde(default)]
    pub model: String,
    /// Empty on the final usage chunk.
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    /// Token counts, on the final chunk when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<WireUsage>,
    /// Backend configuration fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    /// The sources of a grounded answer, on the stream's first chunk
    /// (Switchyard's extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub citations: Option<Vec<Citation>>,
}

fn chunk_object() -> String {
    "chat.completion.chunk".into()
}

/// One choice's part of a chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// Position among the choices.
    #[serde(default)]
    pub index: u32,
    /// What is new.
    #[serde(default)]
    pub delta: ChunkDelta,
    /// Set on the last chunk of the choice.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Always null from Switchyard: streamed answers carry no
    /// log-probabilities.
    #[serde(default, deserialize_with = "lenient_logprobs")]
    pub logprobs: Option<ChoiceLogprobs>,
}

/// The incremental part of a chunk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChunkDelta {
    /// `assistant`, on the first chunk only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// New text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Pieces of tool calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<WireToolCallDelta>>,
}

/// A piece of a streamed tool call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WireToolCallDelta {
    /// Which call.
    #[serde(default)]
    pub index: u32,
    /// The call's id, on its first piece.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `function`, on its first piece.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name and argument text.
    #[serde(default)]
    pub function: WireFunctionCallDelta,
}

/// The function part of a streamed tool-call piece.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WireFunctionCallDelta {
    /// The function's name, on the first piece.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// More argument text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

impl From<WireToolCallDelta> for ToolCallDelta {
    fn from(delta: WireToolCallDelta) -> Self {
        Self {
            index: delta.index,
            id: delta.id,
            name: delta.function.name,
            arguments: delta.function.arguments.unwrap_or_default(),
        }
    }
}

/// Stamps every chunk of one stream with the same id, time and model.
#[derive(Debug, Clone)]
pub struct ChunkFactory {
    id: String,
    created: u64,
    model: String,
}

impl ChunkFactory {
    /// A factory for the stream `id`.
    pub fn new(id: String, created: u64, model: String) -> Self {
        Self { id, created, model }
    }

    fn chunk(&self, choices: Vec<ChunkChoice>, usage: Option<WireUsage>) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone(),
            object: chunk_object(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
            system_fingerprint: None,
            citations: None,
        }
    }

    fn choice(delta: ChunkDelta, finish_reason: Option<FinishReason>) -> Vec<ChunkChoice> {
        vec![ChunkChoice {
            index: 0,
            delta,
            finish_reason: finish_reason.map(|r| r.as_str().to_owned()),
            logprobs: None,
        }]
    }

    /// The first chunk: the role, with empty content.
    pub fn role(&self) -> ChatCompletionChunk {
        let delta = ChunkDelta {
            role: Some("assistant".into()),
            content: Some(String::new()),
            tool_calls: None,
        };
        self.chunk(Self::choice(delta, None), None)
    }

    /// A chunk of new text.
    pub fn content(&self, text: String) -> ChatCompletionChunk {
        let delta = ChunkDelta {
            role: None,
            content: Some(text),
            tool_calls: None,
        };
        self.chunk(Self::choice(delta, None), None)
    }

    /// A chunk carrying a piece of a tool call.
    pub fn tool_call(&self, piece: ToolCallDelta) -> ChatCompletionChunk {
        let delta = ChunkDelta {
            role: None,
            content: None,
            tool_calls: Some(vec![WireToolCallDelta {
                index: piece.index,
                kind: piece.id.is_some().then(function_type),
                id: piece.id,
                function: WireFunctionCallDelta {
                    name: piece.name,
                    arguments: Some(piece.arguments),
                },
            }]),
        };
        self.chunk(Self::choice(delta, None), None)
    }

    /// The chunk that says why generation ended.
    pub fn finish(&self, reason: FinishReason) -> ChatCompletionChunk {
        self.chunk(Self::choice(ChunkDelta::default(), Some(reason)), None)
    }

    /// The final usage chunk, with no choices.
    pub fn usage(&self, usage: Usage) -> ChatCompletionChunk {
        self.chunk(Vec::new(), Some(usage.into()))
    }
}

/// Parses OpenAI's finish reasons; unknown ones (from other servers) read
/// as a normal stop.
pub fn parse_finish_reason(reason: &str) -> FinishReason {
    match reason {
        "length" => FinishReason::Length,
        "content_filter" => FinishReason::ContentFilter,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

/// OpenAI's error envelope: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorObject,
}

/// The body of an OpenAI error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    /// What went wrong, for humans.
    pub message: String,
    /// The error class, e.g. `invalid_request_error`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// The request field at fault.
    #[serde(default)]
    pub param: Option<String>,
    /// A machine-readable code; some servers send numbers.
    #[serde(default)]
    pub code: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(body: serde_json::Value) -> ChatCompletionRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn logprobs_are_asked_for_upstream_and_read_back_in_openais_shape() {
        let canonical = request(json!({
            "model": "m", "logprobs": true,
            "messages": [{"role": "user", "content": "hi"}]
        }))
        .into_canonical()
        .unwrap();
        assert!(canonical.logprobs);
        let upstream = serde_json::to_value(ChatCompletionRequest::from_canonical(
            &canonical, "up", false,
        ))
        .unwrap();
        assert_eq!(upstream["logprobs"], true);
        let plain = ChatRequest::new("m", vec![ChatMessage::new(Role::User, "hi")]);
        let upstream =
            serde_json::to_value(ChatCompletionRequest::from_canonical(&plain, "up", false))
                .unwrap();
        assert!(upstream.get("logprobs").is_none());

        let answer: ChatCompletion = serde_json::from_value(json!({
            "id": "x", "object": "chat.completion", "created": 1, "model": "up",
            "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": "Hi there"},
                "logprobs": {"content": [
                    {"token": "Hi", "logprob": -0.25, "bytes": [72, 105], "top_logprobs": []},
                    {"token": " there", "logprob": -1.5, "bytes": null, "top_logprobs": []}
                ], "refusal": null}}]
        }))
        .unwrap();
        let tokens = answer.choices[0]
            .logprobs
            .clone()
            .and_then(ChoiceLogprobs::into_canonical)
            .unwrap();
        assert_eq!(tokens.len(), 2);
        assert_eq!(
            (tokens[1].token.as_str(), tokens[1].logprob),
            (" there", -1.5)
        );
        let encoded = serde_json::to_value(ChoiceLogprobs::from_canonical(&tokens)).unwrap();
        assert_eq!(encoded["content"][0]["bytes"], json!([72, 105]));
        assert_eq!(encoded["content"][1]["top_logprobs"], json!([]));
        // Another server's shape is no reason to refuse the answer.
        let odd: Choice = serde_json::from_value(json!({
            "message": {"role": "assistant", "content": "a"},
            "logprobs": {"tokens": ["a"], "token_logprobs": [null]}
        }))
        .unwrap();
        assert_eq!(odd.logprobs.and_then(ChoiceLogprobs::into_canonical), None);
        let odd: Choice = serde_json::from_value(json!({
            "message": {"role": "assistant", "content": "a"},
            "logprobs": {"content": [{"token": "a", "logprob": null}]}
        }))
        .unwrap();
        assert!(odd.logprobs.is_none());
    }

    #[test]
    fn accepts_openai_request_variants_and_ignores_unknown_fields() {
        let parsed = request(json!({
            "model": "m",
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": null},
                {"role": "tool", "content": "42", "tool_call_id": "call_1"}
            ],
            "stop": "END",
            "max_tokens": 7,
            "max_completion_tokens": 9,
            "seed": -1,
            "logit_bias": {"50256": -100},
            "some_future_field": true
        }))
        .into_canonical()
        .unwrap();
        assert_eq!(parsed.messages[0].role, Role::System);
        assert_eq!(parsed.messages[1].text(), "ab");
        assert!(parsed.messages[2].content.is_empty());
        assert_eq!(parsed.messages[3].tool_call_id.as_deref(), Some("call_1"));
        assert_eq!(parsed.stop, vec!["END"]);
        assert_eq!(parsed.max_tokens, Some(9));
        assert_eq!(parsed.sampling.seed, Some(u64::MAX));
    }

    fn rejected(body: serde_json::Value) -> InvalidField {
        request(body).into_canonical().unwrap_err()
    }

    #[test]
    fn malformed_tool_call_arguments_are_refused_naming_the_field() {
        let with_arguments = |arguments: &str| {
            json!({"model": "m", "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "look", "arguments": arguments}}
                ]},
            ]})
        };
        for bad in ["{\"city\": ", "[1, 2]", "\"Paris\""] {
            let error = rejected(with_arguments(bad));
            assert_eq!(
                error.param, "messages[1].tool_calls[1].function.arguments",
                "{bad}"
            );
        }
        let fine = request(with_arguments("{\"city\": \"Paris\"}"))
            .into_canonical()
            .unwrap();
        assert_eq!(
            fine.messages[1].tool_calls[1].arguments,
            "{\"city\": \"Paris\"}"
        );
        assert!(request(with_arguments("")).into_canonical().is_ok());
    }

    #[test]
    fn schema_violations_name_the_field() {
        let base = |extra: serde_json::Value| {
            let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            body
        };
        assert_eq!(
            rejected(base(json!({"temperature": 3.0}))).param,
            "temperature"
        );
        assert_eq!(rejected(base(json!({"top_p": -0.1}))).param, "top_p");
        assert_eq!(rejected(base(json!({"n": 2}))).param, "n");
        assert_eq!(rejected(base(json!({"max_tokens": 0}))).param, "max_tokens");
        assert_eq!(
            rejected(base(json!({"stop": ["a", "b", "c", "d", "e"]}))).param,
            "stop"
        );
        assert_eq!(
            rejected(base(json!({"stream_options": {"include_usage": true}}))).param,
            "stream_options"
        );
        assert_eq!(
            rejected(json!({"model": "m", "messages": []})).param,
            "messages"
        );
        assert_eq!(
            rejected(json!({"model": "m", "messages": [{"role": "robot", "content": "x"}]})).param,
            "messages[0].role"
        );
        let audio = json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]});
        assert_eq!(rejected(audio).param, "messages[0].content[0].type");
        let orphan_tool = json!({"model": "m", "messages": [{"role": "tool", "content": "42"}]});
        assert_eq!(rejected(orphan_tool).param, "messages[0].tool_call_id");
        let unknown_choice = base(
            json!({"tools": [{"type": "function", "function": {"name": "f"}}],
                                         "tool_choice": {"type": "function", "function": {"name": "g"}}}),
        );
        assert_eq!(rejected(unknown_choice).param, "tool_choice");
        let nameless = base(json!({"tools": [{"type": "switchyard"}]}));
        assert_eq!(rejected(nameless).param, "tools[0].name");
        let bodiless = base(json!({"tools": [{"type": "function"}]}));
        assert_eq!(rejected(bodiless).param, "tools[0].function");
        let foreign = base(json!({"tools": [{"type": "web_search"}]}));
        assert_eq!(rejected(foreign).param, "tools[0].type");
    }

    #[test]
    fn switchyard_tools_are_named_apart_from_the_functions_the_model_is_sent() {
        let parsed = request(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "lookup"}},
                      {"type": "switchyard", "name": "calculator"}]}),
        )
        .into_canonical()
        .unwrap();
        assert_eq!(parsed.gateway_tools, ["calculator"]);
        assert_eq!(parsed.tools.len(), 1);
        let upstream =
            serde_json::to_value(ChatCompletionRequest::from_canonical(&parsed, "u", false))
                .unwrap();
        assert_eq!(
            upstream["tools"],
            json!([{"type": "function", "function": {
            "name": "lookup", "parameters": {"type": "object", "properties": {}}}}])
        );
    }

    #[test]
    fn response_formats_are_read_checked_and_sent_upstream_unchanged() {
        let with_format = |format: serde_json::Value| {
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                   "response_format": format})
        };
        let schema = json!({"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"], "additionalProperties": false});
        let parsed = request(with_format(json!({"type": "json_schema", "json_schema": {
            "name": "place", "strict": true, "schema": schema.clone()}})))
        .into_canonical()
        .unwrap();
        let Some(ResponseFormat::JsonSchema(format)) = &parsed.response_format else {
            panic!("{:?}", parsed.response_format);
        };
        assert_eq!(format.name, "place");
        assert_eq!(format.schema, schema);
        assert_eq!(format.strict, Some(true));
        let upstream =
            serde_json::to_value(ChatCompletionRequest::from_canonical(&parsed, "up", false))
                .unwrap();
        assert_eq!(
            upstream["response_format"],
            json!({"type": "json_schema", "json_schema": {
                "name": "place", "strict": true, "schema": schema}})
        );

        let object = request(with_format(json!({"type": "json_object"})))
            .into_canonical()
            .unwrap();
        assert_eq!(object.response_format, Some(ResponseFormat::JsonObject));
        let without = request(with_format(json!({"type": "json_schema", "json_schema": {
            "name": "any"}})))
        .into_canonical()
        .unwrap();
        let Some(ResponseFormat::JsonSchema(any)) = without.response_format else {
            panic!("a schema without `schema` is any JSON");
        };
        assert_eq!(any.schema, json!({}));

        let bad_name = with_format(
            json!({"type": "json_schema", "json_schema": {"name": "no spaces", "schema": {}}}),
        );
        assert_eq!(rejected(bad_name).param, "response_format.json_schema.name");
        let bad_schema = with_format(
            json!({"type": "json_schema", "json_schema": {"name": "n", "schema": [1]}}),
        );
        assert_eq!(
            rejected(bad_schema).param,
            "response_format.json_schema.schema"
        );
        let unknown =
            serde_json::from_value::<ChatCompletionRequest>(with_format(json!({"type": "yaml"})));
        assert!(unknown.is_err());
    }

    #[test]
    fn tools_images_and_tool_history_round_trip() {
        let parsed = request(json!({
            "model": "m",
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "what is here?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR", "detail": "low"}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{\"x\":1}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "a cat"}
            ],
            "tools": [{"type": "function", "function": {"name": "look", "description": "Look",
                       "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}}}],
            "tool_choice": "required",
            "parallel_tool_calls": false
        }))
        .into_canonical()
        .unwrap();
        assert_eq!(
            parsed.messages[0].content[1],
            CanonicalPart::Image {
                source: ImageSource::Base64 {
                    media_type: "image/png".into(),
                    data: "iVBOR".into()
                },
                detail: Some("low".into())
            }
        );
        assert_eq!(parsed.messages[1].tool_calls[0].name, "look");
        assert_eq!(parsed.tools[0].name, "look");
        assert_eq!(parsed.tool_choice, Some(ToolChoice::Required));

        let wire =
            serde_json::to_value(ChatCompletionRequest::from_canonical(&parsed, "up", false))
                .unwrap();
        assert_eq!(
            wire["messages"][0]["content"][1],
            json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR", "detail": "low"}})
        );
        assert_eq!(wire["messages"][1]["content"], serde_json::Value::Null);
        assert_eq!(
            wire["messages"][1]["tool_calls"][0]["function"]["arguments"],
            "{\"x\":1}"
        );
        assert_eq!(
            wire["messages"][2],
            json!({"role": "tool", "content": "a cat", "tool_call_id": "call_1"})
        );
        assert_eq!(wire["tools"][0]["function"]["name"], "look");
        assert_eq!(wire["tool_choice"], "required");
        assert_eq!(wire["parallel_tool_calls"], false);
    }

    #[test]
    fn tool_call_responses_and_chunks_are_openai_shaped() {
        let response = ChatResponse {
            model: "m".into(),
            content: String::new(),
            tool_calls: vec![ToolCall {
                id: "call_9".into(),
                name: "f".into(),
                arguments: "{}".into(),
            }],
            finish_reason: FinishReason::ToolCalls,
            usage: Usage::new(1, 2),
            logprobs: None,
            tool_runs: Vec::new(),
        };
        let whole = serde_json::to_value(ChatCompletion::from_canonical(
            "id".into(),
            1,
            "m".into(),
            &response,
        ))
        .unwrap();
        assert_eq!(
            whole["choices"][0]["message"]["content"],
            serde_json::Value::Null
        );
        assert_eq!(
            whole["choices"][0]["message"]["tool_calls"][0]["type"],
            "function"
        );
        assert_eq!(whole["choices"][0]["finish_reason"], "tool_calls");

        let factory = ChunkFactory::new("c".into(), 1, "m".into());
        let first = serde_json::to_value(factory.tool_call(ToolCallDelta {
            index: 0,
            id: Some("call_9".into()),
            name: Some("f".into()),
            arguments: String::new(),
        }))
        .unwrap();
        assert_eq!(
            first["choices"][0]["delta"]["tool_calls"][0],
            json!({"index": 0, "id": "call_9", "type": "function", "function": {"name": "f", "arguments": ""}})
        );
        let next = serde_json::to_value(factory.tool_call(ToolCallDelta {
            index: 0,
            id: None,
            name: None,
            arguments: "{\"a\"".into(),
        }))
        .unwrap();
        assert_eq!(
            next["choices"][0]["delta"]["tool_calls"][0],
            json!({"index": 0, "function": {"arguments": "{\"a\""}})
        );
    }

    #[test]
    fn chunks_serialise_in_openai_shape() {
        let factory = ChunkFactory::new("chatcmpl-1".into(), 7, "m".into());
        assert_eq!(
            serde_json::to_value(factory.role()).unwrap(),
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "m",
                   "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                "finish_reason": null, "logprobs": null}]})
        );
        assert_eq!(
            serde_json::to_value(factory.finish(FinishReason::Length)).unwrap()["choices"][0],
            json!({"index": 0, "delta": {}, "finish_reason": "length", "logprobs": null})
        );
        let usage = serde_json::to_value(factory.usage(Usage::new(3, 4))).unwrap();
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(
            usage["usage"],
            json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})
        );
    }

    #[test]
    fn upstream_request_uses_upstream_model_and_asks_for_usage() {
        let mut canonical = ChatRequest::new("public", vec![ChatMessage::new(Role::User, "hi")]);
        canonical.max_tokens = Some(5);
        canonical.stop = vec!["x".into()];
        let wire = serde_json::to_value(ChatCompletionRequest::from_canonical(
            &canonical, "gpt-4o", true,
        ))
        .unwrap();
        assert_eq!(
            wire,
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],
                   "max_completion_tokens": 5, "stop": ["x"], "stream": true,
                   "stream_options": {"include_usage": true}})
        );
    }

    #[test]
    fn tolerant_parsing_of_upstream_chunks() {
        let chunk: ChatCompletionChunk =
            serde_json::from_str(r#"{"choices":[{"delta":{"content":"hi"}}]}"#).unwrap();
        assert_eq!(chunk.choices[0].delta.content.as_deref(), Some("hi"));
        let error: ErrorBody =
            serde_json::from_str(r#"{"error":{"message":"nope","code":429}}"#).unwrap();
        assert_eq!(error.error.message, "nope");
    }
}
