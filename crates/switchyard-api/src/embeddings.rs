//! `POST /v1/embeddings`.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use switchyard_protocol::openai_embeddings::{EmbeddingsRequest, EmbeddingsResponse};
use tracing::info;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::OpenAiJson;

pub(crate) async fn embeddings(
    State(state): State<AppState>,
    OpenAiJson(body): OpenAiJson<EmbeddingsRequest>,
) -> Result<Response, ApiError> {
    let (request, format) = body.into_canonical()?;
    let model = request.model.clone();
    tracing::Span::current().record("model", model.as_str());
    let inputs = request.inputs.len();
    let answer = state.gateway.embed(request).await?;
    info!(
        inputs,
        prompt_tokens = answer.prompt_tokens,
        "embeddings served"
    );
    Ok(Json(EmbeddingsResponse::from_canonical(model, answer, format)).into_response())
}
