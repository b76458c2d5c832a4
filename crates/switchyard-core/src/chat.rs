//! Canonical chat types: what every front door translates into and every
//! backend translates out of.
//!
//! They are deliberately independent of any provider's wire format, so that
//! an OpenAI request can be served by a local GGUF model and, later, an
//! Anthropic request by an OpenAI upstream, with one translation each way.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions to the model (OpenAI's `developer` role maps here too).
    System,
    /// The end user.
    User,
    /// The model.
    Assistant,
    /// The result of a tool call.
    Tool,
}

impl Role {
    /// The role's name as chat templates and OpenAI's wire format spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageSource {
    /// A URL the provider fetches itself.
    Url(String),
    /// Inline bytes, base64-encoded (from a `data:` URL or a base64 block).
    Base64 {
        /// MIME type, e.g. `image/png`.
        media_type: String,
        /// The base64 text.
        data: String,
    },
}

impl ImageSource {
    /// Reads an OpenAI-style image URL: `data:image/png;base64,...` becomes
    /// inline bytes, anything else stays a URL.
    pub fn from_url(url: &str) -> Self {
        if let Some(rest) = url.strip_prefix("data:")
            && let Some((meta, data)) = rest.split_once(',')
            && let Some(media_type) = meta.strip_suffix(";base64")
        {
            return ImageSource::Base64 {
                media_type: media_type.to_owned(),
                data: data.to_owned(),
            };
        }
        ImageSource::Url(url.to_owned())
    }

    /// The OpenAI-style URL: the URL itself or a `data:` URL.
    pub fn to_url(&self) -> String {
        match self {
            ImageSource::Url(url) => url.clone(),
            ImageSource::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
        }
    }
}

/// One piece of a message's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ContentPart {
    /// Text.
    Text(String),
    /// An image.
    Image {
        /// Where it is.
        source: ImageSource,
        /// OpenAI's `detail` hint (`low`, `high`, `auto`), passed on where understood.
        detail: Option<String>,
    },
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDefinition {
    /// The function's name.
    pub name: String,
    /// What it does, for the model.
    pub description: Option<String>,
    /// Its arguments, as a JSON Schema object.
    pub parameters: serde_json::Value,
}

/// Whether and which tool the model must call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// No tool calls.
    None,
    /// At least one tool call.
    Required,
    /// This tool.
    Tool(String),
}

/// A call the model made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id, echoed by the tool result that answers it.
    pub id: String,
    /// The function called.
    pub name: String,
    /// Its arguments as JSON text (as OpenAI carries them).
    pub arguments: String,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: Role,
    /// Text and images, in order.
    pub content: Vec<ContentPart>,
    /// An optional participant name (OpenAI's `name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// For tool results: the id of the call this message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// For assistant messages: the tool calls it made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

impl ChatMessage {
    /// A message with just a role and text.
    pub fn new(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            content: vec![ContentPart::Text(text.into())],
            name: None,
            tool_call_id: None,
            tool_calls: Vec::new(),
        }
    }

    /// The text parts, joined.
    pub fn text(&self) -> String {
        self.content
            .iter()
            .filter_map(|part| match part {
                ContentPart::Text(text) => Some(text.as_str()),
                ContentPart::Image { .. } => None,
            })
            .collect()
    }

    /// Whether any part is an image.
    pub fn has_images(&self) -> bool {
        self.content
            .iter()
            .any(|part| matches!(part, ContentPart::Image { .. }))
    }
}

/// How the next token is chosen. `None` means "the backend's default".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// Softmax temperature; 0 selects the most likely token (greedy).
    pub temperature: Option<f32>,
    /// Nucleus sampling: keep the smallest set of tokens whose mass reaches this.
    pub top_p: Option<f32>,
    /// Keep only the k most likely tokens.
    pub top_k: Option<u32>,
    /// Drop tokens whose probability is below this fraction of the best one.
    pub min_p: Option<f32>,
    /// Seed for reproducible sampling.
    pub seed: Option<u64>,
    /// OpenAI-style presence penalty, -2..2.
    pub presence_penalty: Option<f32>,
    /// OpenAI-style frequency penalty, -2..2.
    pub frequency_penalty: Option<f32>,
    /// Multiplicative repetition penalty (llama.cpp/TGI style); 1 disables it.
    pub repetition_penalty: Option<f32>,
}

impl SamplingParams {
    /// Whether the same request always yields the same answer from a
    /// deterministic backend (greedy decoding or a fixed seed).
    pub fn is_deterministic(&self) -> bool {
        self.temperature == Some(0.0) || self.seed.is_some()
    }

    /// Fills every parameter this request left unset from `defaults`.
    pub fn or_defaults(self, defaults: &SamplingParams) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature.or(defaults.temperature),
            top_p: self.top_p.or(defaults.top_p),
            top_k: self.top_k.or(defaults.top_k),
            min_p: self.min_p.or(defaults.min_p),
            seed: self.seed.or(defaults.seed),
            presence_penalty: self.presence_penalty.or(defaults.presence_penalty),
            frequency_penalty: self.frequency_penalty.or(defaults.frequency_penalty),
            repetition_penalty: self.repetition_penalty.or(defaults.repetition_penalty),
        }
    }
}

/// A chat completion request in Switchyard's own terms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The model name the client asked for.
    pub model: String,
    /// The conversation so far; never empty once validated.
    pub messages: Vec<ChatMessage>,
    /// Sampling parameters.
    #[serde(default)]
    pub sampling: SamplingParams,
    /// Upper bound on generated tokens.
    pub max_tokens: Option<u32>,
    /// Generation stops before any of these strings; they are not returned.
    #[serde(default)]
    pub stop: Vec<String>,
    /// An opaque end-user identifier, forwarded to upstreams that take one.
    pub user: Option<String>,
    /// Functions the model may call.
    #[serde(default)]
    pub tools: Vec<ToolDefinition>,
    /// Whether and which tool the model must call.
    pub tool_choice: Option<ToolChoice>,
    /// Whether several calls may come in one turn.
    pub parallel_tool_calls: Option<bool>,
    /// The shape the answer must take; `None` is free text.
    #[serde(default)]
    pub response_format: Option<ResponseFormat>,
    /// Ask for each answer token's log-probability, where the backend
    /// gives them (OpenAI-compatible upstreams).
    #[serde(default)]
    pub logprobs: bool,
    /// Tools Switchyard runs itself, by name, that the request asked for
    /// (`{"type": "switchyard", "name": ...}` among its tools). The tool
    /// stage offers their definitions to the model and runs their calls;
    /// backends never see this list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateway_tools: Vec<String>,
}

/// The shape an answer must take (OpenAI's `response_format`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ResponseFormat {
    /// Free text.
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON that validates against a schema.
    JsonSchema(JsonSchemaFormat),
}

/// A named JSON schema the answer must follow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonSchemaFormat {
    /// The schema's name (letters, digits, `_` and `-`).
    pub name: String,
    /// What the schema is for, for the model.
    pub description: Option<String>,
    /// The JSON schema itself.
    pub schema: serde_json::Value,
    /// OpenAI's strict mode: the answer follows the schema exactly.
    pub strict: Option<bool>,
}

impl ChatRequest {
    /// A request with default sampling and no limits.
    pub fn new(model: impl Into<String>, messages: Vec<ChatMessage>) -> Self {
        Self {
            model: model.into(),
            messages,
            sampling: SamplingParams::default(),
            max_tokens: None,
            stop: Vec::new(),
            user: None,
            tools: Vec::new(),
            tool_choice: None,
            parallel_tool_calls: None,
            response_format: None,
            logprobs: false,
            gateway_tools: Vec::new(),
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model finished its answer or hit a stop sequence.
    Stop,
    /// `max_tokens` or the context window was reached.
    Length,
    /// A safety system withheld the rest.
    ContentFilter,
    /// The model asked for tool calls.
    ToolCalls,
}

impl FinishReason {
    /// OpenAI's spelling of the reason.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ContentFilter => "content_filter",
            FinishReason::ToolCalls => "tool_calls",
        }
    }
}

/// Token counts of one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Every input token, cached ones included (after the chat template).
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
    /// Of `prompt_tokens`, those read from the provider's prompt cache.
    #[serde(default)]
    pub cache_read_tokens: u32,
    /// Of `prompt_tokens`, those written to the provider's prompt cache.
    #[serde(default)]
    pub cache_write_tokens: u32,
}

impl Usage {
    /// Counts without any cache figures.
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            ..Self::default()
        }
    }

    /// Prompt plus completion tokens.
    pub fn total_tokens(&self) -> u32 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// A whole (non-streamed) answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The model that produced the answer, as the backend names it.
    pub model: String,
    /// The generated text.
    pub content: String,
    /// Tool calls the model made.
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
    /// Why generation ended.
    pub finish_reason: FinishReason,
    /// Token counts.
    pub usage: Usage,
    /// Each answer token's log-probability, when asked for and given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<TokenLogprob>>,
    /// The calls of tools Switchyard ran for the model on the way to this
    /// answer, ended, in order (the Responses API shows them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_runs: Vec<ToolRun>,
}

/// One generated token and its log-probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// The token's text.
    pub token: String,
    /// Its natural-log probability (0 is certain).
    pub logprob: f32,
}

/// A piece of a streamed tool call: the first piece of a call carries its
/// id and name, later ones more argument text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    /// Which call of this turn (0, 1, ...).
    pub index: u32,
    /// The call's id, on its first piece.
    pub id: Option<String>,
    /// The function's name, on its first piece.
    pub name: Option<String>,
    /// More of the arguments' JSON text.
    pub arguments: String,
}

/// One event of a streamed answer, in the order a backend emits them:
/// any number of `Delta`s and `ToolCall`s, then `Finish`, then `Usage`.
/// The tool loop adds `ToolRun`s between its rounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StreamEvent {
    /// More generated text (always whole UTF-8 characters).
    Delta(String),
    /// A piece of a tool call.
    ToolCall(ToolCallDelta),
    /// A tool Switchyard runs for the model started or ended (front doors
    /// that have no shape for it leave it out).
    ToolRun(ToolRun),
    /// Generation ended.
    Finish(FinishReason),
    /// Final token counts.
    Usage(Usage),
}

/// A call of a tool Switchyard runs itself, as a streamed answer reports
/// it: once when it starts, once when it ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolRun {
    /// The model's id for the call.
    pub call_id: String,
    /// The tool, as the model was offered it.
    pub name: String,
    /// The arguments the model wrote.
    pub arguments: String,
    /// `None` while it runs; then what the model was given.
    pub ended: Option<ToolRunEnd>,
}

/// How a tool call ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolRunEnd {
    /// The result, or the error, as handed to the model.
    pub output: String,
    /// Whether it failed (an error or a timeout).
    pub failed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_values_win_over_defaults() {
        let defaults = SamplingParams {
            temperature: Some(0.2),
            top_p: Some(0.9),
            ..SamplingParams::default()
        };
        let asked = SamplingParams {
            temperature: Some(0.0),
            ..SamplingParams::default()
        };
        let merged = asked.or_defaults(&defaults);
        assert_eq!(merged.temperature, Some(0.0));
        assert_eq!(merged.top_p, Some(0.9));
        assert_eq!(merged.seed, None);
    }
}
