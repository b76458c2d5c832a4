//! Which local models are in memory, and an operator's load and unload.
//!
//! Local models share the machine's memory across every tenant, so only
//! the master key may move them in or out; anyone who may call a model
//! sees whether it is loaded in `/v1/models`.

use serde::Serialize;
use switchyard_core::{BackendError, ErrorKind, ModelStatus};
use switchyard_governance::{Caller, GovernanceError};
use tracing::info;

use crate::{Pipeline, PipelineError, Snapshot};

/// What an operator asks of a local model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResidencyChange {
    /// Load it now (waiting for room under the memory budget).
    Load,
    /// Unload it (running requests finish first).
    Unload,
}

/// A local model's residence, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalModelReport {
    /// The configured model name.
    pub model: String,
    /// `loaded`, `loading`, `unloaded` or `failed`.
    pub status: &'static str,
    /// Bytes it holds under the memory budget while loaded.
    pub memory_bytes: u64,
    /// Times it was loaded.
    pub loads: u64,
    /// Times it was unloaded, by reason.
    pub unloads: Unloads,
}

/// Unloads by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Unloads {
    /// After its `keep_alive`.
    pub idle: u64,
    /// To make room for another model.
    pub memory: u64,
    /// By an operator.
    pub admin: u64,
}

impl LocalModelReport {
    fn new(model: &str, status: ModelStatus) -> Self {
        Self {
            model: model.to_owned(),
            status: status.state.as_str(),
            memory_bytes: status.memory_bytes,
            loads: status.loads,
            unloads: Unloads {
                idle: status.unloads_idle,
                memory: status.unloads_memory,
                admin: status.unloads_admin,
            },
        }
    }
}

fn require_master(caller: &Caller) -> Result<(), PipelineError> {
    match caller {
        Caller::Master => Ok(()),
        _ => Err(GovernanceError::Forbidden(
            "only the master key may list, load or unload local models: they share the machine's memory across tenants".to_owned(),
        )
        .into()),
    }
}

impl Pipeline {
    /// Every local model of `snapshot` and where it is.
    pub fn local_models(
        &self,
        snapshot: &Snapshot,
        caller: &Caller,
    ) -> Result<Vec<LocalModelReport>, PipelineError> {
        require_master(caller)?;
        Ok(snapshot
            .gateway
            .deployments()
            .filter_map(|deployment| {
                let control = deployment.chat.as_ref()?.residency()?;
                Some(LocalModelReport::new(&deployment.name, control.status()))
            })
            .collect())
    }

    /// Loads or unloads the local model `model`.
    pub async fn change_residency(
        &self,
        snapshot: &Snapshot,
        caller: &Caller,
        model: &str,
        change: ResidencyChange,
    ) -> Result<LocalModelReport, PipelineError> {
        require_master(caller)?;
        let deployment = snapshot.gateway.deployment(model).ok_or_else(|| {
            BackendError::new(
                ErrorKind::NotFound,
                format!("the model `{model}` is not configured"),
            )
            .with_param("model")
            .with_code("model_not_found")
        })?;
        let control = deployment
            .chat
            .as_ref()
            .and_then(|chat| chat.residency())
            .ok_or_else(|| {
                BackendError::invalid_request(format!(
                    "`{model}` is not a local chat model; only those are loaded and unloaded"
                ))
                .with_param("model")
            })?;
        let status = match change {
            ResidencyChange::Load => control.load_now().await?,
            ResidencyChange::Unload => control.unload_now(),
        };
        info!(model, change = ?change, status = status.state.as_str(), "local model residency changed by the master key");
        Ok(LocalModelReport::new(model, status))
    }
}
