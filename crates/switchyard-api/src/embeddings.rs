//! `POST /v1/embeddings`.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use switchyard_protocol::openai_embeddings::{EmbeddingsRequest, EmbeddingsResponse};
use tracing::debug;

use crate::AppState;
use crate::calls;
use crate::context::answer_headers;
use crate::error::ApiError;
use crate::extract::OpenAiJson;

pub(crate) async fn embeddings(
    State(state): State<AppState>,
    headers: HeaderMap,
    OpenAiJson(body): OpenAiJson<EmbeddingsRequest>,
) -> Result<Response, ApiError> {
    let call = calls::call(&headers, None);
    let (request, format) = body.into_canonical()?;
    let model = request.model.clone();
    tracing::Span::current().record("model", model.as_str());
    let inputs = request.inputs.len();
    let answer = state.pipeline.embed(call, request).await?;
    let headers = answer_headers(&answer.routed, &answer.rate_limits);
    let vectors = answer.routed.value;
    debug!(
        inputs,
        prompt_tokens = vectors.prompt_tokens,
        "embeddings served"
    );
    let mut response =
        Json(EmbeddingsResponse::from_canonical(model, vectors, format)).into_response();
    response.headers_mut().extend(headers);
    Ok(response)
}
