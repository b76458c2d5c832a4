//! Prometheus metrics: the OpenTelemetry GenAI histograms (under their
//! Prometheus names) and the gateway's own counters, in one process-wide
//! registry served at `GET /metrics`.
//!
//! Labels only ever carry configured names (routes, deployments, public
//! models), fixed vocabularies (status codes, error kinds, token types) and
//! tenant ids capped by [`BoundedValues`]; never request ids or text a
//! client chose.

use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::labels::BoundedValues;

/// Most distinct tenants reported by name; the rest are `other`.
const TENANT_LABELS: usize = 500;

/// Bucket boundaries the GenAI semantic conventions advise.
const TOKEN_BUCKETS: [f64; 14] = [
    1.0,
    4.0,
    16.0,
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
];
const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
const TTFT_BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// Cosine similarities of semantic cache hits (thresholds sit high).
const SIMILARITY_BUCKETS: [f64; 10] = [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.99];
const TPOT_BUCKETS: [f64; 13] = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];
/// The gateway's own time is microseconds: 5 µs to about 0.7 s.
const OVERHEAD_BUCKETS: [f64; 18] = [
    0.000_005, 0.000_01, 0.000_02, 0.000_05, 0.000_1, 0.000_2, 0.000_5, 0.001, 0.002, 0.005, 0.01,
    0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7,
];

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn histograms<L: Clone + std::hash::Hash + Eq>(
    constructor: fn() -> Histogram,
) -> HistogramFamily<L> {
    Family::new_with_constructor(constructor)
}

/// The kind of model call (`gen_ai.operation.name`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Operation {
    /// A chat completion.
    #[default]
    Chat,
    /// Embeddings.
    Embeddings,
}

impl Operation {
    /// The convention's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Embeddings => "embeddings",
        }
    }
}

/// `gen_ai.provider.name` for a backend kind.
pub fn provider_name(backend_kind: &str) -> &'static str {
    match backend_kind {
        "openai" => "openai",
        "anthropic" => "anthropic",
        "gemini" => "gcp.gemini",
        "bedrock" => "aws.bedrock",
        "local" | "local-embedding" => "switchyard.local",
        _ => "other",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TokenLabels {
    gen_ai_operation_name: &'static str,
    gen_ai_provider_name: &'static str,
    gen_ai_request_model: String,
    gen_ai_token_type: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ClientLabels {
    gen_ai_operation_name: &'static str,
    gen_ai_provider_name: &'static str,
    gen_ai_request_model: String,
    error_type: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ServerLabels {
    gen_ai_operation_name: &'static str,
    gen_ai_request_model: String,
    error_type: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    operation: &'static str,
    model: String,
    route: String,
    status: u16,
    tenant: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AttemptLabels {
    deployment: String,
    provider: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DeploymentLabels {
    deployment: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UnloadLabels {
    deployment: String,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CascadeLabels {
    route: String,
    deployment: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AnomalyLabels {
    tenant: String,
    model: String,
    signal: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FallbackLabels {
    route: String,
    from_deployment: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CacheLabels {
    route: String,
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct GuardrailLabels {
    policy: String,
    check: String,
    action: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ToolLabels {
    tool: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ToolNameLabels {
    tool: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CostLabels {
    tenant: String,
    model: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OverheadLabels {
    operation: &'static str,
    stream: bool,
}

/// A model request as it ended, for the request-level metrics.
#[derive(Debug, Clone, Default)]
pub struct RequestRecord<'a> {
    /// What was asked for.
    pub operation: Operation,
    /// The public model name, only when the gateway knows it (a name it
    /// does not know is a client's string and is reported as `unknown`).
    pub model: Option<&'a str>,
    /// The route that served it.
    pub route: Option<&'a str>,
    /// The caller's tenant.
    pub tenant: Option<&'a str>,
    /// HTTP status sent (499 when the client left).
    pub status: u16,
    /// Streamed.
    pub stream: bool,
    /// From arrival to the last byte handed to the connection.
    pub duration: Duration,
    /// Until the first token went out, for streams.
    pub time_to_first_token: Option<Duration>,
    /// Tokens generated.
    pub output_tokens: Option<u64>,
    /// Cost in USD.
    pub cost: f64,
    /// Time spent waiting on upstreams (merged), when the request reached
    /// one; the rest of `duration` is the gateway's own.
    pub upstream: Option<Duration>,
}

/// One attempt on one upstream deployment.
#[derive(Debug, Clone)]
pub struct AttemptRecord<'a> {
    /// What was asked for.
    pub operation: Operation,
    /// The backend's kind (see [`provider_name`]).
    pub backend_kind: &'a str,
    /// The deployment's configured name.
    pub deployment: &'a str,
    /// The model name the upstream uses.
    pub upstream_model: &'a str,
    /// `None` on success, else the error kind (snake case).
    pub error: Option<&'static str>,
    /// From sending to the last byte (streams: to the end of the stream).
    pub duration: Duration,
    /// Input and output tokens, when the upstream reported them.
    pub tokens: Option<(u64, u64)>,
}

/// A deployment's state at scrape time.
#[derive(Debug, Clone)]
pub struct DeploymentSnapshot {
    /// The deployment's configured name.
    pub deployment: String,
    /// 0 closed, 1 half-open, 2 open.
    pub breaker_state: i64,
    /// Requests in flight on it.
    pub in_flight: i64,
    /// The embedded engine's load, for local models.
    pub engine: Option<EngineSnapshot>,
}

/// An embedded engine's counters at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct EngineSnapshot {
    /// Requests waiting for a slot.
    pub queued: u64,
    /// Sequences being generated.
    pub running: u64,
    /// Prompt tokens evaluated since start.
    pub prompt_tokens: u64,
    /// Prompt tokens reused from the prompt cache since start.
    pub cached_prompt_tokens: u64,
    /// Requests whose answer a grammar constrained, since start.
    pub constrained_requests: u64,
    /// Tokens generated since start.
    pub generated_tokens: u64,
    /// Whether the model is in memory.
    pub loaded: bool,
    /// Bytes it holds under the memory budget while loaded.
    pub memory_bytes: u64,
    /// Times it was loaded since start.
    pub loads: u64,
    /// Times it was unloaded since start: after its keep-alive, to make
    /// room for another model, by an operator.
    pub unloads_idle: u64,
    /// See `unloads_idle`.
    pub unloads_memory: u64,
    /// See `unloads_idle`.
    pub unloads_admin: u64,
}

/// Every metric Switchyard keeps.
pub struct Metrics {
    registry: Registry,
    token_usage: HistogramFamily<TokenLabels>,
    operation_duration: HistogramFamily<ClientLabels>,
    server_duration: HistogramFamily<ServerLabels>,
    time_to_first_token: HistogramFamily<ServerLabels>,
    time_per_output_token: HistogramFamily<ServerLabels>,
    requests: Family<RequestLabels, Counter>,
    in_flight: Gauge,
    attempts: Family<AttemptLabels, Counter>,
    retries: Family<DeploymentLabels, Counter>,
    fallbacks: Family<FallbackLabels, Counter>,
    hedges: Family<RouteLabels, Counter>,
    cache: Family<CacheLabels, Counter>,
    guardrails: Family<GuardrailLabels, Counter>,
    tool_calls: Family<ToolLabels, Counter>,
    tool_duration: HistogramFamily<ToolNameLabels>,
    cost: Family<CostLabels, Counter<f64, AtomicU64>>,
    overhead: HistogramFamily<OverheadLabels>,
    retrieval: Histogram,
    semantic_similarity: HistogramFamily<RouteLabels>,
    cascade_answers: Family<CascadeLabels, Counter>,
    cascade_saved: Family<RouteLabels, Counter<f64, AtomicU64>>,
    anomalies: Family<AnomalyLabels, Counter>,
    anomalies_open: Family<AnomalyLabels, Gauge>,
    tenants: BoundedValues,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let token_usage = histograms(|| Histogram::new(TOKEN_BUCKETS));
        registry.register(
            "gen_ai_client_token_usage",
            "Tokens used per upstream call (gen_ai.client.token.usage), by token type",
            token_usage.clone(),
        );
        let operation_duration = histograms(|| Histogram::new(DURATION_BUCKETS));
        registry.register_with_unit(
            "gen_ai_client_operation_duration",
            "Duration of each upstream call, to its last byte (gen_ai.client.operation.duration)",
            Unit::Seconds,
            operation_duration.clone(),
        );
        let server_duration = histograms(|| Histogram::new(DURATION_BUCKETS));
        registry.register_with_unit(
            "gen_ai_server_request_duration",
            "Duration of each model request Switchyard served, arrival to last byte (gen_ai.server.request.duration)",
            Unit::Seconds,
            server_duration.clone(),
        );
        let time_to_first_token = histograms(|| Histogram::new(TTFT_BUCKETS));
        registry.register_with_unit(
            "gen_ai_server_time_to_first_token",
            "Time from arrival to the first token sent, streamed requests (gen_ai.server.time_to_first_token)",
            Unit::Seconds,
            time_to_first_token.clone(),
        );
        let time_per_output_token = histograms(|| Histogram::new(TPOT_BUCKETS));
        registry.register_with_unit(
            "gen_ai_server_time_per_output_token",
            "Time per output token after the first, successful streamed requests (gen_ai.server.time_per_output_token)",
            Unit::Seconds,
            time_per_output_token.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "switchyard_requests",
            "Model requests by operation, public model, route, status and tenant",
            requests.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "switchyard_in_flight_requests",
            "Model requests admitted and not yet finished",
            in_flight.clone(),
        );
        let attempts = Family::<AttemptLabels, Counter>::default();
        registry.register(
            "switchyard_upstream_attempts",
            "Attempts on upstream deployments, by outcome (ok or the error kind)",
            attempts.clone(),
        );
        let retries = Family::<DeploymentLabels, Counter>::default();
        registry.register(
            "switchyard_upstream_retries",
            "Retries of a failed attempt on the same deployment",
            retries.clone(),
        );
        let fallbacks = Family::<FallbackLabels, Counter>::default();
        registry.register(
            "switchyard_fallbacks",
            "Requests that moved on from a failed deployment to the next one",
            fallbacks.clone(),
        );
        let hedges = Family::<RouteLabels, Counter>::default();
        registry.register(
            "switchyard_hedges",
            "Second attempts started because the first was slow",
            hedges.clone(),
        );
        let cache = Family::<CacheLabels, Counter>::default();
        registry.register(
            "switchyard_cache_lookups",
            "Response cache lookups by result (hit or miss)",
            cache.clone(),
        );
        let guardrails = Family::<GuardrailLabels, Counter>::default();
        registry.register(
            "switchyard_guardrail_decisions",
            "Guardrail checks that fired, by policy, check and action",
            guardrails.clone(),
        );
        let tool_calls = Family::<ToolLabels, Counter>::default();
        registry.register(
            "switchyard_tool_calls",
            "Tool calls Switchyard ran for models, by tool and outcome (ok, error, timeout)",
            tool_calls.clone(),
        );
        let tool_duration = histograms(|| Histogram::new(DURATION_BUCKETS));
        registry.register_with_unit(
            "switchyard_tool_call_duration",
            "Time each tool call Switchyard ran took, by tool",
            Unit::Seconds,
            tool_duration.clone(),
        );
        let cost = Family::<CostLabels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "switchyard_cost_usd",
            "Spend in US dollars by tenant and public model",
            cost.clone(),
        );
        let overhead = histograms(|| Histogram::new(OVERHEAD_BUCKETS));
        registry.register_with_unit(
            "switchyard_gateway_overhead",
            "Switchyard's own time per model request that reached an upstream: its duration minus the time spent waiting on upstreams (overlapping waits merged)",
            Unit::Seconds,
            overhead.clone(),
        );
        let retrieval = Histogram::new(DURATION_BUCKETS);
        registry.register_with_unit(
            "switchyard_retrieval_duration",
            "Time each grounded request spent retrieving its sources: query rewrite, query embedding and search",
            Unit::Seconds,
            retrieval.clone(),
        );
        let semantic_similarity = histograms(|| Histogram::new(SIMILARITY_BUCKETS));
        registry.register(
            "switchyard_semantic_cache_hit_similarity",
            "How close a request's last user turn was to the cached one that answered it, by route",
            semantic_similarity.clone(),
        );
        let cascade_answers = Family::<CascadeLabels, Counter>::default();
        registry.register(
            "switchyard_cascade_answers",
            "Answers a cascade served, by route and the deployment (step) that gave them",
            cascade_answers.clone(),
        );
        let cascade_saved = Family::<RouteLabels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "switchyard_cascade_saved_usd",
            "What cascades saved against asking their last (strongest) step every time, in US dollars",
            cascade_saved.clone(),
        );
        let anomalies = Family::<AnomalyLabels, Counter>::default();
        registry.register(
            "switchyard_anomaly_alerts",
            "Drift and anomaly alarms raised, by tenant, model and signal",
            anomalies.clone(),
        );
        let anomalies_open = Family::<AnomalyLabels, Gauge>::default();
        registry.register(
            "switchyard_anomaly_alerts_open",
            "Drift and anomaly alarms open now, by tenant, model and signal",
            anomalies_open.clone(),
        );
        Self {
            registry,
            token_usage,
            operation_duration,
            server_duration,
            time_to_first_token,
            time_per_output_token,
            requests,
            in_flight,
            attempts,
            retries,
            fallbacks,
            hedges,
            cache,
            guardrails,
            tool_calls,
            tool_duration,
            cost,
            overhead,
            retrieval,
            semantic_similarity,
            cascade_answers,
            cascade_saved,
            anomalies,
            anomalies_open,
            tenants: BoundedValues::new(TENANT_LABELS),
        }
    }

    /// A model request was admitted.
    pub fn request_started(&self) {
        self.in_flight.inc();
    }

    /// A model request admitted earlier ended (see [`Self::request_done`]).
    pub fn request_ended(&self) {
        self.in_flight.dec();
    }

    /// Records a model request as it ended.
    pub fn request_done(&self, record: &RequestRecord<'_>) {
        let operation = record.operation.as_str();
        let model = record.model.unwrap_or("unknown").to_owned();
        let tenant = record
            .tenant
            .map_or_else(|| "-".to_owned(), |t| self.tenants.admit(t));
        let failed = record.status >= 400;
        self.requests
            .get_or_create(&RequestLabels {
                operation,
                model: model.clone(),
                route: record.route.unwrap_or("").to_owned(),
                status: record.status,
                tenant: tenant.clone(),
            })
            .inc();
        let error_type = if failed {
            status_error(record.status)
        } else {
            ""
        };
        self.server_duration
            .get_or_create(&ServerLabels {
                gen_ai_operation_name: operation,
                gen_ai_request_model: model.clone(),
                error_type,
            })
            .observe(record.duration.as_secs_f64());
        if let Some(ttft) = record.time_to_first_token {
            let labels = ServerLabels {
                gen_ai_operation_name: operation,
                gen_ai_request_model: model.clone(),
                error_type: "",
            };
            self.time_to_first_token
                .get_or_create(&labels)
                .observe(ttft.as_secs_f64());
            if !failed && let Some(tokens) = record.output_tokens.filter(|&t| t > 1) {
                let after_first = record.duration.saturating_sub(ttft).as_secs_f64();
                self.time_per_output_token
                    .get_or_create(&labels)
                    .observe(after_first / (tokens - 1) as f64);
            }
        }
        if record.cost > 0.0 {
            self.cost
                .get_or_create(&CostLabels {
                    tenant,
                    model: model.clone(),
                })
                .inc_by(record.cost);
        }
        if let Some(upstream) = record.upstream {
            self.overhead
                .get_or_create(&OverheadLabels {
                    operation,
                    stream: record.stream,
                })
                .observe(record.duration.saturating_sub(upstream).as_secs_f64());
        }
    }

    /// Records one upstream attempt.
    pub fn attempt_done(&self, record: &AttemptRecord<'_>) {
        let provider = provider_name(record.backend_kind);
        self.attempts
            .get_or_create(&AttemptLabels {
                deployment: record.deployment.to_owned(),
                provider,
                outcome: record.error.unwrap_or("ok"),
            })
            .inc();
        let operation = record.operation.as_str();
        self.operation_duration
            .get_or_create(&ClientLabels {
                gen_ai_operation_name: operation,
                gen_ai_provider_name: provider,
                gen_ai_request_model: record.upstream_model.to_owned(),
                error_type: record.error.unwrap_or(""),
            })
            .observe(record.duration.as_secs_f64());
        if let Some((input, output)) = record.tokens {
            for (kind, count) in [("input", input), ("output", output)] {
                self.token_usage
                    .get_or_create(&TokenLabels {
                        gen_ai_operation_name: operation,
                        gen_ai_provider_name: provider,
                        gen_ai_request_model: record.upstream_model.to_owned(),
                        gen_ai_token_type: kind,
                    })
                    .observe(count as f64);
            }
        }
    }

    /// A failed attempt is retried on the same deployment.
    pub fn retry(&self, deployment: &str) {
        self.retries
            .get_or_create(&DeploymentLabels {
                deployment: deployment.to_owned(),
            })
            .inc();
    }

    /// A request moves on from a failed deployment.
    pub fn fallback(&self, route: &str, from_deployment: &str) {
        self.fallbacks
            .get_or_create(&FallbackLabels {
                route: route.to_owned(),
                from_deployment: from_deployment.to_owned(),
            })
            .inc();
    }

    /// A hedged second attempt starts.
    pub fn hedge(&self, route: &str) {
        self.hedges
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .inc();
    }

    /// A grounded request's retrieval finished (or failed) after `elapsed`.
    pub fn retrieval_done(&self, elapsed: Duration) {
        self.retrieval.observe(elapsed.as_secs_f64());
    }

    /// A guardrail check fired (`action`: block, mask, pseudonymize, flag).
    pub fn guardrail_decision(&self, policy: &str, check: &str, action: &'static str) {
        self.guardrails
            .get_or_create(&GuardrailLabels {
                policy: policy.to_owned(),
                check: check.to_owned(),
                action,
            })
            .inc();
    }

    /// A tool Switchyard ran for a model ended (`outcome`: ok, error,
    /// timeout) after `elapsed`.
    pub fn tool_call(&self, tool: &str, outcome: &'static str, elapsed: Duration) {
        self.tool_calls
            .get_or_create(&ToolLabels {
                tool: tool.to_owned(),
                outcome,
            })
            .inc();
        self.tool_duration
            .get_or_create(&ToolNameLabels {
                tool: tool.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// A cascade served `deployment`'s answer, `saved` dollars cheaper
    /// than its last step would have been (negative when it cost more).
    pub fn cascade_answered(&self, route: &str, deployment: &str, saved: f64) {
        self.cascade_answers
            .get_or_create(&CascadeLabels {
                route: route.to_owned(),
                deployment: deployment.to_owned(),
            })
            .inc();
        if saved > 0.0 {
            self.cascade_saved
                .get_or_create(&RouteLabels {
                    route: route.to_owned(),
                })
                .inc_by(saved);
        }
    }

    /// A drift or anomaly alarm was raised (`tenant` is `-` for requests
    /// made without one).
    pub fn anomaly_raised(&self, tenant: &str, model: &str, signal: &str) {
        let labels = self.anomaly_labels(tenant, model, signal);
        self.anomalies.get_or_create(&labels).inc();
        self.anomalies_open.get_or_create(&labels).set(1);
    }

    /// An open drift or anomaly alarm was resolved.
    pub fn anomaly_resolved(&self, tenant: &str, model: &str, signal: &str) {
        let labels = self.anomaly_labels(tenant, model, signal);
        self.anomalies_open.get_or_create(&labels).set(0);
    }

    fn anomaly_labels(&self, tenant: &str, model: &str, signal: &str) -> AnomalyLabels {
        AnomalyLabels {
            tenant: if tenant == "-" {
                tenant.to_owned()
            } else {
                self.tenants.admit(tenant)
            },
            model: model.to_owned(),
            signal: signal.to_owned(),
        }
    }

    /// A semantic cache lookup: a hit at `similarity`, or a miss.
    pub fn semantic_cache_lookup(&self, route: &str, similarity: Option<f32>) {
        self.cache
            .get_or_create(&CacheLabels {
                route: route.to_owned(),
                result: if similarity.is_some() {
                    "semantic_hit"
                } else {
                    "semantic_miss"
                },
            })
            .inc();
        if let Some(similarity) = similarity {
            self.semantic_similarity
                .get_or_create(&RouteLabels {
                    route: route.to_owned(),
                })
                .observe(f64::from(similarity));
        }
    }

    /// A response cache lookup.
    pub fn cache_lookup(&self, route: &str, hit: bool) {
        self.cache
            .get_or_create(&CacheLabels {
                route: route.to_owned(),
                result: if hit { "hit" } else { "miss" },
            })
            .inc();
    }

    /// Everything, in the OpenMetrics text format, with the deployments'
    /// state as it is now.
    pub fn render(&self, deployments: &[DeploymentSnapshot]) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        text::encode_registry(&mut out, &self.registry)?;
        text::encode_registry(&mut out, &snapshot_registry(deployments))?;
        text::encode_eof(&mut out)?;
        Ok(out)
    }
}

/// Gauges and totals read at scrape time, from a registry built for the
/// scrape (scrapes are seconds apart; a registry is microseconds).
fn snapshot_registry(deployments: &[DeploymentSnapshot]) -> Registry {
    let mut registry = Registry::default();
    let breaker = Family::<DeploymentLabels, Gauge>::default();
    let in_flight = Family::<DeploymentLabels, Gauge>::default();
    let queued = Family::<DeploymentLabels, Gauge>::default();
    let running = Family::<DeploymentLabels, Gauge>::default();
    let prompt = Family::<DeploymentLabels, Counter>::default();
    let cached_prompt = Family::<DeploymentLabels, Counter>::default();
    let constrained = Family::<DeploymentLabels, Counter>::default();
    let generated = Family::<DeploymentLabels, Counter>::default();
    let loaded = Family::<DeploymentLabels, Gauge>::default();
    let memory = Family::<DeploymentLabels, Gauge>::default();
    let loads = Family::<DeploymentLabels, Counter>::default();
    let unloads = Family::<UnloadLabels, Counter>::default();
    for snapshot in deployments {
        let labels = DeploymentLabels {
            deployment: snapshot.deployment.clone(),
        };
        breaker.get_or_create(&labels).set(snapshot.breaker_state);
        in_flight.get_or_create(&labels).set(snapshot.in_flight);
        if let Some(engine) = snapshot.engine {
            queued
                .get_or_create(&labels)
                .set(i64::try_from(engine.queued).unwrap_or(i64::MAX));
            running
                .get_or_create(&labels)
                .set(i64::try_from(engine.running).unwrap_or(i64::MAX));
            prompt.get_or_create(&labels).inc_by(engine.prompt_tokens);
            cached_prompt
                .get_or_create(&labels)
                .inc_by(engine.cached_prompt_tokens);
            constrained
                .get_or_create(&labels)
                .inc_by(engine.constrained_requests);
            generated
                .get_or_create(&labels)
                .inc_by(engine.generated_tokens);
            loaded.get_or_create(&labels).set(i64::from(engine.loaded));
            memory
                .get_or_create(&labels)
                .set(i64::try_from(engine.memory_bytes).unwrap_or(i64::MAX));
            loads.get_or_create(&labels).inc_by(engine.loads);
            for (reason, count) in [
                ("idle", engine.unloads_idle),
                ("memory", engine.unloads_memory),
                ("admin", engine.unloads_admin),
            ] {
                unloads
                    .get_or_create(&UnloadLabels {
                        deployment: snapshot.deployment.clone(),
                        reason,
                    })
                    .inc_by(count);
            }
        }
    }
    registry.register(
        "switchyard_circuit_breaker_state",
        "Circuit breaker per deployment: 0 closed, 1 half-open, 2 open",
        breaker,
    );
    registry.register(
        "switchyard_deployment_in_flight",
        "Attempts in flight per deployment",
        in_flight,
    );
    registry.register(
        "switchyard_engine_queue_depth",
        "Requests waiting for a slot in the embedded engine",
        queued,
    );
    registry.register(
        "switchyard_engine_in_flight",
        "Sequences the embedded engine is generating",
        running,
    );
    registry.register(
        "switchyard_engine_prompt_tokens",
        "Prompt tokens the embedded engine evaluated",
        prompt,
    );
    registry.register(
        "switchyard_engine_cached_prompt_tokens",
        "Prompt tokens the embedded engine reused from a finished sequence's KV cache instead of evaluating",
        cached_prompt,
    );
    registry.register(
        "switchyard_engine_constrained_requests",
        "Requests whose answer the embedded engine kept to a grammar (response_format JSON modes)",
        constrained,
    );
    registry.register(
        "switchyard_engine_generated_tokens",
        "Tokens the embedded engine generated (rate() gives tokens/s)",
        generated,
    );
    registry.register(
        "switchyard_engine_model_loaded",
        "Whether the local model is in memory (1) or not (0)",
        loaded,
    );
    registry.register(
        "switchyard_engine_memory_bytes",
        "Bytes the local model holds under the engine's memory budget while loaded (estimated from its file and settings)",
        memory,
    );
    registry.register(
        "switchyard_engine_loads",
        "Times the local model was loaded",
        loads,
    );
    registry.register(
        "switchyard_engine_unloads",
        "Times the local model was unloaded, by reason: idle (keep_alive), memory (room for another model), admin",
        unloads,
    );
    registry
}

/// `error.type` for a status Switchyard sent.
fn status_error(status: u16) -> &'static str {
    match status {
        400 => "invalid_request",
        401 => "unauthenticated",
        403 => "forbidden",
        404 => "not_found",
        408 | 504 => "timeout",
        413 => "too_large",
        429 => "rate_limited",
        499 => "cancelled",
        500 => "internal",
        502 => "upstream",
        503 => "overloaded",
        _ if status >= 500 => "server_error",
        _ => "client_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
        text.lines()
            .filter(|l| l.starts_with(name) && labels.iter().all(|w| l.contains(w)))
            .find_map(|l| l.rsplit(' ').next()?.parse().ok())
    }

    #[test]
    fn a_request_is_counted_and_its_overhead_is_its_time_off_upstream() {
        let metrics = Metrics::new();
        metrics.request_done(&RequestRecord {
            operation: Operation::Chat,
            model: Some("m"),
            route: Some("r"),
            tenant: Some("t1"),
            status: 200,
            stream: true,
            duration: Duration::from_millis(100),
            time_to_first_token: Some(Duration::from_millis(20)),
            output_tokens: Some(9),
            cost: 0.25,
            upstream: Some(Duration::from_micros(99_900)),
        });
        let text = metrics.render(&[]).unwrap_or_default();
        let labels = [
            "operation=\"chat\"",
            "model=\"m\"",
            "route=\"r\"",
            "status=\"200\"",
            "tenant=\"t1\"",
        ];
        assert_eq!(
            sample(&text, "switchyard_requests_total", &labels),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "switchyard_cost_usd_total", &["tenant=\"t1\""]),
            Some(0.25)
        );
        // 100 µs of gateway time lands in the 100 µs bucket, not below.
        let bucket = |le: &str| {
            sample(
                &text,
                "switchyard_gateway_overhead_seconds_bucket",
                &[&format!("le=\"{le}\"")],
            )
        };
        assert_eq!(bucket("0.00005"), Some(0.0));
        assert_eq!(bucket("0.0001"), Some(1.0));
        // (100 - 20) ms over 8 tokens after the first: 10 ms per token.
        assert_eq!(
            sample(
                &text,
                "gen_ai_server_time_per_output_token_seconds_sum",
                &["gen_ai_request_model=\"m\""]
            ),
            Some(0.01)
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn deployment_state_is_read_at_scrape_time() {
        let metrics = Metrics::new();
        let text = metrics
            .render(&[DeploymentSnapshot {
                deployment: "local".into(),
                breaker_state: 2,
                in_flight: 3,
                engine: Some(EngineSnapshot {
                    queued: 4,
                    running: 2,
                    prompt_tokens: 100,
                    cached_prompt_tokens: 30,
                    constrained_requests: 2,
                    generated_tokens: 50,
                    loaded: true,
                    memory_bytes: 1000,
                    loads: 2,
                    unloads_memory: 1,
                    ..EngineSnapshot::default()
                }),
            }])
            .unwrap_or_default();
        let local = ["deployment=\"local\""];
        assert_eq!(
            sample(&text, "switchyard_circuit_breaker_state", &local),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, "switchyard_engine_queue_depth", &local),
            Some(4.0)
        );
        assert_eq!(
            sample(&text, "switchyard_engine_generated_tokens_total", &local),
            Some(50.0)
        );
        assert_eq!(
            sample(
                &text,
                "switchyard_engine_cached_prompt_tokens_total",
                &local
            ),
            Some(30.0)
        );
        assert_eq!(
            sample(
                &text,
                "switchyard_engine_constrained_requests_total",
                &local
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, "switchyard_engine_memory_bytes", &local),
            Some(1000.0)
        );
        assert_eq!(
            sample(&text, "switchyard_engine_loads_total", &local),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                "switchyard_engine_unloads_total",
                &["deployment=\"local\"", "reason=\"memory\""]
            ),
            Some(1.0)
        );
        assert_eq!(text.matches("# EOF").count(), 1);
    }

    /// Every metric (and `gen_ai_*` label) the repository's Grafana
    /// dashboard queries is one this registry serves (each family recorded once so that it is encoded).
    #[test]
    fn the_grafana_dashboard_queries_only_metrics_that_exist() {
        let dashboard = include_str!("../../../deploy/grafana/switchyard.json");
        let metrics = Metrics::new();
        metrics.request_started();
        metrics.request_done(&RequestRecord {
            model: Some("m"),
            status: 200,
            stream: true,
            time_to_first_token: Some(Duration::from_millis(1)),
            output_tokens: Some(3),
            cost: 1.0,
            upstream: Some(Duration::ZERO),
            ..RequestRecord::default()
        });
        metrics.attempt_done(&AttemptRecord {
            operation: Operation::Chat,
            backend_kind: "openai",
            deployment: "d",
            upstream_model: "u",
            error: None,
            duration: Duration::from_millis(1),
            tokens: Some((1, 1)),
        });
        metrics.retry("d");
        metrics.fallback("r", "d");
        metrics.hedge("r");
        metrics.cache_lookup("r", true);
        let text = metrics
            .render(&[DeploymentSnapshot {
                deployment: "d".into(),
                breaker_state: 0,
                in_flight: 0,
                engine: Some(EngineSnapshot::default()),
            }])
            .unwrap_or_default();
        let mut checked = 0;
        for name in dashboard
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|t| t.starts_with("gen_ai_") || t.starts_with("switchyard_"))
        {
            let family = ["_bucket", "_sum", "_count", "_total"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            let is_label = text.contains(&format!("{name}=\""));
            assert!(
                is_label || text.contains(&format!("# TYPE {family} ")),
                "the dashboard queries {name}, which is neither a metric nor a label"
            );
            checked += 1;
        }
        assert!(checked > 20, "only {checked} metric names found");
    }
}
