//! Guardrails: the input check before routing (block, mask,
//! pseudonymise, flag), and the output check on the answer, whole or as
//! it streams (through the guard's hold-back window, restoring
//! pseudonymised values). Every check that fires is noted in the
//! request's decision trail and counted.

use futures::StreamExt;
use switchyard_core::{
    ChatRequest, ChatResponse, ChatStream, Decision, FinishReason, StreamEvent, Usage,
};
use switchyard_governance::Caller;
use switchyard_guardrails::{OutputGuard, Passed};
use switchyard_orchestration::RequestContext;
use switchyard_telemetry::metrics;

use tracing::Instrument;

use crate::models::RequestModels;
use crate::{PipelineError, Snapshot};

/// Runs the input checks that apply to `request`'s model and `caller`
/// (its tenant's and key's policies), then their
/// judges (side by side, through the snapshot's gateway); returns the
/// guard its answer goes through, if any.
pub async fn input(
    snapshot: &Snapshot,
    caller: &Caller,
    request: &mut ChatRequest,
    context: &RequestContext,
) -> Result<Option<OutputGuard>, PipelineError> {
    let named = match caller {
        Caller::Key(key) => Some(key.tenant.guardrails.iter().chain(&key.key.guardrails)),
        Caller::Anonymous | Caller::Master => None,
    };
    let applied = snapshot
        .guardrails
        .for_call(&request.model, named.into_iter().flatten());
    if applied.is_empty() {
        return Ok(None);
    }
    let span = tracing::debug_span!("guardrails.input", otel.name = "guardrails input");
    let checked = span.in_scope(|| applied.check_input(request));
    let outcome = match checked {
        Ok(outcome) => outcome,
        Err(mut blocked) => {
            note(context, std::mem::take(&mut blocked.decisions));
            return Err(PipelineError::ContentPolicy(blocked));
        }
    };
    note(context, outcome.decisions);
    if applied.needs_models() {
        let models = RequestModels {
            gateway: &snapshot.gateway,
            context,
        };
        let judged = applied
            .judge_input(request, &models)
            .instrument(tracing::debug_span!(
                "guardrails.judge",
                otel.name = "guardrails judge"
            ))
            .await;
        match judged {
            Ok(decisions) => note(context, decisions),
            Err(mut blocked) => {
                note(context, std::mem::take(&mut blocked.decisions));
                return Err(PipelineError::ContentPolicy(blocked));
            }
        }
    }
    Ok(applied.output_guard(outcome.restorer))
}

fn note(context: &RequestContext, decisions: Vec<Decision>) {
    for decision in decisions {
        if let Decision::Guardrail {
            policy,
            check,
            action,
            ..
        } = &decision
        {
            metrics().guardrail_decision(policy, check, action);
        }
        context.trail.note(decision);
    }
}

/// A whole answer through the output checks: masked and restored, or cut
/// where a block fired (`finish_reason: content_filter`).
pub fn whole(guard: &mut OutputGuard, answer: &mut ChatResponse, context: &RequestContext) {
    let _span =
        tracing::debug_span!("guardrails.output", otel.name = "guardrails output").entered();
    match guard.whole(&answer.content) {
        Passed::Text(text) => answer.content = text,
        Passed::Blocked { text, .. } => {
            answer.content = text;
            answer.tool_calls.clear();
            answer.finish_reason = FinishReason::ContentFilter;
        }
    }
    // Placeholders the model put in tool-call arguments are restored too.
    for call in &mut answer.tool_calls {
        if let Passed::Text(arguments) = guard.whole(&call.arguments) {
            call.arguments = arguments;
        }
    }
    note(context, guard.take_decisions());
}

/// A streamed answer through the output checks. Text is held back by the
/// guard's window and released as it passes; a block sends what came
/// before the match, then `content_filter`, and drops the upstream stream
/// (which cancels the generation). A blocked stream's usage is estimated
/// from the text produced (four characters a token), as the upstream's own
/// count never arrives.
pub fn streamed(
    mut events: ChatStream,
    mut guard: OutputGuard,
    context: RequestContext,
    prompt_tokens: u32,
) -> ChatStream {
    Box::pin(async_stream::stream! {
        let mut produced_chars = 0usize;
        while let Some(event) = events.next().await {
            match event {
                Ok(StreamEvent::Delta(text)) => {
                    produced_chars += text.chars().count();
                    match guard.push(&text) {
                        Passed::Text(out) => {
                            if !out.is_empty() {
                                yield Ok(StreamEvent::Delta(out));
                            }
                        }
                        Passed::Blocked { text, .. } => {
                            note(&context, guard.take_decisions());
                            if !text.is_empty() {
                                yield Ok(StreamEvent::Delta(text));
                            }
                            drop(events);
                            yield Ok(StreamEvent::Finish(FinishReason::ContentFilter));
                            let completion = produced_chars.div_ceil(4);
                            yield Ok(StreamEvent::Usage(Usage {
                                prompt_tokens,
                                completion_tokens: u32::try_from(completion).unwrap_or(u32::MAX),
                                ..Usage::default()
                            }));
                            return;
                        }
                    }
                }
                Ok(StreamEvent::Finish(reason)) => {
                    match guard.finish() {
                        Passed::Text(out) => {
                            if !out.is_empty() {
                                yield Ok(StreamEvent::Delta(out));
                            }
                            note(&context, guard.take_decisions());
                            yield Ok(StreamEvent::Finish(reason));
                        }
                        Passed::Blocked { text, .. } => {
                            note(&context, guard.take_decisions());
                            if !text.is_empty() {
                                yield Ok(StreamEvent::Delta(text));
                            }
                            yield Ok(StreamEvent::Finish(FinishReason::ContentFilter));
                        }
                    }
                }
                other => yield other,
            }
        }
    })
}
