//! Switchyard's remote model adapters. Each provider gets one module that
//! translates between the canonical types and the provider's wire format,
//! and implements [`switchyard_core::ChatBackend`].

mod http;
pub mod openai;

pub use openai::{AdapterBuildError, OpenAiAdapter, OpenAiConfig};
