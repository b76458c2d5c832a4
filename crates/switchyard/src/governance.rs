//! The governance layer as the configuration asks for it: the store
//! (SQLite in the data folder unless `database_url` says otherwise), the
//! shared counters (Redis when `redis_url` is set), and the price table.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use switchyard_config::Config;
use switchyard_governance::anomaly::{AnomalySettings, WebhookSettings};
use switchyard_governance::jwt::JwtSettings;
use switchyard_governance::switchyard_state::{SqlStore, redact_url, sqlite_url};
use switchyard_governance::{Counters, Governance, GovernanceSettings, Price, PriceTable};
use tracing::{info, warn};

/// `$SWITCHYARD_DATA_DIR`, else `$XDG_DATA_HOME/switchyard`, else
/// `~/.local/share/switchyard`.
pub fn data_dir() -> anyhow::Result<PathBuf> {
    let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = non_empty("SWITCHYARD_DATA_DIR") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = non_empty("XDG_DATA_HOME") {
        return Ok(PathBuf::from(dir).join("switchyard"));
    }
    match non_empty("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".local/share/switchyard")),
        None => bail!("cannot find a data folder: set SWITCHYARD_DATA_DIR, XDG_DATA_HOME or HOME"),
    }
}

/// Prices of the configured models that have one.
pub fn prices(config: &Config) -> PriceTable {
    PriceTable::new(
        config
            .models
            .iter()
            .filter_map(|(name, model)| {
                model.pricing().map(|p| {
                    (
                        name.clone(),
                        Price {
                            input: p.input,
                            output: p.output,
                            cached_input: p.cached_input,
                        },
                    )
                })
            })
            .collect(),
    )
}

/// Opens the store and counters and starts the ledger writer.
pub async fn build(config: &Config) -> anyhow::Result<Arc<Governance>> {
    let url = match &config.database_url {
        Some(url) => url.clone(),
        None => sqlite_url(&data_dir()?),
    };
    let store = SqlStore::connect(&url)
        .await
        .with_context(|| format!("cannot open the database {}", redact_url(&url)))?;
    let counters = match &config.redis_url {
        Some(redis) => Counters::redis(redis)
            .await
            .with_context(|| format!("cannot reach Redis at {}", redact_url(redis)))?,
        None => Counters::in_memory(),
    };
    let governance =
        Governance::new(settings(config), store, counters).context("cannot start governance")?;
    governance
        .set_prices(prices(config))
        .context("cannot start governance")?;
    if let Some(settings) = anomaly_settings(config) {
        governance.watch_anomalies(settings);
    }
    info!(database = %redact_url(&url), shared_counters = config.redis_url.is_some(), "governance ready");
    Ok(governance)
}

/// The governance settings `config` asks for (logging what authentication
/// will require).
pub fn settings(config: &Config) -> GovernanceSettings {
    let settings = &config.governance;
    if settings.auth {
        if settings.master_key.is_none() {
            warn!(
                "authentication is on but no master key is set: existing keys work, and the admin API accepts admin keys only"
            );
        }
    } else {
        info!(
            "authentication is off: model calls need no key (set governance.auth = true to require one)"
        );
    }
    let jwt = settings.jwt.as_ref().map(|jwt| JwtSettings {
        issuer: jwt.issuer.clone(),
        jwks_url: jwt.jwks_url.clone(),
        audience: jwt.audience.clone(),
        tenant_claim: jwt.tenant_claim.clone(),
        team_claim: jwt.team_claim.clone(),
        role_claim: jwt.role_claim.clone(),
    });
    GovernanceSettings {
        auth_enabled: settings.auth,
        master_key: settings.master_key.clone().map(Into::into),
        key_cache_ttl: Duration::from_millis(settings.key_cache_ms),
        ledger_flush: Duration::from_millis(settings.ledger_flush_ms),
        store_prompts: settings.store_prompts,
        store_answers: settings.store_answers,
        jwt,
        guardrail_policies: config.guardrails.policies.keys().cloned().collect(),
    }
}

/// How drift and anomaly alarms are raised, when they are watched for.
pub fn anomaly_settings(config: &Config) -> Option<AnomalySettings> {
    let anomalies = &config.anomalies;
    anomalies.enabled.then(|| AnomalySettings {
        batch: anomalies.batch,
        baseline: anomalies.baseline,
        min_points: anomalies.min_points,
        threshold: anomalies.threshold,
        cost_bucket: Duration::from_secs(anomalies.cost_bucket_secs),
        cost_floor_usd_per_hour: anomalies.cost_floor_usd_per_hour,
        webhook: anomalies.webhook_url.clone().map(|url| WebhookSettings {
            url,
            attempts: anomalies.webhook_attempts,
        }),
    })
}

/// The governance settings a reload cannot change: the store, the shared
/// counters, the key cache and the ledger writer are started once.
pub fn needs_restart(before: &Config, after: &Config) -> Vec<&'static str> {
    let mut fields = Vec::new();
    if before.database_url != after.database_url {
        fields.push("database_url");
    }
    if before.redis_url != after.redis_url {
        fields.push("redis_url");
    }
    if before.governance.key_cache_ms != after.governance.key_cache_ms {
        fields.push("governance.key_cache_ms");
    }
    if before.governance.ledger_flush_ms != after.governance.ledger_flush_ms {
        fields.push("governance.ledger_flush_ms");
    }
    if before.anomalies != after.anomalies {
        fields.push("anomalies");
    }
    fields
}
