//! Model listing and health endpoints.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use switchyard_orchestration::ModelEntry;

use crate::AppState;
use crate::error::ApiError;

#[derive(Serialize)]
struct ModelObject<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: String,
}

impl<'a> From<&'a ModelEntry> for ModelObject<'a> {
    fn from(entry: &'a ModelEntry) -> Self {
        Self {
            id: &entry.name,
            object: "model",
            created: entry.created,
            owned_by: entry.info().map(|i| i.owned_by).unwrap_or_default(),
        }
    }
}

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<ModelObject<'a>>,
}

/// `GET /v1/models`: OpenAI's list shape.
pub(crate) async fn list(State(state): State<AppState>) -> Response {
    let list = ModelList {
        object: "list",
        data: state.gateway.models().map(ModelObject::from).collect(),
    };
    Json(list).into_response()
}

/// `GET /v1/models/{model}`.
pub(crate) async fn retrieve(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<Response, ApiError> {
    let entry = state.gateway.resolve(&model)?;
    Ok(Json(ModelObject::from(entry)).into_response())
}

/// `GET /healthz`: the process is up.
pub(crate) async fn healthz() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

/// `GET /readyz`: 200 once every configured model can serve.
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    if state.gateway.is_ready() {
        Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "loading"})),
        )
            .into_response()
    }
}
