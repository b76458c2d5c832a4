//! `GET /metrics`: Prometheus's scrape, in the OpenMetrics text format.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use switchyard_core::Residence;
use switchyard_orchestration::BreakerState;
use switchyard_telemetry::{DeploymentSnapshot, EngineSnapshot, metrics};

use crate::AppState;
use crate::calls;
use crate::error::ApiError;

/// Metrics name tenants and models: when keys are required, only the
/// master key or an admin key may read them, unless the configuration
/// makes them public.
pub(crate) async fn scrape(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let snapshot = state.pipeline.snapshot();
    if snapshot.policy.settings().auth_enabled && !state.public_metrics {
        let call = calls::call(&headers, None);
        let caller = state.pipeline.caller(&snapshot, &call).await?;
        if !caller.is_admin() {
            return Err(ApiError {
                status: StatusCode::FORBIDDEN,
                kind: "permission_error",
                ..ApiError::invalid_request(
                    "metrics need the master key or a key with the admin role (or `public_metrics = true` in [telemetry])",
                    None,
                )
            }
            .with_code("permission_denied"));
        }
    }
    let deployments: Vec<DeploymentSnapshot> = snapshot
        .gateway
        .deployments()
        .map(|deployment| DeploymentSnapshot {
            deployment: deployment.name.clone(),
            breaker_state: match deployment.breaker().state() {
                BreakerState::Closed => 0,
                BreakerState::HalfOpen => 1,
                BreakerState::Open => 2,
            },
            in_flight: i64::from(deployment.inflight()),
            engine: deployment
                .chat
                .as_ref()
                .and_then(|chat| chat.load())
                .map(|load| {
                    let residency = load.residency;
                    EngineSnapshot {
                        queued: load.queued,
                        running: load.running,
                        prompt_tokens: load.prompt_tokens,
                        cached_prompt_tokens: load.cached_prompt_tokens,
                        constrained_requests: load.constrained_requests,
                        generated_tokens: load.generated_tokens,
                        loaded: residency.is_some_and(|r| r.state == Residence::Loaded),
                        memory_bytes: residency.map_or(0, |r| r.memory_bytes),
                        loads: residency.map_or(0, |r| r.loads),
                        unloads_idle: residency.map_or(0, |r| r.unloads_idle),
                        unloads_memory: residency.map_or(0, |r| r.unloads_memory),
                        unloads_admin: residency.map_or(0, |r| r.unloads_admin),
                    }
                }),
        })
        .collect();
    let body = metrics().render(&deployments).map_err(|_| ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        kind: "server_error",
        ..ApiError::invalid_request("cannot encode the metrics", None)
    })?;
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(switchyard_telemetry::metrics::CONTENT_TYPE),
    );
    Ok(response)
}
