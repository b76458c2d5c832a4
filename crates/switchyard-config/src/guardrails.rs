//! The `[guardrails]` table: policies on what goes in to models and what
//! comes out, and where they apply.
//!
//! ```toml
//! [guardrails]
//! default = ["baseline"]            # every chat request
//! hold_back_chars = 32              # streamed text held back for output checks
//!
//! [guardrails.attach]
//! gpt-4o = ["no-personal-data"]     # a model or route name → more policies
//!
//! [guardrails.policies.baseline]
//! checks = [
//!   { kind = "injection", action = "block" },
//!   { kind = "deny", on = "output", words = ["internal only"], action = "block" },
//! ]
//!
//! [guardrails.policies.no-personal-data]
//! checks = [{ kind = "data", classes = ["email", "card"], action = "pseudonymize" }]
//!
//! [guardrails.policies.personal-data-stays-here]
//! checks = [{ kind = "data", action = "route", route_to = "smollm2-135m-instruct" }]
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

/// The `[guardrails]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardrailsConfig {
    /// Policies by name.
    #[serde(default)]
    pub policies: BTreeMap<String, PolicyConfig>,
    /// Policies every chat request runs.
    #[serde(default)]
    pub default: Vec<String>,
    /// A model or route name → the policies its requests also run.
    #[serde(default)]
    pub attach: BTreeMap<String, Vec<String>>,
    /// Characters of a streamed answer held back so that a match split
    /// across chunks is caught before any of it is sent; also the longest
    /// output match guaranteed to be caught.
    #[serde(default = "default_hold_back")]
    pub hold_back_chars: usize,
}

impl Default for GuardrailsConfig {
    fn default() -> Self {
        Self {
            policies: BTreeMap::new(),
            default: Vec::new(),
            attach: BTreeMap::new(),
            hold_back_chars: default_hold_back(),
        }
    }
}

fn default_hold_back() -> usize {
    32
}

/// One policy: checks run in order.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The checks.
    pub checks: Vec<CheckConfig>,
}

/// What a check looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// Personal data and secrets (`classes`).
    Data,
    /// Words and regular expressions (`words`, `patterns`).
    Deny,
    /// Prompt injection and jailbreak attempts (heuristics).
    Injection,
    /// Prompts longer than `max_prompt_tokens` (estimated).
    PromptSize,
    /// A configured model asked whether the conversation is safe
    /// (`model`, `template`, `unsafe_if`, `timeout_ms`, `fail_open`).
    Judge,
    /// User messages close in meaning to example phrases of a topic, by
    /// the cosine similarity of an embeddings model's vectors (`model`,
    /// `examples`, `threshold`, `timeout_ms`, `fail_open`).
    Topic,
}

/// Which side of the call a check reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckSide {
    /// The request.
    #[default]
    Input,
    /// The answer.
    Output,
    /// Both.
    Both,
}

/// What happens when a check fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckAction {
    /// Refuse the request (400 `content_policy_violation`), or end the
    /// answer (`finish_reason: "content_filter"`).
    Block,
    /// Replace the matched text with its kind (`[EMAIL]`).
    Mask,
    /// Replace each value with a numbered placeholder (`<EMAIL_1>`) on the
    /// way in and put the real value back into the answer: the upstream
    /// never sees it. `data` checks on the input only.
    Pseudonymize,
    /// Let it pass; record and count the decision.
    Flag,
    /// Send the request to `route_to` instead (prompts with personal data
    /// only to local models, say); input checks only.
    Route,
}

/// One check of a policy.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    /// Its name in decisions and metrics; default: the kind.
    pub name: Option<String>,
    /// What it looks for.
    pub kind: CheckKind,
    /// What it reads.
    #[serde(default)]
    pub on: CheckSide,
    /// What happens when it fires.
    pub action: CheckAction,
    /// `data`: which classes (`email`, `phone`, `card`, `iban`, `ip`,
    /// `api_key`, `token`, `secret`); empty: all.
    #[serde(default)]
    pub classes: Vec<String>,
    /// `deny`: words and phrases, matched whole and case-insensitively.
    #[serde(default)]
    pub words: Vec<String>,
    /// `deny`: regular expressions.
    #[serde(default)]
    pub patterns: Vec<String>,
    /// `prompt_size`: the most prompt tokens allowed.
    pub max_prompt_tokens: Option<u32>,
    /// `route`: the model or route that serves the request instead.
    pub route_to: Option<String>,
    /// `judge`: the model (any configured model or route) that judges;
    /// `topic`: the embeddings model that compares.
    pub model: Option<String>,
    /// `topic`: phrases that belong to the topic.
    #[serde(default)]
    pub examples: Vec<String>,
    /// `topic`: the cosine similarity to an example at which a user
    /// message is on the topic.
    #[serde(default = "default_topic_threshold")]
    pub threshold: f32,
    /// `judge`: the prompt (minijinja; `text` is the conversation's user
    /// and tool text on the input, the answer on the output). Default:
    /// asks for one word, safe or unsafe.
    pub template: Option<String>,
    /// `judge` on the output of a streamed answer: asked again each time
    /// this many more characters have streamed, while the stream goes on
    /// (one at a time), besides once on the whole answer before it ends;
    /// 0 judges the whole answer only.
    #[serde(default = "default_judge_every_chars")]
    pub every_chars: usize,
    /// `judge`: a regular expression that, matching the judge's answer,
    /// means unsafe. Default: the word `unsafe`.
    pub unsafe_if: Option<String>,
    /// `judge`, `topic`: how long the model may take.
    #[serde(default = "default_judge_timeout")]
    pub timeout_ms: u64,
    /// `judge`, `topic`: a model that fails or times out lets the request
    /// pass (recorded) instead of refusing it.
    #[serde(default)]
    pub fail_open: bool,
}

fn default_judge_timeout() -> u64 {
    2_000
}

fn default_judge_every_chars() -> usize {
    500
}

fn default_topic_threshold() -> f32 {
    0.6
}

impl GuardrailsConfig {
    /// Every named policy exists, and each check has what its kind needs.
    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        let named = self
            .default
            .iter()
            .map(|name| ("guardrails.default".to_owned(), name))
            .chain(self.attach.iter().flat_map(|(target, names)| {
                names
                    .iter()
                    .map(move |name| (format!("guardrails.attach.{target}"), name))
            }));
        for (field, name) in named {
            if !self.policies.contains_key(name) {
                return Err((
                    field,
                    format!("no policy named {name:?} in [guardrails.policies]"),
                ));
            }
        }
        for (name, policy) in &self.policies {
            for (i, check) in policy.checks.iter().enumerate() {
                let field = format!("guardrails.policies.{name}.checks[{i}]");
                check.validate().map_err(|message| (field, message))?;
            }
        }
        Ok(())
    }
}

impl CheckConfig {
    fn validate(&self) -> Result<(), String> {
        match self.kind {
            CheckKind::Deny if self.words.is_empty() && self.patterns.is_empty() => {
                return Err("a deny check needs `words` or `patterns`".into());
            }
            CheckKind::PromptSize if self.max_prompt_tokens.is_none() => {
                return Err("a prompt_size check needs `max_prompt_tokens`".into());
            }
            CheckKind::PromptSize if self.on != CheckSide::Input => {
                return Err("a prompt_size check reads the input only".into());
            }
            CheckKind::Judge if self.model.is_none() => {
                return Err("a judge check needs `model`".into());
            }
            CheckKind::Judge if !matches!(self.action, CheckAction::Block | CheckAction::Flag) => {
                return Err("a judge check blocks or flags".into());
            }
            CheckKind::Topic if self.model.is_none() || self.examples.is_empty() => {
                return Err(
                    "a topic check needs `model` (an embeddings model) and `examples`".into(),
                );
            }
            CheckKind::Topic if !(self.threshold > 0.0 && self.threshold <= 1.0) => {
                return Err("a topic check's `threshold` is a similarity in (0, 1]".into());
            }
            CheckKind::Topic if self.on != CheckSide::Input => {
                return Err("a topic check reads the input".into());
            }
            CheckKind::Topic if !matches!(self.action, CheckAction::Block | CheckAction::Flag) => {
                return Err("a topic check blocks or flags".into());
            }
            _ => {}
        }
        if self.action == CheckAction::Route {
            if self.route_to.is_none() {
                return Err("a route action needs `route_to`".into());
            }
            if self.on != CheckSide::Input {
                return Err("a route action is for input checks".into());
            }
        }
        if self.action == CheckAction::Pseudonymize
            && (self.kind != CheckKind::Data || self.on != CheckSide::Input)
        {
            return Err("pseudonymize is for data checks on the input".into());
        }
        if self.action == CheckAction::Mask
            && matches!(
                self.kind,
                CheckKind::Injection | CheckKind::PromptSize | CheckKind::Judge | CheckKind::Topic
            )
        {
            return Err(
                format!("a {:?} check cannot mask: block or flag", self.kind).to_lowercase(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn topic(settings: &str) -> Result<(), String> {
        let check: CheckConfig =
            toml::from_str(&format!("kind = \"topic\"\naction = \"block\"\n{settings}")).unwrap();
        check.validate()
    }

    #[test]
    fn topic_checks_need_a_model_examples_and_a_sane_threshold() {
        assert_eq!(topic("model = \"m\"\nexamples = [\"x\"]"), Ok(()));
        assert!(topic("examples = [\"x\"]").is_err());
        assert!(topic("model = \"m\"").is_err());
        assert!(topic("model = \"m\"\nexamples = [\"x\"]\nthreshold = 1.5").is_err());
        assert!(topic("model = \"m\"\nexamples = [\"x\"]\non = \"output\"").is_err());
        let mask = "model = \"m\"\nexamples = [\"x\"]\naction = \"mask\"";
        assert!(
            toml::from_str::<CheckConfig>(&format!("kind = \"topic\"\n{mask}"))
                .unwrap()
                .validate()
                .is_err()
        );
    }
}
