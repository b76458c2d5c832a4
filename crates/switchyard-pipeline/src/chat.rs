//! The chat operation, whole and streamed: authenticate → admit (beside
//! grounding) → guard the input → route → guard the output → meter →
//! finish, on one snapshot.

use std::sync::Arc;

use switchyard_core::{ChatRequest, ChatResponse, ChatStream};
use switchyard_governance::{Admission, Operation, Outcome};
use switchyard_telemetry::trace;

use crate::stages::authenticate::CallKind;
use switchyard_guardrails::OutputGuard;

use crate::stages::code_assistant::{self, CodePlan};
use crate::stages::history::{self, Turn};
use crate::stages::tools::{self, ToolPlan};
use crate::stages::{DEFAULT_TENANT, admit, authenticate, finish, fit, ground, guard, meter};
use crate::{Answer, Call, Grounded, GroundingAsk, Pipeline, PipelineError, Snapshot};

/// Whose a chat turn is, and what the snapshot it ran on keeps of it.
pub(crate) struct Owner {
    pub tenant: String,
    pub keeping: crate::responses::Keeping,
}

/// A chat call past admission: what the answer stages need.
struct Admitted {
    snapshot: Arc<Snapshot>,
    call: Call,
    request: ChatRequest,
    admission: Admission,
    grounded: Option<Grounded>,
    /// What the audit trail keeps of the prompt, when it keeps prompts.
    prompt: Option<String>,
    keep_answer: bool,
    /// The output checks the answer goes through, if any apply.
    guard: Option<OutputGuard>,
    /// The tenant whose objects the call works with.
    tenant: String,
    /// The tools Switchyard runs for the model in this call, if any.
    tools: Option<Arc<ToolPlan>>,
    /// The code assistant the call's model names, if it names one.
    coder: Option<Arc<CodePlan>>,
}

impl Admitted {
    /// What is known of the call's outcome before its answer.
    fn outcome(&mut self, mut outcome: Outcome) -> Outcome {
        outcome.prompt = self.prompt.take();
        outcome.retrieval = self.grounded.as_ref().map(|g| g.elapsed);
        outcome
    }
}

impl Pipeline {
    /// A whole chat answer.
    pub async fn chat(
        &self,
        call: Call,
        request: ChatRequest,
        grounding: Option<GroundingAsk>,
    ) -> Result<Answer<ChatResponse>, PipelineError> {
        self.chat_turn(call, request, grounding, None)
            .await
            .map(|(answer, _)| answer)
    }

    /// A whole chat answer, of a Responses turn when `turn` is given; with
    /// the caller's tenant.
    pub(crate) async fn chat_turn(
        &self,
        call: Call,
        request: ChatRequest,
        grounding: Option<GroundingAsk>,
        turn: Option<&Turn>,
    ) -> Result<(Answer<ChatResponse>, Owner), PipelineError> {
        let mut admitted = self
            .admit_chat(call, request, grounding, false, turn)
            .await?;
        let rate_limits = admitted.admission.rate_headers().pairs();
        let gateway = &admitted.snapshot.gateway;
        let answered = match (&admitted.tools, &admitted.coder) {
            (_, Some(coder)) => {
                code_assistant::whole(
                    coder,
                    gateway,
                    admitted.request.clone(),
                    &admitted.call.context,
                )
                .await
            }
            (None, None) => {
                gateway
                    .chat(admitted.request.clone(), &admitted.call.context)
                    .await
            }
            (Some(plan), None) => {
                tools::whole(
                    plan,
                    gateway,
                    admitted.request.clone(),
                    &admitted.call.context,
                )
                .await
            }
        };
        let mut routed = match answered {
            Ok(routed) => routed,
            Err(error) => {
                return Err(finish::fail(
                    admitted.admission,
                    error.into(),
                    &admitted.call.context,
                ));
            }
        };
        // Passages the search tool gave the model are the answer's
        // sources, as grounding's are.
        if admitted.grounded.is_none()
            && let Some(plan) = &admitted.tools
        {
            admitted.grounded = plan.grounded();
        }
        if let Some(guard) = &mut admitted.guard {
            guard::judge_whole(
                guard,
                &admitted.snapshot.gateway,
                &mut routed.value,
                &admitted.call.context,
            )
            .await;
            guard::whole(guard, &mut routed.value, &admitted.call.context);
        }
        trace::annotate_strings(
            &tracing::Span::current(),
            "gen_ai.response.finish_reasons",
            vec![routed.value.finish_reason.as_str().to_owned()],
        );
        let served = finish::served(&routed, Some(&routed.value.usage), &admitted.call.context);
        let mut outcome = admitted.outcome(served);
        outcome.answer = admitted.keep_answer.then(|| routed.value.content.clone());
        outcome.answer_shape =
            finish::answer_shape(&routed.value.content, !routed.value.tool_calls.is_empty());
        admitted.admission.finish(outcome);
        Ok((
            Answer {
                routed,
                rate_limits,
                grounded: admitted.grounded,
            },
            Owner {
                tenant: admitted.tenant,
                keeping: admitted.snapshot.keeping,
            },
        ))
    }

    /// A streamed chat answer; the call is recorded when the stream ends
    /// (or is dropped).
    pub async fn chat_stream(
        &self,
        call: Call,
        request: ChatRequest,
        grounding: Option<GroundingAsk>,
    ) -> Result<Answer<ChatStream>, PipelineError> {
        self.chat_stream_turn(call, request, grounding, None)
            .await
            .map(|(answer, _)| answer)
    }

    /// A streamed chat answer, of a Responses turn when `turn` is given;
    /// with the caller's tenant.
    pub(crate) async fn chat_stream_turn(
        &self,
        call: Call,
        request: ChatRequest,
        grounding: Option<GroundingAsk>,
        turn: Option<&Turn>,
    ) -> Result<(Answer<ChatStream>, Owner), PipelineError> {
        let mut admitted = self
            .admit_chat(call, request, grounding, true, turn)
            .await?;
        let rate_limits = admitted.admission.rate_headers().pairs();
        let gateway = &admitted.snapshot.gateway;
        let answered = match (&admitted.tools, &admitted.coder) {
            (_, Some(coder)) => {
                code_assistant::streamed(
                    coder.clone(),
                    gateway.clone(),
                    admitted.request.clone(),
                    admitted.call.context.clone(),
                )
                .await
            }
            (None, None) => {
                gateway
                    .chat_stream(admitted.request.clone(), &admitted.call.context)
                    .await
            }
            (Some(plan), None) => {
                tools::streamed(
                    plan.clone(),
                    gateway.clone(),
                    admitted.request.clone(),
                    admitted.call.context.clone(),
                )
                .await
            }
        };
        let routed = match answered {
            Ok(routed) => routed,
            Err(error) => {
                return Err(finish::fail(
                    admitted.admission,
                    error.into(),
                    &admitted.call.context,
                ));
            }
        };
        let served = finish::served(&routed, None, &admitted.call.context);
        let outcome = admitted.outcome(served);
        let switchyard_orchestration::Routed {
            value,
            route,
            deployment,
            cache,
            similarity,
        } = routed;
        let value = match admitted.guard.take() {
            Some(output) => guard::streamed(
                value,
                output,
                admitted.snapshot.gateway.clone(),
                admitted.call.context.clone(),
                u32::try_from(admit::estimate_chat(&admitted.request)).unwrap_or(u32::MAX),
            ),
            None => value,
        };
        let events = meter::metered(
            value,
            admitted.admission,
            outcome,
            admitted.keep_answer,
            admitted.call.context.trail.clone(),
        );
        Ok((
            Answer {
                routed: switchyard_orchestration::Routed {
                    value: events,
                    route,
                    deployment,
                    cache,
                    similarity,
                },
                rate_limits,
                grounded: admitted.grounded,
            },
            Owner {
                tenant: admitted.tenant,
                keeping: admitted.snapshot.keeping,
            },
        ))
    }

    /// The stages before the answer: authenticate, then admit while the
    /// request is grounded (when it asks); a failure of either fails the
    /// call, and is recorded once the call was admitted.
    async fn admit_chat(
        &self,
        mut call: Call,
        mut request: ChatRequest,
        grounding: Option<GroundingAsk>,
        stream: bool,
        turn: Option<&Turn>,
    ) -> Result<Admitted, PipelineError> {
        let snapshot = self.snapshot();
        let plan = ground::plan(&snapshot, grounding, &mut request)?;
        let mut coder = code_assistant::plan(&snapshot, &mut request)?;
        let kind = CallKind {
            model: &request.model,
            operation: Operation::Chat,
            stream,
            estimated_tokens: admit::estimate_chat(&request),
        };
        let (caller, mut facts) =
            authenticate::authenticate(&self.governance, &snapshot, &mut call, kind).await?;
        let tenant = caller.tenant_id().unwrap_or(DEFAULT_TENANT).to_owned();
        if let Some(turn) = turn {
            // The conversation is known only once the caller is: its
            // history is the caller's tenant's.
            history::prepare(&self.governance, &tenant, turn, &mut request, &call.context).await?;
            facts.estimated_tokens = admit::estimate_chat(&request);
            facts.response_id = Some(turn.response_id.clone());
        }
        // A code assistant runs its own checks, not the tool loop (nor
        // the tools attached to its code model).
        let tools = match &mut coder {
            Some(coder) => {
                coder.limit_to(&caller);
                None
            }
            None => {
                let user = switchyard_tools::ToolUser {
                    tenant: &tenant,
                    key: caller.key_id(),
                };
                tools::plan(&snapshot, user, &call.context, &mut request)
                    .await?
                    .map(|plan| {
                        Arc::new(plan.screened_by(guard::applied(
                            &snapshot,
                            &caller,
                            &request.model,
                        )))
                    })
            }
        };
        let policy = snapshot.policy.settings();
        let prompt = policy.store_prompts.then(|| finish::prompt_text(&request));
        let keep_answer = policy.store_answers;
        let admission = admit::admit(&self.governance, &snapshot, &caller, facts);
        let (admission, mut request, grounded) = match &plan {
            None => (admission.await?, request, None),
            Some((retrieval, spec)) => {
                let grounding =
                    ground::ground(&snapshot, retrieval, spec, &caller, request, &call.context);
                let (admission, grounded) = tokio::join!(admission, grounding);
                let admission = admission?;
                match grounded {
                    Ok((request, grounded)) => (admission, request, Some(grounded)),
                    Err(error) => return Err(finish::fail(admission, error, &call.context)),
                }
            }
        };
        // After grounding: the sources are checked with the rest of what
        // will be sent.
        let guard = match guard::input(&snapshot, &caller, &mut request, &call.context).await {
            Ok(guard) => guard,
            Err(error) => return Err(finish::fail(admission, error, &call.context)),
        };
        // The assistant reads the question as the model will: whole, and
        // masked.
        if let Some(coder) = &mut coder {
            coder.prepare(&mut request);
        }
        // Last, on what will be sent: sources and masks included.
        let fitted = fit::fit(
            &self.governance,
            &snapshot.gateway,
            &snapshot.fitting,
            &tenant,
            &mut request,
            turn.is_some_and(|t| t.truncation_auto),
            &call.context,
        )
        .await;
        if let Err(error) = fitted {
            return Err(finish::fail(admission, error, &call.context));
        }
        Ok(Admitted {
            snapshot,
            call,
            request,
            admission,
            grounded,
            prompt,
            keep_answer,
            guard,
            tenant,
            tools,
            coder: coder.map(Arc::new),
        })
    }
}
