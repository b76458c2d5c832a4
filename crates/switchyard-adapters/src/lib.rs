//! Switchyard's remote model adapters. Each provider gets one module that
//! translates between the canonical types and the provider's wire format
//! (a [`Wire`]); the one [`HttpAdapter`] turns each into a
//! [`switchyard_core::ChatBackend`] (and, where the provider has one, a
//! [`switchyard_core::EmbeddingBackend`]).

pub mod adapter;
pub mod anthropic;
pub mod bedrock;
mod credential;
pub mod gemini;
mod http;
pub mod openai;
pub mod presets;
pub mod stream;

pub use adapter::{EmbeddingWire, HttpAdapter, Wire};
pub use anthropic::{AnthropicAdapter, AnthropicConfig};
pub use bedrock::{AwsCredentials, BedrockAdapter, BedrockConfig};
pub use credential::Credential;
pub use gemini::{GeminiAdapter, GeminiConfig};
pub use http::{Timeouts, UpstreamTls, ensure_crypto_provider};
pub use openai::{Auth, OpenAiAdapter, OpenAiConfig};
pub use presets::{PRESETS, Preset, Quirks, preset};

/// An adapter could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum AdapterBuildError {
    /// A configured header is not a valid HTTP header.
    #[error("header {name:?}: {reason}")]
    InvalidHeader {
        /// The header name.
        name: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The HTTP client could not be created.
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// A setting is missing or inconsistent.
    #[error("{0}")]
    Config(String),
}
