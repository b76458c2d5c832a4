//! `POST /v1/embeddings`.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use switchyard_governance::Operation;
use switchyard_protocol::openai_embeddings::{EmbeddingsRequest, EmbeddingsResponse};
use tracing::debug;

use crate::AppState;
use crate::context::{request_context, route_headers};
use crate::error::ApiError;
use crate::extract::OpenAiJson;
use crate::governed;

pub(crate) async fn embeddings(
    State(state): State<AppState>,
    headers: HeaderMap,
    OpenAiJson(body): OpenAiJson<EmbeddingsRequest>,
) -> Result<Response, ApiError> {
    let mut context = request_context(&headers, None);
    let (request, format) = body.into_canonical()?;
    let model = request.model.clone();
    tracing::Span::current().record("model", model.as_str());
    let inputs = request.inputs.len();
    let characters: usize = request.inputs.iter().map(String::len).sum();
    let call = governed::Call {
        model: &model,
        operation: Operation::Embeddings,
        stream: false,
        estimated_tokens: u64::try_from(characters.div_ceil(4)).unwrap_or(u64::MAX),
    };
    let admission = governed::admit(&state, &headers, &mut context, call).await?;
    let limits = governed::rate_headers(&admission);
    let routed = match state.gateway.load_full().embed(request, &context).await {
        Ok(routed) => routed,
        Err(error) => return Err(governed::backend_failure(admission, error, &context)),
    };
    let route = route_headers(&routed);
    let usage = switchyard_core::Usage::new(routed.value.prompt_tokens, 0);
    admission.finish(governed::served(&routed, Some(&usage), &context));
    let answer = routed.value;
    debug!(
        inputs,
        prompt_tokens = answer.prompt_tokens,
        "embeddings served"
    );
    let mut response =
        Json(EmbeddingsResponse::from_canonical(model, answer, format)).into_response();
    response.headers_mut().extend(route);
    response.headers_mut().extend(limits);
    Ok(response)
}
