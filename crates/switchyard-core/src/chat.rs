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

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: Role,
    /// Its text. Multi-part text content is joined before it gets here.
    pub content: String,
    /// An optional participant name (OpenAI's `name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// For tool results: the id of the call this message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A message with just a role and text.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            name: None,
            tool_call_id: None,
        }
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
    /// Tokens in the prompt, after the chat template.
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
}

impl Usage {
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
    /// Why generation ended.
    pub finish_reason: FinishReason,
    /// Token counts.
    pub usage: Usage,
}

/// One event of a streamed answer, in the order a backend emits them:
/// any number of `Delta`s, then `Finish`, then `Usage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StreamEvent {
    /// More generated text (always whole UTF-8 characters).
    Delta(String),
    /// Generation ended.
    Finish(FinishReason),
    /// Final token counts.
    Usage(Usage),
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
