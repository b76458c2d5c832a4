//! Switchyard's embedded engine: GGUF chat models run in-process on
//! llama.cpp (through the `llama-cpp-2` bindings).
//!
//! The model runs on its own thread behind a bounded queue; the async side
//! only templates, tokenizes (on the blocking pool) and forwards events.
//! This crate is the heaviest to compile, so it stands alone: edits elsewhere
//! never rebuild llama.cpp.

mod engine;
mod grammar;
mod prefix_cache;
mod repetition;
mod residency;
mod sampler;
mod scheduler;
mod stop;
pub mod template;
mod tool_prompt;
mod tools;
mod utf8;

pub use engine::{EngineConfig, EngineError, KeepAlive, LocalEngine};
pub use residency::{MemoryBudget, ReserveError, UnloadReason};
