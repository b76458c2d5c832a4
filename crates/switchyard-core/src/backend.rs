//! The model-adapter interface: the only thing the layers above know about a
//! backend.

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

use crate::chat::{
    ChatRequest, ChatResponse, FinishReason, StreamEvent, ToolCall, ToolCallDelta, Usage,
};
use crate::error::{BackendError, ErrorKind};

/// A streamed answer. Dropping it cancels the work behind it: the local
/// engine stops generating, a remote call's connection is closed.
pub type ChatStream = BoxStream<'static, Result<StreamEvent, BackendError>>;

/// What a backend is, for listings and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendInfo {
    /// The adapter kind, e.g. `local` or `openai`.
    pub kind: &'static str,
    /// The model name the backend itself uses (a GGUF file's model, an
    /// upstream model id).
    pub upstream_model: String,
    /// Who serves it, for `/v1/models`' `owned_by`.
    pub owned_by: String,
}

/// The work a backend that runs its own compute (the embedded engine) has
/// queued and running, and the tokens it has processed since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendLoad {
    /// Requests waiting for a slot.
    pub queued: u64,
    /// Sequences being generated.
    pub running: u64,
    /// Prompt tokens evaluated.
    pub prompt_tokens: u64,
    /// Prompt tokens served from a prompt cache instead of being evaluated.
    pub cached_prompt_tokens: u64,
    /// Requests whose answer a grammar constrained (structured output).
    pub constrained_requests: u64,
    /// Tokens generated.
    pub generated_tokens: u64,
    /// Whether the model is in memory, for models loaded on demand.
    pub residency: Option<ModelStatus>,
}

/// Where a model that is loaded on demand is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Residence {
    /// Not in memory: its next request loads it.
    Unloaded,
    /// Being loaded (or waiting for room to be).
    Loading,
    /// In memory, serving.
    Loaded,
    /// Its load failed; it cannot serve.
    Failed,
}

impl Residence {
    /// The word `/v1/models` and `/readyz` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unloaded => "unloaded",
            Self::Loading => "loading",
            Self::Loaded => "loaded",
            Self::Failed => "failed",
        }
    }
}

/// A local model's residence, footprint and load history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelStatus {
    /// Loaded or not.
    pub state: Residence,
    /// Bytes it holds under the memory budget while loaded (an estimate
    /// made from its file and settings), else 0.
    pub memory_bytes: u64,
    /// Times it was loaded.
    pub loads: u64,
    /// Times it was unloaded after its `keep_alive`.
    pub unloads_idle: u64,
    /// Times it was unloaded to make room for another model.
    pub unloads_memory: u64,
    /// Times an operator unloaded it.
    pub unloads_admin: u64,
}

/// An operator's hold on a model that is loaded on demand (the embedded
/// engine's models).
pub trait LocalModelControl: Send + Sync {
    /// Where it is now.
    fn status(&self) -> ModelStatus;
    /// Loads it now (waiting for room under the memory budget).
    fn load_now(&self) -> BoxFuture<'_, Result<ModelStatus, BackendError>>;
    /// Unloads it: running requests finish, then its memory is freed.
    fn unload_now(&self) -> ModelStatus;
}

/// Models reached on a caller's behalf for results that are used, not
/// shown: the query rewrite of grounding, a guardrail judge's verdict, the
/// vectors of a topic check. The request path implements it over its
/// gateway, so those calls are routed, retried and traced like any other.
pub trait Completer: Send + Sync {
    /// Answers `request` whole and returns its text.
    fn complete(&self, request: ChatRequest) -> BoxFuture<'_, Result<String, BackendError>>;

    /// Embeds `inputs` with the embeddings model `model`, one vector each.
    fn embed<'a>(
        &'a self,
        model: &'a str,
        inputs: Vec<String>,
    ) -> BoxFuture<'a, Result<Vec<Vec<f32>>, BackendError>>;
}

/// A model backend: generate a chat completion, whole or as a stream.
///
/// Errors that happen before the first token (bad request, full queue,
/// upstream refusal) come back from the returned future, so that the caller
/// can still answer with a proper status code or fall back; errors after it
/// arrive inside the stream.
pub trait ChatBackend: Send + Sync + 'static {
    /// Describes the backend.
    fn info(&self) -> BackendInfo;

    /// Whether the backend can take requests now (model loaded, and so on).
    fn is_ready(&self) -> bool {
        true
    }

    /// Whether the backend times its own waits on the network (with
    /// `switchyard_telemetry::clock::network_wait`), so that the caller
    /// does not count the whole call as time spent upstream.
    fn times_network_waits(&self) -> bool {
        false
    }

    /// Its queue and counters, for backends that schedule their own
    /// compute; remote APIs have none to report.
    fn load(&self) -> Option<BackendLoad> {
        None
    }

    /// Load and unload control, for models loaded on demand.
    fn residency(&self) -> Option<&dyn LocalModelControl> {
        None
    }

    /// Tokens `request`'s prompt takes in the backend's own tokenizer, its
    /// chat template applied, where the backend has one at hand (a loaded
    /// local model); `None` leaves the caller to estimate.
    fn count_prompt_tokens(&self, _request: &ChatRequest) -> BoxFuture<'_, Option<u64>> {
        Box::pin(async { None })
    }

    /// Starts a streamed completion.
    fn chat_stream(&self, request: ChatRequest) -> BoxFuture<'_, Result<ChatStream, BackendError>>;

    /// A whole completion. The default collects [`ChatBackend::chat_stream`];
    /// remote adapters override it to make a non-streaming upstream call.
    fn chat(&self, request: ChatRequest) -> BoxFuture<'_, Result<ChatResponse, BackendError>> {
        let model = self.info().upstream_model;
        Box::pin(async move {
            let stream = self.chat_stream(request).await?;
            collect_stream(model, stream).await
        })
    }
}

/// Folds a stream into a whole response. A stream that ends without saying
/// why is an upstream failure, not a silent success.
pub async fn collect_stream(
    model: String,
    mut stream: ChatStream,
) -> Result<ChatResponse, BackendError> {
    let mut content = String::new();
    let mut tool_calls: Vec<ToolCall> = Vec::new();
    let mut finish_reason: Option<FinishReason> = None;
    let mut usage = Usage::default();
    while let Some(event) = stream.next().await {
        match event? {
            StreamEvent::Delta(text) => content.push_str(&text),
            StreamEvent::ToolCall(delta) => append_tool_call(&mut tool_calls, delta),
            StreamEvent::Finish(reason) => finish_reason = Some(reason),
            StreamEvent::Usage(counts) => usage = counts,
            StreamEvent::ToolRun(_) => {}
        }
    }
    let finish_reason = finish_reason.ok_or_else(|| {
        BackendError::new(
            ErrorKind::Upstream,
            "the backend's stream ended before it reported a finish reason",
        )
    })?;
    Ok(ChatResponse {
        model,
        content,
        tool_calls,
        finish_reason,
        usage,
        logprobs: None,
        tool_runs: Vec::new(),
    })
}

/// Adds a streamed piece to the call it belongs to.
fn append_tool_call(calls: &mut Vec<ToolCall>, delta: ToolCallDelta) {
    let index = delta.index as usize;
    while calls.len() <= index {
        calls.push(ToolCall {
            id: String::new(),
            name: String::new(),
            arguments: String::new(),
        });
    }
    let call = &mut calls[index];
    if let Some(id) = delta.id {
        call.id = id;
    }
    if let Some(name) = delta.name {
        call.name.push_str(&name);
    }
    call.arguments.push_str(&delta.arguments);
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;

    #[tokio::test]
    async fn collect_joins_deltas_and_keeps_usage() {
        let events = vec![
            Ok(StreamEvent::Delta("Hello".into())),
            Ok(StreamEvent::Delta(", world".into())),
            Ok(StreamEvent::Finish(FinishReason::Length)),
            Ok(StreamEvent::Usage(Usage::new(3, 2))),
        ];
        let response = collect_stream("m".into(), stream::iter(events).boxed())
            .await
            .unwrap();
        assert_eq!(response.content, "Hello, world");
        assert_eq!(response.finish_reason, FinishReason::Length);
        assert_eq!(response.usage.total_tokens(), 5);
    }

    #[tokio::test]
    async fn collect_assembles_streamed_tool_calls() {
        let piece = |index, id: Option<&str>, name: Option<&str>, arguments: &str| {
            Ok(StreamEvent::ToolCall(ToolCallDelta {
                index,
                id: id.map(str::to_owned),
                name: name.map(str::to_owned),
                arguments: arguments.to_owned(),
            }))
        };
        let events = vec![
            piece(0, Some("call_a"), Some("weather"), ""),
            piece(0, None, None, "{\"city\":"),
            piece(1, Some("call_b"), Some("time"), "{}"),
            piece(0, None, None, "\"Oslo\"}"),
            Ok(StreamEvent::Finish(FinishReason::ToolCalls)),
        ];
        let response = collect_stream("m".into(), stream::iter(events).boxed())
            .await
            .unwrap();
        assert_eq!(response.tool_calls.len(), 2);
        assert_eq!(response.tool_calls[0].id, "call_a");
        assert_eq!(response.tool_calls[0].arguments, "{\"city\":\"Oslo\"}");
        assert_eq!(response.tool_calls[1].name, "time");
        assert_eq!(response.finish_reason, FinishReason::ToolCalls);
    }

    #[tokio::test]
    async fn collect_rejects_a_stream_without_finish() {
        let events = vec![Ok(StreamEvent::Delta("cut".into()))];
        let error = collect_stream("m".into(), stream::iter(events).boxed())
            .await
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::Upstream);
    }

    #[tokio::test]
    async fn collect_passes_errors_through() {
        let events = vec![
            Ok(StreamEvent::Delta("a".into())),
            Err(BackendError::new(ErrorKind::Timeout, "slow")),
        ];
        let error = collect_stream("m".into(), stream::iter(events).boxed())
            .await
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::Timeout);
    }
}
