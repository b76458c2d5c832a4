//! The gateway: resolves a public name (a model or a route) to a plan of
//! deployments and runs the request through it, with retries, fallbacks,
//! hedging, circuit breakers and the response cache.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use futures::future::BoxFuture;
use switchyard_core::{
    BackendError, ChatRequest, ChatResponse, ChatStream, Decision, EmbeddingRequest,
    EmbeddingResponse, ErrorKind,
};
use switchyard_telemetry::{Operation, metrics};
use tracing::{Instrument, debug, info};

use crate::breaker::{BreakerSettings, Permit};
use crate::budget::RetryBudget;
use crate::cache::{CachedAnswer, ResponseCache, cache_key, fill_from_stream};
use crate::deployment::Deployment;
use crate::observe::{Answer, ObservedStream, annotate_answer, annotate_request, span_failed};
use crate::route::{FailureKind, Resilience, RouteSpec, Strategy};
use crate::rules::{CacheMode, RequestContext, Rule};
use crate::semantic::{Similar, closest, last_user_text};
use crate::semantic_cache::{
    SemanticCacheSpec, SemanticEntry, SemanticStore, best_match, semantic_key,
};
use crate::strategies::{CascadeSpec, EnsembleSpec, pieces};

mod composite;

/// Rules may lead to routes with rules of their own; config validation
/// refuses cycles, and this bounds the walk regardless.
const MAX_RULE_DEPTH: usize = 8;

/// A public name and how it is served.
#[derive(Debug)]
struct Route {
    name: String,
    strategy: Strategy,
    deployments: Vec<(Arc<Deployment>, u32)>,
    rules: Vec<Rule>,
    fallbacks: Vec<String>,
    fallback_on: Vec<FailureKind>,
    retries: u32,
    backoff: Duration,
    backoff_max: Duration,
    hedge_after: Option<Duration>,
    cache: Option<bool>,
    semantic_cache: Option<SemanticCacheSpec>,
    cascade: CascadeSpec,
    ensemble: EnsembleSpec,
    hidden: bool,
    created: u64,
}

/// Whether the cache answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from the cache.
    Hit,
    /// Served from the semantic cache: an earlier question that meant
    /// the same.
    SemanticHit,
    /// Looked up, not found; the answer is stored if it completes.
    Miss,
    /// Not cacheable (sampled request, cache off, or skipped by the caller).
    Bypass,
}

impl CacheStatus {
    /// Whether the answer came from the cache (exact or semantic): no
    /// model produced it, so it costs no tokens.
    pub fn answered_from_cache(self) -> bool {
        matches!(self, Self::Hit | Self::SemanticHit)
    }

    /// `hit`, `miss` or `bypass`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::SemanticHit => "semantic-hit",
            Self::Miss => "miss",
            Self::Bypass => "bypass",
        }
    }
}

/// An answer and how it was reached.
#[derive(Debug)]
pub struct Routed<T> {
    /// The answer.
    pub value: T,
    /// The route that served it (after rules).
    pub route: String,
    /// The deployment that answered.
    pub deployment: String,
    /// Whether the cache served it.
    pub cache: CacheStatus,
    /// For a semantic hit: how close the question came to the cached one.
    pub similarity: Option<f32>,
}

impl<T> Routed<T> {
    /// `route/deployment`, or just the model for a direct call.
    pub fn label(&self) -> String {
        if self.route == self.deployment {
            self.route.clone()
        } else {
            format!("{}/{}", self.route, self.deployment)
        }
    }
}

/// A public name as `/v1/models` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The name clients send.
    pub name: String,
    /// Who serves it.
    pub owned_by: String,
    /// When it was configured (Unix seconds).
    pub created: u64,
    /// Whether it is in memory, for a name served by one local model.
    pub residency: Option<switchyard_core::ModelStatus>,
}

/// The models and routes this gateway serves.
pub struct Gateway {
    deployments: BTreeMap<String, Arc<Deployment>>,
    routes: BTreeMap<String, Route>,
    budget: RetryBudget,
    cache: Option<Arc<dyn ResponseCache>>,
    cache_by_default: bool,
    semantic: Option<Arc<dyn SemanticStore>>,
}

/// Builds a [`Gateway`].
pub struct GatewayBuilder {
    deployments: BTreeMap<String, Arc<Deployment>>,
    routes: Vec<(String, RouteSpec)>,
    resilience: Resilience,
    cache: Option<Arc<dyn ResponseCache>>,
    cache_by_default: bool,
    semantic: Option<Arc<dyn SemanticStore>>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl GatewayBuilder {
    /// The breaker thresholds new deployments should use.
    pub fn breaker_settings(&self) -> BreakerSettings {
        self.resilience.breaker
    }

    /// Serves a deployment under its own name (and lets routes use it). A
    /// deployment reused across config reloads keeps its statistics.
    pub fn deployment(mut self, deployment: Arc<Deployment>) -> Self {
        self.deployments.insert(deployment.name.clone(), deployment);
        self
    }

    /// Adds a route; its deployments must have been added.
    pub fn route(mut self, name: impl Into<String>, spec: RouteSpec) -> Self {
        self.routes.push((name.into(), spec));
        self
    }

    /// Uses `cache`; routes that do not say cache when `by_default`.
    pub fn cache(mut self, cache: Arc<dyn ResponseCache>, by_default: bool) -> Self {
        self.cache = Some(cache);
        self.cache_by_default = by_default;
        self
    }

    /// Keeps semantic cache entries in `store` (routes opt in).
    pub fn semantic_store(mut self, store: Arc<dyn SemanticStore>) -> Self {
        self.semantic = Some(store);
        self
    }

    /// The gateway. Unknown deployments in a route are an error.
    pub fn build(self) -> Result<Gateway, String> {
        let created = now();
        let mut routes = BTreeMap::new();
        for (name, deployment) in &self.deployments {
            routes.insert(
                name.clone(),
                Route {
                    name: name.clone(),
                    strategy: Strategy::Priority,
                    deployments: vec![(deployment.clone(), 1)],
                    rules: Vec::new(),
                    fallbacks: Vec::new(),
                    fallback_on: Vec::new(),
                    retries: 0,
                    backoff: Duration::ZERO,
                    backoff_max: Duration::ZERO,
                    hedge_after: None,
                    cache: None,
                    semantic_cache: None,
                    cascade: CascadeSpec::default(),
                    ensemble: EnsembleSpec::default(),
                    hidden: false,
                    created,
                },
            );
        }
        for (name, spec) in self.routes {
            let deployments = spec
                .deployments
                .iter()
                .map(|(model, weight)| {
                    self.deployments
                        .get(model)
                        .map(|dep| (dep.clone(), *weight))
                        .ok_or_else(|| format!("route {name}: no deployment {model:?}"))
                })
                .collect::<Result<Vec<_>, String>>()?;
            routes.insert(
                name.clone(),
                Route {
                    name: name.clone(),
                    strategy: spec.strategy,
                    deployments,
                    rules: spec.rules,
                    fallbacks: spec.fallbacks,
                    fallback_on: spec.fallback_on,
                    retries: spec.retries,
                    backoff: spec.backoff,
                    backoff_max: spec.backoff_max,
                    hedge_after: spec.hedge_after,
                    cache: spec.cache,
                    semantic_cache: spec.semantic_cache,
                    cascade: spec.cascade,
                    ensemble: spec.ensemble,
                    hidden: spec.hidden,
                    created,
                },
            );
        }
        Ok(Gateway {
            deployments: self.deployments,
            routes,
            budget: RetryBudget::new(
                self.resilience.retry_budget_ratio,
                self.resilience.retry_budget_min_per_sec,
            ),
            cache: self.cache,
            cache_by_default: self.cache_by_default,
            semantic: self.semantic,
        })
    }
}

/// What kind of failure an error is, for `fallback_on`.
fn failure_kind(error: &BackendError) -> Option<FailureKind> {
    match error.kind {
        ErrorKind::RateLimited => Some(FailureKind::RateLimited),
        ErrorKind::Overloaded => Some(FailureKind::Overloaded),
        // A deployment whose upstream does not know its model is broken.
        ErrorKind::Upstream | ErrorKind::NotFound => Some(FailureKind::Upstream),
        ErrorKind::Timeout => Some(FailureKind::Timeout),
        ErrorKind::Authentication => Some(FailureKind::Auth),
        ErrorKind::InvalidRequest if error.code.as_deref() == Some("context_length_exceeded") => {
            Some(FailureKind::ContextLength)
        }
        ErrorKind::InvalidRequest | ErrorKind::Cancelled | ErrorKind::Internal => None,
    }
}

/// Whether the failure says something about the deployment's health (a
/// bad request does not).
fn counts_against_deployment(error: &BackendError) -> bool {
    !matches!(error.kind, ErrorKind::InvalidRequest | ErrorKind::Cancelled)
}

/// Orders a route's deployments for one request.
fn order(strategy: Strategy, deployments: &[(Arc<Deployment>, u32)]) -> Vec<Arc<Deployment>> {
    let mut candidates: Vec<(Arc<Deployment>, u32)> = deployments.to_vec();
    match strategy {
        // Steps and members in the order listed.
        Strategy::Priority | Strategy::Cascade | Strategy::BestOf | Strategy::Mixture => {}
        Strategy::Weighted => {
            // Weighted sampling without replacement: the first pick follows
            // the weights, the rest are the failover order.
            let mut ordered = Vec::with_capacity(candidates.len());
            while !candidates.is_empty() {
                let total: u64 = candidates.iter().map(|(_, w)| u64::from(*w)).sum();
                let index = if total == 0 {
                    0
                } else {
                    let mut point = fastrand::u64(0..total);
                    candidates
                        .iter()
                        .position(|(_, w)| {
                            let w = u64::from(*w);
                            if point < w {
                                true
                            } else {
                                point -= w;
                                false
                            }
                        })
                        .unwrap_or(0)
                };
                ordered.push(candidates.remove(index));
            }
            candidates = ordered;
        }
        Strategy::LeastInflight => {
            fastrand::shuffle(&mut candidates);
            candidates.sort_by_key(|(d, _)| d.inflight());
        }
        Strategy::LowestCost => {
            candidates.sort_by(|(a, _), (b, _)| a.price().total_cmp(&b.price()));
        }
        Strategy::LeastLatency => {
            // Power of two choices: two at random, the faster first; the
            // rest by score as failover order.
            if candidates.len() >= 2 {
                let a = fastrand::usize(0..candidates.len());
                let mut b = fastrand::usize(0..candidates.len() - 1);
                if b >= a {
                    b += 1;
                }
                let pick = if candidates[b].0.latency_score() < candidates[a].0.latency_score() {
                    b
                } else {
                    a
                };
                let first = candidates.remove(pick);
                candidates
                    .sort_by(|(x, _), (y, _)| x.latency_score().total_cmp(&y.latency_score()));
                candidates.insert(0, first);
            }
        }
    }
    candidates.into_iter().map(|(d, _)| d).collect()
}

type Attempt<T> = Result<(T, Arc<Deployment>), BackendError>;

/// What every attempt of one request shares.
struct Run<'a, T> {
    route: &'a Route,
    operation: Operation,
    call: &'a (dyn Fn(Arc<Deployment>) -> BoxFuture<'static, Result<T, BackendError>> + Sync),
    context: &'a RequestContext,
}

/// One attempt on one deployment, with the breaker and load accounted, in
/// a client span of its own (a sibling of the request's other attempts),
/// timed on the request's upstream clock.
async fn attempt<T: Answer>(
    run: &Run<'_, T>,
    deployment: Arc<Deployment>,
    permit: Permit,
    number: u32,
) -> Attempt<T> {
    let _inflight = deployment.start();
    let target = deployment.target(run.operation);
    let span = target.span(number);
    let started = Instant::now();
    // Remote adapters time their own network waits, so that their
    // encoding and decoding count as the gateway's time; for the others
    // (the embedded models) the whole call is time upstream.
    let clock = &run.context.upstream;
    let result = {
        let _waiting = (!deployment.times_network_waits(run.operation)).then(|| clock.waiting());
        let call = (run.call)(deployment.clone()).instrument(span.clone());
        switchyard_telemetry::clock::timing(clock.clone(), call).await
    };
    match &result {
        Ok(_) => {
            deployment.observe_latency(started.elapsed());
            permit.success();
        }
        Err(error) if counts_against_deployment(error) => permit.failure(),
        Err(_) => permit.success(),
    }
    match &result {
        Err(error) => {
            span_failed(&span, error);
            target.record(started, Some(error.kind.as_str()), None);
        }
        Ok(answer) if !T::ENDS_LATER => target.record(started, None, answer.tokens()),
        Ok(_) => {}
    }
    result.map(|value| (value, deployment))
}

impl Gateway {
    /// A builder with these breaker and retry-budget settings.
    pub fn builder(resilience: Resilience) -> GatewayBuilder {
        GatewayBuilder {
            deployments: BTreeMap::new(),
            routes: Vec::new(),
            resilience,
            cache: None,
            cache_by_default: false,
            semantic: None,
        }
    }

    /// A gateway that serves nothing: every name is unknown.
    pub fn empty() -> Self {
        Self::builder(Resilience::default())
            .build()
            .unwrap_or_else(|_| unreachable!("a gateway without routes always builds"))
    }

    /// A deployment by model name (to reuse it across reloads).
    pub fn deployment(&self, name: &str) -> Option<&Arc<Deployment>> {
        self.deployments.get(name)
    }

    /// Every deployment, for metrics read at scrape time.
    pub fn deployments(&self) -> impl Iterator<Item = &Arc<Deployment>> {
        self.deployments.values()
    }

    /// Whether `name` is a public name this gateway serves.
    pub fn knows(&self, name: &str) -> bool {
        self.routes.contains_key(name)
    }

    /// Whether every deployment can serve.
    pub fn is_ready(&self) -> bool {
        self.deployments.values().all(|d| d.is_ready())
    }

    /// Tokens `request`'s prompt takes in the tokenizer of the one model
    /// behind `name`, where that model counts them (a loaded local model);
    /// `None` for routes over several deployments and for remote models.
    pub async fn count_prompt_tokens(&self, name: &str, request: &ChatRequest) -> Option<u64> {
        let route = self.routes.get(name)?;
        match route.deployments.as_slice() {
            [(only, _)] => only.chat.as_ref()?.count_prompt_tokens(request).await,
            _ => None,
        }
    }

    /// The public names, for `/v1/models`.
    pub fn listing(&self) -> Vec<Listed> {
        self.routes
            .values()
            .filter(|r| !r.hidden)
            .map(|r| self.listed(r))
            .collect()
    }

    /// One public name, for `/v1/models/{id}`.
    pub fn lookup(&self, name: &str) -> Result<Listed, BackendError> {
        self.route(name).map(|r| self.listed(r))
    }

    fn listed(&self, route: &Route) -> Listed {
        let owned_by = route
            .deployments
            .first()
            .and_then(|(d, _)| {
                d.chat
                    .as_ref()
                    .map(|c| c.info().owned_by)
                    .or_else(|| d.embeddings.as_ref().map(|e| e.info().owned_by))
            })
            .unwrap_or_else(|| "switchyard".into());
        let residency = match route.deployments.as_slice() {
            [(only, _)] => only
                .chat
                .as_ref()
                .and_then(|chat| chat.residency())
                .map(|control| control.status()),
            _ => None,
        };
        Listed {
            name: route.name.clone(),
            owned_by,
            created: route.created,
            residency,
        }
    }

    fn route(&self, name: &str) -> Result<&Route, BackendError> {
        self.routes.get(name).ok_or_else(|| {
            let known: Vec<&str> = self
                .routes
                .values()
                .filter(|r| !r.hidden)
                .map(|r| r.name.as_str())
                .collect();
            BackendError::new(
                ErrorKind::NotFound,
                format!(
                    "the model `{name}` does not exist; available models: {}",
                    known.join(", ")
                ),
            )
            .with_param("model")
            .with_code("model_not_found")
        })
    }

    /// The route a request ends up on after its rules.
    async fn resolve(
        &self,
        request: &ChatRequest,
        context: &RequestContext,
    ) -> Result<&Route, BackendError> {
        let mut route = self.route(&request.model)?;
        for _ in 0..MAX_RULE_DEPTH {
            let Some((rule, similarity)) = self.matching_rule(route, request, context).await else {
                break;
            };
            context.trail.note(Decision::Rule {
                from: route.name.clone(),
                to: rule.target.clone(),
                similarity,
            });
            route = self.route(&rule.target)?;
        }
        Ok(route)
    }

    /// The rule of `route` that takes `request`: rules in order, the first
    /// that holds; consecutive rules by meaning weighed together, the one
    /// whose examples come closest (above its threshold) winning.
    async fn matching_rule<'r>(
        &self,
        route: &'r Route,
        request: &ChatRequest,
        context: &RequestContext,
    ) -> Option<(&'r Rule, Option<f32>)> {
        let rules = &route.rules;
        let mut at = 0;
        while at < rules.len() {
            if rules[at].similar().is_none() {
                if rules[at].matches(request, context) {
                    return Some((&rules[at], None));
                }
                at += 1;
                continue;
            }
            let end = at
                + rules[at..]
                    .iter()
                    .take_while(|r| r.similar().is_some())
                    .count();
            let mut best: Option<(&Rule, f32)> = None;
            for rule in &rules[at..end] {
                let Some(similar) = rule.similar().filter(|_| rule.matches(request, context))
                else {
                    continue;
                };
                match self.similarity(similar, request, context).await {
                    Ok(Some(score))
                        if score >= similar.threshold && best.is_none_or(|(_, b)| score > b) =>
                    {
                        best = Some((rule, score));
                    }
                    Ok(_) => {}
                    // A rule that cannot be weighed does not match; the
                    // request goes on by the next rules.
                    Err(error) => {
                        info!(model = %similar.examples.model, error = %error.message, "routing by meaning skipped");
                        context.trail.note(Decision::Skipped {
                            deployment: rule.target.clone(),
                            why: format!("routing by meaning failed: {}", error.message),
                        });
                    }
                }
            }
            if let Some((rule, score)) = best {
                return Some((rule, Some(score)));
            }
            at = end;
        }
        None
    }

    /// How close the request's last user turn comes to `similar`'s
    /// examples; `None` without a user turn.
    async fn similarity(
        &self,
        similar: &Similar,
        request: &ChatRequest,
        context: &RequestContext,
    ) -> Result<Option<f32>, BackendError> {
        let Some(text) = last_user_text(request) else {
            return Ok(None);
        };
        let model = &similar.examples.model;
        let examples = similar
            .examples
            .vectors(|texts| self.embed_texts(model, texts, context))
            .await?;
        let vector = self.embed_memoized(model, &text, context).await?;
        Ok(closest(&vector, examples).map(|(_, score)| score))
    }

    /// The vector of `text` by `model`, computed once per request.
    pub async fn embed_memoized(
        &self,
        model: &str,
        text: &str,
        context: &RequestContext,
    ) -> Result<Arc<Vec<f32>>, BackendError> {
        if let Some(vector) = context.embeddings.get(model, text) {
            return Ok(vector);
        }
        let vector = self
            .embed_texts(model, vec![text.to_owned()], context)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| BackendError::internal("the embeddings model returned no vector"))?;
        let vector = Arc::new(vector);
        context.embeddings.put(model, text, vector.clone());
        Ok(vector)
    }

    async fn embed_texts(
        &self,
        model: &str,
        texts: Vec<String>,
        context: &RequestContext,
    ) -> Result<Vec<Vec<f32>>, BackendError> {
        let request = EmbeddingRequest {
            model: model.to_owned(),
            inputs: texts,
            dimensions: None,
            user: None,
        };
        Ok(self.embed(request, context).await?.value.embeddings)
    }

    /// The deployments to try, in order: the route's, then its fallbacks'.
    fn plan(&self, route: &Route) -> Vec<Arc<Deployment>> {
        let mut plan = order(route.strategy, &route.deployments);
        for fallback in &route.fallbacks {
            if let Some(next) = self.routes.get(fallback) {
                for deployment in order(next.strategy, &next.deployments) {
                    if !plan.iter().any(|d| Arc::ptr_eq(d, &deployment)) {
                        plan.push(deployment);
                    }
                }
            }
        }
        plan
    }

    /// The wait before retry `attempt` (0-based): exponential with full
    /// jitter, at least the upstream's Retry-After; `None` when the
    /// upstream asks for longer than the route will wait.
    fn backoff(route: &Route, attempt: u32, retry_after: Option<Duration>) -> Option<Duration> {
        let ceiling = route
            .backoff
            .saturating_mul(1u32 << attempt.min(16))
            .min(route.backoff_max);
        let jittered = ceiling.mul_f64(fastrand::f64());
        match retry_after {
            Some(wait) if wait > route.backoff_max => None,
            Some(wait) => Some(wait.max(jittered)),
            None => Some(jittered),
        }
    }

    /// Runs the plan in a span of its own, whose children are the attempts.
    async fn run<T: Answer + Send + 'static>(
        &self,
        run: Run<'_, T>,
        plan: Vec<Arc<Deployment>>,
    ) -> Attempt<T> {
        let span = tracing::debug_span!(
            "route",
            otel.name = %format_args!("route {}", run.route.name),
        );
        switchyard_telemetry::trace::annotate(&span, || {
            [("switchyard.route", run.route.name.clone().into())]
        });
        self.run_plan(&run, plan).instrument(span).await
    }

    /// Runs `call` through the plan.
    async fn run_plan<T: Answer + Send + 'static>(
        &self,
        run: &Run<'_, T>,
        plan: Vec<Arc<Deployment>>,
    ) -> Attempt<T> {
        let route = run.route;
        let trail = &run.context.trail;
        let mut number = 0;
        self.budget.record_request();
        let mut last_error: Option<BackendError> = None;
        let mut soonest_probe: Option<Duration> = None;
        let mut index = 0;
        while index < plan.len() {
            let deployment = plan[index].clone();
            index += 1;
            let mut tries = 0;
            loop {
                let Some(permit) = deployment.breaker().try_acquire() else {
                    let wait = deployment.breaker().retry_in();
                    soonest_probe = match (soonest_probe, wait) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    debug!(deployment = %deployment.name, "circuit open; skipped");
                    trail.note(Decision::Skipped {
                        deployment: deployment.name.clone(),
                        why: "circuit open".into(),
                    });
                    break;
                };
                number += 1;
                let outcome = match route.hedge_after {
                    Some(delay) if tries == 0 && index < plan.len() => {
                        Self::hedged(
                            run,
                            deployment.clone(),
                            permit,
                            &plan,
                            &mut index,
                            delay,
                            &mut number,
                        )
                        .await
                    }
                    _ => attempt(run, deployment.clone(), permit, number).await,
                };
                let error = match outcome {
                    Ok(done) => return Ok(done),
                    Err(error) => error,
                };
                let kind = failure_kind(&error);
                trail.note(Decision::AttemptFailed {
                    deployment: deployment.name.clone(),
                    kind: format!("{:?}", error.kind),
                    message: error.message.clone(),
                });
                if !kind.is_some_and(|k| route.fallback_on.contains(&k)) {
                    return Err(error);
                }
                info!(
                    deployment = %deployment.name,
                    kind = ?error.kind,
                    message = %error.message,
                    "attempt failed"
                );
                let same_again = matches!(
                    kind,
                    Some(
                        FailureKind::RateLimited
                            | FailureKind::Overloaded
                            | FailureKind::Upstream
                            | FailureKind::Timeout
                    )
                );
                if same_again && tries < route.retries {
                    if let Some(wait) = Self::backoff(route, tries, error.retry_after)
                        && self.budget.try_retry()
                    {
                        debug!(deployment = %deployment.name, wait_ms = wait.as_millis() as u64, "retrying");
                        metrics().retry(&deployment.name);
                        trail.note(Decision::Retry {
                            deployment: deployment.name.clone(),
                            wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        });
                        tokio::time::sleep(wait).await;
                        tries += 1;
                        last_error = Some(error);
                        continue;
                    }
                    debug!("retry budget spent or Retry-After too long; moving on");
                    trail.note(Decision::NoRetry {
                        deployment: deployment.name.clone(),
                        why: "retry budget spent or Retry-After too long".into(),
                    });
                }
                if index < plan.len() {
                    metrics().fallback(&route.name, &deployment.name);
                }
                last_error = Some(error);
                break;
            }
        }
        Err(last_error.unwrap_or_else(|| {
            BackendError::new(
                ErrorKind::Overloaded,
                format!(
                    "no deployment of `{}` can take requests now (circuit breakers open)",
                    route.name
                ),
            )
            .with_retry_after(soonest_probe.or(Some(Duration::from_secs(1))))
        }))
    }

    /// The first attempt, and a second one on the next deployment if the
    /// first has not answered within `delay`; the first success wins and
    /// the other attempt is dropped (cancelled).
    async fn hedged<T: Answer + Send + 'static>(
        run: &Run<'_, T>,
        first: Arc<Deployment>,
        permit: Permit,
        plan: &[Arc<Deployment>],
        index: &mut usize,
        delay: Duration,
        number: &mut u32,
    ) -> Attempt<T> {
        let a = attempt(run, first, permit, *number);
        tokio::pin!(a);
        tokio::select! {
            result = &mut a => return result,
            () = tokio::time::sleep(delay) => {}
        }
        let second = loop {
            let Some(candidate) = plan.get(*index) else {
                break None;
            };
            *index += 1;
            if let Some(permit) = candidate.breaker().try_acquire() {
                break Some((candidate.clone(), permit));
            }
        };
        let Some((deployment, permit)) = second else {
            return a.await;
        };
        debug!(deployment = %deployment.name, "hedging with a second attempt");
        metrics().hedge(&run.route.name);
        *number += 1;
        run.context.trail.note(Decision::Hedge {
            deployment: deployment.name.clone(),
            after_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        });
        let b = attempt(run, deployment, permit, *number);
        tokio::pin!(b);
        tokio::select! {
            result = &mut a => match result {
                Ok(done) => Ok(done),
                Err(_) => b.await,
            },
            result = &mut b => match result {
                Ok(done) => Ok(done),
                Err(_) => a.await,
            },
        }
    }

    fn cache_for(
        &self,
        route: &Route,
        request: &ChatRequest,
        context: &RequestContext,
    ) -> Option<(Arc<dyn ResponseCache>, String)> {
        let cache = self.cache.as_ref()?;
        if request.logprobs {
            // Cached answers keep no log-probabilities.
            return None;
        }
        let route_caches = route.cache.unwrap_or(self.cache_by_default);
        let wanted = match context.cache {
            CacheMode::Skip => false,
            CacheMode::Force => true,
            CacheMode::Default => route_caches && request.sampling.is_deterministic(),
        };
        wanted.then(|| {
            (
                cache.clone(),
                cache_key(&context.caller, &route.name, request),
            )
        })
    }

    /// The semantic cache's group key and settings for `request` on
    /// `route`, when the route keeps one and the request may use it (as
    /// for the exact cache: deterministic, or forced; never when skipped).
    fn semantic_for<'r>(
        &self,
        route: &'r Route,
        request: &ChatRequest,
        context: &RequestContext,
    ) -> Option<(Arc<dyn SemanticStore>, String, &'r SemanticCacheSpec)> {
        let spec = route.semantic_cache.as_ref()?;
        let store = self.semantic.as_ref()?;
        if request.logprobs {
            return None;
        }
        let wanted = match context.cache {
            CacheMode::Skip => false,
            CacheMode::Force => true,
            CacheMode::Default => request.sampling.is_deterministic(),
        };
        (wanted && last_user_text(request).is_some()).then(|| {
            (
                store.clone(),
                semantic_key(&context.caller, &route.name, request),
                spec,
            )
        })
    }

    /// A cached answer to a question that meant the same, with how close
    /// it came; a failed embedding is a miss.
    /// The answer the exact cache, then the semantic cache, holds for
    /// `request`, with which one answered and the semantic similarity.
    async fn cached_answer(
        &self,
        route: &Route,
        request: &ChatRequest,
        context: &RequestContext,
        cached: &Option<(Arc<dyn ResponseCache>, String)>,
        semantic: &Option<(Arc<dyn SemanticStore>, String, &SemanticCacheSpec)>,
    ) -> Option<(CachedAnswer, CacheStatus, Option<f32>)> {
        if let Some((cache, key)) = cached
            && let Some(hit) = lookup(route, cache.as_ref(), key).await
        {
            return Some((hit, CacheStatus::Hit, None));
        }
        let (store, key, spec) = semantic.as_ref()?;
        let (hit, similarity) = self
            .semantic_lookup(route, store.as_ref(), key, spec, request, context)
            .await?;
        Some((hit, CacheStatus::SemanticHit, Some(similarity)))
    }

    async fn semantic_lookup(
        &self,
        route: &Route,
        store: &dyn SemanticStore,
        key: &str,
        spec: &SemanticCacheSpec,
        request: &ChatRequest,
        context: &RequestContext,
    ) -> Option<(CachedAnswer, f32)> {
        let text = last_user_text(request)?;
        let vector = match self.embed_memoized(&spec.model, &text, context).await {
            Ok(vector) => vector,
            Err(error) => {
                info!(model = %spec.model, error = %error.message, "semantic cache skipped");
                return None;
            }
        };
        let hit = best_match(store.entries(key).await, &vector, spec.threshold);
        metrics().semantic_cache_lookup(&route.name, hit.as_ref().map(|(_, s)| *s));
        hit
    }

    /// Keeps `answer` in the semantic cache under `key`, with the vector
    /// the lookup computed (off the request's path).
    fn semantic_fill(
        store: Arc<dyn SemanticStore>,
        key: String,
        spec: &SemanticCacheSpec,
        request: &ChatRequest,
        context: &RequestContext,
        answer: CachedAnswer,
    ) {
        let vector =
            last_user_text(request).and_then(|text| context.embeddings.get(&spec.model, &text));
        if let Some(vector) = vector {
            tokio::spawn(async move {
                store
                    .add(
                        key,
                        SemanticEntry {
                            vector: (*vector).clone(),
                            answer,
                        },
                    )
                    .await;
            });
        }
    }

    /// A whole completion.
    pub async fn chat(
        &self,
        request: ChatRequest,
        context: &RequestContext,
    ) -> Result<Routed<ChatResponse>, BackendError> {
        let route = self.resolve(&request, context).await?;
        self.chat_on(route, request, context).await
    }

    /// A whole completion on `route` (its rules already applied).
    async fn chat_on(
        &self,
        route: &Route,
        request: ChatRequest,
        context: &RequestContext,
    ) -> Result<Routed<ChatResponse>, BackendError> {
        let cached = self.cache_for(route, &request, context);
        let semantic = self.semantic_for(route, &request, context);
        if let Some((hit, cache, similarity)) = self
            .cached_answer(route, &request, context, &cached, &semantic)
            .await
        {
            return Ok(Routed {
                value: hit.to_response(),
                route: route.name.clone(),
                deployment: hit.deployment,
                cache,
                similarity,
            });
        }
        let original = semantic.is_some().then(|| request.clone());
        let plan: Vec<_> = self
            .plan(route)
            .into_iter()
            .filter(|d| d.chat.is_some())
            .collect();
        if plan.is_empty() {
            return Err(not_a_chat_model(&route.name));
        }
        // A cascade judging confidence asks its steps for log-probabilities;
        // the client gets them only if it asked too.
        let client_wants_logprobs = request.logprobs;
        let mut request = request;
        if route.strategy == Strategy::Cascade && route.cascade.wants_logprobs() {
            request.logprobs = true;
        }
        let request = Arc::new(request);
        let shared = request.clone();
        let call = move |deployment: Arc<Deployment>| -> BoxFuture<'static, Result<ChatResponse, BackendError>> {
            let request = shared.clone();
            Box::pin(async move {
                let Some(chat) = &deployment.chat else {
                    return Err(not_a_chat_model(&deployment.name));
                };
                let span = tracing::Span::current();
                annotate_request(&span, &request);
                let response = chat.chat((*request).clone()).await?;
                annotate_answer(&span, Some(&response.model), Some(&response.usage), Some(response.finish_reason));
                Ok(response)
            })
        };
        let run = Run {
            route,
            operation: Operation::Chat,
            call: &call,
            context,
        };
        let (mut response, deployment) = match route.strategy {
            Strategy::Cascade => self.cascade(&run, plan, &request).await?,
            Strategy::BestOf | Strategy::Mixture => self.ensemble(&run, plan, &request).await?,
            _ => self.run(run, plan).await?,
        };
        if !client_wants_logprobs {
            response.logprobs = None;
        }
        let consulted = semantic.is_some();
        if let (Some((store, key, spec)), Some(original)) = (semantic, &original) {
            let answer = CachedAnswer::from_response(&deployment.name, &response);
            Self::semantic_fill(store, key, spec, original, context, answer);
        }
        let status = match cached {
            Some((cache, key)) => {
                let answer = CachedAnswer::from_response(&deployment.name, &response);
                tokio::spawn(async move { cache.put(key, answer).await });
                CacheStatus::Miss
            }
            None if consulted => CacheStatus::Miss,
            None => CacheStatus::Bypass,
        };
        Ok(Routed {
            value: response,
            route: route.name.clone(),
            deployment: deployment.name.clone(),
            cache: status,
            similarity: None,
        })
    }

    /// A streamed completion. Failures before the first event fall back;
    /// after it, they reach the client as stream errors.
    pub async fn chat_stream(
        &self,
        request: ChatRequest,
        context: &RequestContext,
    ) -> Result<Routed<ChatStream>, BackendError> {
        let route = self.resolve(&request, context).await?;
        if route.strategy.asks_several() {
            // Several models' answers are weighed before one is served: the
            // answer streams once chosen.
            let routed = self.chat_on(route, request, context).await?;
            let held = CachedAnswer::from_response(&routed.deployment, &routed.value);
            return Ok(Routed {
                value: CachedAnswer {
                    chunks: pieces(&held.chunks.concat()),
                    ..held
                }
                .to_stream(),
                route: routed.route,
                deployment: routed.deployment,
                cache: routed.cache,
                similarity: routed.similarity,
            });
        }
        let cached = self.cache_for(route, &request, context);
        let semantic = self.semantic_for(route, &request, context);
        if let Some((hit, cache, similarity)) = self
            .cached_answer(route, &request, context, &cached, &semantic)
            .await
        {
            return Ok(Routed {
                value: hit.to_stream(),
                route: route.name.clone(),
                deployment: hit.deployment,
                cache,
                similarity,
            });
        }
        // What the semantic cache keeps of a finished stream.
        let semantic_sink = semantic.map(|(store, key, spec)| {
            let spec = spec.clone();
            let request = request.clone();
            let context = context.clone();
            move |answer: CachedAnswer| {
                Self::semantic_fill(store, key, &spec, &request, &context, answer);
            }
        });
        let plan: Vec<_> = self
            .plan(route)
            .into_iter()
            .filter(|d| d.chat.is_some())
            .collect();
        if plan.is_empty() {
            return Err(not_a_chat_model(&route.name));
        }
        let request = Arc::new(request);
        let clock = context.upstream.clone();
        let call = move |deployment: Arc<Deployment>| -> BoxFuture<'static, Result<ChatStream, BackendError>> {
            let request = request.clone();
            let clock = clock.clone();
            Box::pin(async move {
                let Some(chat) = &deployment.chat else {
                    return Err(not_a_chat_model(&deployment.name));
                };
                let started = Instant::now();
                let span = tracing::Span::current();
                annotate_request(&span, &request);
                let stream = chat.chat_stream((*request).clone()).await?;
                // The attempt's span stays open until the stream ends.
                let observed = ObservedStream::new(stream, clock, deployment.target(Operation::Chat), span, started);
                Ok(observed.boxed())
            })
        };
        let run = Run {
            route,
            operation: Operation::Chat,
            call: &call,
            context,
        };
        let (stream, deployment) = self.run(run, plan).await?;
        let model = deployment
            .chat
            .as_ref()
            .map(|c| c.info().upstream_model)
            .unwrap_or_default();
        let consulted = semantic_sink.is_some();
        let stream = match semantic_sink {
            Some(sink) => fill_from_stream(stream, deployment.name.clone(), model.clone(), sink),
            None => stream,
        };
        let (stream, status) = match cached {
            Some((cache, key)) => (
                fill_from_stream(stream, deployment.name.clone(), model, move |answer| {
                    // Off the stream's path: the client is not kept waiting.
                    tokio::spawn(async move { cache.put(key, answer).await });
                }),
                CacheStatus::Miss,
            ),
            None if consulted => (stream, CacheStatus::Miss),
            None => (stream, CacheStatus::Bypass),
        };
        Ok(Routed {
            value: stream,
            route: route.name.clone(),
            deployment: deployment.name.clone(),
            cache: status,
            similarity: None,
        })
    }

    /// Embeddings, with failover across the route's embedding deployments.
    pub async fn embed(
        &self,
        request: EmbeddingRequest,
        context: &RequestContext,
    ) -> Result<Routed<EmbeddingResponse>, BackendError> {
        let route = self.route(&request.model)?;
        let plan: Vec<_> = self
            .plan(route)
            .into_iter()
            .filter(|d| d.embeddings.is_some())
            .collect();
        if plan.is_empty() {
            return Err(BackendError::invalid_request(format!(
                "the model `{}` does not produce embeddings; send it to /v1/chat/completions",
                route.name
            ))
            .with_param("model")
            .with_code("model_not_supported"));
        }
        let request = Arc::new(request);
        let call = move |deployment: Arc<Deployment>| -> BoxFuture<'static, Result<EmbeddingResponse, BackendError>> {
            let request = request.clone();
            Box::pin(async move {
                match &deployment.embeddings {
                    Some(embedder) => embedder.embed((*request).clone()).await,
                    None => Err(BackendError::internal("deployment without embeddings")),
                }
            })
        };
        let run = Run {
            route,
            operation: Operation::Embeddings,
            call: &call,
            context,
        };
        let (response, deployment) = self.run(run, plan).await?;
        Ok(Routed {
            value: response,
            route: route.name.clone(),
            deployment: deployment.name.clone(),
            cache: CacheStatus::Bypass,
            similarity: None,
        })
    }
}

/// A cache lookup, in a span of its own and counted.
async fn lookup(route: &Route, cache: &dyn ResponseCache, key: &str) -> Option<CachedAnswer> {
    let span = tracing::debug_span!("cache lookup", otel.name = "cache lookup");
    let hit = cache.get(key).instrument(span.clone()).await;
    switchyard_telemetry::trace::annotate(&span, || {
        [(
            "switchyard.cache",
            if hit.is_some() { "hit" } else { "miss" }.into(),
        )]
    });
    metrics().cache_lookup(&route.name, hit.is_some());
    hit
}

fn not_a_chat_model(name: &str) -> BackendError {
    BackendError::invalid_request(format!(
        "the model `{name}` is an embedding model; send it to /v1/embeddings"
    ))
    .with_param("model")
    .with_code("model_not_supported")
}
