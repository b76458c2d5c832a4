//! Builds the gateway from a configuration, reusing what a previous
//! configuration already built: unchanged models keep their backends (a
//! local model is not loaded twice) and their deployment statistics
//! (breakers, latency), an unchanged cache keeps its entries.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::future::BoxFuture;
use switchyard_config::{CacheConfig, Config, ModelConfig};
use switchyard_engine::MemoryBudget;
use switchyard_orchestration::{
    Deployment, Gateway, MemoryCache, MemorySemanticStore, RedisCache, RedisSemanticStore,
    ResponseCache, SemanticStore,
};

/// What a running configuration built, for the next reload to reuse.
#[derive(Default)]
pub struct Reusable {
    models: BTreeMap<String, (ModelConfig, Arc<Deployment>)>,
    cache: Option<(CacheConfig, Arc<dyn ResponseCache>)>,
    semantic: Option<(CacheConfig, Arc<dyn SemanticStore>)>,
    /// The memory every local chat model shares, old and new alike.
    budget: MemoryBudget,
}

/// A gateway, and the loads it waits on before it can serve.
pub struct Assembled {
    pub gateway: Gateway,
    pub reusable: Reusable,
    /// One future per newly started local model.
    pub loading: Vec<(String, BoxFuture<'static, Result<(), String>>)>,
}

async fn build_cache(config: &CacheConfig) -> anyhow::Result<Arc<dyn ResponseCache>> {
    let ttl = Duration::from_secs(config.ttl_secs);
    Ok(match &config.redis_url {
        Some(url) => Arc::new(
            RedisCache::connect(url, ttl)
                .await
                .with_context(|| format!("field `cache.redis_url`: cannot reach Redis at {url}"))?,
        ),
        None => Arc::new(MemoryCache::new(config.max_entries, ttl)),
    })
}

/// The semantic cache's store: in Redis when the response cache is (so
/// replicas share hits), else in memory, with the cache's TTL.
async fn semantic_store(config: &CacheConfig) -> anyhow::Result<Arc<dyn SemanticStore>> {
    let ttl = Duration::from_secs(config.ttl_secs);
    Ok(match &config.redis_url {
        Some(url) => Arc::new(
            RedisSemanticStore::connect(url, ttl)
                .await
                .with_context(|| format!("field `cache.redis_url`: cannot reach Redis at {url}"))?,
        ),
        None => Arc::new(MemorySemanticStore::new(config.max_entries, ttl)),
    })
}

/// Builds the gateway for `config`, reusing from `previous` what did not change.
pub async fn assemble(
    config: &Config,
    origin: &str,
    previous: &Reusable,
) -> anyhow::Result<Assembled> {
    let mut builder = Gateway::builder((&config.resilience).into());
    let breaker = builder.breaker_settings();
    let mut reusable = Reusable {
        budget: previous.budget.clone(),
        ..Reusable::default()
    };
    let mut loading = Vec::new();
    for (name, model) in &config.models {
        let deployment = match previous.models.get(name) {
            Some((old, deployment)) if old == model => deployment.clone(),
            _ => {
                let backends = crate::backends::build(name, model, &reusable.budget)
                    .with_context(|| format!("{origin}: field `models.{name}`"))?;
                loading.push((name.clone(), backends.ready));
                Arc::new(Deployment::new(
                    name.clone(),
                    backends.chat,
                    backends.embeddings,
                    model.pricing().map(Into::into),
                    breaker,
                ))
            }
        };
        reusable
            .models
            .insert(name.clone(), (model.clone(), deployment.clone()));
        builder = builder.deployment(deployment);
    }
    for (name, route) in &config.routes {
        builder = builder.route(name.clone(), route.into());
    }
    // Routes may turn caching on for themselves when it is off globally.
    let wanted = config.cache.enabled || config.routes.values().any(|r| r.cache == Some(true));
    if wanted {
        let cache = match &previous.cache {
            Some((old, cache)) if *old == config.cache => cache.clone(),
            _ => build_cache(&config.cache)
                .await
                .with_context(|| origin.to_owned())?,
        };
        builder = builder.cache(cache.clone(), config.cache.enabled);
        reusable.cache = Some((config.cache.clone(), cache));
    }
    if config.routes.values().any(|r| r.semantic_cache.is_some()) {
        let store = match &previous.semantic {
            Some((old, store)) if *old == config.cache => store.clone(),
            _ => semantic_store(&config.cache)
                .await
                .with_context(|| origin.to_owned())?,
        };
        builder = builder.semantic_store(store.clone());
        reusable.semantic = Some((config.cache.clone(), store));
    }
    let gateway = builder
        .build()
        .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
    // Applies to the models loaded from now on, those of this
    // configuration included.
    reusable.budget.set_max(config.engine.max_memory);
    Ok(Assembled {
        gateway,
        reusable,
        loading,
    })
}
