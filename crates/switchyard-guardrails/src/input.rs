//! Input checks: what a request may send upstream. Runs before routing,
//! on every text the request carries (message parts and tool-call
//! arguments).

use std::collections::HashMap;

use switchyard_core::{ChatRequest, ContentPart, Decision, Role};

use crate::detect::{self, DataClass};
use crate::policy::{Action, Applied, Check, Hit, Test};

/// A request or answer a check refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Blocked {
    /// The policy.
    pub policy: String,
    /// The check.
    pub check: String,
    /// What it found.
    pub found: String,
    /// Every decision up to and including the block.
    pub decisions: Vec<Decision>,
}

impl Blocked {
    /// The client's message: which policy and check, never the text.
    pub fn message(&self) -> String {
        format!(
            "the request was refused by guardrail policy `{}` (check `{}`: {})",
            self.policy, self.check, self.found
        )
    }
}

/// Placeholders sent upstream in place of personal data, and the values
/// they stand for, to put back into the answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Restorer {
    /// (placeholder, original), in the order they were made.
    pairs: Vec<(String, String)>,
    by_value: HashMap<(DataClass, String), usize>,
    counts: HashMap<DataClass, usize>,
}

impl Restorer {
    /// The placeholder for `value` (the same value gets the same one).
    fn placeholder(&mut self, class: DataClass, value: &str) -> String {
        if let Some(&i) = self.by_value.get(&(class, value.to_owned())) {
            return self.pairs[i].0.clone();
        }
        let n = self.counts.entry(class).or_insert(0);
        *n += 1;
        let placeholder = format!("<{}_{}>", class.stem(), n);
        self.by_value
            .insert((class, value.to_owned()), self.pairs.len());
        self.pairs.push((placeholder.clone(), value.to_owned()));
        placeholder
    }

    /// Whether any value was replaced.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// `text` with every placeholder replaced by its value.
    pub fn restore(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (placeholder, value) in &self.pairs {
            if out.contains(placeholder.as_str()) {
                out = out.replace(placeholder.as_str(), value);
            }
        }
        out
    }

    /// The longest placeholder, for the stream hold-back.
    pub(crate) fn longest(&self) -> usize {
        self.pairs.iter().map(|(p, _)| p.len()).max().unwrap_or(0)
    }
}

/// What the input checks did to a request that may go on.
#[derive(Debug, Default)]
pub struct InputOutcome {
    /// The decisions taken, in order.
    pub decisions: Vec<Decision>,
    /// The values pseudonymised, to restore in the answer.
    pub restorer: Restorer,
    /// Where a `route` check sent the request (the first that fired).
    pub rerouted: Option<String>,
}

pub(crate) fn decision(
    policy: &str,
    check: &Check,
    side: &'static str,
    hit: &Hit,
    message: Option<usize>,
) -> Decision {
    Decision::Guardrail {
        policy: policy.to_owned(),
        check: check.name.clone(),
        action: check.action.as_str(),
        side,
        found: hit.found.clone(),
        message,
        start: hit.start,
        end: hit.end,
    }
}

/// Rough prompt size: four characters a token, the estimate admission uses.
fn estimated_tokens(text: &str) -> u64 {
    text.chars().count().div_ceil(4) as u64
}

impl Applied {
    /// What every input-side check finds in `text`, for moderation
    /// (nothing is rewritten, nothing refused).
    pub fn moderate(&self, text: &str) -> Vec<Flag> {
        let mut flags = Vec::new();
        for policy in &self.policies {
            for check in policy.checks.iter().filter(|c| c.input) {
                let hits = match check.test {
                    // Asked by `moderate_with_models`.
                    Test::Judge(_) | Test::Topic(_) => continue,
                    Test::PromptSize(_) => check
                        .test
                        .oversize(estimated_tokens(text))
                        .into_iter()
                        .collect(),
                    _ => check.test.hits(text),
                };
                for hit in hits {
                    flags.push(Flag {
                        policy: policy.name.clone(),
                        check: check.name.clone(),
                        category: category(&check.test, hit.class),
                        found: hit.found,
                    });
                }
            }
        }
        flags
    }

    /// Runs the input checks over `request`, rewriting what they mask or
    /// pseudonymise; `Err` when one blocks it.
    pub fn check_input(&self, request: &mut ChatRequest) -> Result<InputOutcome, Blocked> {
        self.check_messages(request, false)
    }

    /// Runs the input checks over a tool's result before a model reads
    /// it: what they mask is masked, what they would pseudonymise is
    /// masked too (its placeholders could not be told from the user's),
    /// routing and size checks do not apply. The result as checked and
    /// the decisions; `Err` when a check blocks it.
    pub fn check_tool_result(&self, result: String) -> Result<(String, Vec<Decision>), Blocked> {
        let mut request = ChatRequest::new(
            String::new(),
            vec![switchyard_core::ChatMessage::new(Role::Tool, result)],
        );
        let outcome = self.check_messages(&mut request, true)?;
        let checked = request
            .messages
            .pop()
            .map(|message| message.text())
            .unwrap_or_default();
        Ok((checked, outcome.decisions))
    }

    fn check_messages(
        &self,
        request: &mut ChatRequest,
        tool_result: bool,
    ) -> Result<InputOutcome, Blocked> {
        let mut outcome = InputOutcome::default();
        for policy in &self.policies {
            for check in policy.checks.iter().filter(|c| c.input) {
                if let Test::PromptSize(_) = check.test {
                    if tool_result {
                        continue;
                    }
                    let tokens = request
                        .messages
                        .iter()
                        .map(|m| estimated_tokens(&m.text()))
                        .sum();
                    if let Some(hit) = check.test.oversize(tokens) {
                        outcome
                            .decisions
                            .push(decision(&policy.name, check, "input", &hit, None));
                        match check.action {
                            Action::Block => {
                                return Err(blocked(&policy.name, check, &hit, outcome.decisions));
                            }
                            Action::Route if outcome.rerouted.is_none() => {
                                outcome.rerouted = check.route_to.clone();
                            }
                            _ => {}
                        }
                    }
                    continue;
                }
                for (index, message) in request.messages.iter_mut().enumerate() {
                    // Injection comes from what users and tools bring; a
                    // system prompt saying "never reveal your system prompt"
                    // is the operator's own.
                    if matches!(check.test, Test::Injection)
                        && !matches!(message.role, Role::User | Role::Tool)
                    {
                        continue;
                    }
                    let texts = message
                        .content
                        .iter_mut()
                        .filter_map(|part| match part {
                            ContentPart::Text(text) => Some(text),
                            ContentPart::Image { .. } => None,
                        })
                        .chain(message.tool_calls.iter_mut().map(|c| &mut c.arguments));
                    for text in texts {
                        let hits = check.test.hits(text);
                        if hits.is_empty() {
                            continue;
                        }
                        for hit in &hits {
                            outcome.decisions.push(decision(
                                &policy.name,
                                check,
                                "input",
                                hit,
                                Some(index),
                            ));
                        }
                        match check.action {
                            Action::Block => {
                                return Err(blocked(
                                    &policy.name,
                                    check,
                                    &hits[0],
                                    outcome.decisions,
                                ));
                            }
                            Action::Flag => {}
                            Action::Route if tool_result => {}
                            Action::Route => {
                                if outcome.rerouted.is_none() {
                                    outcome.rerouted = check.route_to.clone();
                                }
                            }
                            Action::Mask | Action::Pseudonymize if tool_result => {
                                *text = detect::replace(text, &hits, |hit| {
                                    Check::mask_label(hit).to_owned()
                                });
                            }
                            Action::Mask => {
                                *text = detect::replace(text, &hits, |hit| {
                                    Check::mask_label(hit).to_owned()
                                });
                            }
                            Action::Pseudonymize => {
                                let restorer = &mut outcome.restorer;
                                let original: &str = text;
                                *text = detect::replace(original, &hits, |hit| match hit.class {
                                    Some(class) => {
                                        restorer.placeholder(class, &original[hit.start..hit.end])
                                    }
                                    None => Check::mask_label(hit).to_owned(),
                                });
                            }
                        }
                    }
                }
            }
        }
        if let Some(target) = &outcome.rerouted {
            outcome.decisions.push(Decision::Rule {
                from: std::mem::replace(&mut request.model, target.clone()),
                to: target.clone(),
                similarity: None,
            });
        }
        Ok(outcome)
    }
}

/// What a check found, for moderation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    /// The policy.
    pub policy: String,
    /// The check.
    pub check: String,
    /// The moderation category it counts under (see [`CATEGORIES`]).
    pub category: &'static str,
    /// What fired: a data class, `word`, `pattern`, a heuristic, a size.
    pub found: String,
}

/// The moderation categories the checks report under.
pub const CATEGORIES: [&str; 7] = [
    "personal_data",
    "secrets",
    "prompt_injection",
    "denied_content",
    "prompt_size",
    "judged_unsafe",
    "denied_topic",
];

pub(crate) fn category(test: &Test, class: Option<DataClass>) -> &'static str {
    match (test, class) {
        (Test::Data(_), Some(DataClass::Token | DataClass::ApiKey | DataClass::Secret)) => {
            "secrets"
        }
        (Test::Data(_), _) => "personal_data",
        (Test::Injection, _) => "prompt_injection",
        (Test::Deny { .. }, _) => "denied_content",
        (Test::PromptSize(_), _) => "prompt_size",
        (Test::Judge(_), _) => "judged_unsafe",
        (Test::Topic(_), _) => "denied_topic",
    }
}

fn blocked(policy: &str, check: &Check, hit: &Hit, decisions: Vec<Decision>) -> Blocked {
    Blocked {
        policy: policy.to_owned(),
        check: check.name.clone(),
        found: hit.found.clone(),
        decisions,
    }
}
