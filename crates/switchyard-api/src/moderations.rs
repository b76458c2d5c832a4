//! `POST /v1/moderations`, in OpenAI's shape, answered by the guardrail
//! policies' input checks.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use switchyard_guardrails::CATEGORIES;
use switchyard_protocol::openai_moderations::{
    ModerationFlag, ModerationRequest, ModerationResponse, ModerationResult,
};

use crate::AppState;
use crate::calls::Authenticated;
use crate::error::ApiError;
use crate::extract::OpenAiJson;

pub(crate) async fn moderations(
    State(state): State<AppState>,
    who: Authenticated,
    OpenAiJson(body): OpenAiJson<ModerationRequest>,
) -> Result<Json<ModerationResponse>, ApiError> {
    let model = body.model.clone();
    let texts = body.texts()?;
    let flags = state
        .pipeline
        .moderate(&who.snapshot, &who.caller, model.as_deref(), &texts)
        .await;
    let results = flags
        .into_iter()
        .map(|flags| {
            let fired = |category: &str| flags.iter().any(|f| f.category == category);
            ModerationResult {
                flagged: !flags.is_empty(),
                categories: CATEGORIES
                    .iter()
                    .map(|c| (*c, fired(c)))
                    .collect::<BTreeMap<_, _>>(),
                category_scores: CATEGORIES
                    .iter()
                    .map(|c| (*c, if fired(c) { 1.0 } else { 0.0 }))
                    .collect(),
                switchyard_flags: flags
                    .into_iter()
                    .map(|f| ModerationFlag {
                        policy: f.policy,
                        check: f.check,
                        category: f.category,
                        found: f.found,
                    })
                    .collect(),
            }
        })
        .collect();
    Ok(Json(ModerationResponse {
        id: format!("modr-{}", uuid::Uuid::new_v4().simple()),
        model: model.unwrap_or_else(|| "switchyard-guardrails".into()),
        results,
    }))
}
