//! Routes (public names served by groups of deployments), rule-based
//! routing, resilience settings and the response cache.
//!
//! ```toml
//! [routes.chat]
//! strategy = "weighted"
//! deployments = [{ model = "gpt-4o", weight = 95 }, { model = "gpt-4o-canary", weight = 5 }]
//! fallbacks = ["claude"]
//! retries = 2
//!
//! [routes.auto]
//! deployments = [{ model = "general" }]
//! rules = [
//!   { route = "code", has_code = true },
//!   { route = "cheap", prompt_chars_below = 400 },
//! ]
//!
//! [cache]
//! enabled = true
//! ```

use serde::Deserialize;

/// How a route picks among its deployments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Random, in proportion to each deployment's weight (canaries,
    /// blue-green).
    #[default]
    Weighted,
    /// Power of two choices over the latency EWMA (scaled by in-flight load).
    LeastLatency,
    /// The deployment with the fewest requests in flight.
    LeastInflight,
    /// The cheapest deployment by its model's price.
    LowestCost,
    /// The first healthy deployment in the order listed.
    Priority,
    /// The deployments in the order listed, cheapest first: an answer the
    /// `cascade` checks accept is served, else the next deployment is
    /// asked.
    Cascade,
    /// Every deployment (or `ensemble.samples` of one) at once; a judge
    /// model picks the best answer.
    BestOf,
    /// Every deployment (or `ensemble.samples` of one) at once; an
    /// aggregator model writes the answer from theirs.
    Mixture,
}

/// Failures a route moves past (retrying, then falling back) instead of
/// answering with the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// 429 from the upstream.
    RateLimited,
    /// Overloaded upstream (503, 529) or a full local queue.
    Overloaded,
    /// The upstream failed (5xx, broken connection, malformed answer).
    Upstream,
    /// A deadline passed.
    Timeout,
    /// The prompt did not fit; worth trying a model with a longer context.
    ContextLength,
    /// The upstream refused the gateway's credentials.
    Auth,
}

/// One deployment of a route.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentRef {
    /// A model from `[models]`.
    pub model: String,
    /// Share of traffic under the `weighted` strategy.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// A rule: when every condition given holds, the request goes to `route`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The route (or model) that serves matching requests.
    pub route: String,
    /// The conversation's text is longer than this many characters.
    pub prompt_chars_above: Option<usize>,
    /// The conversation's text is shorter than this many characters.
    pub prompt_chars_below: Option<usize>,
    /// The last user message contains code (or not).
    pub has_code: Option<bool>,
    /// The request offers tools (or not).
    pub has_tools: Option<bool>,
    /// The request carries images (or not).
    pub has_images: Option<bool>,
    /// A request header that must be present (lower-case name)...
    pub header: Option<String>,
    /// ...with this value.
    pub header_value: Option<String>,
    /// A key of the request body's `metadata` object...
    pub metadata_key: Option<String>,
    /// ...with this value.
    pub metadata_value: Option<String>,
    /// The caller's tenant (once tenants exist).
    pub tenant: Option<String>,
    /// Routing by meaning: the last user turn is close to one of these
    /// example utterances (the cosine similarity of `embedding_model`'s
    /// vectors reaches `threshold`). Consecutive rules with examples are
    /// weighed together: the closest above its threshold wins.
    #[serde(default)]
    pub similar_to: Vec<String>,
    /// The similarity a `similar_to` rule needs (default 0.5).
    pub threshold: Option<f32>,
    /// The embeddings model `similar_to` compares with (default the local
    /// `all-minilm-l6-v2`).
    pub embedding_model: Option<String>,
}

/// A route's semantic cache.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SemanticCacheConfig {
    /// The similarity of two last user turns that counts as the same
    /// question (default [`DEFAULT_SEMANTIC_CACHE_THRESHOLD`]).
    pub threshold: Option<f32>,
    /// The embeddings model that compares (default the local
    /// `all-minilm-l6-v2`).
    pub embedding_model: Option<String>,
}

/// The semantic cache's threshold unless a route says: with the local
/// MiniLM, the lowest at which no pair of different questions on the
/// same topic was taken for the same question in a set written to
/// measure it (`switchyard-embedder`'s `paraphrases` test); it lets 8 of
/// 20 rewordings hit.
pub const DEFAULT_SEMANTIC_CACHE_THRESHOLD: f32 = 0.95;

/// The similarity a `similar_to` rule needs unless it says.
pub const DEFAULT_SIMILARITY_THRESHOLD: f32 = 0.5;

/// A public name served by a group of deployments.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// How a deployment is picked.
    #[serde(default)]
    pub strategy: Strategy,
    /// The deployments; may be empty when every request matches a rule.
    #[serde(default)]
    pub deployments: Vec<DeploymentRef>,
    /// Rules that send matching requests elsewhere, first match wins.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Routes or models tried, in order, when every deployment failed.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// Failures that move on to a retry or the next deployment.
    #[serde(default = "default_fallback_on")]
    pub fallback_on: Vec<FailureKind>,
    /// Retries per deployment before moving on.
    #[serde(default)]
    pub retries: u32,
    /// First retry delay; doubles each retry (with full jitter).
    #[serde(default = "default_backoff_ms")]
    pub retry_backoff_ms: u64,
    /// Longest retry delay, and the longest `Retry-After` worth waiting for.
    #[serde(default = "default_backoff_max_ms")]
    pub retry_backoff_max_ms: u64,
    /// Start a second attempt on the next deployment when the first has not
    /// answered (or sent its first token) within this time.
    pub hedge_after_ms: Option<u64>,
    /// Cache this route's answers (default: the `[cache]` setting).
    pub cache: Option<bool>,
    /// Answer a question that means what a cached one meant from the
    /// cache (`{ threshold, embedding_model }`).
    pub semantic_cache: Option<SemanticCacheConfig>,
    /// `cascade`: when a step's answer is accepted.
    #[serde(default)]
    pub cascade: CascadeConfig,
    /// `best-of` and `mixture`: who judges or writes, and how long members
    /// are waited for.
    #[serde(default)]
    pub ensemble: EnsembleConfig,
    /// Leave this route out of `/v1/models`.
    #[serde(default)]
    pub hidden: bool,
}

/// A cascade's acceptance checks: a step's answer is served when every
/// configured check passes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CascadeConfig {
    /// Escalate answers that refuse or say they do not know (and empty
    /// ones).
    #[serde(default = "default_true")]
    pub refusals: bool,
    /// Escalate answers to a JSON `response_format` that are not JSON of
    /// the schema's shape (its type, required properties and their types).
    #[serde(default = "default_true")]
    pub json: bool,
    /// A model (or route) asked whether the answer is good enough.
    #[serde(default)]
    pub judge: Option<String>,
    /// The judge's prompt, with `{{question}}` and `{{answer}}`.
    #[serde(default)]
    pub judge_template: Option<String>,
    /// A regular expression that, matching the judge's reply, accepts
    /// (default: a reply that begins with yes).
    #[serde(default)]
    pub accept_if: Option<String>,
    /// How long the judge may take.
    #[serde(default = "default_judge_timeout_ms")]
    pub judge_timeout_ms: u64,
    /// A judge that fails or times out escalates (else the answer is
    /// served).
    #[serde(default = "default_true")]
    pub escalate_on_judge_failure: bool,
    /// Escalate answers whose tokens' mean log-probability is below this
    /// (e.g. -1.0), where the step's backend gives log-probabilities.
    #[serde(default)]
    pub min_mean_logprob: Option<f32>,
    /// Escalate answers with any token less likely than this
    /// log-probability (e.g. -6.0), where the backend gives them.
    #[serde(default)]
    pub min_token_logprob: Option<f32>,
}

impl Default for CascadeConfig {
    fn default() -> Self {
        Self {
            refusals: true,
            json: true,
            judge: None,
            judge_template: None,
            accept_if: None,
            judge_timeout_ms: default_judge_timeout_ms(),
            escalate_on_judge_failure: true,
            min_mean_logprob: None,
            min_token_logprob: None,
        }
    }
}

/// An ensemble's settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsembleConfig {
    /// `best-of`: the model (or route) that picks the best answer.
    #[serde(default)]
    pub judge: Option<String>,
    /// `mixture`: the model (or route) that writes the answer from theirs.
    #[serde(default)]
    pub aggregator: Option<String>,
    /// Answers asked of each deployment (several samples of one model).
    #[serde(default = "default_samples")]
    pub samples: u32,
    /// How long members are waited for before the judge or aggregator
    /// works with what arrived (at least one answer is always waited for).
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
}

impl Default for EnsembleConfig {
    fn default() -> Self {
        Self {
            judge: None,
            aggregator: None,
            samples: default_samples(),
            deadline_ms: default_deadline_ms(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_judge_timeout_ms() -> u64 {
    5_000
}
fn default_samples() -> u32 {
    1
}
fn default_deadline_ms() -> u64 {
    30_000
}

pub(crate) fn default_fallback_on() -> Vec<FailureKind> {
    vec![
        FailureKind::RateLimited,
        FailureKind::Overloaded,
        FailureKind::Upstream,
        FailureKind::Timeout,
    ]
}

fn default_backoff_ms() -> u64 {
    100
}

fn default_backoff_max_ms() -> u64 {
    5_000
}

/// Circuit breakers and the retry budget, shared by every route.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResilienceConfig {
    /// Consecutive failures that open a deployment's breaker.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// Failure ratio over the last `breaker_window` outcomes that opens it.
    #[serde(default = "default_breaker_error_rate")]
    pub breaker_error_rate: f64,
    /// Outcomes the error rate is computed over.
    #[serde(default = "default_breaker_window")]
    pub breaker_window: u32,
    /// How long an open breaker refuses traffic before a probe.
    #[serde(default = "default_breaker_open_ms")]
    pub breaker_open_ms: u64,
    /// Retries allowed as a share of requests, over the last 10 seconds.
    #[serde(default = "default_budget_ratio")]
    pub retry_budget_ratio: f64,
    /// Retries per second allowed however little traffic there is.
    #[serde(default = "default_budget_floor")]
    pub retry_budget_min_per_sec: u32,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        Self {
            breaker_failures: default_breaker_failures(),
            breaker_error_rate: default_breaker_error_rate(),
            breaker_window: default_breaker_window(),
            breaker_open_ms: default_breaker_open_ms(),
            retry_budget_ratio: default_budget_ratio(),
            retry_budget_min_per_sec: default_budget_floor(),
        }
    }
}

fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_error_rate() -> f64 {
    0.5
}
fn default_breaker_window() -> u32 {
    20
}
fn default_breaker_open_ms() -> u64 {
    30_000
}
fn default_budget_ratio() -> f64 {
    0.2
}
fn default_budget_floor() -> u32 {
    5
}

/// The response cache.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Cache answers to deterministic requests (temperature 0 or a seed).
    #[serde(default)]
    pub enabled: bool,
    /// How long an answer stays.
    #[serde(default = "default_cache_ttl")]
    pub ttl_secs: u64,
    /// Most answers kept in memory.
    #[serde(default = "default_cache_entries")]
    pub max_entries: u64,
    /// Keep the cache in Redis, shared by every gateway instance.
    pub redis_url: Option<String>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            ttl_secs: default_cache_ttl(),
            max_entries: default_cache_entries(),
            redis_url: None,
        }
    }
}

fn default_cache_ttl() -> u64 {
    600
}
fn default_cache_entries() -> u64 {
    10_000
}
