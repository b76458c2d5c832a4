//! The tool loop: tools Switchyard runs itself (`{"type": "switchyard",
//! "name": ...}` in a request's tools, or attached to its model or route
//! by `[tools.attach]`), around routing.
//!
//! The model is offered their definitions beside the client's own
//! function tools. While its answer calls only Switchyard's tools, they run
//! (in parallel, each under the call timeout), their results go back to the
//! model as tool messages, and the model is asked again, up to
//! `max_steps` rounds; then the loop stops with a `length` finish and says
//! so. An answer that calls any of the client's tools goes back to the
//! client as it would without the loop (Switchyard's calls in that turn are
//! dropped: the client could not give their results back). Every call is a
//! step of the audit trail (arguments masked there), a span, and a metric;
//! every round's tokens are the request's, billed at the deployment that
//! answered it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use switchyard_core::{
    BackendError, ChatMessage, ChatRequest, ChatResponse, ChatStream, ContentPart, Decision,
    ErrorKind, FinishReason, Role, StreamEvent, ToolCall, ToolCallDelta, ToolChoice, ToolRun,
    ToolRunEnd, Usage,
};
use switchyard_guardrails::Applied;
use switchyard_orchestration::{Gateway, RequestContext, Routed};
use switchyard_telemetry::metrics::metrics;
use switchyard_tools::{Tool, ToolError, ToolUser};
use tracing::Instrument;

use super::search_tool::SearchTool;
use crate::{PipelineError, Snapshot};
use switchyard_retrieval::grounding::Grounded;

/// The Switchyard tools one request may call, and the loop's limits.
pub(crate) struct ToolPlan {
    tools: BTreeMap<String, Arc<dyn Tool>>,
    /// The request's `search` tool, whose passages become citations.
    search: Option<Arc<SearchTool>>,
    max_steps: usize,
    call_timeout: Duration,
    /// The request's guardrail policies, which screen every tool result
    /// before it goes back to the model; `None` when none apply.
    results_guard: Option<Applied>,
}

/// The request's Switchyard tools (asked for, and attached to its model),
/// their definitions added to what the model is offered; `None` when it
/// has none. Runs once the caller is known: `search` is its tenant's, and
/// MCP servers' allow-lists are checked against it.
pub(crate) async fn plan(
    snapshot: &Snapshot,
    user: ToolUser<'_>,
    context: &RequestContext,
    request: &mut ChatRequest,
) -> Result<Option<ToolPlan>, PipelineError> {
    let toolbox = &snapshot.tools;
    let mut names = std::mem::take(&mut request.gateway_tools);
    for attached in toolbox.attached(&request.model) {
        if !names.contains(attached) {
            names.push(attached.clone());
        }
    }
    if names.is_empty() {
        return Ok(None);
    }
    let mut tools = BTreeMap::new();
    let mut search = None;
    for name in names {
        let resolved: Vec<Arc<dyn Tool>> = if name == SEARCH {
            let retrieval = snapshot
                .retrieval
                .clone()
                .ok_or(PipelineError::RetrievalUnavailable)?;
            let tool = Arc::new(
                SearchTool::new(
                    retrieval,
                    snapshot.gateway.clone(),
                    context.clone(),
                    user.tenant,
                )
                .await?,
            );
            search = Some(tool.clone());
            vec![tool]
        } else {
            toolbox.resolve(&name, user).map_err(|error| match error {
                ToolError::Unavailable(message) => {
                    BackendError::new(ErrorKind::Overloaded, message)
                        .with_retry_after(Some(Duration::from_secs(1)))
                }
                ToolError::Arguments(message) | ToolError::Failed(message) => {
                    BackendError::invalid_request(message).with_param("tools")
                }
            })?
        };
        for tool in resolved {
            let definition = tool.definition();
            if tools.contains_key(&definition.name) {
                continue;
            }
            if request.tools.iter().any(|t| t.name == definition.name) {
                return Err(BackendError::invalid_request(format!(
                    "a function tool of the request is called {:?}, like a switchyard tool it also asks for",
                    definition.name
                ))
                .with_param("tools")
                .into());
            }
            tools.insert(definition.name.clone(), tool);
            request.tools.push(definition);
        }
    }
    Ok(Some(ToolPlan {
        tools,
        search,
        max_steps: toolbox.max_steps,
        call_timeout: toolbox.call_timeout,
        results_guard: None,
    }))
}

/// The tool that searches the caller's collections; the pipeline makes it
/// per request, as it needs the caller's tenant.
const SEARCH: &str = "search";

impl ToolPlan {
    /// The plan with tool results screened by `policies` (their input
    /// checks: masks, blocks, injection) before the model reads them.
    pub(crate) fn screened_by(mut self, policies: Applied) -> Self {
        self.results_guard = (!policies.is_empty()).then_some(policies);
        self
    }

    /// The passages `search` gave the model, as the answer's sources.
    pub(crate) fn grounded(&self) -> Option<Grounded> {
        self.search.as_ref().and_then(|search| search.grounded())
    }

    fn is_ours(&self, name: &str) -> bool {
        self.tools.contains_key(name)
    }

    /// What the model is told when the loop gives up.
    fn stopped_note(&self) -> String {
        format!(
            "[Stopped after {} rounds of tool calls without a final answer.]",
            self.max_steps
        )
    }
}

/// A whole answer through the loop.
pub(crate) async fn whole(
    plan: &ToolPlan,
    gateway: &Gateway,
    mut request: ChatRequest,
    context: &RequestContext,
) -> Result<Routed<ChatResponse>, BackendError> {
    let mut earlier = Usage::default();
    let mut runs = Vec::new();
    let mut step = 0;
    loop {
        let started = Instant::now();
        let mut routed = gateway.chat(request.clone(), context).await?;
        let answer = &mut routed.value;
        let ours: Vec<ToolCall> = answer
            .tool_calls
            .iter()
            .filter(|call| plan.is_ours(&call.name))
            .cloned()
            .collect();
        let theirs = answer.tool_calls.len() > ours.len();
        if ours.is_empty() || theirs || step >= plan.max_steps {
            if theirs {
                answer.tool_calls.retain(|call| !plan.is_ours(&call.name));
            } else if !ours.is_empty() {
                answer.tool_calls.clear();
                if !answer.content.is_empty() {
                    answer.content.push_str("\n\n");
                }
                answer.content.push_str(&plan.stopped_note());
                answer.finish_reason = FinishReason::Length;
            }
            answer.usage = added(answer.usage, earlier);
            answer.tool_runs = runs;
            return Ok(routed);
        }
        if !routed.cache.answered_from_cache() {
            note_step(context, step, &routed.deployment, answer.usage, started);
            earlier = added(earlier, answer.usage);
        }
        let said = std::mem::take(&mut answer.content);
        let results = run_calls(plan, step, &ours, context).await;
        runs.extend(
            ours.iter()
                .zip(&results)
                .map(|(call, ran)| run_of(call, Some(ran))),
        );
        continue_with(&mut request, said, ours, results);
        step += 1;
    }
}

/// A streamed answer through the loop: text of every round streams as it
/// comes; the client's tool calls stream as they come; Switchyard's calls
/// are held and run between rounds, each reported as it starts and ends
/// (`ToolRun`); one finish and one usage (all rounds) end it.
pub(crate) async fn streamed(
    plan: Arc<ToolPlan>,
    gateway: Arc<Gateway>,
    mut request: ChatRequest,
    context: RequestContext,
) -> Result<Routed<ChatStream>, BackendError> {
    let started = Instant::now();
    let first = gateway.chat_stream(request.clone(), &context).await?;
    let Routed {
        value,
        route,
        deployment,
        cache,
        similarity,
    } = first;
    let first_deployment = deployment.clone();
    let first_cached = cache.answered_from_cache();
    let events = async_stream::try_stream! {
        let mut current = value;
        let mut deployment = first_deployment;
        let mut cached = first_cached;
        let mut started = started;
        let mut earlier = Usage::default();
        let mut step = 0;
        loop {
            let mut round = Round::default();
            while let Some(event) = current.next().await {
                if let Some(out) = round.take(&plan, event?) {
                    yield out;
                }
            }
            let ours = round.ours();
            if ours.is_empty() || round.theirs > 0 || step >= plan.max_steps {
                let mut finish = round.finish.unwrap_or(FinishReason::Stop);
                if round.theirs > 0 {
                    finish = FinishReason::ToolCalls;
                } else if !ours.is_empty() {
                    yield StreamEvent::Delta(format!("\n\n{}", plan.stopped_note()));
                    finish = FinishReason::Length;
                }
                yield StreamEvent::Finish(finish);
                yield StreamEvent::Usage(added(round.usage, earlier));
                break;
            }
            if !cached {
                note_step(&context, step, &deployment, round.usage, started);
                earlier = added(earlier, round.usage);
            }
            for call in &ours {
                yield StreamEvent::ToolRun(run_of(call, None));
            }
            let results = run_calls(&plan, step, &ours, &context).await;
            for (call, result) in ours.iter().zip(&results) {
                yield StreamEvent::ToolRun(run_of(call, Some(result)));
            }
            continue_with(&mut request, std::mem::take(&mut round.text), ours, results);
            step += 1;
            started = Instant::now();
            let next = gateway.chat_stream(request.clone(), &context).await?;
            current = next.value;
            deployment = next.deployment;
            cached = next.cache.answered_from_cache();
        }
    };
    Ok(Routed {
        value: Box::pin(events),
        route,
        deployment,
        cache,
        similarity,
    })
}

/// One streamed round, as it passes: its text, the calls it makes (held
/// when they are Switchyard's), its finish and usage.
#[derive(Default)]
struct Round {
    text: String,
    /// Calls by the model's index.
    calls: BTreeMap<u32, Called>,
    theirs: u32,
    finish: Option<FinishReason>,
    usage: Usage,
}

/// A call of a streamed round, as its pieces arrive.
struct Called {
    call: ToolCall,
    /// The index the client sees it under; `None`: Switchyard's own.
    client_index: Option<u32>,
}

impl Round {
    /// What of `event` goes on to the client.
    fn take(&mut self, plan: &ToolPlan, event: StreamEvent) -> Option<StreamEvent> {
        match event {
            StreamEvent::Delta(text) => {
                self.text.push_str(&text);
                Some(StreamEvent::Delta(text))
            }
            StreamEvent::ToolCall(piece) => {
                let theirs = &mut self.theirs;
                let called = self.calls.entry(piece.index).or_insert_with(|| {
                    let name = piece.name.clone().unwrap_or_default();
                    let client_index = (!plan.is_ours(&name)).then(|| {
                        *theirs += 1;
                        *theirs - 1
                    });
                    Called {
                        call: ToolCall {
                            id: piece.id.clone().unwrap_or_default(),
                            name,
                            arguments: String::new(),
                        },
                        client_index,
                    }
                });
                called.call.arguments.push_str(&piece.arguments);
                called
                    .client_index
                    .map(|index| StreamEvent::ToolCall(ToolCallDelta { index, ..piece }))
            }
            StreamEvent::Finish(reason) => {
                self.finish = Some(reason);
                None
            }
            StreamEvent::Usage(usage) => {
                self.usage = usage;
                None
            }
            run @ StreamEvent::ToolRun(_) => Some(run),
        }
    }

    /// Switchyard's calls of the round, whole.
    fn ours(&self) -> Vec<ToolCall> {
        self.calls
            .values()
            .filter(|called| called.client_index.is_none())
            .map(|called| called.call.clone())
            .collect()
    }
}

/// The conversation after a round: the model's turn (what it said, the
/// calls it made) and one tool message per call. A request that forced a
/// tool call is free to answer from the next round on.
fn continue_with(request: &mut ChatRequest, said: String, calls: Vec<ToolCall>, results: Vec<Ran>) {
    request.messages.push(ChatMessage {
        role: Role::Assistant,
        content: if said.is_empty() {
            Vec::new()
        } else {
            vec![ContentPart::Text(said)]
        },
        name: None,
        tool_call_id: None,
        tool_calls: calls,
    });
    request
        .messages
        .extend(results.into_iter().map(|ran| ran.message));
    if matches!(
        request.tool_choice,
        Some(ToolChoice::Required | ToolChoice::Tool(_))
    ) {
        request.tool_choice = Some(ToolChoice::Auto);
    }
}

/// A call the loop ran: the tool message for the model, and whether it
/// carries an error.
struct Ran {
    message: ChatMessage,
    failed: bool,
}

/// Runs a round's calls at once, each under the timeout; a result (or an
/// error the model can read) per call, in order.
async fn run_calls(
    plan: &ToolPlan,
    step: usize,
    calls: &[ToolCall],
    context: &RequestContext,
) -> Vec<Ran> {
    futures::future::join_all(calls.iter().map(|call| run_call(plan, step, call, context))).await
}

async fn run_call(plan: &ToolPlan, step: usize, call: &ToolCall, context: &RequestContext) -> Ran {
    let span = tracing::info_span!(
        "execute_tool",
        "gen_ai.operation.name" = "execute_tool",
        "gen_ai.tool.name" = %call.name,
        "gen_ai.tool.call.id" = %call.id,
        step,
        outcome = tracing::field::Empty,
    );
    let started = Instant::now();
    let (result, outcome) = match plan.tools.get(&call.name) {
        None => (
            json!({"error": format!("there is no tool named {:?}", call.name)}).to_string(),
            "error",
        ),
        Some(tool) => {
            match tokio::time::timeout(plan.call_timeout, tool.call(&call.arguments))
                .instrument(span.clone())
                .await
            {
                Ok(Ok(result)) => (result, "ok"),
                Ok(Err(error)) => (json!({"error": error.to_string()}).to_string(), "error"),
                Err(_) => (
                    json!({"error": format!(
                        "the tool did not answer within {} s",
                        plan.call_timeout.as_secs()
                    )})
                    .to_string(),
                    "timeout",
                ),
            }
        }
    };
    let (result, outcome) = match &plan.results_guard {
        Some(policies) => screen(policies, result, outcome, context),
        None => (result, outcome),
    };
    let elapsed = started.elapsed();
    span.record("outcome", outcome);
    metrics().tool_call(&call.name, outcome, elapsed);
    context.trail.note(Decision::Tool {
        round: step,
        tool: call.name.clone(),
        arguments: call.arguments.clone(),
        outcome,
        duration_ms: millis(elapsed),
    });
    Ran {
        message: ChatMessage {
            role: Role::Tool,
            content: vec![ContentPart::Text(result)],
            name: None,
            tool_call_id: Some(call.id.clone()),
            tool_calls: Vec::new(),
        },
        failed: outcome != "ok",
    }
}

/// A tool's result through the request's guardrail policies, as the
/// user's own words would go: what they mask (or pseudonymise) is masked,
/// what one blocks is withheld from the model (the call's outcome is then
/// `blocked`), and every hit is noted in the trail. Model judges are not
/// asked: a tool result is read by pattern checks alone.
fn screen(
    policies: &Applied,
    result: String,
    outcome: &'static str,
    context: &RequestContext,
) -> (String, &'static str) {
    match policies.check_tool_result(result) {
        Ok((screened, decisions)) => {
            super::guard::note(context, decisions);
            (screened, outcome)
        }
        Err(mut blocked) => {
            super::guard::note(context, std::mem::take(&mut blocked.decisions));
            let withheld = json!({"error": format!(
                "the tool's result was withheld by guardrail policy `{}` (check `{}`: {})",
                blocked.policy, blocked.check, blocked.found
            )});
            (withheld.to_string(), "blocked")
        }
    }
}

/// How a streamed answer reports `call`: started, or ended with `result`.
fn run_of(call: &ToolCall, result: Option<&Ran>) -> ToolRun {
    ToolRun {
        call_id: call.id.clone(),
        name: call.name.clone(),
        arguments: call.arguments.clone(),
        ended: result.map(|ran| ToolRunEnd {
            output: ran.message.text(),
            failed: ran.failed,
        }),
    }
}

/// Records a round whose calls the loop ran: its tokens are billed with
/// the request.
pub(super) fn note_step(
    context: &RequestContext,
    step: usize,
    deployment: &str,
    usage: Usage,
    started: Instant,
) {
    context.trail.note(Decision::ToolStep {
        round: step,
        deployment: deployment.to_owned(),
        input_tokens: u64::from(usage.prompt_tokens),
        output_tokens: u64::from(usage.completion_tokens),
        latency_ms: millis(started.elapsed()),
    });
}

pub(super) fn added(a: Usage, b: Usage) -> Usage {
    Usage {
        prompt_tokens: a.prompt_tokens.saturating_add(b.prompt_tokens),
        completion_tokens: a.completion_tokens.saturating_add(b.completion_tokens),
        cache_read_tokens: a.cache_read_tokens.saturating_add(b.cache_read_tokens),
        cache_write_tokens: a.cache_write_tokens.saturating_add(b.cache_write_tokens),
    }
}

fn millis(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}
