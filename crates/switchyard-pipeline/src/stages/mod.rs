//! The stages of a model call, in the order they run. Each is a small
//! unit with one job; an operation (see `chat` and `embeddings`) is the
//! list of its stages.

pub mod admit;
pub mod authenticate;
pub mod code_assistant;
pub mod finish;
pub mod fit;
pub mod ground;
pub mod guard;
pub mod history;
pub mod meter;
mod search_tool;
pub mod tools;

/// The tenant whose collections keyless callers (authentication off, the
/// master key) work with.
pub const DEFAULT_TENANT: &str = "default";
