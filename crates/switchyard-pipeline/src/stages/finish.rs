//! The last stage: what the ledger, the audit trail, the metrics and the
//! log line keep of a call, built from how it ended.

use switchyard_core::{ChatRequest, Usage};
use switchyard_governance::anomaly::AnswerShape;
use switchyard_governance::{Admission, Outcome, Tokens};
use switchyard_orchestration::{CacheStatus, RequestContext, Routed, strategies};
use switchyard_telemetry::trace;

use crate::PipelineError;

/// Token counts as governance counts them.
pub fn tokens(usage: &Usage) -> Tokens {
    Tokens {
        input: u64::from(usage.prompt_tokens),
        output: u64::from(usage.completion_tokens),
        cached: u64::from(usage.cache_read_tokens),
    }
}

/// The outcome of a served call: its route, deployment, usage (when
/// known), and the steps routing took on the way.
pub fn served<T>(routed: &Routed<T>, usage: Option<&Usage>, context: &RequestContext) -> Outcome {
    let span = tracing::Span::current();
    trace::annotate(&span, || {
        [
            ("switchyard.route", routed.route.clone().into()),
            ("switchyard.deployment", routed.deployment.clone().into()),
            ("switchyard.cache", routed.cache.as_str().into()),
        ]
    });
    if let Some(usage) = usage {
        annotate_usage(&span, usage);
    }
    Outcome {
        status: 200,
        deployment: Some(routed.deployment.clone()),
        route: Some(routed.route.clone()),
        cache_hit: routed.cache == CacheStatus::Hit,
        tokens: usage.map(tokens),
        decisions: context.trail.steps(),
        ..Outcome::default()
    }
}

/// The outcome of a failed call, with the steps routing took.
pub fn failed(error: &PipelineError, context: &RequestContext) -> Outcome {
    Outcome {
        status: error.status(),
        error: Some(error.to_string()),
        decisions: context.trail.steps(),
        ..Outcome::default()
    }
}

/// What drift alarms watch of a text answer: its length and whether it
/// refused. `None` for an answer that only called tools.
pub fn answer_shape(text: &str, called_tools: bool) -> Option<AnswerShape> {
    if called_tools && text.trim().is_empty() {
        return None;
    }
    // Refusals say so at the start; a long answer is not scanned whole.
    let head_end = text
        .char_indices()
        .nth(REFUSAL_WINDOW)
        .map_or(text.len(), |(at, _)| at);
    Some(AnswerShape {
        chars: text.chars().count() as u64,
        refused: strategies::refuses(&text[..head_end]),
    })
}

/// Characters at the start of an answer searched for a refusal.
const REFUSAL_WINDOW: usize = 300;

/// Records a failure on the admission and hands the error back.
pub fn fail(admission: Admission, error: PipelineError, context: &RequestContext) -> PipelineError {
    admission.finish(failed(&error, context));
    error
}

/// Token counts on a span.
pub fn annotate_usage(span: &tracing::Span, usage: &Usage) {
    trace::annotate(span, || {
        [
            (
                "gen_ai.usage.input_tokens",
                i64::from(usage.prompt_tokens).into(),
            ),
            (
                "gen_ai.usage.output_tokens",
                i64::from(usage.completion_tokens).into(),
            ),
        ]
    });
}

/// The prompt as the audit trail may keep it (masked when stored).
pub fn prompt_text(request: &ChatRequest) -> String {
    request
        .messages
        .iter()
        .map(|m| format!("{}: {}", m.role.as_str(), m.text()))
        .collect::<Vec<_>>()
        .join("\n")
}
