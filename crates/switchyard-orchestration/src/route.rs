//! Orchestration's own model of a route: what the gateway runs on, built
//! from the configuration's TOML schema at its edge (the `From` impls
//! below), so that the schema can grow fields and aliases without the
//! routing code reading them.

use std::time::Duration;

use switchyard_config as config;

use crate::breaker::BreakerSettings;
use crate::rules::{Condition, Rule};
use crate::semantic::{Examples, Similar};
use crate::semantic_cache::SemanticCacheSpec;
use crate::strategies::{CascadeSpec, EnsembleSpec};

/// How a route picks among its deployments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Random, in proportion to each deployment's weight.
    Weighted,
    /// Power of two choices over the latency EWMA (scaled by in-flight load).
    LeastLatency,
    /// The deployment with the fewest requests in flight.
    LeastInflight,
    /// The cheapest deployment by its model's price.
    LowestCost,
    /// The first healthy deployment in the order listed.
    Priority,
    /// Cheapest first, escalating while the answer is not accepted.
    Cascade,
    /// All at once; a judge picks the best answer.
    BestOf,
    /// All at once; an aggregator writes the answer from theirs.
    Mixture,
}

impl Strategy {
    /// Whether it asks several models before it answers.
    pub fn asks_several(self) -> bool {
        matches!(self, Self::Cascade | Self::BestOf | Self::Mixture)
    }
}

/// Failures a route moves past (retrying, then falling back) instead of
/// answering with the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// A public name served by a group of deployments.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSpec {
    /// How a deployment is picked.
    pub strategy: Strategy,
    /// Deployment names with their weights.
    pub deployments: Vec<(String, u32)>,
    /// Rules that send matching requests elsewhere, first match wins.
    pub rules: Vec<Rule>,
    /// Routes or models tried, in order, when every deployment failed.
    pub fallbacks: Vec<String>,
    /// Failures that move on to a retry or the next deployment.
    pub fallback_on: Vec<FailureKind>,
    /// Retries per deployment before moving on.
    pub retries: u32,
    /// First retry delay; doubles each retry (with full jitter).
    pub backoff: Duration,
    /// Longest retry delay, and the longest `Retry-After` worth waiting for.
    pub backoff_max: Duration,
    /// When a second attempt starts on the next deployment.
    pub hedge_after: Option<Duration>,
    /// Whether answers are cached (`None`: the gateway's default).
    pub cache: Option<bool>,
    /// The semantic cache, when the route keeps one.
    pub semantic_cache: Option<SemanticCacheSpec>,
    /// `cascade`: when a step's answer is accepted.
    pub cascade: CascadeSpec,
    /// `best-of` and `mixture`: who judges or writes.
    pub ensemble: EnsembleSpec,
    /// Left out of the model listing.
    pub hidden: bool,
}

/// Circuit breakers and the retry budget, shared by every route.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resilience {
    /// When a deployment's breaker opens, and for how long.
    pub breaker: BreakerSettings,
    /// Retries allowed as a share of requests, over the last 10 seconds.
    pub retry_budget_ratio: f64,
    /// Retries per second allowed however little traffic there is.
    pub retry_budget_min_per_sec: u32,
}

/// What a model costs, in US dollars per million tokens (for the
/// `lowest-cost` strategy).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    /// Per million prompt tokens.
    pub input: f64,
    /// Per million generated tokens.
    pub output: f64,
}

impl From<config::Strategy> for Strategy {
    fn from(strategy: config::Strategy) -> Self {
        match strategy {
            config::Strategy::Weighted => Self::Weighted,
            config::Strategy::LeastLatency => Self::LeastLatency,
            config::Strategy::LeastInflight => Self::LeastInflight,
            config::Strategy::LowestCost => Self::LowestCost,
            config::Strategy::Priority => Self::Priority,
            config::Strategy::Cascade => Self::Cascade,
            config::Strategy::BestOf => Self::BestOf,
            config::Strategy::Mixture => Self::Mixture,
        }
    }
}

impl From<config::FailureKind> for FailureKind {
    fn from(kind: config::FailureKind) -> Self {
        match kind {
            config::FailureKind::RateLimited => Self::RateLimited,
            config::FailureKind::Overloaded => Self::Overloaded,
            config::FailureKind::Upstream => Self::Upstream,
            config::FailureKind::Timeout => Self::Timeout,
            config::FailureKind::ContextLength => Self::ContextLength,
            config::FailureKind::Auth => Self::Auth,
        }
    }
}

impl From<&config::RuleConfig> for Rule {
    fn from(rule: &config::RuleConfig) -> Self {
        let mut conditions = Vec::new();
        if let Some(chars) = rule.prompt_chars_above {
            conditions.push(Condition::PromptCharsAbove(chars));
        }
        if let Some(chars) = rule.prompt_chars_below {
            conditions.push(Condition::PromptCharsBelow(chars));
        }
        if let Some(want) = rule.has_code {
            conditions.push(Condition::HasCode(want));
        }
        if let Some(want) = rule.has_tools {
            conditions.push(Condition::HasTools(want));
        }
        if let Some(want) = rule.has_images {
            conditions.push(Condition::HasImages(want));
        }
        if let Some(name) = &rule.header {
            conditions.push(Condition::Header {
                name: name.to_ascii_lowercase(),
                value: rule.header_value.clone(),
            });
        }
        if let Some(key) = &rule.metadata_key {
            conditions.push(Condition::Metadata {
                key: key.clone(),
                value: rule.metadata_value.clone(),
            });
        }
        if let Some(tenant) = &rule.tenant {
            conditions.push(Condition::Tenant(tenant.clone()));
        }
        if !rule.similar_to.is_empty() {
            conditions.push(Condition::SimilarTo(std::sync::Arc::new(Similar {
                examples: Examples::new(
                    rule.embedding_model
                        .clone()
                        .unwrap_or_else(|| config::DEFAULT_EMBEDDING_MODEL.to_owned()),
                    rule.similar_to.clone(),
                ),
                threshold: rule
                    .threshold
                    .unwrap_or(config::DEFAULT_SIMILARITY_THRESHOLD),
            })));
        }
        Rule {
            target: rule.route.clone(),
            conditions,
        }
    }
}

impl From<&config::RouteConfig> for RouteSpec {
    fn from(route: &config::RouteConfig) -> Self {
        Self {
            strategy: route.strategy.into(),
            deployments: route
                .deployments
                .iter()
                .map(|d| (d.model.clone(), d.weight))
                .collect(),
            rules: route.rules.iter().map(Rule::from).collect(),
            fallbacks: route.fallbacks.clone(),
            fallback_on: route.fallback_on.iter().copied().map(Into::into).collect(),
            retries: route.retries,
            backoff: Duration::from_millis(route.retry_backoff_ms),
            backoff_max: Duration::from_millis(route.retry_backoff_max_ms),
            hedge_after: route.hedge_after_ms.map(Duration::from_millis),
            cache: route.cache,
            semantic_cache: route
                .semantic_cache
                .as_ref()
                .map(|semantic| SemanticCacheSpec {
                    model: semantic
                        .embedding_model
                        .clone()
                        .unwrap_or_else(|| config::DEFAULT_EMBEDDING_MODEL.to_owned()),
                    threshold: semantic
                        .threshold
                        .unwrap_or(config::DEFAULT_SEMANTIC_CACHE_THRESHOLD),
                }),
            cascade: (&route.cascade).into(),
            ensemble: (&route.ensemble).into(),
            hidden: route.hidden,
        }
    }
}

impl From<&config::ResilienceConfig> for Resilience {
    fn from(resilience: &config::ResilienceConfig) -> Self {
        Self {
            breaker: BreakerSettings {
                failures: resilience.breaker_failures,
                error_rate: resilience.breaker_error_rate,
                window: resilience.breaker_window,
                open_for: Duration::from_millis(resilience.breaker_open_ms),
            },
            retry_budget_ratio: resilience.retry_budget_ratio,
            retry_budget_min_per_sec: resilience.retry_budget_min_per_sec,
        }
    }
}

impl Default for Resilience {
    fn default() -> Self {
        (&config::ResilienceConfig::default()).into()
    }
}

impl From<config::Pricing> for Price {
    fn from(pricing: config::Pricing) -> Self {
        Self {
            input: pricing.input,
            output: pricing.output,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_table_becomes_a_spec() {
        let table = config::RouteConfig {
            strategy: config::Strategy::Priority,
            deployments: vec![
                config::DeploymentRef {
                    model: "a".into(),
                    weight: 3,
                },
                config::DeploymentRef {
                    model: "b".into(),
                    weight: 1,
                },
            ],
            rules: vec![config::RuleConfig {
                route: "coder".into(),
                has_code: Some(true),
                header: Some("X-Tier".into()),
                ..config::RuleConfig::default()
            }],
            fallbacks: vec!["spare".into()],
            fallback_on: vec![config::FailureKind::RateLimited, config::FailureKind::Auth],
            retries: 2,
            retry_backoff_ms: 100,
            retry_backoff_max_ms: 5_000,
            hedge_after_ms: Some(250),
            cache: None,
            semantic_cache: None,
            cascade: Default::default(),
            ensemble: Default::default(),
            hidden: true,
        };
        let spec = RouteSpec::from(&table);
        assert_eq!(spec.strategy, Strategy::Priority);
        assert_eq!(spec.deployments, [("a".to_owned(), 3), ("b".to_owned(), 1)]);
        assert_eq!(spec.hedge_after, Some(Duration::from_millis(250)));
        assert_eq!(spec.backoff, Duration::from_millis(100));
        assert_eq!(spec.backoff_max, Duration::from_secs(5));
        assert_eq!(
            spec.fallback_on,
            [FailureKind::RateLimited, FailureKind::Auth]
        );
        assert!(spec.hidden);
        assert_eq!(spec.rules[0].target, "coder");
        // Header names compare lower-case, as requests carry them.
        assert_eq!(
            spec.rules[0].conditions,
            [
                Condition::HasCode(true),
                Condition::Header {
                    name: "x-tier".into(),
                    value: None
                }
            ]
        );
    }
}
