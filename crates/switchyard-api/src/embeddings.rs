//! `POST /v1/embeddings`.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use switchyard_protocol::openai_embeddings::{EmbeddingsRequest, EmbeddingsResponse};
use tracing::info;

use crate::AppState;
use crate::context::{request_context, route_headers};
use crate::error::ApiError;
use crate::extract::OpenAiJson;

pub(crate) async fn embeddings(
    State(state): State<AppState>,
    headers: HeaderMap,
    OpenAiJson(body): OpenAiJson<EmbeddingsRequest>,
) -> Result<Response, ApiError> {
    let context = request_context(&headers, None);
    let (request, format) = body.into_canonical()?;
    let model = request.model.clone();
    tracing::Span::current().record("model", model.as_str());
    let inputs = request.inputs.len();
    let routed = state.gateway.load_full().embed(request, &context).await?;
    let route = route_headers(&routed);
    let answer = routed.value;
    info!(
        inputs,
        prompt_tokens = answer.prompt_tokens,
        "embeddings served"
    );
    let mut response =
        Json(EmbeddingsResponse::from_canonical(model, answer, format)).into_response();
    response.headers_mut().extend(route);
    Ok(response)
}
