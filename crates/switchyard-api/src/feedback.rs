//! `POST /v1/feedback`: what a user thought of an answer, on a request or
//! a response of the caller's own.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use switchyard_governance::feedback::FeedbackInput;

use crate::AppState;
use crate::calls::Authenticated;
use crate::error::ApiError;
use crate::extract::OpenAiJson;

pub(crate) async fn give(
    State(state): State<AppState>,
    who: Authenticated,
    OpenAiJson(input): OpenAiJson<FeedbackInput>,
) -> Result<Response, ApiError> {
    let feedback = state.governance().give_feedback(&who.caller, input).await?;
    Ok((StatusCode::CREATED, Json(feedback)).into_response())
}
