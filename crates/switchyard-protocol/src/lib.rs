//! The wire formats Switchyard speaks, as typed structs with explicit
//! conversions to and from the canonical types of `switchyard-core`.
//!
//! Both the server (which receives these formats) and the adapters (which
//! send them upstream) use the same definitions, so a field is spelled once.

pub mod anthropic;
pub mod openai;
pub mod openai_embeddings;
pub mod openai_moderations;
pub mod openai_responses;

/// The `type` of a tool entry that names a tool Switchyard runs itself
/// (`{"type": "switchyard", "name": "calculator"}`), in every front door's
/// `tools` list. The official SDKs pass such entries through unchanged.
pub const GATEWAY_TOOL_TYPE: &str = "switchyard";
