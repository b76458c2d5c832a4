//! Each model's context window, the `[context]` fitting settings, and
//! what `[conversations]` keeps.

use std::collections::HashMap;

use switchyard_config::{Config, FitMode};
use switchyard_pipeline::responses::Keeping;
use switchyard_pipeline::stages::fit::{Fit, Fitting};

/// Context assumed for remote models whose window the configuration does
/// not state (`context_window`).
const REMOTE_CONTEXT_TOKENS: usize = 8_192;

/// Each model's context in tokens; a route's is its smallest deployment's.
pub fn context_windows(config: &Config) -> HashMap<String, usize> {
    let mut windows: HashMap<String, usize> = config
        .models
        .iter()
        .map(|(name, model)| {
            let window = model
                .context_window()
                .map_or(REMOTE_CONTEXT_TOKENS, |w| w as usize);
            (name.clone(), window)
        })
        .collect();
    for (name, route) in &config.routes {
        let smallest = route
            .deployments
            .iter()
            .filter_map(|d| windows.get(&d.model).copied())
            .min()
            .unwrap_or(REMOTE_CONTEXT_TOKENS);
        windows.insert(name.clone(), smallest);
    }
    windows
}

fn fit(mode: FitMode) -> Fit {
    match mode {
        FitMode::Off => Fit::Off,
        FitMode::Truncate => Fit::Truncate,
        FitMode::Summarize => Fit::Summarize,
    }
}

/// The pipeline's fitting settings for `config`.
pub fn fitting(config: &Config) -> Fitting {
    let context = &config.context;
    Fitting {
        modes: context
            .fit
            .iter()
            .map(|(name, mode)| (name.clone(), fit(*mode)))
            .collect(),
        default: fit(context.default),
        windows: context_windows(config)
            .into_iter()
            .map(|(name, window)| (name, u32::try_from(window).unwrap_or(u32::MAX)))
            .collect(),
        summary_model: context.summary_model.clone(),
    }
}

/// What `[conversations]` keeps of stored responses and conversations.
pub fn keeping(config: &Config) -> Keeping {
    Keeping {
        retention_days: config.conversations.retention_days,
        mask: config.conversations.mask,
    }
}

/// How often expired responses and conversations are looked for.
const PURGE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Deletes stored responses and conversations past the retention of the
/// configuration in force, soon after start and then every hour (a reload
/// that changes the retention applies from the next round).
pub fn purge_in_background(pipeline: std::sync::Arc<switchyard_pipeline::Pipeline>) {
    tokio::spawn(async move {
        let mut rounds = tokio::time::interval_at(
            tokio::time::Instant::now() + std::time::Duration::from_secs(10),
            PURGE_EVERY,
        );
        loop {
            rounds.tick().await;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            match pipeline.purge_expired(now).await {
                Ok((0, 0)) => {}
                Ok((responses, conversations)) => tracing::info!(
                    responses,
                    conversations,
                    "deleted stored responses and conversations past their retention"
                ),
                Err(error) => tracing::warn!(%error, "could not delete expired responses"),
            }
        }
    });
}
