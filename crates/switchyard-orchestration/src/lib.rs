//! Switchyard's orchestration layer: a public name (a model, or a route over
//! several) becomes a plan of deployments, run with retries (exponential
//! backoff with jitter, Retry-After honoured, a shared retry budget),
//! fallbacks on the failures a route names, optional hedging, a circuit
//! breaker per deployment, an exact-match response cache, and answers
//! grounded in a tenant's documents (retrieval-augmented generation).

pub mod breaker;
mod budget;
pub mod cache;
mod deployment;
mod gateway;
pub mod grounding;
mod observe;
mod rules;

pub use breaker::{BreakerSettings, BreakerState};
pub use cache::{CachedAnswer, MemoryCache, RedisCache, ResponseCache};
pub use deployment::Deployment;
pub use gateway::{CacheStatus, Gateway, GatewayBuilder, Listed, Routed};
pub use rules::{CacheMode, RequestContext, Trail};
