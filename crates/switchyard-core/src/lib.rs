//! Switchyard's core: the canonical chat and embedding types and the
//! [`ChatBackend`] and [`EmbeddingBackend`] traits that every model adapter
//! implements and every higher layer calls.
//!
//! This crate sits below everything else and depends on nothing of
//! Switchyard's own.

pub mod backend;
pub mod chat;
pub mod conversation;
pub mod decision;
pub mod embed;
pub mod error;

pub use backend::{
    BackendInfo, BackendLoad, ChatBackend, ChatStream, Completer, LocalModelControl, ModelStatus,
    Residence, collect_stream,
};
pub use chat::{
    ChatMessage, ChatRequest, ChatResponse, ContentPart, FinishReason, ImageSource,
    JsonSchemaFormat, ResponseFormat, Role, SamplingParams, StreamEvent, TokenLogprob, ToolCall,
    ToolCallDelta, ToolChoice, ToolDefinition, ToolRun, ToolRunEnd, Usage,
};
pub use conversation::{Item, items_to_messages};
pub use decision::{Decision, WindowCheck};
pub use embed::{EmbeddingBackend, EmbeddingRequest, EmbeddingResponse};
pub use error::{BackendError, ErrorKind};
