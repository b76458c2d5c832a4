//! Strategies that ask more than one model before answering: a cascade
//! (cheapest first, escalating while the answer is not accepted) and the
//! ensembles (all at once; a judge picks, or an aggregator writes). Every
//! model call but the one whose answer is served is noted in the trail as a
//! `call`, so that the request pays for it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use switchyard_core::{
    BackendError, ChatMessage, ChatRequest, ChatResponse, Decision, ErrorKind, Role,
    SamplingParams, Usage,
};
use switchyard_telemetry::metrics;
use tracing::info;

use super::{Attempt, Gateway, Run};
use crate::deployment::Deployment;
use crate::route::Strategy;
use crate::semantic::last_user_text;
use crate::strategies::{
    best_of_prompt, json_problem, judge_prompt, mixture_prompt, parse_pick, refuses,
};

fn millis(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

/// A call whose answer is not the one served, for the trail.
fn call(purpose: &'static str, deployment: &str, usage: Usage, elapsed: Duration) -> Decision {
    Decision::Call {
        purpose,
        deployment: deployment.to_owned(),
        input_tokens: u64::from(usage.prompt_tokens),
        output_tokens: u64::from(usage.completion_tokens),
        latency_ms: millis(elapsed),
    }
}

/// What `usage` costs on `deployment` (0 when it has no price).
fn cost(deployment: &Deployment, usage: Usage) -> f64 {
    deployment.pricing.map_or(0.0, |price| {
        (f64::from(usage.prompt_tokens) * price.input
            + f64::from(usage.completion_tokens) * price.output)
            / 1_000_000.0
    })
}

/// A one-shot question to a judge or an aggregator: deterministic.
fn ask(model: &str, prompt: String, max_tokens: Option<u32>) -> ChatRequest {
    let mut request = ChatRequest::new(model, vec![ChatMessage::new(Role::User, prompt)]);
    request.max_tokens = max_tokens;
    request.sampling = SamplingParams {
        temperature: Some(0.0),
        ..SamplingParams::default()
    };
    request
}

impl Gateway {
    /// One step of a composite strategy: an attempt on `deployment` alone,
    /// with its breaker, retries and span, as any plan's.
    async fn step(
        &self,
        run: &Run<'_, ChatResponse>,
        deployment: Arc<Deployment>,
    ) -> Attempt<ChatResponse> {
        let single = Run {
            route: run.route,
            operation: run.operation,
            call: run.call,
            context: run.context,
        };
        self.run(single, vec![deployment]).await
    }

    /// Why the cascade does not accept `answer` to `request`; `None`
    /// accepts it.
    async fn rejection(
        &self,
        run: &Run<'_, ChatResponse>,
        request: &ChatRequest,
        answer: &ChatResponse,
    ) -> Option<String> {
        let spec = &run.route.cascade;
        let calls_tools = !answer.tool_calls.is_empty();
        if spec.refusals && !calls_tools && refuses(&answer.content) {
            return Some("the answer refuses or does not know".into());
        }
        // A backend that gives no log-probabilities (most but the
        // OpenAI-compatible ones) leaves this check to the others.
        if !calls_tools && let Some(why) = answer.logprobs.as_deref().and_then(|t| spec.doubt(t)) {
            return Some(why);
        }
        if spec.json
            && let Some(format) = &request.response_format
            && let Some(problem) = json_problem(format, &answer.content)
        {
            return Some(format!("the answer is not the JSON asked for: {problem}"));
        }
        let judge = spec.judge.as_deref()?;
        let question = last_user_text(request).unwrap_or_default();
        let prompt = judge_prompt(&spec.judge_template, &question, &answer.content);
        let started = Instant::now();
        let verdict = tokio::time::timeout(
            spec.judge_timeout,
            Box::pin(self.chat(ask(judge, prompt, Some(8)), run.context)),
        )
        .await;
        let failed = |why: String| spec.escalate_on_judge_failure.then_some(why);
        match verdict {
            Ok(Ok(routed)) => {
                run.context.trail.note(call(
                    "cascade judge",
                    &routed.deployment,
                    routed.value.usage,
                    started.elapsed(),
                ));
                (!spec.accepts(&routed.value.content))
                    .then(|| format!("judge {judge} did not accept the answer"))
            }
            Ok(Err(error)) => failed(format!("judge {judge} failed: {}", error.message)),
            Err(_) => failed(format!(
                "judge {judge} took longer than {} ms",
                spec.judge_timeout.as_millis()
            )),
        }
    }

    /// The cascade: each step in turn until one's answer is accepted (the
    /// last step's is served whatever it is).
    pub(super) async fn cascade(
        &self,
        run: &Run<'_, ChatResponse>,
        plan: Vec<Arc<Deployment>>,
        request: &ChatRequest,
    ) -> Attempt<ChatResponse> {
        let route = run.route;
        let trail = &run.context.trail;
        let last = plan.len().saturating_sub(1);
        let mut spent = 0.0;
        for (index, deployment) in plan.iter().enumerate() {
            let started = Instant::now();
            let (answer, served) = match self.step(run, deployment.clone()).await {
                Ok(done) => done,
                Err(error) if index < last => {
                    trail.note(Decision::CascadeStep {
                        deployment: deployment.name.clone(),
                        position: index,
                        accepted: false,
                        why: format!("failed: {}", error.message),
                    });
                    continue;
                }
                Err(error) => return Err(error),
            };
            let why = if index < last {
                self.rejection(run, request, &answer).await
            } else {
                None
            };
            match why {
                None => {
                    trail.note(Decision::CascadeStep {
                        deployment: served.name.clone(),
                        position: index,
                        accepted: true,
                        why: if index < last {
                            "accepted".into()
                        } else {
                            "the last step".into()
                        },
                    });
                    // What the strongest model would have cost for the same
                    // answer, against what the steps cost.
                    let strongest = plan.last().map_or(0.0, |d| cost(d, answer.usage));
                    let saved = strongest - (spent + cost(&served, answer.usage));
                    metrics().cascade_answered(&route.name, &served.name, saved);
                    return Ok((answer, served));
                }
                Some(why) => {
                    info!(route = %route.name, deployment = %served.name, %why, "cascade escalates");
                    spent += cost(&served, answer.usage);
                    trail.note(call(
                        "cascade step",
                        &served.name,
                        answer.usage,
                        started.elapsed(),
                    ));
                    trail.note(Decision::CascadeStep {
                        deployment: served.name.clone(),
                        position: index,
                        accepted: false,
                        why,
                    });
                }
            }
        }
        Err(BackendError::new(
            ErrorKind::Overloaded,
            format!("no step of the cascade `{}` answered", route.name),
        ))
    }

    /// The ensemble: every member at once (each deployment, `samples`
    /// times), until all have answered or the deadline passed (at least one
    /// answer is awaited); then a judge picks one (`best-of`), or an
    /// aggregator writes the answer from all of them (`mixture`).
    pub(super) async fn ensemble(
        &self,
        run: &Run<'_, ChatResponse>,
        plan: Vec<Arc<Deployment>>,
        request: &ChatRequest,
    ) -> Attempt<ChatResponse> {
        let route = run.route;
        let spec = &route.ensemble;
        let trail = &run.context.trail;
        let started = Instant::now();
        let mut members: FuturesUnordered<_> = plan
            .iter()
            .flat_map(|d| std::iter::repeat_n(d.clone(), spec.samples as usize))
            .enumerate()
            .map(|(member, deployment)| {
                let name = deployment.name.clone();
                async move { (member, name, self.step(run, deployment).await) }
            })
            .collect();
        let total = members.len();
        let deadline = tokio::time::Instant::now() + spec.deadline;
        let mut answers: Vec<(usize, ChatResponse, Arc<Deployment>, Duration)> = Vec::new();
        let mut last_error = None;
        let mut failures = 0;
        loop {
            let next = if answers.is_empty() {
                members.next().await
            } else {
                match tokio::time::timeout_at(deadline, members.next()).await {
                    Ok(next) => next,
                    Err(_) => break,
                }
            };
            let Some((member, name, outcome)) = next else {
                break;
            };
            match outcome {
                Ok((answer, served)) => answers.push((member, answer, served, started.elapsed())),
                Err(error) => {
                    trail.note(Decision::EnsembleMember {
                        deployment: name,
                        status: "failed",
                        latency_ms: millis(started.elapsed()),
                    });
                    failures += 1;
                    last_error = Some(error);
                }
            }
        }
        // Members still out are dropped (their upstream calls cancelled).
        let late = total - answers.len() - failures;
        drop(members);
        // In the order the members are listed, whatever order they came in:
        // a judge's "answer 2" always means the same member.
        answers.sort_by_key(|(member, ..)| *member);
        let answers: Vec<(ChatResponse, Arc<Deployment>, Duration)> = answers
            .into_iter()
            .map(|(_, answer, served, elapsed)| (answer, served, elapsed))
            .collect();
        if answers.is_empty() {
            return Err(last_error.unwrap_or_else(|| {
                BackendError::new(ErrorKind::Timeout, "no member of the ensemble answered")
            }));
        }
        for (_, served, elapsed) in &answers {
            trail.note(Decision::EnsembleMember {
                deployment: served.name.clone(),
                status: "answered",
                latency_ms: millis(*elapsed),
            });
        }
        if late > 0 {
            info!(route = %route.name, late, "ensemble went on without its late members");
        }
        let question = last_user_text(request).unwrap_or_default();
        let texts: Vec<&str> = answers.iter().map(|(a, _, _)| a.content.as_str()).collect();
        match route.strategy {
            Strategy::Mixture => {
                let aggregator = spec.aggregator.as_deref().unwrap_or_default();
                let asked = ask(
                    aggregator,
                    mixture_prompt(&question, &texts),
                    request.max_tokens,
                );
                let written = Box::pin(self.chat(asked, run.context)).await?;
                for (answer, served, elapsed) in &answers {
                    trail.note(call(
                        "ensemble member",
                        &served.name,
                        answer.usage,
                        *elapsed,
                    ));
                }
                let deployment = self
                    .deployments
                    .get(&written.deployment)
                    .cloned()
                    .unwrap_or_else(|| answers[0].1.clone());
                Ok((written.value, deployment))
            }
            _ => {
                let judge = spec.judge.as_deref().unwrap_or_default();
                let pick = if answers.len() == 1 {
                    0
                } else {
                    let started = Instant::now();
                    match Box::pin(self.chat(
                        ask(judge, best_of_prompt(&question, &texts), Some(8)),
                        run.context,
                    ))
                    .await
                    {
                        Ok(verdict) => {
                            trail.note(call(
                                "ensemble judge",
                                &verdict.deployment,
                                verdict.value.usage,
                                started.elapsed(),
                            ));
                            parse_pick(&verdict.value.content, answers.len()).unwrap_or(0)
                        }
                        Err(error) => {
                            info!(judge, error = %error.message, "ensemble judge failed; the first answer is served");
                            0
                        }
                    }
                };
                trail.note(Decision::EnsemblePick {
                    deployment: answers[pick].1.name.clone(),
                    answer: pick,
                    of: answers.len(),
                });
                let mut picked = None;
                for (index, (answer, served, elapsed)) in answers.into_iter().enumerate() {
                    if index == pick {
                        picked = Some((answer, served));
                    } else {
                        trail.note(call("ensemble member", &served.name, answer.usage, elapsed));
                    }
                }
                picked.ok_or_else(|| BackendError::internal("the ensemble lost its pick"))
            }
        }
    }
}
