//! Stage: a conversation longer than its model's context window, fitted
//! to it (`[context]` in the configuration, or a Responses request's
//! `truncation: "auto"`).
//!
//! The prompt is counted with the model's own tokenizer where one is at
//! hand (a loaded local model), else estimated (four characters a token,
//! plus four a message). The system messages at the front are kept, and so
//! are the newest turns; the oldest turns go first, an assistant's tool
//! calls always together with their results. `truncate` drops them;
//! `summarize` puts a summary written by the configured model in their
//! place, keyed by a hash of the turns it stands for and stored, so that
//! later turns of the same conversation reuse it. A summarising cut keeps
//! well under the window (three fifths of it), so that the next turns fit
//! behind the same cut and the same summary.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use switchyard_core::{
    BackendError, ChatMessage, ChatRequest, Completer, Decision, ErrorKind, Role, SamplingParams,
};
use switchyard_governance::Governance;
use switchyard_orchestration::{Gateway, RequestContext};
use tracing::{Instrument, debug};

use crate::PipelineError;
use crate::models::RequestModels;

/// How an overlong conversation is fitted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Fit {
    /// Refused with `context_length_exceeded`.
    #[default]
    Off,
    /// The oldest turns are dropped.
    Truncate,
    /// The oldest turns are replaced by a stored summary.
    Summarize,
}

/// The fitting settings of a configuration.
#[derive(Debug, Clone, Default)]
pub struct Fitting {
    /// Model or route name → how its conversations are fitted.
    pub modes: HashMap<String, Fit>,
    /// For names `modes` does not list.
    pub default: Fit,
    /// Model or route name → its context window in tokens.
    pub windows: HashMap<String, u32>,
    /// The model that writes summaries.
    pub summary_model: Option<String>,
}

impl Fitting {
    /// How conversations for `model` are fitted.
    pub fn mode(&self, model: &str) -> Fit {
        self.modes.get(model).copied().unwrap_or(self.default)
    }
}

/// The share of the budget a summarising cut keeps, so that the next few
/// turns fit behind the same cut and reuse its summary.
const SUMMARIZE_KEEP: f64 = 0.6;

/// Tokens held back for a summary that is still to be written.
const SUMMARY_TOKENS: u64 = 300;

/// Tokens a message costs beyond its text (role, separators), estimated.
const MESSAGE_OVERHEAD: u64 = 4;

/// The instructions a summary model gets.
const SUMMARY_PROMPT: &str = "Summarize the conversation below for the assistant that will continue it. \
Keep names, numbers, facts, decisions, tool results and open questions; leave out pleasantries. \
Write at most 150 words.";

fn estimate(message: &ChatMessage) -> u64 {
    let calls: usize = message
        .tool_calls
        .iter()
        .map(|c| c.name.len() + c.arguments.len())
        .sum();
    ((message.text().len() + calls) as u64).div_ceil(4) + MESSAGE_OVERHEAD
}

/// `messages` from `start` in groups that are dropped whole: a message,
/// or an assistant message with tool calls and the tool results after it.
fn groups(messages: &[ChatMessage], start: usize) -> Vec<std::ops::Range<usize>> {
    let mut groups = Vec::new();
    let mut at = start;
    while at < messages.len() {
        let mut end = at + 1;
        if !messages[at].tool_calls.is_empty() {
            while end < messages.len() && messages[end].role == Role::Tool {
                end += 1;
            }
        }
        groups.push(at..end);
        at = end;
    }
    groups
}

/// One line per message, for the summary model.
fn transcript(messages: &[ChatMessage]) -> String {
    let mut out = String::new();
    for message in messages {
        out.push_str(message.role.as_str());
        out.push_str(": ");
        out.push_str(&message.text());
        for call in &message.tool_calls {
            out.push_str(&format!(" [calls {}({})]", call.name, call.arguments));
        }
        out.push('\n');
    }
    out
}

fn too_long(prompt: u64, budget: u64) -> PipelineError {
    BackendError::invalid_request(format!(
        "the conversation is about {prompt} tokens, more than the {budget} this model's context window leaves for the prompt even without its oldest turns; shorten the newest messages"
    ))
    .with_param("messages")
    .with_code("context_length_exceeded")
    .into()
}

/// Fits `request` to its model's context window, by `mode` (unless the
/// request asked for `truncate` itself, which counts where the
/// configuration says `off`).
pub async fn fit(
    governance: &Governance,
    gateway: &Gateway,
    fitting: &Fitting,
    tenant: &str,
    request: &mut ChatRequest,
    truncation_asked: bool,
    context: &RequestContext,
) -> Result<(), PipelineError> {
    let mode = match fitting.mode(&request.model) {
        Fit::Off if truncation_asked => Fit::Truncate,
        mode => mode,
    };
    let Some(&window) = fitting.windows.get(&request.model) else {
        return Ok(());
    };
    if mode == Fit::Off {
        return Ok(());
    }
    let window = u64::from(window);
    let reserve = request
        .max_tokens
        .map_or_else(|| (window / 4).min(1024), u64::from);
    let budget = window.saturating_sub(reserve);
    let estimated: u64 = request.messages.iter().map(estimate).sum();
    let counted = gateway.count_prompt_tokens(&request.model, request).await;
    let total = counted.unwrap_or(estimated);
    if total <= budget {
        return Ok(());
    }
    // Per-message costs, scaled so that they add up to the exact count
    // where there is one.
    let scale = total as f64 / estimated.max(1) as f64;
    let cost = |message: &ChatMessage| (estimate(message) as f64 * scale).ceil() as u64;
    let fixed = request
        .messages
        .iter()
        .take_while(|m| m.role == Role::System)
        .count();
    let groups = groups(&request.messages, fixed);
    let fixed_cost: u64 = request.messages[..fixed].iter().map(cost).sum();
    let group_costs: Vec<u64> = groups
        .iter()
        .map(|g| request.messages[g.clone()].iter().map(cost).sum())
        .collect();
    // Cost of keeping groups `k..`.
    let kept_from = |k: usize| -> u64 { group_costs[k..].iter().sum() };
    // The kept turns begin with a user's message: some APIs (Anthropic's)
    // refuse a conversation that opens with the assistant.
    let cuts: Vec<usize> = (1..groups.len())
        .filter(|&k| request.messages[groups[k].start].role == Role::User)
        .collect();
    let (dropped, summary, reused) = match mode {
        Fit::Off => return Ok(()),
        Fit::Truncate => {
            let Some(k) = cuts
                .iter()
                .copied()
                .find(|&k| fixed_cost + kept_from(k) <= budget)
            else {
                return Err(too_long(total, budget));
            };
            (k, None, false)
        }
        Fit::Summarize => {
            let summary_model = fitting.summary_model.clone().unwrap_or_default();
            // A hash per cut: the summary model and every message dropped.
            let mut hasher = Sha256::new();
            hasher.update(summary_model.as_bytes());
            let mut hashes = Vec::with_capacity(groups.len());
            for group in &groups {
                for message in &request.messages[group.clone()] {
                    hasher.update(serde_json::to_vec(message).unwrap_or_default());
                }
                hashes.push(hex::encode(hasher.clone().finalize()));
            }
            let store = governance.store();
            let stored: HashMap<String, String> = store
                .summaries(tenant, &hashes)
                .await
                .map_err(|e| BackendError::internal(format!("cannot read summaries: {e}")))?
                .into_iter()
                .collect();
            let summary_cost = |text: &str| (text.len() as u64).div_ceil(4) + MESSAGE_OVERHEAD;
            // The latest cut with a summary already written that fits.
            let reuse = cuts.iter().rev().find_map(|&k| {
                let summary = stored.get(&hashes[k - 1])?;
                (fixed_cost + summary_cost(summary) + kept_from(k) <= budget)
                    .then(|| (k, summary.clone()))
            });
            match reuse {
                Some((k, summary)) => (k, Some(summary), true),
                None => {
                    let target = (budget as f64 * SUMMARIZE_KEEP) as u64;
                    let Some(k) = cuts
                        .iter()
                        .copied()
                        .find(|&k| fixed_cost + SUMMARY_TOKENS + kept_from(k) <= target)
                        .or_else(|| {
                            cuts.iter()
                                .copied()
                                .find(|&k| fixed_cost + SUMMARY_TOKENS + kept_from(k) <= budget)
                        })
                    else {
                        return Err(too_long(total, budget));
                    };
                    // An earlier summary covers part of what goes now.
                    let earlier = (1..k)
                        .rev()
                        .find_map(|j| stored.get(&hashes[j - 1]).map(|s| (j, s.clone())));
                    let (from, mut text) = match earlier {
                        Some((j, summary)) => (
                            groups[j].start,
                            format!("Summary of the conversation before this part: {summary}\n"),
                        ),
                        None => (fixed, String::new()),
                    };
                    text.push_str(&transcript(&request.messages[from..groups[k].start]));
                    let summary = summarize(gateway, context, &summary_model, text)
                        .instrument(tracing::debug_span!("summarize"))
                        .await?;
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
                    store
                        .insert_summary(tenant, &hashes[k - 1], &summary, now)
                        .await
                        .map_err(|e| {
                            BackendError::internal(format!("cannot store a summary: {e}"))
                        })?;
                    (k, Some(summary), false)
                }
            }
        }
    };
    let cut = groups[dropped].start;
    let dropped_messages = cut - fixed;
    let mut messages: Vec<ChatMessage> = request.messages.drain(..fixed).collect();
    let rest: Vec<ChatMessage> = request.messages.drain(cut - fixed..).collect();
    if let Some(summary) = &summary {
        messages.push(ChatMessage::new(
            Role::System,
            format!("Summary of the earlier conversation: {summary}"),
        ));
    }
    messages.extend(rest);
    request.messages = messages;
    debug!(
        dropped_messages,
        total, budget, "conversation fitted to the context window"
    );
    context.trail.note(Decision::Fit {
        mode: match mode {
            Fit::Summarize => "summarize",
            _ => "truncate",
        },
        dropped_messages,
        prompt_tokens: total,
        budget,
        summary: match (&summary, reused) {
            (None, _) => None,
            (Some(_), true) => Some("reused"),
            (Some(_), false) => Some("written"),
        },
    });
    Ok(())
}

async fn summarize(
    gateway: &Gateway,
    context: &RequestContext,
    model: &str,
    transcript: String,
) -> Result<String, PipelineError> {
    let mut request = ChatRequest::new(
        model.to_owned(),
        vec![
            ChatMessage::new(Role::System, SUMMARY_PROMPT),
            ChatMessage::new(Role::User, transcript),
        ],
    );
    request.max_tokens = Some(300);
    request.sampling = SamplingParams {
        temperature: Some(0.0),
        ..SamplingParams::default()
    };
    let models = RequestModels {
        gateway,
        context,
        purpose: "summary",
    };
    let summary = models.complete(request).await.map_err(|error| {
        PipelineError::from(BackendError::new(
            ErrorKind::Upstream,
            format!("the summary model {model} failed: {}", error.message),
        ))
    })?;
    Ok(summary.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_core::ToolCall;

    #[test]
    fn tool_calls_and_their_results_stay_together() {
        let call = ChatMessage {
            tool_calls: vec![ToolCall {
                id: "c1".into(),
                name: "f".into(),
                arguments: "{}".into(),
            }],
            ..ChatMessage::new(Role::Assistant, "")
        };
        let result = ChatMessage {
            tool_call_id: Some("c1".into()),
            ..ChatMessage::new(Role::Tool, "42")
        };
        let messages = vec![
            ChatMessage::new(Role::System, "s"),
            ChatMessage::new(Role::User, "q"),
            call,
            result.clone(),
            result,
            ChatMessage::new(Role::Assistant, "a"),
        ];
        assert_eq!(groups(&messages, 1), vec![1..2, 2..5, 5..6]);
    }
}
