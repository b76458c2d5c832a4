//! The code assistant (`[code_assistants.NAME]`, a model name): the code
//! model writes the code; its Python is extracted and put through the
//! configured checks in the sandbox (it compiles, the user's tests and the
//! model's own pass, the linter finds nothing); failures go back to the
//! model for a bounded number of repairs; the answer is the last code with
//! its annotations (or an explanation by `explain_model`) and the check
//! results.
//!
//! Attempts are not streamed: code that a repair replaces is never shown.
//! A streamed request gets the checked answer as it is composed, an
//! explanation as the explaining model writes it. Every check is a step of
//! the audit trail and a metric; every model call's tokens are billed.

use std::sync::Arc;
use std::time::Instant;

use switchyard_config::CodeAssistantConfig;
use switchyard_core::{
    BackendError, ChatMessage, ChatRequest, ChatResponse, ChatStream, ContentPart, Decision,
    FinishReason, Role, StreamEvent, Usage,
};
use switchyard_orchestration::{Gateway, RequestContext, Routed};
use switchyard_telemetry::metrics::metrics;
use switchyard_tools::Toolbox;
use switchyard_tools::code_checks::{self, CheckResult, Extracted};

use super::tools::{added, note_step};
use crate::{PipelineError, Snapshot};
use switchyard_governance::Caller;

/// A request to a code assistant, prepared.
pub(crate) struct CodePlan {
    config: CodeAssistantConfig,
    /// Where the checks run.
    toolbox: Arc<Toolbox>,
    /// The tests the user's last message gave.
    given: String,
    /// The user's last message, for the explanation.
    asked: String,
}

/// What the code model is told, before the assistant's own instructions.
const INSTRUCTIONS: &str = "You are a code assistant. Answer with the complete Python solution in one ```python code block, then explain it briefly. If the user gives tests, the code must pass them. You may add unit tests as `test_` functions in a second ```python block whose first line is `# tests`.";

/// What the explaining model is told.
const EXPLAIN: &str = "Explain the Python code below to the user who asked for it: what it does and how to use it, in a few sentences. Do not repeat or rewrite the code.";

/// The code assistant `request.model` names, if it names one. The
/// request's model becomes the code model before authentication, so that
/// the key's model permissions apply to it; the rest of the request is
/// prepared by [`CodePlan::prepare`] once the conversation is whole.
pub(crate) fn plan(
    snapshot: &Snapshot,
    request: &mut ChatRequest,
) -> Result<Option<CodePlan>, PipelineError> {
    let Some(config) = snapshot.code_assistants.get(&request.model) else {
        return Ok(None);
    };
    if !request.gateway_tools.is_empty() {
        return Err(BackendError::invalid_request(
            "a code assistant does not take switchyard tools; it runs its own checks",
        )
        .with_param("tools")
        .into());
    }
    request.model = config.model.clone();
    Ok(Some(CodePlan {
        config: config.clone(),
        toolbox: snapshot.tools.clone(),
        given: String::new(),
        asked: String::new(),
    }))
}

impl CodePlan {
    /// Leaves out the explanation when `caller`'s key may not use the
    /// explaining model: the code model's own words stand instead.
    pub(crate) fn limit_to(&mut self, caller: &Caller) {
        if let Caller::Key(context) = caller
            && let (Some(allowed), Some(model)) =
                (&context.key.allowed_models, &self.config.explain_model)
            && !allowed.contains(model)
        {
            self.config.explain_model = None;
        }
    }

    /// Takes the user's question and tests from the conversation as the
    /// model will see it (a Responses turn's history included, guardrail
    /// masks applied), and puts the assistant's instructions first.
    pub(crate) fn prepare(&mut self, request: &mut ChatRequest) {
        self.asked = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(ChatMessage::text)
            .unwrap_or_default();
        self.given = code_checks::given_tests(&self.asked);
        let mut instructions = INSTRUCTIONS.to_owned();
        if let Some(more) = &self.config.instructions {
            instructions.push_str("\n\n");
            instructions.push_str(more);
        }
        // One system message: some chat templates take no second one.
        match request.messages.first_mut() {
            Some(first) if first.role == Role::System => {
                first
                    .content
                    .insert(0, ContentPart::Text(format!("{instructions}\n\n")));
            }
            _ => request
                .messages
                .insert(0, ChatMessage::new(Role::System, instructions)),
        }
    }
}

/// The code model's attempts, checked and repaired.
struct Checked {
    /// The last attempt.
    last: Routed<ChatResponse>,
    code: Option<Extracted>,
    results: Vec<CheckResult>,
    repairs: u32,
    /// The tokens of the attempts billed as steps (those before the last,
    /// and the last too when every attempt is a step).
    earlier: Usage,
}

impl CodePlan {
    /// From the first attempt on: checks each, asks for repairs while a
    /// check fails and repairs are left. Attempts before the last are
    /// billed steps; the last is one too when `all_steps`.
    async fn check_and_repair(
        &self,
        gateway: &Gateway,
        mut request: ChatRequest,
        context: &RequestContext,
        first: Routed<ChatResponse>,
        started: Instant,
        all_steps: bool,
    ) -> Result<Checked, BackendError> {
        let mut attempt = first;
        let mut started = started;
        let mut earlier = Usage::default();
        let mut repairs = 0;
        loop {
            let code = code_checks::extract_code(&attempt.value.content);
            let results = code_checks::run_checks(
                self.toolbox.sandbox(),
                &self.config.checks,
                code.as_ref(),
                &self.given,
            )
            .await;
            note_checks(context, repairs as usize, &results);
            let done = !code_checks::any_failed(&results) || repairs >= self.config.max_repairs;
            if !done || all_steps {
                bill(context, repairs as usize, &attempt, started, &mut earlier);
            }
            if done {
                return Ok(Checked {
                    last: attempt,
                    code,
                    results,
                    repairs,
                    earlier,
                });
            }
            request.messages.push(ChatMessage::new(
                Role::Assistant,
                std::mem::take(&mut attempt.value.content),
            ));
            request.messages.push(ChatMessage::new(
                Role::User,
                code_checks::repair_request(&results),
            ));
            repairs += 1;
            started = Instant::now();
            attempt = gateway.chat(request.clone(), context).await?;
        }
    }

    /// The request that asks `explain_model` about the checked code.
    fn explanation_request(&self, model: &str, checked: &Checked) -> ChatRequest {
        let code = checked
            .code
            .as_ref()
            .map_or(checked.last.value.content.as_str(), |c| c.solution.as_str());
        ChatRequest::new(
            model,
            vec![
                ChatMessage::new(Role::System, EXPLAIN.to_owned()),
                ChatMessage::new(
                    Role::User,
                    format!(
                        "The request:\n{}\n\nThe code:\n```python\n{code}\n```\n\n{}",
                        self.asked,
                        code_checks::render(&checked.results, checked.repairs)
                    ),
                ),
            ],
        )
    }
}

/// A whole answer from the code assistant.
pub(crate) async fn whole(
    plan: &CodePlan,
    gateway: &Gateway,
    request: ChatRequest,
    context: &RequestContext,
) -> Result<Routed<ChatResponse>, BackendError> {
    let started = Instant::now();
    let first = gateway.chat(request.clone(), context).await?;
    let explaining = plan.config.explain_model.clone();
    let checked = plan
        .check_and_repair(
            gateway,
            request,
            context,
            first,
            started,
            explaining.is_some(),
        )
        .await?;
    let checks = code_checks::render(&checked.results, checked.repairs);
    let Some(model) = explaining else {
        let Checked {
            mut last, earlier, ..
        } = checked;
        let answer = &mut last.value;
        answer.content = format!("{}\n\n{checks}", answer.content.trim_end());
        answer.usage = added(answer.usage, earlier);
        settle(answer);
        return Ok(last);
    };
    let mut explained = gateway
        .chat(plan.explanation_request(&model, &checked), context)
        .await?;
    let answer = &mut explained.value;
    answer.content = format!(
        "{}{}\n\n{checks}",
        code_section(&checked),
        answer.content.trim()
    );
    answer.usage = added(answer.usage, checked.earlier);
    settle(answer);
    Ok(explained)
}

/// A streamed answer from the code assistant. The first attempt is made
/// before the stream starts (its failure is the request's error); repairs,
/// checks and the explanation follow in the stream, then one finish and
/// one usage for every call.
pub(crate) async fn streamed(
    plan: Arc<CodePlan>,
    gateway: Arc<Gateway>,
    request: ChatRequest,
    context: RequestContext,
) -> Result<Routed<ChatStream>, BackendError> {
    let started = Instant::now();
    let first = gateway.chat(request.clone(), &context).await?;
    let (route, deployment, cache, similarity) = (
        first.route.clone(),
        first.deployment.clone(),
        first.cache,
        first.similarity,
    );
    let events = async_stream::try_stream! {
        // Every call is a billed step here: the stream's route and
        // deployment are the first attempt's, whichever model answers last.
        let checked = plan
            .check_and_repair(&gateway, request, &context, first, started, true)
            .await?;
        let checks = code_checks::render(&checked.results, checked.repairs);
        let mut usage = checked.earlier;
        let mut finish = checked.last.value.finish_reason;
        match plan.config.explain_model.clone() {
            None => {
                for piece in pieces(checked.last.value.content.trim_end()) {
                    yield StreamEvent::Delta(piece);
                }
            }
            Some(model) => {
                yield StreamEvent::Delta(code_section(&checked));
                let asked = plan.explanation_request(&model, &checked);
                let started = Instant::now();
                let explaining = gateway.chat_stream(asked, &context).await?;
                let explained_by = explaining.deployment.clone();
                let cached = explaining.cache.answered_from_cache();
                let mut explained = Usage::default();
                let mut stream = explaining.value;
                while let Some(event) = futures::StreamExt::next(&mut stream).await {
                    match event? {
                        StreamEvent::Delta(text) => yield StreamEvent::Delta(text),
                        StreamEvent::Finish(reason) => finish = reason,
                        StreamEvent::Usage(used) => explained = used,
                        StreamEvent::ToolCall(_) | StreamEvent::ToolRun(_) => {}
                    }
                }
                if !cached {
                    note_step(&context, checked.repairs as usize + 1, &explained_by, explained, started);
                    usage = added(usage, explained);
                }
            }
        }
        yield StreamEvent::Delta(format!("\n\n{checks}"));
        yield StreamEvent::Finish(if finish == FinishReason::ToolCalls { FinishReason::Stop } else { finish });
        yield StreamEvent::Usage(usage);
    };
    Ok(Routed {
        value: Box::pin(events),
        route,
        deployment,
        cache,
        similarity,
    })
}

/// A code assistant answers in text: calls a model made (of tools it was
/// not offered) are dropped, and the answer is finished, not waiting for
/// them.
fn settle(answer: &mut ChatResponse) {
    answer.tool_calls.clear();
    if answer.finish_reason == FinishReason::ToolCalls {
        answer.finish_reason = FinishReason::Stop;
    }
}

/// The checked code and its tests, as the answer shows them before an
/// explanation.
fn code_section(checked: &Checked) -> String {
    let Some(code) = &checked.code else {
        return String::new();
    };
    let mut text = String::new();
    for block in [&code.solution, &code.tests] {
        if !block.is_empty() {
            text.push_str(&format!("```python\n{block}\n```\n\n"));
        }
    }
    text
}

/// A composed answer in stream-sized pieces: lines.
fn pieces(text: &str) -> Vec<String> {
    text.split_inclusive('\n').map(str::to_owned).collect()
}

/// Bills an attempt (unless the cache answered it) as a step.
fn bill(
    context: &RequestContext,
    attempt: usize,
    routed: &Routed<ChatResponse>,
    started: Instant,
    earlier: &mut Usage,
) {
    if !routed.cache.answered_from_cache() {
        note_step(
            context,
            attempt,
            &routed.deployment,
            routed.value.usage,
            started,
        );
        *earlier = added(*earlier, routed.value.usage);
    }
}

/// Each check of an attempt, in the audit trail and the metrics.
fn note_checks(context: &RequestContext, attempt: usize, results: &[CheckResult]) {
    for result in results {
        metrics().tool_call(
            &format!("code_check_{}", result.check.name()),
            result.outcome.name(),
            std::time::Duration::from_millis(result.duration_ms),
        );
        context.trail.note(Decision::Check {
            attempt,
            check: result.check.name(),
            outcome: result.outcome.name(),
            duration_ms: result.duration_ms,
        });
    }
}
