//! The `[context]` table: what happens when a conversation is longer than
//! the context window of the model (or route) it is sent to.
//!
//! ```toml
//! [context]
//! fit = { "gpt-4o-mini" = "truncate", "support" = "summarize" }
//! summary_model = "gpt-4o-mini"   # writes the summaries of dropped turns
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

/// How an overlong conversation is fitted to a context window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FitMode {
    /// Refused with `context_length_exceeded` (the default).
    #[default]
    Off,
    /// The oldest turns are dropped, keeping system messages, the newest
    /// turns and tool calls with their results.
    Truncate,
    /// The oldest turns are replaced by a summary that `summary_model`
    /// writes, stored and reused by later turns.
    Summarize,
}

/// The `[context]` table.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextConfig {
    /// Model or route name → how its conversations are fitted.
    #[serde(default)]
    pub fit: BTreeMap<String, FitMode>,
    /// For names `fit` does not list.
    #[serde(default)]
    pub default: FitMode,
    /// The model or route that summarises dropped turns (`summarize`).
    #[serde(default)]
    pub summary_model: Option<String>,
}

impl ContextConfig {
    /// How conversations for `name` are fitted.
    pub fn mode(&self, name: &str) -> FitMode {
        self.fit.get(name).copied().unwrap_or(self.default)
    }

    /// Checks names against `known` models and routes.
    pub(crate) fn validate(&self, known: impl Fn(&str) -> bool) -> Result<(), (String, String)> {
        if let Some(name) = self.fit.keys().find(|name| !known(name)) {
            return Err((
                format!("context.fit.{name}"),
                "no model or route by this name".into(),
            ));
        }
        let summarizes = self.default == FitMode::Summarize
            || self.fit.values().any(|mode| *mode == FitMode::Summarize);
        match &self.summary_model {
            Some(model) if !known(model) => Err((
                "context.summary_model".into(),
                format!("no model or route named {model:?}"),
            )),
            None if summarizes => Err((
                "context.summary_model".into(),
                "`summarize` needs a `summary_model` to write the summaries".into(),
            )),
            _ => Ok(()),
        }
    }
}

/// The `[conversations]` table: what Switchyard keeps of stored responses
/// and conversations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversationsConfig {
    /// Days stored responses, conversations (counted from their last item)
    /// and summaries are kept; older ones are deleted in the background.
    /// `None`: kept until deleted.
    #[serde(default)]
    pub retention_days: Option<u32>,
    /// Store items with personal data and secrets masked, by the audit
    /// trail's rules (later turns then see the masks, not the values).
    #[serde(default)]
    pub mask: bool,
}
