//! Feedback on answers (`POST /v1/feedback`): a score, a label or a
//! comment on a request (or a Responses API response) of the caller's own,
//! kept beside the request's ledger rows so that usage reports show it per
//! model, route and deployment.

use serde::{Deserialize, Serialize};
use switchyard_state::records::FeedbackRow;

use crate::{Caller, Governance, GovernanceError};

/// What a client says of an answer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackInput {
    /// The request (`x-request-id`) it is about...
    #[serde(default)]
    pub request_id: Option<String>,
    /// ...or the Responses API response.
    #[serde(default)]
    pub response_id: Option<String>,
    /// A score on the caller's scale (e.g. -1 to 1, or 1 to 5).
    #[serde(default)]
    pub score: Option<f64>,
    /// A label (`helpful`, `wrong`, ...).
    #[serde(default)]
    pub label: Option<String>,
    /// A comment (kept masked).
    #[serde(default)]
    pub comment: Option<String>,
}

/// Feedback as kept and shown back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Feedback {
    /// `fb_…`.
    pub id: String,
    /// Always `feedback`.
    pub object: &'static str,
    /// The request it is about.
    pub request_id: String,
    /// The response, when given by it.
    pub response_id: Option<String>,
    /// The score.
    pub score: Option<f64>,
    /// The label.
    pub label: Option<String>,
    /// The comment, masked.
    pub comment: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
}

fn invalid(message: &str) -> GovernanceError {
    GovernanceError::Invalid(message.to_owned())
}

impl Governance {
    /// Keeps `input`, about a request of the caller's own tenant (another
    /// tenant's request is not found).
    pub async fn give_feedback(
        &self,
        caller: &Caller,
        input: FeedbackInput,
    ) -> Result<Feedback, GovernanceError> {
        if input.score.is_none() && input.label.is_none() && input.comment.is_none() {
            return Err(invalid(
                "feedback needs a `score`, a `label` or a `comment`",
            ));
        }
        if input
            .score
            .is_some_and(|s| !s.is_finite() || s.abs() > 1_000.0)
        {
            return Err(invalid("`score` must be a number between -1000 and 1000"));
        }
        if input
            .label
            .as_ref()
            .is_some_and(|l| l.is_empty() || l.chars().count() > 64)
        {
            return Err(invalid("`label` must be 1 to 64 characters"));
        }
        if input
            .comment
            .as_ref()
            .is_some_and(|c| c.chars().count() > 4_000)
        {
            return Err(invalid("`comment` must be at most 4,000 characters"));
        }
        let tenant = caller.tenant_id().unwrap_or_default().to_owned();
        // The ledger is written in batches: what was answered a moment ago
        // may still be on its way.
        let mut flushed = false;
        let request_id = loop {
            let found = match (&input.request_id, &input.response_id) {
                (Some(request), None) => {
                    let rows = self
                        .store
                        .usage_of_request(&caller.scope(), request)
                        .await?;
                    (!rows.is_empty()).then(|| request.clone())
                }
                (None, Some(response)) => self.store.request_of_response(&tenant, response).await?,
                _ => {
                    return Err(invalid(
                        "feedback is about one `request_id` or one `response_id`",
                    ));
                }
            };
            match found {
                Some(request) => break request,
                None if !flushed => {
                    self.ledger.flush().await;
                    flushed = true;
                }
                None => {
                    return Err(GovernanceError::NotFound(
                        "no request or response of yours by this id".to_owned(),
                    ));
                }
            }
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let row = FeedbackRow {
            id: format!("fb_{}", uuid::Uuid::now_v7().simple()),
            tenant_id: tenant,
            request_id,
            response_id: input.response_id,
            at: now,
            score: input.score,
            label: input.label,
            comment: input
                .comment
                .map(|c| switchyard_guardrails::detect::mask(&c).into_owned()),
        };
        self.store.insert_feedback(&row).await?;
        Ok(Feedback {
            id: row.id,
            object: "feedback",
            request_id: row.request_id,
            response_id: row.response_id,
            score: row.score,
            label: row.label,
            comment: row.comment,
            created_at: row.at / 1000,
        })
    }
}
