//! Feedback on answers, tied to the request it is about.

use crate::StateError;
use crate::records::FeedbackRow;
use crate::store::SqlStore;

impl SqlStore {
    /// Keeps a piece of feedback.
    pub async fn insert_feedback(&self, feedback: &FeedbackRow) -> Result<(), StateError> {
        sqlx::query(
            "INSERT INTO feedback (id, tenant_id, request_id, response_id, at, score, label, comment)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&feedback.id)
        .bind(&feedback.tenant_id)
        .bind(&feedback.request_id)
        .bind(feedback.response_id.as_deref())
        .bind(feedback.at)
        .bind(feedback.score)
        .bind(feedback.label.as_deref())
        .bind(feedback.comment.as_deref())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The request id that produced response `response_id` in `tenant`.
    pub async fn request_of_response(
        &self,
        tenant: &str,
        response_id: &str,
    ) -> Result<Option<String>, StateError> {
        use sqlx::Row;
        let row = sqlx::query(
            "SELECT request_id FROM usage_ledger WHERE response_id = $1 AND tenant_id = $2 LIMIT 1",
        )
        .bind(response_id)
        .bind(tenant)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| row.try_get("request_id").map_err(StateError::from))
            .transpose()
    }
}
