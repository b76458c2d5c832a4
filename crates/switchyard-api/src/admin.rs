//! `/admin/...`: tenants, teams, keys, usage reports, the audit trail and
//! budget alerts. Every handler authenticates, then hands the caller to the
//! governance layer, which checks its role and tenant on every object.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use switchyard_governance::admin::{GroupPatch, KeyPatch, NewKey, NewTeam, NewTenant};
use switchyard_governance::switchyard_state::TimeRange;
use switchyard_governance::switchyard_state::records::UsageGroup;

use switchyard_pipeline::residency::ResidencyChange;

use crate::AppState;
use crate::calls::{AdminCaller, Authenticated};
use crate::error::ApiError;
use crate::extract::OpenAiJson;

fn list<T: serde::Serialize>(items: Vec<T>) -> Response {
    Json(serde_json::json!({"object": "list", "data": items})).into_response()
}

pub(crate) async fn create_tenant(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
    OpenAiJson(input): OpenAiJson<NewTenant>,
) -> Result<Response, ApiError> {
    let tenant = state.governance().create_tenant(&caller, input).await?;
    Ok((StatusCode::CREATED, Json(tenant)).into_response())
}

pub(crate) async fn list_tenants(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
) -> Result<Response, ApiError> {
    Ok(list(state.governance().list_tenants(&caller).await?))
}

pub(crate) async fn get_tenant(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(state.governance().get_tenant(&caller, &id).await?).into_response())
}

/// `PUT /admin/tenants/{id}/guardrails`: `{"policies": [...]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TenantGuardrails {
    policies: Vec<String>,
}

pub(crate) async fn set_tenant_guardrails(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
    Path(id): Path<String>,
    OpenAiJson(body): OpenAiJson<TenantGuardrails>,
) -> Result<Response, ApiError> {
    Ok(Json(
        state
            .governance()
            .set_tenant_guardrails(&caller, &id, body.policies)
            .await?,
    )
    .into_response())
}

pub(crate) async fn update_tenant(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
    Path(id): Path<String>,
    OpenAiJson(patch): OpenAiJson<GroupPatch>,
) -> Result<Response, ApiError> {
    Ok(Json(
        state
            .governance()
            .update_tenant(&caller, &id, patch)
            .await?,
    )
    .into_response())
}

pub(crate) async fn create_team(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
    OpenAiJson(input): OpenAiJson<NewTeam>,
) -> Result<Response, ApiError> {
    let team = state.governance().create_team(&caller, input).await?;
    Ok((StatusCode::CREATED, Json(team)).into_response())
}

pub(crate) async fn list_teams(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
) -> Result<Response, ApiError> {
    Ok(list(state.governance().list_teams(&caller).await?))
}

pub(crate) async fn get_team(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(state.governance().get_team(&caller, &id).await?).into_response())
}

pub(crate) async fn update_team(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
    Path(id): Path<String>,
    OpenAiJson(patch): OpenAiJson<GroupPatch>,
) -> Result<Response, ApiError> {
    Ok(Json(state.governance().update_team(&caller, &id, patch).await?).into_response())
}

pub(crate) async fn create_key(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
    OpenAiJson(input): OpenAiJson<NewKey>,
) -> Result<Response, ApiError> {
    let created = state.governance().create_key(&caller, input).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

pub(crate) async fn list_keys(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
) -> Result<Response, ApiError> {
    Ok(list(state.governance().list_keys(&caller).await?))
}

pub(crate) async fn get_key(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(state.governance().get_key(&caller, &id).await?).into_response())
}

pub(crate) async fn update_key(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
    Path(id): Path<String>,
    OpenAiJson(patch): OpenAiJson<KeyPatch>,
) -> Result<Response, ApiError> {
    Ok(Json(state.governance().update_key(&caller, &id, patch).await?).into_response())
}

pub(crate) async fn revoke_key(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(state.governance().revoke_key(&caller, &id).await?).into_response())
}

/// Query of the usage report.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UsageQuery {
    /// tenant, team, key, model or day.
    group_by: Option<UsageGroup>,
    /// Narrow to one tenant (the master key).
    tenant_id: Option<String>,
    /// Unix milliseconds, inclusive.
    from: Option<i64>,
    /// Unix milliseconds, exclusive.
    to: Option<i64>,
}

pub(crate) async fn usage(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
    query: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid_request(e.body_text(), None))?;
    let group = query.group_by.unwrap_or(UsageGroup::Model);
    let range = TimeRange {
        from: query.from,
        to: query.to,
    };
    let lines = state
        .governance()
        .usage_report(&caller, query.tenant_id.as_deref(), &range, group)
        .await?;
    Ok(list(lines))
}

/// Query of a key's own usage report.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OwnUsageQuery {
    /// `model` (default) or `day`.
    group_by: Option<UsageGroup>,
    /// Unix milliseconds, inclusive.
    from: Option<i64>,
    /// Unix milliseconds, exclusive.
    to: Option<i64>,
}

/// `GET /v1/usage`: the calling key's own usage and spend, for every role
/// (members and read-only keys read theirs here; the admin API is for
/// admins).
pub(crate) async fn own_usage(
    State(state): State<AppState>,
    who: Authenticated,
    query: Result<Query<OwnUsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid_request(e.body_text(), None))?;
    let group = query.group_by.unwrap_or(UsageGroup::Model);
    if !matches!(group, UsageGroup::Model | UsageGroup::Day) {
        return Err(ApiError::invalid_request(
            "`group_by` of a key's own usage is `model` or `day`",
            Some("group_by".into()),
        ));
    }
    let range = TimeRange {
        from: query.from,
        to: query.to,
    };
    let report = state
        .governance()
        .own_usage(&who.caller, &range, group)
        .await?;
    Ok(Json(report).into_response())
}

/// Query of the audit listing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    /// One request's records.
    request_id: Option<String>,
    /// Narrow to one tenant (the master key).
    tenant_id: Option<String>,
    /// Unix milliseconds, inclusive.
    from: Option<i64>,
    /// Unix milliseconds, exclusive.
    to: Option<i64>,
    /// At most this many (default 100, at most 1000).
    limit: Option<u32>,
}

pub(crate) async fn audit(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid_request(e.body_text(), None))?;
    let records = match &query.request_id {
        Some(request_id) => {
            state
                .governance()
                .audit_of_request(&caller, request_id)
                .await?
        }
        None => {
            let range = TimeRange {
                from: query.from,
                to: query.to,
            };
            let limit = query.limit.unwrap_or(100).clamp(1, 1000);
            state
                .governance()
                .audit_records(&caller, query.tenant_id.as_deref(), &range, limit)
                .await?
        }
    };
    Ok(list(records))
}

pub(crate) async fn alerts(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
) -> Result<Response, ApiError> {
    Ok(list(state.governance().alerts(&caller).await?))
}

/// `POST /admin/models/load` and `/admin/models/unload`: `{"model": "..."}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ModelName {
    model: String,
}

/// `GET /admin/models`: every local model and whether it is in memory.
pub(crate) async fn local_models(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
) -> Result<Response, ApiError> {
    let snapshot = state.pipeline.snapshot();
    Ok(list(state.pipeline.local_models(&snapshot, &caller)?))
}

pub(crate) async fn load_model(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
    OpenAiJson(body): OpenAiJson<ModelName>,
) -> Result<Response, ApiError> {
    change_residency(state, caller, body.model, ResidencyChange::Load).await
}

pub(crate) async fn unload_model(
    State(state): State<AppState>,
    AdminCaller(caller): AdminCaller,
    OpenAiJson(body): OpenAiJson<ModelName>,
) -> Result<Response, ApiError> {
    change_residency(state, caller, body.model, ResidencyChange::Unload).await
}

async fn change_residency(
    state: AppState,
    caller: switchyard_governance::Caller,
    model: String,
    change: ResidencyChange,
) -> Result<Response, ApiError> {
    let snapshot = state.pipeline.snapshot();
    let report = state
        .pipeline
        .change_residency(&snapshot, &caller, &model, change)
        .await?;
    Ok(Json(report).into_response())
}
