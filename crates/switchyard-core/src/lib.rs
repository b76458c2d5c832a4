//! Switchyard's core: the canonical chat types and the [`ChatBackend`] trait
//! that every model adapter implements and every higher layer calls.
//!
//! This crate sits below everything else and depends on nothing of
//! Switchyard's own.

pub mod backend;
pub mod chat;
pub mod error;

pub use backend::{BackendInfo, ChatBackend, ChatStream, collect_stream};
pub use chat::{
    ChatMessage, ChatRequest, ChatResponse, FinishReason, Role, SamplingParams, StreamEvent, Usage,
};
pub use error::{BackendError, ErrorKind};
