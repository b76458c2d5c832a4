//! Model listing and health endpoints.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use switchyard_core::BackendError;
use switchyard_governance::Caller;
use switchyard_orchestration::Listed;

use crate::AppState;
use crate::calls::Authenticated;
use crate::error::ApiError;

#[derive(Serialize)]
struct ModelObject {
    id: String,
    object: &'static str,
    created: u64,
    owned_by: String,
    /// Local models only: `loaded`, `loading`, `unloaded` (it loads on its
    /// first request) or `failed`. SDKs keep unknown fields.
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    /// Local models only: what it holds in memory while loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_bytes: Option<u64>,
}

impl From<Listed> for ModelObject {
    fn from(listed: Listed) -> Self {
        Self {
            id: listed.name,
            object: "model",
            created: listed.created,
            owned_by: listed.owned_by,
            status: listed.residency.map(|r| r.state.as_str()),
            memory_bytes: listed.residency.map(|r| r.memory_bytes),
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

/// An assistant as a model: it answers with its model, so whoever may use
/// that model sees it.
fn assistant_listing(name: &str, model: &str) -> Listed {
    Listed {
        name: name.to_owned(),
        owned_by: format!("switchyard (grounded {model})"),
        created: 0,
        residency: None,
    }
}

/// A code assistant as a model, seen by whoever may use its code model.
fn code_assistant_listing(name: &str, model: &str) -> Listed {
    Listed {
        name: name.to_owned(),
        owned_by: format!("switchyard (code assistant on {model})"),
        created: 0,
        residency: None,
    }
}

/// `GET /v1/models`: OpenAI's list shape.
pub(crate) async fn list(who: Authenticated) -> Result<Response, ApiError> {
    let Authenticated { caller, snapshot } = who;
    let mut listing: Vec<Listed> = snapshot
        .gateway
        .listing()
        .into_iter()
        .filter(|listed| visible(&caller, &listed.name))
        .collect();
    if let Some(retrieval) = &snapshot.retrieval {
        listing.extend(
            retrieval
                .assistants()
                .filter(|(_, assistant)| visible(&caller, &assistant.model))
                .map(|(name, assistant)| assistant_listing(name, &assistant.model)),
        );
    }
    listing.extend(
        snapshot
            .code_assistants
            .iter()
            .filter(|(_, coder)| visible(&caller, &coder.model))
            .map(|(name, coder)| code_assistant_listing(name, &coder.model)),
    );
    let list = ModelList {
        object: "list",
        data: listing.into_iter().map(ModelObject::from).collect(),
    };
    Ok(Json(list).into_response())
}

/// `GET /v1/models/{model}`.
pub(crate) async fn retrieve(
    who: Authenticated,
    Path(model): Path<String>,
) -> Result<Response, ApiError> {
    let Authenticated { caller, snapshot } = who;
    let assistant = snapshot
        .retrieval
        .as_ref()
        .and_then(|retrieval| retrieval.assistant(&model));
    let coder = snapshot.code_assistants.get(&model);
    let (listed, answering_model) = match (assistant, coder) {
        (Some(assistant), _) => (
            assistant_listing(&model, &assistant.model),
            assistant.model.clone(),
        ),
        (None, Some(coder)) => (
            code_assistant_listing(&model, &coder.model),
            coder.model.clone(),
        ),
        (None, None) => {
            let listed = snapshot.gateway.lookup(&model)?;
            let name = listed.name.clone();
            (listed, name)
        }
    };
    if !visible(&caller, &answering_model) {
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

#[derive(Serialize)]
struct Readiness {
    status: &'static str,
    /// Each local chat model and whether it is in memory.
    local_models: BTreeMap<String, &'static str>,
}

/// `GET /readyz`: 200 once every configured model can serve (local models
/// that preload are loaded; the others load on their first request).
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    let snapshot = state.pipeline.snapshot();
    let local_models = snapshot
        .gateway
        .deployments()
        .filter_map(|deployment| {
            let control = deployment.chat.as_ref()?.residency()?;
            Some((deployment.name.clone(), control.status().state.as_str()))
        })
        .collect();
    if snapshot.gateway.is_ready() {
        Json(Readiness {
            status: "ready",
            local_models,
        })
        .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Readiness {
                status: "loading",
                local_models,
            }),
        )
            .into_response()
    }
}
