//! Stored responses (the Responses API's `store`): one row per response,
//! its own items beside it, and a response's history read back through
//! the chain of responses it continues.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::StateError;
use crate::store::{SqlStore, TenantScope};

/// A stored response, without its items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseRow {
    /// `resp_…`.
    pub id: String,
    /// Whose it is.
    pub tenant_id: String,
    /// The response it continues.
    pub previous_response_id: Option<String>,
    /// The conversation it was created in; its items are appended there
    /// too, in the same transaction.
    pub conversation_id: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// The model (or route, or assistant) asked for.
    pub model: String,
    /// `completed`, `incomplete` or `failed`.
    pub status: String,
    /// The response object as served, as JSON.
    pub body: String,
}

/// One item of a stored response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRow {
    /// Its place among the response's items (input first, then output).
    pub position: i64,
    /// Whether the model produced it (else it was input).
    pub is_output: bool,
    /// The item as JSON.
    pub item: String,
}

/// A chain longer than this is taken for a corrupt one (a response
/// continues an older one, so chains cannot loop; this bounds the query
/// even so).
const MAX_CHAIN: i64 = 100_000;

fn item_from(row: &AnyRow) -> Result<ItemRow, StateError> {
    Ok(ItemRow {
        position: row.try_get("position")?,
        is_output: row.try_get::<i64, _>("is_output")? != 0,
        item: row.try_get("item")?,
    })
}

impl SqlStore {
    /// Stores a response and its items in one transaction, and appends
    /// them to its conversation when it has one: a response the client was
    /// told about is never found without its items, nor its conversation
    /// without them. False (nothing stored) when its conversation is no
    /// longer there (deleted meanwhile).
    pub async fn insert_response(
        &self,
        response: &ResponseRow,
        items: &[ItemRow],
        item_ids: &[String],
    ) -> Result<bool, StateError> {
        let mut tx = self.pool.begin().await?;
        if let Some(conversation) = &response.conversation_id {
            let scope = TenantScope::Tenant(response.tenant_id.clone());
            let pairs: Vec<(&str, &str)> = item_ids
                .iter()
                .map(String::as_str)
                .zip(items.iter().map(|i| i.item.as_str()))
                .collect();
            let appended =
                crate::conversations::append_in(&mut tx, &scope, conversation, &pairs).await?;
            if !appended {
                return Ok(false);
            }
        }
        sqlx::query(
            "INSERT INTO responses (id, tenant_id, previous_response_id, conversation_id, created_at, model, status, body)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&response.id)
        .bind(&response.tenant_id)
        .bind(response.previous_response_id.as_deref())
        .bind(response.conversation_id.as_deref())
        .bind(response.created_at)
        .bind(&response.model)
        .bind(&response.status)
        .bind(&response.body)
        .execute(&mut *tx)
        .await?;
        for item in items {
            sqlx::query(
                "INSERT INTO response_items (response_id, position, is_output, item) VALUES ($1, $2, $3, $4)",
            )
            .bind(&response.id)
            .bind(item.position)
            .bind(i64::from(item.is_output))
            .bind(&item.item)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The response `id` and its own items, if it is in scope.
    pub async fn response(
        &self,
        scope: &TenantScope,
        id: &str,
    ) -> Result<Option<(ResponseRow, Vec<ItemRow>)>, StateError> {
        let row = sqlx::query(
            "SELECT id, tenant_id, previous_response_id, conversation_id, created_at, model, status, body
             FROM responses WHERE id = $1 AND ($2 IS NULL OR tenant_id = $2)",
        )
        .bind(id)
        .bind(scope.filter())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let response = ResponseRow {
            id: row.try_get("id")?,
            tenant_id: row.try_get("tenant_id")?,
            previous_response_id: row.try_get("previous_response_id")?,
            conversation_id: row.try_get("conversation_id")?,
            created_at: row.try_get("created_at")?,
            model: row.try_get("model")?,
            status: row.try_get("status")?,
            body: row.try_get("body")?,
        };
        let items = sqlx::query(
            "SELECT position, is_output, item FROM response_items WHERE response_id = $1 ORDER BY position",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let items = items.iter().map(item_from).collect::<Result<_, _>>()?;
        Ok(Some((response, items)))
    }

    /// Every item of the conversation that ends with response `id`: the
    /// items of each response of its chain, oldest first. `None` when `id`
    /// is not a response in scope. A response of the chain that was
    /// deleted ends the history there.
    pub async fn response_history(
        &self,
        scope: &TenantScope,
        id: &str,
    ) -> Result<Option<Vec<ItemRow>>, StateError> {
        let exists =
            sqlx::query("SELECT 1 FROM responses WHERE id = $1 AND ($2 IS NULL OR tenant_id = $2)")
                .bind(id)
                .bind(scope.filter())
                .fetch_optional(&self.pool)
                .await?;
        if exists.is_none() {
            return Ok(None);
        }
        let rows = sqlx::query(
            "WITH RECURSIVE chain (id, previous_id, depth) AS (
                 SELECT id, previous_response_id, 0 FROM responses
                 WHERE id = $1 AND ($2 IS NULL OR tenant_id = $2)
                 UNION ALL
                 SELECT r.id, r.previous_response_id, chain.depth + 1
                 FROM responses r JOIN chain ON r.id = chain.previous_id
                 WHERE ($2 IS NULL OR r.tenant_id = $2) AND chain.depth < $3
             )
             SELECT i.position, i.is_output, i.item
             FROM chain JOIN response_items i ON i.response_id = chain.id
             ORDER BY chain.depth DESC, i.position",
        )
        .bind(id)
        .bind(scope.filter())
        .bind(MAX_CHAIN)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(item_from)
            .collect::<Result<_, _>>()
            .map(Some)
    }

    /// Deletes response `id` and its items; false when it is not in scope.
    pub async fn delete_response(&self, scope: &TenantScope, id: &str) -> Result<bool, StateError> {
        let mut tx = self.pool.begin().await?;
        let done =
            sqlx::query("DELETE FROM responses WHERE id = $1 AND ($2 IS NULL OR tenant_id = $2)")
                .bind(id)
                .bind(scope.filter())
                .execute(&mut *tx)
                .await?;
        if done.rows_affected() == 1 {
            // Also without the foreign key's cascade (a SQLite connection
            // opened elsewhere without `foreign_keys`).
            sqlx::query("DELETE FROM response_items WHERE response_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }
}
