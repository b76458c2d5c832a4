//! Model listing and health endpoints.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use switchyard_core::BackendError;
use switchyard_governance::Caller;
use switchyard_orchestration::Listed;

use crate::AppState;
use crate::error::ApiError;
use crate::governed;

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

/// Whether the caller may see `model`: with authentication on, a key
/// sees the models it may call.
fn visible(caller: &Caller, model: &str) -> bool {
    match caller {
        Caller::Key(context) => context
            .key
            .allowed_models
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|m| m == model)),
        Caller::Anonymous | Caller::Master => true,
    }
}

/// `GET /v1/models`: OpenAI's list shape.
pub(crate) async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = governed::caller(&state, &headers).await?;
    let mut listing = state.gateway.load().listing();
    // Assistants answer with their model: whoever may use it sees them.
    if let Some(retrieval) = &state.retrieval {
        for name in retrieval.assistants() {
            if let Some(assistant) = retrieval.assistant(name) {
                listing.push(Listed {
                    name: name.to_owned(),
                    owned_by: format!("switchyard (grounded {})", assistant.model),
                    created: 0,
                });
            }
        }
    }
    let list = ModelList {
        object: "list",
        data: listing
            .into_iter()
            .filter(|listed| {
                let model = state
                    .retrieval
                    .as_ref()
                    .and_then(|r| r.assistant(&listed.name))
                    .map_or(listed.name.as_str(), |a| a.model.as_str());
                visible(&caller, model)
            })
            .map(ModelObject::from)
            .collect(),
    };
    Ok(Json(list).into_response())
}

/// `GET /v1/models/{model}`.
pub(crate) async fn retrieve(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(model): Path<String>,
) -> Result<Response, ApiError> {
    let caller = governed::caller(&state, &headers).await?;
    let listed = state.gateway.load().lookup(&model)?;
    if !visible(&caller, &listed.name) {
        return Err(BackendError::new(
            switchyard_core::ErrorKind::NotFound,
            format!("the model `{model}` does not exist"),
        )
        .with_code("model_not_found")
        .into());
    }
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
