//! Policies compiled from the configuration: which checks run on which
//! side, and what they find in a text.

use std::collections::BTreeMap;
use std::sync::Arc;

use regex::Regex;
use switchyard_config::{CheckAction, CheckKind, CheckSide, GuardrailsConfig};

use crate::detect::{self, DataClass};
use crate::injection;
use crate::partial::Prefixes;

/// What a check does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Refuse the request, or end the answer.
    Block,
    /// Replace the match with its kind.
    Mask,
    /// Replace values with placeholders going in; restore them coming out.
    Pseudonymize,
    /// Allow; record and count.
    Flag,
    /// Send the request to the check's `route_to` instead.
    Route,
}

impl Action {
    /// Its name in decisions and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Block => "block",
            Action::Mask => "mask",
            Action::Pseudonymize => "pseudonymize",
            Action::Flag => "flag",
            Action::Route => "route",
        }
    }
}

impl From<CheckAction> for Action {
    fn from(action: CheckAction) -> Self {
        match action {
            CheckAction::Block => Action::Block,
            CheckAction::Mask => Action::Mask,
            CheckAction::Pseudonymize => Action::Pseudonymize,
            CheckAction::Flag => Action::Flag,
            CheckAction::Route => Action::Route,
        }
    }
}

/// What a check looks for.
#[derive(Debug)]
pub(crate) enum Test {
    Data(Vec<DataClass>),
    Deny {
        words: Vec<Regex>,
        /// The words themselves, lower-case, for the stream hold-back.
        word_texts: Vec<String>,
        /// Each pattern, with its automaton for the stream hold-back.
        patterns: Vec<(Regex, Option<Prefixes>)>,
    },
    Injection,
    PromptSize(u32),
    Judge(Box<crate::judge::JudgeSpec>),
    Topic(Box<crate::topic::TopicSpec>),
}

/// A match of a check in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hit {
    /// What fired (a data class, `word`, `pattern`, a heuristic).
    pub found: String,
    /// The data class, for masking and pseudonyms.
    pub class: Option<DataClass>,
    pub start: usize,
    pub end: usize,
}

impl crate::detect::Span for Hit {
    fn range(&self) -> (usize, usize) {
        (self.start, self.end)
    }
}

impl Test {
    /// A prompt-size check's finding for a prompt of `tokens`, when it is
    /// over the limit (a finding with no span: the whole prompt).
    pub(crate) fn oversize(&self, tokens: u64) -> Option<Hit> {
        match self {
            Test::PromptSize(limit) if tokens > u64::from(*limit) => Some(Hit {
                found: format!("size ({tokens} > {limit} tokens)"),
                class: None,
                start: 0,
                end: 0,
            }),
            _ => None,
        }
    }

    /// The matches in `text`, in order, none overlapping.
    pub(crate) fn hits(&self, text: &str) -> Vec<Hit> {
        let mut hits: Vec<Hit> = match self {
            Test::Data(classes) => detect::find(text, classes)
                .into_iter()
                .map(|f| Hit {
                    found: f.class.name().to_owned(),
                    class: Some(f.class),
                    start: f.start,
                    end: f.end,
                })
                .collect(),
            Test::Deny {
                words, patterns, ..
            } => {
                let labelled = words
                    .iter()
                    .map(|re| ("word", re))
                    .chain(patterns.iter().map(|(re, _)| ("pattern", re)));
                labelled
                    .flat_map(|(found, re)| {
                        re.find_iter(text).map(move |m| Hit {
                            found: found.to_owned(),
                            class: None,
                            start: m.start(),
                            end: m.end(),
                        })
                    })
                    .collect()
            }
            Test::Injection => injection::suspicions(text)
                .into_iter()
                .map(|s| Hit {
                    found: s.heuristic.to_owned(),
                    class: None,
                    start: s.start,
                    end: s.end,
                })
                .collect(),
            // Sizes are measured on the whole request, judges asked
            // asynchronously (`Applied::judge_input`).
            Test::PromptSize(_) | Test::Judge(_) | Test::Topic(_) => Vec::new(),
        };
        hits.sort_by_key(|h| (h.start, std::cmp::Reverse(h.end)));
        let mut kept: Vec<Hit> = Vec::with_capacity(hits.len());
        for hit in hits {
            if kept.last().is_none_or(|last| hit.start >= last.end) {
                kept.push(hit);
            }
        }
        kept
    }
}

impl Test {
    /// How many bytes at the end of a streamed `text` must be held back
    /// because a match may still be forming there. A list of words needs
    /// only the longest tail that begins one of them, a pattern the tail
    /// from which its automaton is still alive, data detectors the tail
    /// that may still become a datum (usually the word being written):
    /// ordinary prose flows with little or no delay. Only a pattern the
    /// lazy DFA cannot handle, and the injection heuristics, hold the whole
    /// `window`.
    pub(crate) fn hold_back(&self, text: &str, window: usize) -> usize {
        match self {
            Test::Deny {
                word_texts,
                patterns,
                ..
            } => {
                let lower = text.to_lowercase();
                // Lower-casing may change byte lengths; measured on the
                // lower-case text and then capped at the original's length.
                let words = word_texts
                    .iter()
                    .filter_map(|word| {
                        (1..word.len())
                            .rev()
                            .filter(|&k| word.is_char_boundary(k))
                            .find(|&k| lower.ends_with(&word[..k]))
                    })
                    .max()
                    .unwrap_or(0)
                    .min(text.len());
                let patterns = patterns
                    .iter()
                    .map(|(_, prefixes)| match prefixes {
                        Some(prefixes) => prefixes.forming_tail(text, window),
                        None => window.min(text.len()),
                    })
                    .max()
                    .unwrap_or(0);
                words.max(patterns)
            }
            // Judges read the answer beside the stream, never holding it.
            Test::Judge(_) | Test::Topic(_) | Test::PromptSize(_) => 0,
            Test::Data(classes) => detect::forming_tail(text, classes).min(window),
            Test::Injection => window.min(text.len()),
        }
    }
}

/// One check of a policy.
#[derive(Debug)]
pub struct Check {
    /// Its name.
    pub name: String,
    pub(crate) input: bool,
    pub(crate) output: bool,
    /// What it does when it fires.
    pub action: Action,
    /// Where `route` sends the request.
    pub route_to: Option<String>,
    pub(crate) test: Test,
}

impl Check {
    /// What replaces a masked match.
    pub(crate) fn mask_label(hit: &Hit) -> &'static str {
        hit.class.map_or("[REDACTED]", DataClass::label)
    }
}

/// A named list of checks.
#[derive(Debug)]
pub struct Policy {
    /// Its name.
    pub name: String,
    /// Its checks, in order.
    pub checks: Vec<Check>,
}

/// A configuration problem found while compiling the policies.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{field}: {message}")]
pub struct PolicyError {
    /// The field at fault.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Every policy, and which apply to which model or route.
#[derive(Debug, Default)]
pub struct Guardrails {
    by_name: BTreeMap<String, Arc<Policy>>,
    default: Vec<Arc<Policy>>,
    attached: BTreeMap<String, Vec<Arc<Policy>>>,
    hold_back: usize,
}

/// The policies that apply to one request, with the stream hold-back.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub(crate) policies: Vec<Arc<Policy>>,
    pub(crate) hold_back: usize,
}

impl Applied {
    /// Whether no policy applies (the request skips the guard stages).
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Whether any check reads the answer.
    pub fn checks_output(&self) -> bool {
        self.policies
            .iter()
            .any(|p| p.checks.iter().any(|c| c.output))
    }
}

impl Guardrails {
    /// Compiles the `[guardrails]` table (word lists and patterns become
    /// regular expressions; a pattern that does not compile is an error
    /// naming its field).
    pub fn from_config(config: &GuardrailsConfig) -> Result<Self, PolicyError> {
        let mut compiled: BTreeMap<&str, Arc<Policy>> = BTreeMap::new();
        for (name, policy) in &config.policies {
            let mut checks = Vec::with_capacity(policy.checks.len());
            for (i, check) in policy.checks.iter().enumerate() {
                let field = format!("guardrails.policies.{name}.checks[{i}]");
                let test = match check.kind {
                    CheckKind::Data => {
                        let mut classes = Vec::new();
                        for class in &check.classes {
                            classes.push(DataClass::from_name(class).ok_or_else(|| {
                                PolicyError {
                                    field: format!("{field}.classes"),
                                    message: format!(
                                        "unknown class {class:?}; known: {}",
                                        DataClass::ALL.map(DataClass::name).join(", ")
                                    ),
                                }
                            })?);
                        }
                        if classes.is_empty() {
                            classes = DataClass::ALL.to_vec();
                        }
                        Test::Data(classes)
                    }
                    CheckKind::Deny => {
                        let compile = |pattern: &str, what: &str| {
                            Regex::new(pattern).map_err(|e| PolicyError {
                                field: format!("{field}.{what}"),
                                message: e.to_string(),
                            })
                        };
                        let words = check
                            .words
                            .iter()
                            .map(|w| compile(&format!(r"(?i)\b{}\b", regex::escape(w)), "words"))
                            .collect::<Result<_, _>>()?;
                        let patterns = check
                            .patterns
                            .iter()
                            .map(|p| Ok((compile(p, "patterns")?, Prefixes::new(p))))
                            .collect::<Result<_, _>>()?;
                        Test::Deny {
                            words,
                            word_texts: check.words.iter().map(|w| w.to_lowercase()).collect(),
                            patterns,
                        }
                    }
                    CheckKind::Injection => Test::Injection,
                    CheckKind::PromptSize => Test::PromptSize(check.max_prompt_tokens.unwrap_or(0)),
                    CheckKind::Judge => Test::Judge(Box::new(
                        crate::judge::JudgeSpec::new(
                            check.model.clone().unwrap_or_default(),
                            check.template.as_deref(),
                            check.unsafe_if.as_deref(),
                            std::time::Duration::from_millis(check.timeout_ms),
                            check.fail_open,
                            check.every_chars,
                        )
                        .map_err(|(what, message)| PolicyError {
                            field: format!("{field}.{what}"),
                            message,
                        })?,
                    )),
                    CheckKind::Topic => Test::Topic(Box::new(crate::topic::TopicSpec::new(
                        check.model.clone().unwrap_or_default(),
                        check.examples.clone(),
                        check.threshold,
                        std::time::Duration::from_millis(check.timeout_ms),
                        check.fail_open,
                    ))),
                };
                checks.push(Check {
                    name: check.name.clone().unwrap_or_else(|| {
                        match check.kind {
                            CheckKind::Data => "data",
                            CheckKind::Deny => "deny",
                            CheckKind::Injection => "injection",
                            CheckKind::PromptSize => "prompt_size",
                            CheckKind::Judge => "judge",
                            CheckKind::Topic => "topic",
                        }
                        .to_owned()
                    }),
                    input: matches!(check.on, CheckSide::Input | CheckSide::Both),
                    output: matches!(check.on, CheckSide::Output | CheckSide::Both),
                    action: check.action.into(),
                    route_to: check.route_to.clone(),
                    test,
                });
            }
            compiled.insert(
                name,
                Arc::new(Policy {
                    name: name.clone(),
                    checks,
                }),
            );
        }
        let lookup = |names: &[String], field: &str| -> Result<Vec<Arc<Policy>>, PolicyError> {
            names
                .iter()
                .map(|name| {
                    compiled
                        .get(name.as_str())
                        .cloned()
                        .ok_or_else(|| PolicyError {
                            field: field.to_owned(),
                            message: format!("no policy named {name:?}"),
                        })
                })
                .collect()
        };
        let default = lookup(&config.default, "guardrails.default")?;
        let mut attached = BTreeMap::new();
        for (target, names) in &config.attach {
            attached.insert(
                target.clone(),
                lookup(names, &format!("guardrails.attach.{target}"))?,
            );
        }
        let by_name = compiled
            .into_iter()
            .map(|(name, policy)| (name.to_owned(), policy))
            .collect();
        Ok(Self {
            by_name,
            default,
            attached,
            hold_back: config.hold_back_chars,
        })
    }

    /// The policies a request for `model` (a model or route name) runs:
    /// the defaults, then those attached to it.
    pub fn for_model(&self, model: &str) -> Applied {
        self.for_call(model, std::iter::empty())
    }

    /// The policies a request runs: the defaults, those attached to its
    /// model, then `caller`'s (its tenant's and key's, by name). A name
    /// the configuration no longer defines is skipped with a warning (the
    /// admin API refuses unknown names; a reload may remove one).
    pub fn for_call<'a>(
        &self,
        model: &str,
        caller: impl IntoIterator<Item = &'a String>,
    ) -> Applied {
        // Without any policy configured, a request pays nothing here.
        if self.by_name.is_empty() {
            return Applied::default();
        }
        let mut policies = self.default.clone();
        let attached = self.attached.get(model).into_iter().flatten();
        let named = caller.into_iter().filter_map(|name| {
            let found = self.by_name.get(name);
            if found.is_none() {
                tracing::warn!(policy = %name, "a tenant or key names a guardrail policy the configuration does not define; skipped");
            }
            found
        });
        for policy in attached.chain(named) {
            if !policies.iter().any(|p| Arc::ptr_eq(p, policy)) {
                policies.push(policy.clone());
            }
        }
        Applied {
            policies,
            hold_back: self.hold_back,
        }
    }
}
