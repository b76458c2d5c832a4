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
    ChatMessage, ChatRequest, ChatResponse, FinishReason, Role, SamplingParams, Usage,
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
        image_url: serde_json::Value,
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

/// A request that is well-formed JSON but not a valid chat request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidField {
    /// The field, e.g. `messages[2].role`.
    pub param: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

fn invalid(param: impl Into<String>, message: impl Into<String>) -> InvalidField {
    InvalidField {
        param: param.into(),
        message: message.into(),
    }
}

fn check_range(
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

fn message_text(index: usize, content: Option<MessageContent>) -> Result<String, InvalidField> {
    match content {
        None => Ok(String::new()),
        Some(MessageContent::Text(text)) => Ok(text),
        Some(MessageContent::Parts(parts)) => {
            let mut text = String::new();
            for (part_index, part) in parts.into_iter().enumerate() {
                match part {
                    ContentPart::Text { text: piece } => text.push_str(&piece),
                    other => {
                        let kind = match other {
                            ContentPart::ImageUrl { .. } => "image_url",
                            ContentPart::InputAudio { .. } => "input_audio",
                            _ => "file",
                        };
                        return Err(invalid(
                            format!("messages[{index}].content[{part_index}].type"),
                            format!(
                                "content parts of type {kind} are not supported; send text parts only"
                            ),
                        ));
                    }
                }
            }
            Ok(text)
        }
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
                Ok(ChatMessage {
                    role: parse_role(index, &message.role)?,
                    content: message_text(index, message.content)?,
                    name: message.name,
                    tool_call_id: message.tool_call_id,
                })
            })
            .collect::<Result<Vec<_>, InvalidField>>()?;
        Ok(ChatRequest {
            model: self.model,
            messages,
            sampling,
            max_tokens,
            stop,
            user: self.user,
        })
    }

    /// The request an OpenAI-compatible upstream receives for `request`,
    /// addressed to `upstream_model`.
    pub fn from_canonical(request: &ChatRequest, upstream_model: &str, stream: bool) -> Self {
        let sampling = &request.sampling;
        Self {
            model: upstream_model.to_owned(),
            messages: request
                .messages
                .iter()
                .map(|m| RequestMessage {
                    role: m.role.as_str().to_owned(),
                    content: Some(MessageContent::Text(m.content.clone())),
                    name: m.name.clone(),
                    tool_call_id: m.tool_call_id.clone(),
                })
                .collect(),
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
        }
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
}

impl From<Usage> for WireUsage {
    fn from(usage: Usage) -> Self {
        Self {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            total_tokens: usage.total_tokens(),
        }
    }
}

impl From<WireUsage> for Usage {
    fn from(usage: WireUsage) -> Self {
        Self {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
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
    /// Always null: log-probabilities are not served.
    #[serde(default)]
    pub logprobs: Option<serde_json::Value>,
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
                    content: Some(response.content.clone()),
                    refusal: None,
                },
                finish_reason: Some(response.finish_reason.as_str().to_owned()),
                logprobs: None,
            }],
            usage: Some(response.usage.into()),
            system_fingerprint: None,
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
    /// Always null.
    #[serde(default)]
    pub logprobs: Option<serde_json::Value>,
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
        };
        self.chunk(Self::choice(delta, None), None)
    }

    /// A chunk of new text.
    pub fn content(&self, text: String) -> ChatCompletionChunk {
        let delta = ChunkDelta {
            role: None,
            content: Some(text),
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
        assert_eq!(parsed.messages[1].content, "ab");
        assert_eq!(parsed.messages[2].content, "");
        assert_eq!(parsed.messages[3].tool_call_id.as_deref(), Some("call_1"));
        assert_eq!(parsed.stop, vec!["END"]);
        assert_eq!(parsed.max_tokens, Some(9));
        assert_eq!(parsed.sampling.seed, Some(u64::MAX));
    }

    fn rejected(body: serde_json::Value) -> InvalidField {
        request(body).into_canonical().unwrap_err()
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
        let image = json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]});
        assert_eq!(rejected(image).param, "messages[0].content[0].type");
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
        let usage = serde_json::to_value(factory.usage(Usage {
            prompt_tokens: 3,
            completion_tokens: 4,
        }))
        .unwrap();
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
