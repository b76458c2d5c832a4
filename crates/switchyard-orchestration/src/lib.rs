//! Switchyard's orchestration layer: a public name (a model, or a route over
//! several) becomes a plan of deployments, run with retries (exponential
//! backoff with jitter, Retry-After honoured, a shared retry budget),
//! fallbacks on the failures a route names, optional hedging, a circuit
//! breaker per deployment, and an exact-match response cache.

pub mod breaker;
mod budget;
pub mod cache;
mod deployment;
mod gateway;
mod observe;
pub mod route;
mod rules;
pub mod semantic;
pub mod semantic_cache;
pub mod strategies;

pub use breaker::{BreakerSettings, BreakerState};
pub use cache::{CachedAnswer, MemoryCache, RedisCache, ResponseCache};
pub use deployment::Deployment;
pub use gateway::{CacheStatus, Gateway, GatewayBuilder, Listed, Routed};
pub use route::{FailureKind, Price, Resilience, RouteSpec, Strategy};
pub use rules::{CacheMode, Condition, RequestContext, Rule, Trail};
pub use semantic_cache::{
    MemorySemanticStore, RedisSemanticStore, SemanticCacheSpec, SemanticStore,
};
