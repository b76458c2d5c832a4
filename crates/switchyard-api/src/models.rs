//! Model listing and health endpoints.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use switchyard_orchestration::Listed;

use crate::AppState;
use crate::error::ApiError;

#[derive(Serialize)]
struct ModelObject {
    id: String,
    object: &'static str,
    created: u64,
    owned_by: String,
}

impl From<Listed> for ModelObject {
    fn from(listed: Listed) -> Self {
        Self {
            id: listed.name,
            object: "model",
            created: listed.created,
            owned_by: listed.owned_by,
        }
    }
}

#[derive(Serialize)]
struct ModelList {
    object: &'static str,
    data: Vec<ModelObject>,
}

/// `GET /v1/models`: OpenAI's list shape.
pub(crate) async fn list(State(state): State<AppState>) -> Response {
    let list = ModelList {
        object: "list",
        data: state
            .gateway
            .load()
            .listing()
            .into_iter()
            .map(ModelObject::from)
            .collect(),
    };
    Json(list).into_response()
}

/// `GET /v1/models/{model}`.
pub(crate) async fn retrieve(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<Response, ApiError> {
    let listed = state.gateway.load().lookup(&model)?;
    Ok(Json(ModelObject::from(listed)).into_response())
}

/// `GET /healthz`: the process is up.
pub(crate) async fn healthz() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

/// `GET /readyz`: 200 once every configured model can serve.
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    if state.gateway.load().is_ready() {
        Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "loading"})),
        )
            .into_response()
    }
}
