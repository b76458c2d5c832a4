//! The gateway's policies with scripted backends: fallbacks, retries and
//! their budget, breakers, Retry-After, weighted splits, hedging, rules and
//! the cache. (End-to-end tests with the real server and the stand-in
//! upstream live in the `switchyard` crate.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use futures::future::BoxFuture;
use futures::{StreamExt, stream};
use switchyard_config::{
    DeploymentRef, FailureKind, ResilienceConfig, RouteConfig, RuleConfig, Strategy,
};
use switchyard_core::{
    BackendError, BackendInfo, ChatBackend, ChatMessage, ChatRequest, ChatStream, ErrorKind,
    FinishReason, Role, StreamEvent, Usage,
};
use switchyard_orchestration::{
    BreakerState, CacheMode, CacheStatus, Deployment, Gateway, MemoryCache, RequestContext,
};

/// A backend that answers with its name, after an optional delay, unless a
/// scripted failure is queued.
struct Scripted {
    name: &'static str,
    delay: Duration,
    failures: Mutex<VecDeque<BackendError>>,
    always_fail: Mutex<Option<BackendError>>,
    calls: AtomicUsize,
    finished: AtomicUsize,
}

impl Scripted {
    fn new(name: &'static str) -> Arc<Self> {
        Arc::new(Self {
            name,
            delay: Duration::ZERO,
            failures: Mutex::new(VecDeque::new()),
            always_fail: Mutex::new(None),
            calls: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
        })
    }

    fn slow(name: &'static str, delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            delay,
            ..Arc::try_unwrap(Self::new(name)).ok().unwrap()
        })
    }

    fn fail_next(&self, error: BackendError) {
        self.failures.lock().unwrap().push_back(error);
    }

    fn fail_always(&self, error: Option<BackendError>) {
        *self.always_fail.lock().unwrap() = error;
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl ChatBackend for Scripted {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            kind: "scripted",
            upstream_model: self.name.into(),
            owned_by: "test".into(),
        }
    }

    fn chat_stream(
        &self,
        _request: ChatRequest,
    ) -> BoxFuture<'_, Result<ChatStream, BackendError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            if let Some(error) = self.always_fail.lock().unwrap().clone() {
                return Err(error);
            }
            if let Some(error) = self.failures.lock().unwrap().pop_front() {
                return Err(error);
            }
            self.finished.fetch_add(1, Ordering::SeqCst);
            let events = vec![
                Ok(StreamEvent::Delta(self.name.to_string())),
                Ok(StreamEvent::Finish(FinishReason::Stop)),
                Ok(StreamEvent::Usage(Usage::new(1, 1))),
            ];
            Ok(stream::iter(events).boxed())
        })
    }
}

fn resilience() -> ResilienceConfig {
    ResilienceConfig {
        breaker_failures: 3,
        breaker_open_ms: 100,
        retry_budget_ratio: 0.2,
        retry_budget_min_per_sec: 5,
        ..ResilienceConfig::default()
    }
}

fn route(deployments: &[(&str, u32)]) -> RouteConfig {
    RouteConfig {
        strategy: Strategy::Priority,
        deployments: deployments
            .iter()
            .map(|(model, weight)| DeploymentRef {
                model: (*model).into(),
                weight: *weight,
            })
            .collect(),
        rules: Vec::new(),
        fallbacks: Vec::new(),
        fallback_on: vec![
            FailureKind::RateLimited,
            FailureKind::Overloaded,
            FailureKind::Upstream,
            FailureKind::Timeout,
        ],
        retries: 0,
        retry_backoff_ms: 1,
        retry_backoff_max_ms: 2_000,
        hedge_after_ms: None,
        cache: None,
        semantic_cache: None,
        cascade: Default::default(),
        ensemble: Default::default(),
        hidden: false,
    }
}

fn gateway(backends: &[&Arc<Scripted>], routes: Vec<(&str, RouteConfig)>) -> Gateway {
    gateway_with(resilience(), backends, routes)
}

fn gateway_with(
    resilience: ResilienceConfig,
    backends: &[&Arc<Scripted>],
    routes: Vec<(&str, RouteConfig)>,
) -> Gateway {
    // Built from the configuration's tables, as the binary does.
    let mut builder = Gateway::builder((&resilience).into());
    let settings = builder.breaker_settings();
    for backend in backends {
        let chat: Arc<dyn ChatBackend> = (*backend).clone();
        builder = builder.deployment(Arc::new(Deployment::new(
            backend.name,
            Some(chat),
            None,
            None,
            settings,
        )));
    }
    for (name, config) in routes {
        builder = builder.route(name, (&config).into());
    }
    builder.build().unwrap()
}

fn ask(model: &str) -> ChatRequest {
    ChatRequest::new(model, vec![ChatMessage::new(Role::User, "hi")])
}

fn upstream_error() -> BackendError {
    BackendError::new(ErrorKind::Upstream, "boom")
}

#[tokio::test]
async fn a_failing_deployment_falls_back_to_a_healthy_one() {
    let flaky = Scripted::new("flaky");
    let healthy = Scripted::new("healthy");
    let gw = gateway(
        &[&flaky, &healthy],
        vec![("chat", route(&[("flaky", 1), ("healthy", 1)]))],
    );
    flaky.fail_next(upstream_error());
    let routed = gw
        .chat(ask("chat"), &RequestContext::default())
        .await
        .unwrap();
    assert_eq!(routed.value.content, "healthy");
    assert_eq!(routed.label(), "chat/healthy");
}

#[tokio::test]
async fn bad_requests_do_not_fall_back() {
    let a = Scripted::new("a");
    let b = Scripted::new("b");
    let gw = gateway(&[&a, &b], vec![("chat", route(&[("a", 1), ("b", 1)]))]);
    a.fail_next(BackendError::invalid_request("nope"));
    let error = gw
        .chat(ask("chat"), &RequestContext::default())
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidRequest);
    assert_eq!(b.calls(), 0);
}

#[tokio::test]
async fn a_prompt_too_long_moves_to_the_longer_context_route_only_when_asked() {
    let short = Scripted::new("short");
    let long = Scripted::new("long");
    let mut chat = route(&[("short", 1)]);
    chat.retries = 2;
    chat.fallbacks = vec!["long-context".into()];
    chat.fallback_on.push(FailureKind::ContextLength);
    let mut strict = chat.clone();
    strict
        .fallback_on
        .retain(|k| *k != FailureKind::ContextLength);
    let gw = gateway(
        &[&short, &long],
        vec![
            ("chat", chat),
            ("strict", strict),
            ("long-context", route(&[("long", 1)])),
        ],
    );
    short.fail_always(Some(
        BackendError::invalid_request("the prompt needs 9000 tokens; this model holds 2048")
            .with_code("context_length_exceeded"),
    ));
    for _ in 0..5 {
        let routed = gw
            .chat(ask("chat"), &RequestContext::default())
            .await
            .unwrap();
        assert_eq!(routed.deployment, "long");
    }
    assert_eq!(short.calls(), 5, "a prompt too long is never retried as is");
    assert_eq!(
        gw.deployment("short").unwrap().breaker().state(),
        BreakerState::Closed,
        "a long prompt says nothing about the deployment's health"
    );

    let error = gw
        .chat(ask("strict"), &RequestContext::default())
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::InvalidRequest);
    assert_eq!(error.code.as_deref(), Some("context_length_exceeded"));
    assert_eq!(long.calls(), 5);
}

// On a paused clock: waits take no real time, and timings are exact.
#[tokio::test(start_paused = true)]
async fn the_breaker_opens_stops_traffic_and_recovers() {
    let sick = Scripted::new("sick");
    let spare = Scripted::new("spare");
    let gw = gateway(
        &[&sick, &spare],
        vec![("chat", route(&[("sick", 1), ("spare", 1)]))],
    );
    sick.fail_always(Some(upstream_error()));
    for _ in 0..10 {
        let routed = gw
            .chat(ask("chat"), &RequestContext::default())
            .await
            .unwrap();
        assert_eq!(routed.deployment, "spare");
    }
    assert_eq!(sick.calls(), 3, "the breaker should open after 3 failures");
    assert_eq!(
        gw.deployment("sick").unwrap().breaker().state(),
        BreakerState::Open
    );
    sick.fail_always(None);
    tokio::time::sleep(Duration::from_millis(120)).await;
    let routed = gw
        .chat(ask("chat"), &RequestContext::default())
        .await
        .unwrap();
    assert_eq!(
        routed.deployment, "sick",
        "the probe goes to the recovered deployment"
    );
    assert_eq!(
        gw.deployment("sick").unwrap().breaker().state(),
        BreakerState::Closed
    );
}

// On a paused clock: waits take no real time, and timings are exact.
#[tokio::test(start_paused = true)]
async fn retries_stop_when_the_budget_is_spent() {
    let down = Scripted::new("down");
    let mut config = route(&[("down", 1)]);
    config.retries = 3;
    // No floor, and a breaker that never opens: only the budget limits.
    let budget_only = ResilienceConfig {
        retry_budget_min_per_sec: 0,
        breaker_failures: 1_000_000,
        breaker_error_rate: 1.0,
        ..resilience()
    };
    let gw = gateway_with(budget_only, &[&down], vec![("chat", config)]);
    down.fail_always(Some(BackendError::new(ErrorKind::Overloaded, "busy")));
    // Keep the breaker out of it: it would otherwise stop traffic first.
    let requests = 50;
    for _ in 0..requests {
        let _ = gw.chat(ask("chat"), &RequestContext::default()).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let attempts = down.calls();
    // Without a budget, 50 requests × 4 attempts; with a 20% budget, about
    // 60 (the breaker may cut it lower still).
    assert!(
        attempts <= requests + requests / 5 + 1,
        "{attempts} attempts"
    );
}

// On a paused clock: waits take no real time, and timings are exact.
#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured() {
    let limited = Scripted::new("limited");
    let mut config = route(&[("limited", 1)]);
    config.retries = 1;
    config.fallback_on = vec![FailureKind::RateLimited];
    let gw = gateway(&[&limited], vec![("chat", config)]);
    limited.fail_next(
        BackendError::new(ErrorKind::RateLimited, "slow down")
            .with_retry_after(Some(Duration::from_millis(300))),
    );
    let started = Instant::now();
    let routed = gw
        .chat(ask("chat"), &RequestContext::default())
        .await
        .unwrap();
    assert_eq!(routed.value.content, "limited");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(limited.calls(), 2);

    // A wait longer than the route allows moves on instead of sleeping.
    let mut impatient = route(&[("limited", 1)]);
    impatient.retries = 1;
    impatient.retry_backoff_max_ms = 100;
    let gw = gateway(&[&limited], vec![("chat", impatient)]);
    limited.fail_next(
        BackendError::new(ErrorKind::RateLimited, "slow down")
            .with_retry_after(Some(Duration::from_secs(30))),
    );
    let started = Instant::now();
    let error = gw
        .chat(ask("chat"), &RequestContext::default())
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::RateLimited);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn weighted_split_follows_the_weights() {
    let main = Scripted::new("main");
    let canary = Scripted::new("canary");
    let mut config = route(&[("main", 95), ("canary", 5)]);
    config.strategy = Strategy::Weighted;
    let gw = gateway(&[&main, &canary], vec![("chat", config)]);
    for _ in 0..2000 {
        gw.chat(ask("chat"), &RequestContext::default())
            .await
            .unwrap();
    }
    let share = canary.calls() as f64 / 2000.0;
    assert!((0.03..=0.07).contains(&share), "canary share {share}");
}

// On a paused clock: waits take no real time, and timings are exact.
#[tokio::test(start_paused = true)]
async fn hedging_takes_the_faster_answer_and_cancels_the_slower() {
    let slow = Scripted::slow("slow", Duration::from_millis(500));
    let fast = Scripted::new("fast");
    let mut config = route(&[("slow", 1), ("fast", 1)]);
    config.hedge_after_ms = Some(50);
    let gw = gateway(&[&slow, &fast], vec![("chat", config)]);
    let started = Instant::now();
    let routed = gw
        .chat(ask("chat"), &RequestContext::default())
        .await
        .unwrap();
    assert_eq!(routed.deployment, "fast");
    assert!(started.elapsed() < Duration::from_millis(400));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(slow.calls(), 1);
    assert_eq!(
        slow.finished.load(Ordering::SeqCst),
        0,
        "the slower attempt ran to completion instead of being cancelled"
    );
}

#[tokio::test]
async fn least_latency_prefers_the_faster_deployment() {
    let slow = Scripted::slow("slow", Duration::from_millis(20));
    let quick = Scripted::new("quick");
    let mut config = route(&[("slow", 1), ("quick", 1)]);
    config.strategy = Strategy::LeastLatency;
    let gw = gateway(&[&slow, &quick], vec![("chat", config)]);
    for _ in 0..40 {
        gw.chat(ask("chat"), &RequestContext::default())
            .await
            .unwrap();
    }
    assert!(
        quick.calls() > slow.calls() * 3,
        "{} vs {}",
        quick.calls(),
        slow.calls()
    );
}

#[tokio::test]
async fn rules_pick_the_route_from_the_request() {
    let general = Scripted::new("general");
    let coder = Scripted::new("coder");
    let mut auto = route(&[("general", 1)]);
    auto.rules = vec![RuleConfig {
        route: "coder".into(),
        has_code: Some(true),
        ..RuleConfig::default()
    }];
    let gw = gateway(&[&general, &coder], vec![("auto", auto)]);
    let plain = gw
        .chat(ask("auto"), &RequestContext::default())
        .await
        .unwrap();
    assert_eq!(plain.label(), "auto/general");
    let code = ChatRequest::new(
        "auto",
        vec![ChatMessage::new(
            Role::User,
            "Why does this fail?\n```\nfn main() { x }\n```",
        )],
    );
    let routed = gw.chat(code, &RequestContext::default()).await.unwrap();
    assert_eq!(routed.label(), "coder");
}

#[tokio::test]
async fn the_cache_replays_exactly_and_never_crosses_callers() {
    let backend = Scripted::new("model");
    let mut builder = Gateway::builder((&resilience()).into());
    let settings = builder.breaker_settings();
    let chat: Arc<dyn ChatBackend> = backend.clone();
    builder = builder
        .deployment(Arc::new(Deployment::new(
            "model",
            Some(chat),
            None,
            None,
            settings,
        )))
        .cache(
            Arc::new(MemoryCache::new(100, Duration::from_secs(60))),
            true,
        );
    let gw = builder.build().unwrap();
    let mut request = ask("model");
    request.sampling.temperature = Some(0.0);
    let alice = RequestContext {
        caller: "alice".into(),
        ..RequestContext::default()
    };
    let first = gw.chat(request.clone(), &alice).await.unwrap();
    assert_eq!(first.cache, CacheStatus::Miss);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = gw.chat(request.clone(), &alice).await.unwrap();
    assert_eq!(second.cache, CacheStatus::Hit);
    assert_eq!(second.value, first.value);
    assert_eq!(backend.calls(), 1);

    let bob = RequestContext {
        caller: "bob".into(),
        ..RequestContext::default()
    };
    assert_eq!(
        gw.chat(request.clone(), &bob).await.unwrap().cache,
        CacheStatus::Miss
    );

    // Streams replay as streams.
    let replay = gw.chat_stream(request.clone(), &alice).await.unwrap();
    assert_eq!(replay.cache, CacheStatus::Hit);
    let events: Vec<StreamEvent> = replay.value.map(|e| e.unwrap()).collect().await;
    assert_eq!(events[0], StreamEvent::Delta("model".into()));

    // Sampled requests are not cached unless the caller insists.
    let mut sampled = ask("model");
    sampled.sampling.temperature = Some(0.9);
    assert_eq!(
        gw.chat(sampled.clone(), &alice).await.unwrap().cache,
        CacheStatus::Bypass
    );
    let forced = RequestContext {
        cache: CacheMode::Force,
        ..alice.clone()
    };
    assert_eq!(
        gw.chat(sampled, &forced).await.unwrap().cache,
        CacheStatus::Miss
    );
    let skip = RequestContext {
        cache: CacheMode::Skip,
        ..alice
    };
    assert_eq!(
        gw.chat(request, &skip).await.unwrap().cache,
        CacheStatus::Bypass
    );
}

#[tokio::test]
async fn all_breakers_open_is_a_503_with_a_wait() {
    let only = Scripted::new("only");
    let gw = gateway(&[&only], vec![("chat", route(&[("only", 1)]))]);
    only.fail_always(Some(upstream_error()));
    for _ in 0..3 {
        let _ = gw.chat(ask("chat"), &RequestContext::default()).await;
    }
    let error = gw
        .chat(ask("chat"), &RequestContext::default())
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Overloaded);
    assert!(error.retry_after.is_some());
    assert_eq!(only.calls(), 3);
}
