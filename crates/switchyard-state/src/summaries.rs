//! Summaries of conversation prefixes, written once and reused by the
//! later turns that drop the same prefix.

use sqlx::Row;

use crate::StateError;
use crate::store::SqlStore;

impl SqlStore {
    /// The summaries `tenant` has among `hashes` (hash, summary).
    pub async fn summaries(
        &self,
        tenant: &str,
        hashes: &[String],
    ) -> Result<Vec<(String, String)>, StateError> {
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        // One statement with a parameter per hash: a conversation has a
        // bounded number of turn boundaries.
        let placeholders: Vec<String> = (0..hashes.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT prefix_hash, summary FROM context_summaries WHERE tenant_id = $1 AND prefix_hash IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(tenant);
        for hash in hashes {
            query = query.bind(hash);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| Ok((row.try_get("prefix_hash")?, row.try_get("summary")?)))
            .collect()
    }

    /// Keeps a summary (a second writer of the same one is ignored).
    pub async fn insert_summary(
        &self,
        tenant: &str,
        hash: &str,
        summary: &str,
        created_at: i64,
    ) -> Result<(), StateError> {
        sqlx::query(
            "INSERT INTO context_summaries (tenant_id, prefix_hash, summary, created_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, prefix_hash) DO NOTHING",
        )
        .bind(tenant)
        .bind(hash)
        .bind(summary)
        .bind(created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
