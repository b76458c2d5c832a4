//! Guardrails: the input check before routing (block, mask,
//! pseudonymise, flag), and the output check on the answer, whole or as
//! it streams (through the guard's hold-back window, restoring
//! pseudonymised values). Every check that fires is noted in the
//! request's decision trail and counted.

use std::sync::Arc;

use futures::StreamExt;
use futures::future::BoxFuture;
use switchyard_core::{
    BackendError, ChatRequest, ChatResponse, ChatStream, Decision, FinishReason, StreamEvent,
    ToolCallDelta, ToolRun, Usage,
};
use switchyard_governance::Caller;
use switchyard_guardrails::{Applied, Blocked, OutputGuard, OutputJudges, Passed};
use switchyard_orchestration::{Gateway, RequestContext};
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
    let applied = applied(snapshot, caller, &request.model);
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
            purpose: "input judge",
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

/// The policies a request of `caller` to `model` runs: the defaults, the
/// model's, its tenant's and its key's.
pub(crate) fn applied(snapshot: &Snapshot, caller: &Caller, model: &str) -> Applied {
    let named = match caller {
        Caller::Key(key) => Some(key.tenant.guardrails.iter().chain(&key.key.guardrails)),
        Caller::Anonymous | Caller::Master => None,
    };
    snapshot
        .guardrails
        .for_call(model, named.into_iter().flatten())
}

pub(crate) fn note(context: &RequestContext, decisions: Vec<Decision>) {
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
            answer.tool_runs.clear();
            answer.finish_reason = FinishReason::ContentFilter;
        }
    }
    // Placeholders the model put in tool-call arguments are restored too.
    for call in &mut answer.tool_calls {
        if let Passed::Text(arguments) = guard.whole(&call.arguments) {
            call.arguments = arguments;
        }
    }
    for run in &mut answer.tool_runs {
        shown_run(guard, run);
    }
    note(context, guard.take_decisions());
}

/// The text the guard let out, and whether it blocked the answer (its
/// decisions then noted).
fn released(passed: Passed, guard: &mut OutputGuard, context: &RequestContext) -> (String, bool) {
    match passed {
        Passed::Text(out) => (out, false),
        Passed::Blocked { text, .. } => {
            note(context, guard.take_decisions());
            (text, true)
        }
    }
}

/// What the client is shown of a tool Switchyard ran passes the output
/// checks as the answer does: a part one blocks is withheld.
fn shown_run(guard: &mut OutputGuard, run: &mut ToolRun) {
    let mut check = |text: &mut String| {
        *text = match guard.whole(text) {
            Passed::Text(passed) => passed,
            Passed::Blocked { blocked, .. } => {
                format!("[withheld by guardrail policy `{}`]", blocked.policy)
            }
        };
    };
    check(&mut run.arguments);
    if let Some(end) = &mut run.ended {
        check(&mut end.output);
    }
}

/// A whole answer before the client sees it: the output judges read it
/// (as the model wrote it), and one that blocks empties it
/// (`finish_reason: content_filter`).
pub async fn judge_whole(
    guard: &OutputGuard,
    gateway: &Gateway,
    answer: &mut ChatResponse,
    context: &RequestContext,
) {
    let Some(judges) = guard.judges() else {
        return;
    };
    let models = RequestModels {
        gateway,
        context,
        purpose: "output judge",
    };
    let judged = judges
        .judge(&answer.content, &models)
        .instrument(tracing::debug_span!(
            "guardrails.judge",
            otel.name = "guardrails output judge"
        ))
        .await;
    match judged {
        Ok(decisions) => note(context, decisions),
        Err(mut blocked) => {
            note(context, std::mem::take(&mut blocked.decisions));
            answer.content.clear();
            answer.tool_calls.clear();
            answer.finish_reason = FinishReason::ContentFilter;
        }
    }
}

/// What the streamed guard waits on next.
enum Next {
    Event(Option<Result<StreamEvent, BackendError>>),
    Verdict(Result<Vec<Decision>, Blocked>),
}

/// A streamed answer through the output checks. Text is held back by the
/// guard's window and released as it passes; tool-call arguments have
/// their placeholders restored (a placeholder split across pieces is held
/// until whole); a block sends what came before the match, then
/// `content_filter`, and drops the upstream stream (which cancels the
/// generation). Output judges read the answer beside the stream: every
/// `every_chars` characters (one judgement at a time) and once whole,
/// before the finish goes out; an unsafe verdict ends the stream with
/// `content_filter` at once (what was sent before it cannot be taken
/// back). A blocked stream's usage is estimated from the text produced
/// (four characters a token), as the upstream's own count never arrives.
pub fn streamed(
    mut events: ChatStream,
    mut guard: OutputGuard,
    gateway: Arc<Gateway>,
    context: RequestContext,
    prompt_tokens: u32,
) -> ChatStream {
    Box::pin(async_stream::stream! {
        let judges = guard.judges();
        let every = judges.as_ref().map_or(0, OutputJudges::every_chars);
        let models = RequestModels { gateway: &gateway, context: &context, purpose: "output judge" };
        // The model's text as it came, for the judges and the estimate.
        let mut produced = String::new();
        let mut judged_up_to = 0usize;
        let mut judging: Option<BoxFuture<'_, Result<Vec<Decision>, Blocked>>> = None;
        // Set when a check or a judge ends the answer early.
        let mut cut = false;
        loop {
            let next = match judging.as_mut() {
                Some(verdict) => tokio::select! {
                    biased;
                    verdict = verdict => Next::Verdict(verdict),
                    event = events.next() => Next::Event(event),
                },
                None => Next::Event(events.next().await),
            };
            let event = match next {
                Next::Verdict(Ok(decisions)) => {
                    judging = None;
                    note(&context, decisions);
                    continue;
                }
                Next::Verdict(Err(mut blocked)) => {
                    note(&context, std::mem::take(&mut blocked.decisions));
                    cut = true;
                    break;
                }
                Next::Event(None) => break,
                Next::Event(Some(event)) => event,
            };
            match event {
                Ok(StreamEvent::Delta(text)) => {
                    produced.push_str(&text);
                    if let Some(judges) = &judges
                        && judging.is_none()
                        && every > 0
                        && produced.len() - judged_up_to >= every
                    {
                        judged_up_to = produced.len();
                        let (judges, so_far, models) = (judges.clone(), produced.clone(), &models);
                        judging = Some(Box::pin(async move { judges.judge(&so_far, models).await }));
                    }
                    let (out, blocked) = released(guard.push(&text), &mut guard, &context);
                    if !out.is_empty() {
                        yield Ok(StreamEvent::Delta(out));
                    }
                    if blocked {
                        cut = true;
                        break;
                    }
                }
                Ok(StreamEvent::ToolCall(mut delta)) => {
                    delta.arguments = guard.push_tool_arguments(delta.index, &delta.arguments);
                    if delta.id.is_some() || delta.name.is_some() || !delta.arguments.is_empty() {
                        yield Ok(StreamEvent::ToolCall(delta));
                    }
                }
                Ok(StreamEvent::ToolRun(mut run)) => {
                    // The round's text ends where its calls run: what is
                    // held goes out before them.
                    let (out, blocked) = released(guard.finish(), &mut guard, &context);
                    if !out.is_empty() {
                        yield Ok(StreamEvent::Delta(out));
                    }
                    if blocked {
                        cut = true;
                        break;
                    }
                    shown_run(&mut guard, &mut run);
                    note(&context, guard.take_decisions());
                    yield Ok(StreamEvent::ToolRun(run));
                }
                Ok(StreamEvent::Finish(reason)) => {
                    for (index, arguments) in guard.finish_tool_arguments() {
                        yield Ok(StreamEvent::ToolCall(ToolCallDelta {
                            index,
                            id: None,
                            name: None,
                            arguments,
                        }));
                    }
                    let released = guard.finish();
                    note(&context, guard.take_decisions());
                    // The whole answer is judged before its end goes out; a
                    // judgement of part of it still running is dropped.
                    judging = None;
                    let judged_unsafe = match &judges {
                        Some(judges) => match judges.judge(&produced, &models).await {
                            Ok(decisions) => {
                                note(&context, decisions);
                                false
                            }
                            Err(mut blocked) => {
                                note(&context, std::mem::take(&mut blocked.decisions));
                                true
                            }
                        },
                        None => false,
                    };
                    let (tail, reason) = match released {
                        Passed::Text(tail) if judged_unsafe => (tail, FinishReason::ContentFilter),
                        Passed::Text(tail) => (tail, reason),
                        Passed::Blocked { text, .. } => (text, FinishReason::ContentFilter),
                    };
                    if !tail.is_empty() && !judged_unsafe {
                        yield Ok(StreamEvent::Delta(tail));
                    }
                    yield Ok(StreamEvent::Finish(reason));
                }
                other => yield other,
            }
        }
        if cut {
            drop(judging);
            drop(events);
            yield Ok(StreamEvent::Finish(FinishReason::ContentFilter));
            let completion = produced.chars().count().div_ceil(4);
            yield Ok(StreamEvent::Usage(Usage {
                prompt_tokens,
                completion_tokens: u32::try_from(completion).unwrap_or(u32::MAX),
                ..Usage::default()
            }));
        }
    })
}
