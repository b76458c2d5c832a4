//! Switchyard's guardrails: policies on what a request may send to a
//! model and what may come back.
//!
//! - [`detect`]: personal data and secrets (emails, phones, cards, IBANs,
//!   IP addresses, keys, tokens), with their class and offsets;
//! - [`injection`]: prompt-injection and jailbreak heuristics;
//! - [`Guardrails`]: the configured policies and where they apply;
//! - [`Applied::check_input`]: blocks, masks, pseudonymises or flags a
//!   request before routing; [`Applied::judge_input`] asks the checks that
//!   need a model (judges, topics by embedding similarity);
//! - [`OutputGuard`]: checks an answer as it streams, through a bounded
//!   hold-back window, and restores pseudonymised values.
//!
//! Every check that fires is a typed [`switchyard_core::Decision`] for the
//! audit trail, with offsets and never the matched text.

pub mod detect;
pub mod injection;
mod input;
mod judge;
mod output;
mod partial;
mod policy;
mod topic;

pub use input::{Blocked, CATEGORIES, Flag, InputOutcome, Restorer};
pub use judge::{DEFAULT_JUDGE_TEMPLATE, DEFAULT_OUTPUT_JUDGE_TEMPLATE, OutputJudges};
pub use output::{OutputGuard, Passed};
pub use policy::{Action, Applied, Check, Guardrails, Policy, PolicyError};

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
